"""What crosses between a Ray node and the driver: the task that trains one job of the plan (a
run, or a vectorised group as one stack) on a node, relaying what its trainer's callbacks see;
and, on the driver, the engine the runner trains the job with (`OnRay`, core.runner's engine
protocol): it starts the task and calls the runner's callbacks (the store writer's own,
core.store.writer) with that relayed trainer (`Relayed`). So a run trained on Ray goes through
the same runner and is written by the same code as a run trained here: marked running, each
epoch's history, first layer, checkpoint and best weights, the group's one checkpoint, the result.

No shared file system is assumed: everything is sent back through Ray as the task's stream, the
weights and checkpoints as torch.save bytes (read back with weights_only=True, on the CPU).
"""

from __future__ import annotations

import io
import os
import queue
import socket
import threading

from core.config import RunConfig


def _bytes(state) -> bytes:
    import torch

    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


def _state(data: bytes | None):
    import torch

    return None if data is None else torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


def train_task(config_dicts: list[dict], dataset, run_ids: list[str]):
    """The body of one Ray task (a generator): train the job's configs on `dataset` where Ray put
    it, one run or a vectorised group, yielding (run_id, kind, item): "started" and "epoch" and
    "result" for each member, "group_checkpoint" (run_id None) before a group's members' epochs,
    "error" (run_id None) if training failed."""
    import ray

    from core.callbacks import Callback, Cancel
    from core.group_training import train_group
    from core.models import count_parameters
    from core.training import train

    events: queue.Queue = queue.Queue()
    stop = threading.Event()
    node = {"node": ray.get_runtime_context().get_node_id(), "host": socket.gethostname(), "pid": os.getpid()}

    class Relay(Callback):
        """A member's trainer, as the driver's store writer needs to see it."""

        def __init__(self, run_id: str):
            self.run_id = run_id

        def on_train_begin(self, trainer):
            events.put((self.run_id, "started", {
                **node, "device": str(trainer.device), "environment": trainer.environment,
                "dataset": trainer.dataset_info, "params": count_parameters(trainer.model),
                "weights": _bytes(trainer.model.state_dict()), "history": list(trainer.history)}))

        def on_epoch_end(self, trainer, epoch, log):
            events.put((self.run_id, "epoch", {"epoch": epoch, "history": list(trainer.history),
                                               "environment": trainer.environment,
                                               "weights": _bytes(trainer.model.state_dict()),
                                               "checkpoint": _bytes(trainer.checkpoint_state(epoch))}))

        def on_train_end(self, trainer):
            r = trainer.result
            events.put((self.run_id, "result", {
                "weights": _bytes(r.model.state_dict()), "history": r.history, "test": r.test, "device": r.device,
                "device_name": r.device_name, "dataset": r.dataset, "train_index": r.train_index,
                "val_index": r.val_index, "stop_reason": r.stop_reason, "seconds": r.seconds, "extra": r.extra}))

    class RelayGroup(Callback):
        def on_epoch_end(self, fit, epoch, logs):
            events.put((None, "group_checkpoint", {"epoch": epoch, "checkpoint": _bytes(fit.checkpoint_state(epoch))}))

    def member_callbacks(run_id):
        return [Relay(run_id), Cancel(lambda: "cancelled" if stop.is_set() else None)]

    def body():
        try:
            configs = [RunConfig.from_dict(d) for d in config_dicts]
            if len(configs) == 1:
                train(configs[0], dataset, callbacks=member_callbacks(run_ids[0]))
            else:
                train_group(configs, dataset, callbacks=[RelayGroup()],
                            member_callbacks=[member_callbacks(r) for r in run_ids], names=run_ids)
        except BaseException as exc:  # noqa: BLE001 - sent to the driver as the runs' error
            events.put((None, "error", f"{type(exc).__name__}: {exc}"))
        finally:
            events.put((None, "done", None))

    thread = threading.Thread(target=body, daemon=True)
    thread.start()
    try:
        while True:
            run_id, kind, item = events.get()
            if kind == "done":
                break
            yield (run_id, kind, item)
    except (KeyboardInterrupt, GeneratorExit):  # ray.cancel: stop the training thread too
        stop.set()
        raise


class TrainingFailed(RuntimeError):
    """The training on the node raised (its text is the node's exception)."""


