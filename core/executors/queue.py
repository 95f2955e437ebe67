"""A queued job's worker waits for its slot here, before it imports torch.

Every queued job has its own worker process from the moment it is submitted (so that nothing
else has to be running for the queue to move). Importing torch costs such a process about
280 MB of private memory on this machine, and a fresh lab queues 18 starter runs at once: 13
idle workers held 3.7 GB. So `python -m core worker` waits here first, with only SQLite and
the run folders (core.store.index, core.store.folder, core.store.liveness are torch-free), and
imports the trainer only once its job has a slot.
"""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

from core.settings import settings
from core.store.folder import RunFolder
from core.store.index import IndexBroken, RunIndex
from core.store.liveness import reap

POLL_S = 0.3


def background_priority() -> int:
    """Lower this worker's CPU priority (Unix `nice`) so that the app's pages stay responsive
    while jobs train on the same cores; returns the niceness added.

    On a teacher's laptop serving a class, a CPU job's threads otherwise compete on equal terms
    with the server that draws every student's pages and predictions (bench/load.py). A job
    on an otherwise idle machine loses nothing: `nice` only decides who runs when both want
    the CPU. Called first thing in the worker process, before torch starts its thread pool
    (Linux applies niceness per thread, and new threads inherit it). Windows has no `nice`:
    there the worker keeps normal priority.
    """
    niceness = settings().worker_nice
    if niceness <= 0 or not hasattr(os, "nice"):
        return 0
    try:
        os.nice(niceness)
    except OSError:  # not allowed here: train at normal priority rather than not at all
        return 0
    return niceness


def default_slots(device: str) -> int | None:
    """Slots known without torch: the override, or one for a CPU. None: ask core.executors.local."""
    if settings().jobs_per_device:
        return settings().jobs_per_device
    return None if device.startswith("cuda") else 1


def wait_for_slot(root: str | os.PathLike, run_ids: list[str], slots: int | None = None) -> str:
    """Block until the job `run_ids` holds a slot on its device ("claimed"), its runs were all
    cancelled while queued ("cancelled"), or the wait cannot be done without the full store
    ("fallback": a broken index, a CUDA device with no slot count given, a run not queued)."""
    root = Path(root)
    index = RunIndex(root / "index.sqlite")
    try:
        rows = [index.get(r) for r in run_ids]
    except (IndexBroken, sqlite3.Error):
        return "fallback"
    if any(r is None or r["status"] != "queued" for r in rows):
        return "fallback"
    device = rows[0]["device"]
    limit = slots or default_slots(device)
    if limit is None:
        return "fallback"
    folders = [RunFolder(root, r) for r in run_ids]
    try:
        while not index.claim(run_ids, device, limit):
            if all(f.cancel_reason() for f in folders):
                # Recorded here, without torch: a fresh lab's 18 starters cancelled at once would
                # otherwise start 18 processes importing torch (about 0.5 GB and seconds of CPU
                # each) only to write this.
                for run_id, f in zip(run_ids, folders):
                    f.write_meta(status="cancelled", error="cancelled while queued")
                    index.update(run_id, status="cancelled", error="cancelled while queued", progress=None)
                return "cancelled"
            reap(index, root, index.all())  # a dead worker ahead must not hold its slot forever
            time.sleep(POLL_S)
    except (IndexBroken, sqlite3.Error):
        return "fallback"
    for f in folders:
        f.write_meta(status="running")
    if all(r.get("starter") for r in rows):
        starter_priority()
    return "claimed"


STARTER_NICENESS = 19  # the lowest: a starter trains on what a person's job leaves of the CPU


def starter_priority() -> None:
    """A starter run trains beside a person's run when one is started (core.store.index.claim):
    at the lowest CPU priority, so the person's run gets the cores it asks for."""
    if not hasattr(os, "nice"):
        return
    try:
        os.nice(max(0, STARTER_NICENESS - os.nice(0)))
    except OSError:
        pass


def worker_args(argv: list[str]):
    import argparse

    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("runs", nargs="*")
    parser.add_argument("--runs-dir", default=str(settings().runs))
    parser.add_argument("--slots", type=int, default=None)
    parser.add_argument("--resume", default=None)  # (its value is a run id, not one of the job's runs)
    return parser.parse_known_args(argv)[0]


def wait_from_argv(argv: list[str]) -> list[str]:
    """For `python -m core worker RUN... [--runs-dir R] [--slots N] ...`: wait, then return the
    argv for the CLI with `--waited RESULT` added, so the worker knows what happened."""
    known = worker_args(argv)
    if not known.runs or not Path(known.runs_dir, "index.sqlite").exists():
        return argv
    try:
        result = wait_for_slot(known.runs_dir, known.runs, known.slots)
    except Exception:  # noqa: BLE001 - the full worker path reports it properly
        return argv
    return argv if result == "fallback" else [*argv, "--waited", result]
