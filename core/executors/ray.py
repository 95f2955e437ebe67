"""Training on a Ray cluster: each run is a Ray task on whichever node has room, and this
process (the driver, on the machine that keeps the run store) writes the store.

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

import io
import os
import queue
import socket
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


def _train_task(config_dict: dict, dataset, run_id: str):
    """The body of one Ray task (a generator): train `config_dict` on `dataset` where Ray put
    it, yielding ("started", ...), ("epoch", log) per epoch and ("result", payload) at the end."""
    import tempfile

    import ray
    import torch

    from core.callbacks import Callback, Cancel, Checkpoint
    from core.training import train

    events: queue.Queue = queue.Queue()
    stop = threading.Event()

    class Relay(Callback):
        def on_epoch_end(self, trainer, epoch, log):
            events.put(("epoch", {k: v for k, v in log.items()}))

    yield ("started", {"node": ray.get_runtime_context().get_node_id(), "host": socket.gethostname(),
                       "pid": os.getpid()})
    outcome: dict = {}

    scratch = Path(tempfile.mkdtemp(prefix=f"mnist-lab-{run_id}-"))

    def relay_checkpoint(epoch: int) -> None:
        """The checkpoint the store's own callback would write, sent to the driver: a run
        trained on Ray resumes anywhere (`runs resume`), exactly where it was."""
        best = scratch / "best.pt"
        events.put(("checkpoint", {"checkpoint": (scratch / "checkpoint.pt").read_bytes(),
                                   "best": best.read_bytes() if best.exists() else None}))

    def body():
        try:
            outcome["result"] = train(RunConfig.from_dict(config_dict), dataset,
                                      callbacks=[Relay(), Cancel(lambda: "cancelled" if stop.is_set() else None),
                                                 Checkpoint(scratch / "checkpoint.pt", scratch / "best.pt",
                                                            on_saved=relay_checkpoint)])
        except BaseException as exc:  # noqa: BLE001 - sent to the driver as the run's error
            outcome["error"] = f"{type(exc).__name__}: {exc}"
        finally:
            events.put(("done", None))

    thread = threading.Thread(target=body, daemon=True)
    thread.start()
    try:
        while True:
            kind, item = events.get()
            if kind == "done":
                break
            yield (kind, item)
    except (KeyboardInterrupt, GeneratorExit):  # ray.cancel: stop the training thread too
        stop.set()
        raise
    if "error" in outcome:
        yield ("error", outcome["error"])
        return
    result = outcome["result"]
    buf = io.BytesIO()
    torch.save(result.model.state_dict(), buf)
    yield ("result", {"weights": buf.getvalue(), "history": result.history, "test": result.test,
                      "device": result.device, "device_name": result.device_name, "dataset": result.dataset,
                      "train_index": result.train_index, "val_index": result.val_index,
                      "stop_reason": result.stop_reason, "seconds": result.seconds})


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
        self._remote = ray.remote(_train_task)
        self._jobs: dict[str, dict] = {}   # run_id -> {"gen", "config", "history", "attempt", "dataset_ref"}
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
        refs = {name: ray.put(data) for name, data in datasets.items()}
        ids = []
        for config in configs:
            run_id = self.store.create(config, status="queued", group=group, executor=self.name)
            ids.append(run_id)
            with self._lock:
                self._jobs[run_id] = {"config": config, "dataset_ref": refs[config.dataset], "history": [],
                                      "attempt": 0, "dataset": datasets[config.dataset].describe()}
                self._start(run_id)
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

    def _start(self, run_id: str) -> None:
        job = self._jobs[run_id]
        job["attempt"] += 1
        job["history"] = []
        job["gen"] = self._remote.options(num_returns="streaming", max_retries=0,
                                          **self._resources(job["config"])).remote(
            job["config"].to_dict(), job["dataset_ref"], run_id)

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
        ray = _ray()
        with self._lock:
            job = self._jobs.pop(run_id, None)
        if job is None:
            return super().cancel(run_id, reason)
        ray.cancel(job["gen"], force=True)
        status = "pruned" if reason.startswith("pruned") else "cancelled"
        self.store.record_history(run_id, job["history"])
        self.store.mark_failed(run_id, f"{reason} after {len(job['history'])} epoch(s) on Ray", status=status)

    def active(self, run_ids: Sequence[str]) -> list[str]:
        with self._lock:
            return [r for r in run_ids if r in self._jobs]

    # --- relaying results -------------------------------------------------------------------------

    def poll(self) -> None:
        """Move every event that has arrived into the store (non-blocking)."""
        ray = _ray()
        with self._lock:
            jobs = list(self._jobs.items())
        for run_id, job in jobs:
            while True:
                ready, _ = ray.wait([job["gen"]], timeout=0)
                if not ready:
                    break
                try:
                    ref = next(job["gen"])
                except StopIteration:
                    with self._lock:
                        self._jobs.pop(run_id, None)
                    break
                try:
                    kind, item = ray.get(ref)
                except Exception as exc:  # noqa: BLE001 - the task or its node died
                    self._lost(run_id, job, exc)
                    break
                self._event(run_id, job, kind, item)
                if kind in ("result", "error"):
                    with self._lock:
                        self._jobs.pop(run_id, None)
                    break

    def _event(self, run_id: str, job: dict, kind: str, item) -> None:
        if kind == "started":
            self.store.mark_running(run_id, device=job["config"].device, device_label=f"Ray node {item['host']}",
                                    dataset=job["dataset"], params=0, node=item["node"])
            if job.get("lost"):  # the run's note keeps what happened to its first attempt
                self.store.set_note(run_id, job["lost"])
        elif kind == "epoch":
            job["history"].append(item)
            self.store.record_history(run_id, job["history"])
        elif kind == "checkpoint":
            from core.atomic import atomic_write_bytes

            folder = self.store.folder(run_id)
            if item["best"] is not None:
                atomic_write_bytes(folder / "weights_best.pt", item["best"])
            atomic_write_bytes(folder / "checkpoint.pt", item["checkpoint"])
        elif kind == "error":
            self.store.mark_failed(run_id, f"on Ray: {item}")
        elif kind == "result":
            self._save(run_id, job, item)

    def _save(self, run_id: str, job: dict, payload: dict) -> None:
        import torch

        from core.models import build_model
        from core.training import TrainResult

        config = job["config"]
        model = build_model(config.architecture(), config.num_outputs)
        model.load_state_dict(torch.load(io.BytesIO(payload["weights"]), map_location="cpu", weights_only=True))
        result = TrainResult(config=config, model=model, history=payload["history"], test=payload["test"],
                             device=payload["device"], device_name=payload["device_name"],
                             dataset=payload["dataset"], train_index=payload["train_index"],
                             val_index=payload["val_index"], stop_reason=payload["stop_reason"],
                             seconds=payload["seconds"], seconds_this_process=payload["seconds"])
        self.store.record_history(run_id, payload["history"])
        self.store.save_result(run_id, result)

    def _lost(self, run_id: str, job: dict, exc: Exception) -> None:
        """A node (or worker) lost mid-task: interrupted, and retried once."""
        error = f"the Ray task was lost ({type(exc).__name__}) after {len(job['history'])} epoch(s)"
        self.store.mark_failed(run_id, error, status="interrupted")
        if job["attempt"] < 2:
            job["lost"] = f"{error}; retried once"
            self.store.requeue(run_id, job["lost"])
            with self._lock:
                self._start(run_id)
        else:
            with self._lock:
                self._jobs.pop(run_id, None)

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
