"""Training on this machine: each job trains in its own worker process, never in the caller.

`submit` validates the configs, writes queued runs into the store and spawns
`python -m core worker RUN...` for each job; it returns at once. The worker waits for a slot
on its device (core.executors.worker), trains with the store's callbacks (history,
checkpoint, progress, cancel) and exits. A job is one run, or a vectorised group of runs
trained as one model. Pages and drivers read progress from the store. A worker that dies is
noticed by the store's next read (status interrupted).

Slots: a CPU trains one job at a time (two would only share its cores). A CUDA GPU trains
several small jobs at once when its memory allows: a course-sized job needs well under 1 GB,
and one small job leaves most of a GPU idle between its kernel launches.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from core.config import RunConfig
from core.executors.base import Executor, plan_jobs, prepare, record_plan
from core.executors.zygote import spawn as spawn_forked
from core.store import RunStoreError
from core.store.records import ACTIVE

ROOT = Path(__file__).resolve().parents[2]
GB_PER_GPU_JOB = 2.0   # what a slot reserves on a GPU: generous for course-sized models
MAX_GPU_JOBS = 4


def slots_for(device: str) -> int:
    """How many jobs may train at once on `device` (MNIST_LAB_JOBS_PER_DEVICE overrides)."""
    from core.executors.queue import default_slots

    known = default_slots(device)  # the override, or one for a CPU: no torch needed
    if known is not None:
        return known
    if device.startswith("cuda"):
        from core.devices import list_devices

        memory = next((d.memory_gb for d in list_devices() if d.id == device or
                       (device == "cuda" and d.id == "cuda:0")), None)
        return max(1, min(MAX_GPU_JOBS, int((memory or 0) // GB_PER_GPU_JOB)))
    return 1


def _child_env() -> dict:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}


def spawn_core(store, args: list[str], log_path, device: str | None = None) -> int:
    """Start `python -m core ARGS --runs-dir STORE` in its own session (it outlives the app's
    script reruns and the caller), logging to `log_path`; returns its pid. A job on the CPU, or
    a process that trains nothing itself (device None: a sweep's driver), is forked from the
    preloaded zygote when one answers (core.executors.zygote: seconds of imports saved)."""
    args = [*args, "--runs-dir", str(store.root.resolve())]
    if device in (None, "cpu"):
        pid = spawn_forked(args, log_path, _child_env())
        if pid:
            return pid
    cmd = [sys.executable, "-m", "core", *args]
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=_child_env(), start_new_session=True)
    return proc.pid


def spawn(store, args: list[str], log_run: str, device: str) -> int:
    """A worker process for a job on `device`, logging to its first run's worker.log; returns its pid."""
    return spawn_core(store, args, store.run_dir(log_run) / "worker.log", device)


class LocalExecutor(Executor):
    """Worker processes on this machine, queued per device (see the module docstring)."""

    name = "local"

    def __init__(self, store, data_dir=None, slots: int | None = None):
        super().__init__(store, data_dir)
        self.slots = slots

    def _worker_args(self, run_ids: list[str], device: str) -> list[str]:
        """The slot count goes on the command line: the worker waits for its slot before it
        imports torch (core.executors.queue), so it cannot ask a GPU its memory itself."""
        args = ["worker", *run_ids, "--slots", str(self.slots or slots_for(device))]
        if self.data_dir:
            args += ["--data-dir", str(self.data_dir)]
        return args

    def submit(self, configs: Sequence[RunConfig], group: str | None = None, vectorize: bool = False,
               dataset=None) -> list[str]:
        configs = prepare(self.store, configs, dataset)
        if not configs:
            return []
        plan, reason = plan_jobs(configs, vectorize, dataset)
        ids = [self.store.create(config, status="queued", group=group, executor=self.name) for config in configs]
        record_plan(self.store, ids, plan, reason)
        started: set[str] = set()
        try:
            for job in ([ids[i] for i in indexes] for indexes in plan):
                device = self.store.get(job[0])["device"]
                pid = spawn(self.store, self._worker_args(job, device), job[0], device)
                for run_id in job:
                    self.store.record_worker(run_id, pid)
                started.update(job)
        except Exception as exc:
            # The caller (the app) answers for a run until its worker is recorded: alive, it would
            # keep these runs queued with nobody to train them. They fail, saying why.
            for run_id in ids:
                if run_id not in started:
                    self.store.mark_failed(run_id, f"its worker process could not be started: {exc}")
            raise
        return ids

    def capacity(self, device: str = "cpu") -> int:
        return self.slots or slots_for(device)

    def resume(self, run_id: str) -> None:
        """Queue the stopped run (or the group it trained in) again and start its worker, which
        waits for the device's slot like any queued job (a resume beside a training run would
        share the CPU with it: core.executors.queue), then continues from the checkpoint."""
        run = self.store.get(run_id)
        if run["status"] in ACTIVE:
            raise RunStoreError(f"run {run_id} is {run['status']}; only a stopped run can be resumed")
        from core.runner import check_resumable, resume_members

        check_resumable(self.store, run_id)
        members = resume_members(self.store, run_id)
        was = {m: self.store.get(m) for m in members}
        queued = [m for m in members if self.store.queue_to_resume(m, was[m]["status"])]
        try:
            if len(queued) < len(members):  # another resume took some of them first: leave it to that one
                raise RunStoreError(f"run {run_id} is being resumed already")
            pid = spawn(self.store, [*self._worker_args(members, run["device"]), "--resume", run_id], run_id,
                        run["device"])
        except BaseException:
            for m in queued:  # back as they were: stopped, with their own message
                self.store.mark_failed(m, was[m]["error"] or "stopped", status=was[m]["status"])
            raise
        for member in members:
            self.store.record_worker(member, pid)
