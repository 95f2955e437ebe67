"""Background training jobs: each run trains in its own worker process, never in the caller.

The app (or anyone) calls `start_job`, which validates the config, resolves the device, writes
a queued run into the store and spawns `python -m core worker RUN`; it returns at once. The
worker waits for its place in the queue (by default one running job per device, set by
MNIST_LAB_JOBS_PER_DEVICE), trains with the store's callbacks (history, checkpoint, progress,
cancel) and exits. Pages read progress from the store; `RunStore.request_cancel` stops a job
within one batch. A worker that dies is noticed by the store's next read (status interrupted).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from core.config import RunConfig
from core.runs import RunStore, RunStoreError, process_start_time

ROOT = Path(__file__).resolve().parent.parent
POLL_S = 0.3


def jobs_per_device() -> int:
    value = os.environ.get("MNIST_LAB_JOBS_PER_DEVICE", "1")
    return int(value) if value.isdigit() and int(value) > 0 else 1


def start_job(store: RunStore, config: RunConfig, data_dir: str | None = None, dataset=None,
              group: str | None = None) -> str:
    """Queue `config` as a run and start its worker process; returns the run id at once.

    Refuses, before anything is stored, a device that is not there, a precision the device
    cannot train in and (when `dataset` is given) a batch larger than the training set.
    """
    from core.devices import resolve_device

    from core.training import check_precision

    device = resolve_device(config.device)
    check_precision(config, device)
    config = config.replace(device=str(device))
    if dataset is not None:
        from core.training import check_against_data

        check_against_data(config, dataset)
    run_id = store.create(config, status="queued", group=group)
    cmd = [sys.executable, "-m", "core", "worker", run_id, "--runs-dir", str(store.root.resolve())]
    if data_dir:
        cmd += ["--data-dir", str(data_dir)]
    log = open(store.run_dir(run_id) / "worker.log", "ab")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            env=env, start_new_session=True)  # survives the app's script reruns
    log.close()
    store._update(run_id, pid=proc.pid, pid_start=process_start_time(proc.pid))
    return run_id


def claim_slot(store: RunStore, run_id: str, device: str, limit: int) -> bool:
    """Atomically turn this queued run into a running one if it is first in its device's queue
    and the device has a free slot (one SQL statement: SQLite serializes it against others)."""
    with store._db() as db:
        cur = db.execute(
            "UPDATE runs SET status='running', updated=? WHERE id=? AND status='queued'"
            " AND (SELECT COUNT(*) FROM runs WHERE status='running' AND device=?) < ?"
            " AND id = (SELECT id FROM runs WHERE status='queued' AND device=? ORDER BY created, id LIMIT 1)",
            (time.time(), run_id, device, limit, device))
        return cur.rowcount == 1


def queue_position(store: RunStore, run_id: str) -> int | None:
    """1 for the next queued run of its device, 2 after it, ...; None when not queued."""
    run = store.get(run_id)
    if run["status"] != "queued":
        return None
    queued = [r for r in store.list(status="queued") if r["device"] == run["device"]]
    queued.sort(key=lambda r: (r["created"], r["id"]))
    return [r["id"] for r in queued].index(run_id) + 1


def run_worker(store: RunStore, run_id: str, data_dir: str | None = None) -> int:
    """The worker process's body: wait for a slot, train, record the outcome."""
    run = store.get(run_id)
    if run["status"] != "queued":
        raise RunStoreError(f"run {run_id} is {run['status']}, not queued")
    config = store.config(run_id)
    cancel_flag = store.run_dir(run_id) / "cancel"
    store._update(run_id, pid=os.getpid(), pid_start=process_start_time(os.getpid()))
    while not claim_slot(store, run_id, run["device"], jobs_per_device()):
        if cancel_flag.exists():
            store.mark_failed(run_id, "cancelled while queued", status="cancelled")
            return 0
        store.list()  # notices dead workers ahead in the queue
        time.sleep(POLL_S)
    try:
        from core.data import load_dataset

        dataset = load_dataset(config.dataset, data_dir)
        store.train_in_this_process(config, dataset, run_id=run_id)
    except Exception:  # noqa: BLE001 - already recorded as failed by the store
        return 1
    return 0


def resume_job(store: RunStore, run_id: str, data_dir: str | None = None) -> None:
    """Continue an interrupted or cancelled run from its last checkpoint in a worker process."""
    run = store.get(run_id)
    if run["status"] in ("queued", "running"):
        raise RunStoreError(f"run {run_id} is {run['status']}; only a stopped run can be resumed")
    if store.load_checkpoint(run_id) is None:
        raise RunStoreError(f"run {run_id} has no checkpoint to resume from")
    cmd = [sys.executable, "-m", "core", "runs", "resume", run_id, "--runs-dir", str(store.root.resolve())]
    if data_dir:
        cmd += ["--data-dir", str(data_dir)]
    with open(store.run_dir(run_id) / "worker.log", "ab") as log:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=env, start_new_session=True)
    store._update(run_id, pid=proc.pid, pid_start=process_start_time(proc.pid))
