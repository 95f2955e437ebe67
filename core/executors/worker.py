"""The body of a local worker process (`python -m core worker RUN [RUN ...]`): wait for a slot
on the job's device, train the run (or the vectorised group of runs), record the outcome."""

from __future__ import annotations

import os
import time

from core.settings import settings
from core.store import RunStore, RunStoreError

POLL_S = 0.3


def run_worker(store: RunStore, run_ids: list[str], data_dir=None, slots: int | None = None,
               waited: str | None = None, resume: str | None = None) -> int:
    """Train one queued job: a run, or several runs of one group as one vectorised model.
    `waited` is what the torch-free wait (core.executors.queue) ended with, when it ran.
    `resume`: the job is the stopped run `resume` (or its group) queued again to be resumed
    (core.executors.local): once it has its slot it continues from its checkpoint."""
    from core.executors.local import slots_for

    if waited == "cancelled":
        return _cancelled(store, run_ids)
    if waited != "claimed":
        runs = [store.get(r) for r in run_ids]
        for run in runs:
            if run["status"] != "queued":
                raise RunStoreError(f"run {run['id']} is {run['status']}, not queued")
        device = runs[0]["device"]
        for run_id in run_ids:
            store.record_worker(run_id, os.getpid())
        limit = slots or slots_for(device)
        while not store.claim_slot(run_ids, device, limit):
            if all(store.folder(r).cancel_reason() for r in run_ids):
                return _cancelled(store, run_ids)
            store.list()  # notices dead workers ahead in the queue
            time.sleep(POLL_S)
    device = store.get(run_ids[0])["device"]
    if device == "cpu" and (slots or 1) > 1 and settings().threads is None:
        # Jobs sharing the CPU share its cores: two 2-thread jobs on 2 cores trained 65x slower
        # per trial than one (bench/sweep.py), each thread spinning while the other's ran.
        import torch

        torch.set_num_threads(max(1, (os.cpu_count() or 1) // slots))
    try:
        from core.runner import resume as resume_job, train_job

        if resume:
            resume_job(store, resume, data_dir=data_dir, claimed=True)
        else:
            train_job(store, run_ids, data_dir=data_dir)
    except Exception as exc:  # noqa: BLE001 - recorded, then the process exits
        for run_id in run_ids:
            if store.get(run_id)["status"] in ("queued", "running"):  # failed before training started
                store.mark_failed(run_id, f"{type(exc).__name__}: {exc}")
        return 1
    return 0


def _cancelled(store: RunStore, run_ids: list[str]) -> int:
    for run_id in run_ids:
        store.mark_failed(run_id, "cancelled while queued", status="cancelled")
    return 0
