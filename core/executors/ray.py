"""Training on a Ray cluster: each job of the plan (a run, or a vectorised group trained as one
stack, planned as every executor plans: core.executors.base.plan_jobs) is a Ray task on
whichever node has room, and this process (the driver, on the machine that keeps the run store)
trains it through the runner (core.runner.train_job, with the job's engine
core.executors.ray_task.OnRay), which writes the store through the store writer's own callbacks.

No shared file system is assumed between nodes. The data set goes to the cluster once per
submit through Ray's object store; the `core` package travels as a runtime-env module; each
task is a streaming generator that yields where it runs, every finished epoch, and at the end
the artefacts (history, weights, predictions); a thread of the driver per job replays them into
the runner's callbacks as they arrive. A task requests one CPU, and a fraction of a GPU for a
CUDA run (MNIST_LAB_RAY_GPU_FRACTION, default 0.25: course-sized jobs share a GPU). Cancel stops
the task. A node lost in the middle of a task queues its unfinished runs again and retries the
task once on the cluster from its first epoch (bit for bit the runs they would have been: every
epoch reseeds from the run's seed); lost again, the runs are `interrupted`. Each epoch's
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
    """Runs on the Ray cluster at `address` (see the module docstring). Each job is driven by a
    thread of this process that calls the runner (core.runner.train_job with the job's OnRay
    engine), so results arrive with or without `poll()`; `detached` is accepted for the
    executors' common signature and changes nothing."""

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
        self._jobs: dict = {}   # run_id -> the OnRay engine of the job it trains in (a run, or a group's stack)
        self._lock = threading.RLock()

    # --- submitting ---------------------------------------------------------------------------

    def _resources(self, config: RunConfig) -> dict:
        gpu = config.device.startswith("cuda")
        fraction = settings().ray_gpu_fraction
        return {"num_cpus": 1, "num_gpus": fraction if gpu else 0}

    def submit(self, configs: Sequence[RunConfig], group: str | None = None, vectorize: bool = False,
               dataset=None) -> list[str]:
        from core.data import load_dataset
        from core.executors.base import plan_jobs, record_plan
        from core.executors.ray_task import OnRay
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
            run_ids = [ids[i] for i in members]
            engine = OnRay(self.store, self._remote, refs[first.dataset], self._resources(first))
            thread = threading.Thread(target=self._drive, args=(engine, run_ids, datasets[first.dataset]),
                                      daemon=True, name=f"ray driver {run_ids[0]}")
            with self._lock:
                for run_id in run_ids:
                    self._jobs[run_id] = engine
            thread.start()
        return ids

    def _drive(self, engine, run_ids: list[str], dataset) -> None:
        """One job, trained by the runner on the cluster (a thread of this process: the runner
        waits for the task's events as it would for a loop running here)."""
        from core import runner

        try:
            runner.train_job(self.store, run_ids, dataset=dataset, data_dir=self.data_dir, engine=engine)
        except Exception:  # noqa: BLE001 - the runner wrote the failure into the runs
            pass
        finally:
            with self._lock:
                for run_id in run_ids:
                    if self._jobs.get(run_id) is engine:
                        del self._jobs[run_id]

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
        with self._lock:
            engine = self._jobs.pop(run_id, None)
        if engine is None or not engine.cancel(run_id, reason):
            super().cancel(run_id, reason)

    def active(self, run_ids: Sequence[str]) -> list[str]:
        with self._lock:
            return [r for r in run_ids if r in self._jobs]

    # --- waiting ------------------------------------------------------------------------------

    def poll(self) -> None:
        """Nothing to move: each job's thread writes its runs as their events arrive."""

    def wait(self, run_ids: Sequence[str], timeout: float = 600) -> None:
        """Until these runs are over (for scripts and tests)."""
        deadline = time.time() + timeout
        while self.active(run_ids) and time.time() < deadline:
            time.sleep(0.2)

    def close(self) -> None:
        """Nothing to release for the store; the connection stays for other executors of this process."""
