"""The fault suite's tools (tests/test_faults.py, tests/test_disk_full.py): run the CLI in this
process, fingerprint a store's runs, wait until nothing works on a store, check everything that
must hold after a fault, and kill a command at its Nth file rename in a process forked from a
server that has imported torch already."""

from __future__ import annotations

import contextlib
import hashlib
import io
import multiprocessing
import os
import re
from pathlib import Path

from core.cli import main
from core.store import ACTIVE, RunStore
from core.store.processes import process_alive
from tests.waiting import wait_until

LEFTOVER = re.compile(r"\.tmp(\.npz)?$|^\.import-|^\.creating-|^\.index\.sqlite\.new-")
COUNTS: dict[str, int] = {}   # what the suite went through, printed by test_faults.py's test_counts


def cli(*args) -> tuple[int, str]:
    """`python -m core ARGS` in this process: its status and everything it printed."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        try:
            code = main(list(args))
        except BaseException:  # noqa: BLE001 - a traceback is a failure of the suite, shown
            import traceback

            traceback.print_exc(file=out)
            code = 99
    return code, out.getvalue()


def run_digests(root: Path, ids) -> dict:
    """Every file of these runs' folders, as (inode, size, modification time in ns): any write,
    truncation or replacement changes it, and a store of a hundred runs is compared in
    milliseconds, not by hashing gigabytes after each of hundreds of faults."""
    out = {}
    for run_id in ids:
        for p in sorted((root / run_id).rglob("*")):
            if p.is_file():
                st = p.stat()
                out[str(p.relative_to(root))] = (st.st_ino, st.st_size, st.st_mtime_ns)
    return out


def content_digests(root: Path, ids) -> dict:
    """The bytes of every file of these runs' folders."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for run_id in ids for p in sorted((root / run_id).rglob("*")) if p.is_file()}


def store_processes(root: Path) -> list[int]:
    """Processes working on this store (a sweep's workers go on after its driver is killed):
    named in their command line, or, for a worker forked from the zygote (whose command line is
    the zygote's), holding a file open in it (its worker.log: a worker still waiting for a slot
    wrote its refusal there after the checks, 80 s after its run had been trained elsewhere)."""
    pids, names = [], {str(root), str(Path(root).resolve())}
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and int(proc.name) != os.getpid():
            try:
                cmdline = (proc / "cmdline").read_bytes()
                if any(n.encode() in cmdline for n in names) or any(
                        os.readlink(fd).startswith(tuple(n + os.sep for n in names)) for fd in (proc / "fd").iterdir()):
                    pids.append(int(proc.name))
            except OSError:
                pass
    return pids


def wait_idle(root: Path, timeout: float = 90.0) -> list[dict]:
    """The store's runs once no process works on it any more and none is active behind a
    live process (a sweep's workers finish their trial after the driver is killed)."""
    def idle() -> list[dict] | None:
        runs = RunStore(root).list()
        alive = [r for r in runs if r["status"] in ACTIVE and process_alive(r["pid"], r["pid_start"])]
        return runs if not alive and not store_processes(root) else None

    try:
        return wait_until(idle, timeout, "the store's processes to end", every=0.2)
    except AssertionError:  # still busy: the checks after this say which run is left active
        return RunStore(root).list()


def check_after_fault(root: Path, before: dict, old_ids: set, what: str) -> list[str]:
    """Everything that must hold after a fault; the list of what did not (empty: all held)."""
    problems = []
    runs = wait_idle(root)
    for r in runs:
        if r["status"] in ACTIVE:
            problems.append(f"{what}: run {r['id']} is {r['status']} with no live process")
        if r["id"] not in old_ids and r["status"] not in ("finished",) and not r["error"]:
            problems.append(f"{what}: run {r['id']} is {r['status']} and does not say why")
    left = [str(p.relative_to(root)) for p in root.rglob("*") if LEFTOVER.search(p.name)]
    if left:
        problems.append(f"{what}: left behind {left}")
    code, out = cli("runs", "list", "--runs-dir", str(root))
    if code != 0 or "Traceback" in out:
        problems.append(f"{what}: runs list said {out[-500:]}")
    for r in runs:
        if r["id"] not in old_ids:
            code, out = cli("runs", "show", r["id"], "--runs-dir", str(root))
            if code != 0 or "Traceback" in out:
                problems.append(f"{what}: runs show {r['id']} said {out[-500:]}")
    after = run_digests(root, before_ids(before))
    if after != before:
        changed = sorted(k for k in set(after) | set(before) if after.get(k) != before.get(k))
        problems.append(f"{what}: runs that were there before changed: {changed[:5]}")
    return problems


def before_ids(digests: dict) -> set:
    return {k.split(os.sep)[0] for k in digests}


def make_forkserver():
    """Processes forked from a server that has imported torch and the lab: a kill point costs
    its training, not an interpreter start. The list names what a training imports on its
    first use too (torch._dynamo by Adam, torchvision and PIL, optuna for a sweep): without
    them each forked command paid 1.7-2.5 s of imports here, most of a kill point's time."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["torch", "torch._dynamo", "torchvision", "PIL.Image", "PIL.ImageDraw", "optuna",
                                "core.cli", "core.store.store", "core.training", "core.runner",
                                "tests.faults.kill_at_rename", "tests.faults.forkserver_preload"])
    return ctx


def run_killed(ctx, args: list[str], kill_at: int, when: str, tmp: Path) -> tuple[int, str]:
    from tests.faults.kill_at_rename import run_command

    output = tmp / f"out-{kill_at}-{when}.txt"
    count = tmp / "renames.txt"
    proc = ctx.Process(target=run_command, args=(args, kill_at, when, str(count) if not kill_at else None,
                                                 str(output)))
    proc.start()
    proc.join(300)
    assert proc.exitcode is not None, f"{args} with a kill at rename {kill_at} did not end in 300 s"
    text = output.read_text() if output.exists() else ""
    return proc.exitcode, text
