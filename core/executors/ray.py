"""Training on a Ray cluster: each job of the plan (a run, or a vectorised group trained as one
stack, planned as every executor plans: core.executors.base.plan_jobs) is a Ray task on
whichever node has room, and this process (the driver, on the machine that keeps the run store)
writes the store, through the store writer's own callbacks (core.executors.ray_task).

No shared file system is assumed between nodes. The data set goes to the cluster once per
submit through Ray's object store; the `core` package travels as a runtime-env module; each
task is a streaming generator that yields where it runs, every finished epoch, and at the end
the artefacts (history, weights, predictions). `poll()` moves them into the store. A task
requests one CPU, and a fraction of a GPU for a CUDA run (MNIST_LAB_RAY_GPU_FRACTION, default
0.25: course-sized jobs share a GPU). Cancel stops the task. A node lost in the middle of a
task makes the run `interrupted`, and it is retried once on the cluster from its first epoch
(bit for bit the run it would have been: every epoch reseeds from the run's seed). Each epoch's
checkpoint comes back to the store too, so `python -m core runs resume RUN` finishes a stopped
Ray run exactly where it was, on this machine.

Ray is an optional install (requirements-cluster.txt); this module imports it on first use.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from pathlib import Path

from core.config import RunConfig
from core.executors.base import Executor
from core.settings import settings
from core.store import RunStoreError

CORE_DIR = Path(__file__).resolve().parents[1]


def _ray():
    try:
        import ray
    except ImportError as exc:  # a clear message instead of a traceback
        raise RunStoreError("the Ray executor needs Ray: pip install -r requirements-cluster.txt") from exc
    return ray


CONNECT_TIMEOUT_S = 5.0


def reachable(address: str, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """Refuse an address where nothing answers within `timeout` seconds: ray.init itself waits
    minutes for a head that is not there (measured: no answer in 180 s)."""
    import socket

    host, _, port = str(address).removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise RunStoreError(f"the Ray address must be HOST:PORT (the head's GCS port, usually 6379), got {address!r}")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            pass
    except OSError as exc:
        raise RunStoreError(f"cannot connect to the Ray cluster at {address}: nothing answers there within "
                            f"{timeout:.0f} s ({exc})") from exc


class RayExecutor(Executor):
    """Runs on the Ray cluster at `address` (see the module docstring). With `detached`, a
    background thread of this process relays results (the app); otherwise call `poll()`."""

    name = "ray"

    def __init__(self, store, data_dir=None, address: str | None = None, detached: bool = False):
        super().__init__(store, data_dir)
        if not address:
            raise RunStoreError("the Ray executor needs a cluster address: --ray-address HEAD:6379 or "
                                "MNIST_LAB_RAY_ADDRESS")
        ray = _ray()
        if not ray.is_initialized():
            reachable(address)
            try:
                ray.init(address=address, include_dashboard=False, log_to_driver=False,
                         runtime_env={"py_modules": [str(CORE_DIR)]})
            except Exception as exc:  # noqa: BLE001 - unreachable cluster: one clear message
                raise RunStoreError(f"cannot connect to the Ray cluster at {address}: {exc}") from exc
        self.address = address
        from core.executors.ray_task import train_task

        self._remote = ray.remote(train_task)
        self._jobs: dict[str, _Job] = {}   # run_id -> the job it trains in (a run, or a group's stack)
        self._lock = threading.RLock()
        self._thread = None
        if detached:
            self._thread = threading.Thread(target=self._relay_forever, daemon=True)
            self._thread.start()

    # --- submitting ---------------------------------------------------------------------------

    def _resources(self, config: RunConfig) -> dict:
        gpu = config.device.startswith("cuda")
        fraction = settings().ray_gpu_fraction
        return {"num_cpus": 1, "num_gpus": fraction if gpu else 0}

    def submit(self, configs: Sequence[RunConfig], group: str | None = None, vectorize: bool = False,
               dataset=None) -> list[str]:
        from core.data import load_dataset
        from core.executors.base import plan_jobs, record_plan
        from core.training import check_against_data

        ray = _ray()
        if not configs:
            return []
        configs = [self.resolve(config) for config in configs]
        datasets = {}
        for config in configs:
            data = dataset if dataset is not None and dataset.name == config.dataset else None
            if config.dataset not in datasets:
                datasets[config.dataset] = data or load_dataset(config.dataset, self.data_dir)
            check_against_data(config, datasets[config.dataset])
        plan, reason = plan_jobs(configs, vectorize, datasets[configs[0].dataset])
        refs = {name: ray.put(data) for name, data in datasets.items()}
        ids = [self.store.create(config, status="queued", group=group, executor=self.name) for config in configs]
        record_plan(self.store, ids, plan, reason)
        for members in plan:
            first = configs[members[0]]
            job = _Job(self.store, [ids[i] for i in members], [configs[i] for i in members],
                       refs[first.dataset], self.data_dir)
            with self._lock:
                for run_id in job.run_ids:
                    self._jobs[run_id] = job
                self._start(job)
        return ids

    def resolve(self, config: RunConfig) -> RunConfig:
        """`auto` as the cluster will train it (a CUDA GPU when the cluster has one, else the CPU:
        the driver's own hardware does not decide), then the precision checked for that device,
        as prepare() does for the executors that train on this machine."""
        import torch

        from core.training import check_precision

        device = config.device
        if device == "auto":
            device = "cuda" if _ray().cluster_resources().get("GPU", 0) > 0 else "cpu"
        check_precision(config, torch.device(device))
        return config.replace(device=device)

    def _start(self, job: "_Job") -> None:
        job.attempt += 1
        job.reset()
        job.gen = self._remote.options(num_returns="streaming", max_retries=0, **self._resources(job.configs[0])
                                       ).remote([c.to_dict() for c in job.configs], job.dataset_ref, job.run_ids)

    def resume(self, run_id: str) -> None:
        """Continue a stopped run on the cluster: not done here; the checkpoint every epoch sent
        back is in the store, so `python -m core runs resume RUN` (or the local executor)
        finishes it exactly where it stopped."""
        raise RunStoreError(f"resume {run_id} with the local executor (python -m core runs resume {run_id}): "
                            "its checkpoint is in the store")

    def capacity(self, device: str = "cpu") -> int:
        ray = _ray()
        key = "GPU" if device.startswith("cuda") else "CPU"
        total = ray.cluster_resources().get(key, 1)
        per_job = settings().ray_gpu_fraction if key == "GPU" else 1
        return max(1, int(total / per_job))

    # --- cancel, where ---------------------------------------------------------------------------

    def cancel(self, run_id: str, reason: str = "cancelled") -> None:
        """Stop a run: its record ends here with the epochs it finished. A run of a vectorised
        group stops alone (the stack goes on computing it, unused, as it does for a member that
        stopped early); the task is stopped once none of its runs is left."""
        ray = _ray()
        with self._lock:
            job = self._jobs.pop(run_id, None)
        if job is None:
            return super().cancel(run_id, reason)
        job.active.discard(run_id)
        if not job.active:
            ray.cancel(job.gen, force=True)
        status = "pruned" if reason.startswith("pruned") else "cancelled"
        history = job.members[run_id].history
        self.store.record_history(run_id, history)
        self.store.mark_failed(run_id, f"{reason} after {len(history)} epoch(s) on Ray", status=status)

    def active(self, run_ids: Sequence[str]) -> list[str]:
        with self._lock:
            return [r for r in run_ids if r in self._jobs]

    # --- relaying results -------------------------------------------------------------------------

    def poll(self) -> None:
        """Move every event that has arrived into the store (non-blocking)."""
        ray = _ray()
        with self._lock:
            jobs = list({id(job): job for job in self._jobs.values()}.values())
        for job in jobs:
            while job.active:
                ready, _ = ray.wait([job.gen], timeout=0)
                if not ready:
                    break
                try:
                    ref = next(job.gen)
                except StopIteration:
                    self._forget(job)
                    break
                try:
                    run_id, kind, item = ray.get(ref)
                except Exception as exc:  # noqa: BLE001 - the task or its node died
                    self._lost(job, exc)
                    break
                job.event(run_id, kind, item)
                if kind == "error" or not job.active:
                    self._forget(job)
                    break

    def _forget(self, job: "_Job") -> None:
        with self._lock:
            for run_id in job.run_ids:
                if self._jobs.get(run_id) is job:
                    del self._jobs[run_id]

    def _lost(self, job: "_Job", exc: Exception) -> None:
        """A node (or worker) lost mid-task: its runs are interrupted, and the job is retried once
        (from its first epoch: bit for bit what it would have been)."""
        for run_id in sorted(job.active):
            error = (f"the Ray task was lost ({type(exc).__name__}) after {len(job.members[run_id].history)} "
                     "epoch(s)")
            self.store.mark_failed(run_id, error, status="interrupted")
            if job.attempt < 2:
                job.lost[run_id] = f"{error}; retried once"
                self.store.requeue(run_id, job.lost[run_id])
        if job.attempt < 2:
            with self._lock:
                self._start(job)
        else:
            self._forget(job)

    def _relay_forever(self) -> None:
        while True:
            try:
                self.poll()
            except Exception:  # noqa: BLE001 - the relay thread must not die; next round retries
                pass
            time.sleep(0.5)

    def wait(self, run_ids: Sequence[str], timeout: float = 600) -> None:
        """Relay until these runs are over (for scripts and tests)."""
        deadline = time.time() + timeout
        while self.active(run_ids) and time.time() < deadline:
            self.poll()
            time.sleep(0.2)

    def close(self) -> None:
        """Nothing to release for the store; the connection stays for other executors of this process."""


class _Job:
    """One Ray task: its runs (one, or a vectorised group), and each run as the node relays it
    (core.executors.ray_task.Relayed), written into the store by the store writer's callbacks."""

    def __init__(self, store, run_ids: list[str], configs: list[RunConfig], dataset_ref, data_dir):
        self.store, self.run_ids, self.configs = store, run_ids, configs
        self.dataset_ref, self.data_dir = dataset_ref, data_dir
        self.attempt = 0
        self.active: set[str] = set()
        self.gen = None
        self.lost: dict[str, str] = {}   # run id -> what happened to its first attempt
        self.reset()

    def reset(self) -> None:
        """A fresh attempt, seen from the start: every run of the job, or on a retry the runs
        the lost attempt had not finished (a group's stack trains them all again; the events of
        the ones finished before are not written again)."""
        from core.executors.ray_task import Relayed
        from core.store.writer import store_callbacks

        self.active = set(self.run_ids) if self.attempt <= 1 else set(self.active)
        self.members = {r: Relayed(c) for r, c in zip(self.run_ids, self.configs)}
        self.callbacks = {r: store_callbacks(self.store, r, self.data_dir) for r in self.run_ids}

    def event(self, run_id: str | None, kind: str, item) -> None:
        """One relayed event, written through the same callbacks as a run trained here."""
        from core.executors.ray_task import RelayedFit
        from core.store.writer import GroupCheckpoint

        if kind == "error":
            for r in sorted(self.active):
                self.store.mark_failed(r, f"on Ray: {item}")
            self.active.clear()
            return
        if kind == "group_checkpoint":
            GroupCheckpoint(self.store, self.run_ids, self.configs).on_epoch_end(RelayedFit(item), item["epoch"], {})
            return
        if run_id not in self.active:   # cancelled here meanwhile: its record is final
            return
        member, callbacks = self.members[run_id], self.callbacks[run_id]
        if kind == "started":
            member.started(item)
            for cb in callbacks:
                cb.on_train_begin(member)
            if run_id in self.lost:  # the run's note keeps what happened to its first attempt
                self.store.set_note(run_id, self.lost[run_id])
        elif kind == "epoch":
            member.epoch(item)
            for cb in callbacks:
                cb.on_epoch_end(member, item["epoch"], member.history[-1])
        elif kind == "result":
            member.finished(item)
            for cb in callbacks:
                cb.on_train_end(member)
            self.active.discard(run_id)