class OnRay:
    """The runner's engine for one job on the cluster (core.runner.Here is the one for this
    process): `train`/`train_group` start the Ray task and, until it ends, replay each relayed
    event into the runner's callbacks. A node lost mid-task requeues the unfinished runs and
    retries the task once (from its first epoch: bit for bit the run it would have been: every
    epoch reseeds from the run's seed); lost again, they are interrupted. `cancel` ends one run
    here at once with its finished epochs (a group's stack goes on computing it, unused) and
    stops the task once none of its runs is left."""

    def __init__(self, store, remote, dataset_ref, resources: dict):
        self.store, self.remote, self.dataset_ref, self.resources = store, remote, dataset_ref, resources
        self.active: set[str] = set()
        self.members: dict[str, Relayed] = {}
        self._lock = threading.RLock()
        self._gen = None

    def check(self, config: RunConfig) -> None:
        """Nothing: the executor resolved the device for the cluster and checked its precision."""

    def start(self, store, run_id: str) -> None:
        """Nothing yet: the run is running once a node starts it (the relayed `started`)."""

    def train(self, config: RunConfig, dataset, callbacks, resume_state, name: str):
        return self._run([config], [name], [callbacks], []).get(0)

    def train_group(self, configs, dataset, callbacks, member_callbacks, resume_state, names) -> dict:
        return self._run(list(configs), list(names), member_callbacks, callbacks)

    def cancel(self, run_id: str, reason: str) -> bool:
        """End `run_id` here (False: not a run of this job any more)."""
        import ray

        with self._lock:
            if run_id not in self.active:
                return False
            self.active.discard(run_id)
            if not self.active and self._gen is not None:
                ray.cancel(self._gen, force=True)
            history = self.members[run_id].history
            self.store.record_history(run_id, history)
            status = "pruned" if reason.startswith("pruned") else "cancelled"
            self.store.mark_failed(run_id, f"{reason} after {len(history)} epoch(s) on Ray", status=status)
        return True

    def _run(self, configs, names, member_callbacks, fit_callbacks) -> dict:
        import ray

        callbacks = dict(zip(names, member_callbacks))
        results: dict = {}
        lost: dict[str, str] = {}   # run id -> what happened to its first attempt
        self.active = {r for r in names if self.store.index.get(r)}
        for attempt in (1, 2):
            with self._lock:
                self.members = {r: Relayed(c) for r, c in zip(names, configs)}
                self._gen = self.remote.options(num_returns="streaming", max_retries=0, **self.resources).remote(
                    [c.to_dict() for c in configs], self.dataset_ref, names)
            try:
                for ref in self._gen:
                    run_id, kind, item = ray.get(ref)
                    if kind == "error":
                        raise TrainingFailed(f"on a Ray node: {item}")
                    with self._lock:
                        self._event(run_id, kind, item, callbacks, fit_callbacks, lost, results, names)
                    if not self.active:
                        break
                with self._lock:  # a stream that ended without a run's result: said, not left running
                    for run_id in sorted(self.active):
                        self.store.mark_failed(run_id, "the Ray task ended without the run's result")
                    self.active.clear()
                return results
            except TrainingFailed:
                raise
            except Exception as exc:  # noqa: BLE001 - the task or its node died (or was cancelled here)
                with self._lock:
                    if not self.active:
                        return results
                    for run_id in sorted(self.active):
                        error = (f"the Ray task was lost ({type(exc).__name__}) after "
                                 f"{len(self.members[run_id].history)} epoch(s)")
                        if attempt == 1:
                            lost[run_id] = f"{error}; retried once"
                            self.store.requeue(run_id, lost[run_id])
                        else:
                            self.store.mark_failed(run_id, error, status="interrupted")
        self.active.clear()
        return results

    def _event(self, run_id, kind, item, callbacks, fit_callbacks, lost, results, names) -> None:
        """One relayed event, into the runner's callbacks as if the loop ran here."""
        if kind == "group_checkpoint":
            for cb in fit_callbacks:
                cb.on_epoch_end(RelayedFit(item), item["epoch"], {})
            return
        if run_id not in self.active:   # ended here meanwhile (cancelled, or finished before a retry)
            return
        member = self.members[run_id]
        if kind == "started":
            member.started(item)
            for cb in callbacks[run_id]:
                cb.on_train_begin(member)
            if run_id in lost:  # the run's note keeps what happened to its first attempt
                self.store.set_note(run_id, lost[run_id])
        elif kind == "epoch":
            member.epoch(item)
            for cb in callbacks[run_id]:
                cb.on_epoch_end(member, item["epoch"], member.history[-1])
        elif kind == "result":
            member.finished(item)
            for cb in callbacks[run_id]:
                cb.on_train_end(member)
            self.active.discard(run_id)
            results[names.index(run_id)] = member.result


class Relayed:
    """A run trained on a Ray node, here on the driver: the `trainer` the store writer's callbacks
    are called with, holding what the node relayed (core.callbacks' names: config, device,
    device_name, node, environment, dataset_info, model, history, checkpoint_state, result)."""

    def __init__(self, config: RunConfig):
        self.config = config
        self.device = config.device
        self.device_name = "Ray node"
        self.node: str | None = None
        self.environment: dict = {}
        self.dataset_info: dict = {}
        self.history: list[dict] = []
        self.result = None
        self._weights: bytes | None = None
        self._checkpoint: bytes | None = None

    def started(self, item: dict) -> None:
        self.device, self.device_name, self.node = item["device"], f"Ray node {item['host']}", item["node"]
        self.environment, self.dataset_info = item["environment"], item["dataset"]
        self._weights, self.history = item["weights"], list(item["history"])

    def epoch(self, item: dict) -> None:
        self.history, self.environment = list(item["history"]), item["environment"]
        self._weights, self._checkpoint = item["weights"], item["checkpoint"]

    @property
    def model(self):
        return build_model_from(self.config, self._weights)

    def checkpoint_state(self, epoch: int) -> dict:
        return _state(self._checkpoint)

    def finished(self, payload: dict) -> None:
        from core.training import TrainResult

        model = build_model_from(self.config, payload["weights"])
        self.history = list(payload["history"])
        self.result = TrainResult(config=self.config, model=model, history=self.history, test=payload["test"],
                                  device=payload["device"], device_name=payload["device_name"],
                                  dataset=payload["dataset"], train_index=payload["train_index"],
                                  val_index=payload["val_index"], stop_reason=payload["stop_reason"],
                                  seconds=payload["seconds"], seconds_this_process=payload["seconds"],
                                  extra=payload.get("extra") or {})


class RelayedFit:
    """A vectorised group's whole fit on a Ray node, here on the driver: what the store writer's
    GroupCheckpoint reads (its checkpoint)."""

    def __init__(self, item: dict):
        self._checkpoint = item["checkpoint"]

    def checkpoint_state(self, epoch: int) -> dict:
        return _state(self._checkpoint)


def build_model_from(config: RunConfig, weights: bytes | None):
    """The config's model with the relayed weights (none yet: as built)."""
    from core.models import build_model

    model = build_model(config.architecture(), config.num_outputs)
    if weights is not None:
        model.load_state_dict(_state(weights))
    return model
