"""The one training loop: fit() for one model or for N stacked models (core.fit_models), so that
batches, the CUDA-graph step and its eager fallback, validation, checkpoints and resume, cancel
and progress, L2, early stopping, schedules, augmentation and mixed precision are each written
once, for a single run and for every member of a vectorised group alike.

Speed comes from the data path, not from cleverness in the loop: the whole data set is a float
tensor on the training device, each batch is one gather of its rows, and nothing per sample runs
in Python (no PIL, no DataLoader workers, which re-import the main script under `spawn`, a known
trap inside Streamlit). The step itself and its buffers on the device are core.fit_steps'.

Determinism: each model is initialised from its `seed`, and each epoch reseeds the global RNG
(dropout, augmentation) and each model's shuffle from (seed, epoch). So the same config on the
CPU gives the same weights bit for bit, and a run resumed from the checkpoint of epoch k goes on
exactly as if it had never stopped.

Callbacks (core.callbacks.Callback) are given per member: each model being trained is a
`Member`, the `trainer` its callbacks see (its config, model, history, progress), named (a run's
id in the store), so progress, checkpoint, cancel and the store writer work for a member of a
group exactly as for a single run. Callbacks given to the whole fit see the `Fit` and get the
epoch's logs by member name (the store writes a group's one checkpoint that way). Early stopping
belongs to the loop: each member's is judged first, before any callback sees the epoch.
"""

from __future__ import annotations

import time

import torch

from core.callbacks import Callback, Cancel, EarlyStopping
from core.compiling import evaluate
from core.config import RunConfig
from core.cuda_graphs import keep_tensor_hyperparameters, load_optimizer_state, plain_optimizer_state
from core.devices import device_name
from core.fit_steps import GRAD_NORM_EVERY, Steps, num_batches  # noqa: F401
from core.metrics import confusion_matrix
from core.run_data import epoch_seed, shuffle_order
from core.train_result import TrainResult


def stateful(callbacks: list[Callback]) -> dict[str, Callback]:
    """Callbacks with memory, keyed by class and occurrence (positions differ between a straight
    and a resumed run: the CLI adds a progress bar, a page does not)."""
    out, seen = {}, {}
    for cb in callbacks:
        if type(cb).state_dict is not Callback.state_dict:
            n = seen.get(type(cb).__name__, 0)
            seen[type(cb).__name__] = n + 1
            out[f"{type(cb).__name__}:{n}"] = cb
    return out


class Member:
    """One model being trained, as its callbacks see it (their `trainer`)."""

    def __init__(self, fit: "Fit", index: int, name: str, config: RunConfig, callbacks):
        self.fit, self.index, self.name, self.config = fit, index, name, config
        self.callbacks = list(callbacks)
        self.train_index, self.val_index = fit.models.splits[index]
        self.early = EarlyStopping(config.early_stopping, restore_best=config.restore_best) \
            if config.early_stopping else None
        self.history: list[dict] = []
        self.done = False
        self.stopping: str | None = None   # why it stopped mid-epoch (cancel); finished when the epoch ends
        self.stop_reason = ""
        self.final_state: dict | None = None
        self.restored_epoch: int | None = None
        self.result = None                  # its core.training.TrainResult, once done

    # What callbacks read: the same names as a single run's trainer always had.
    @property
    def model(self):
        return self.fit.models.member_model(self.index)

    @property
    def device(self):
        return self.fit.device

    @property
    def device_name(self) -> str:
        return device_name(self.fit.device)

    @property
    def dataset_info(self) -> dict:
        return self.fit.dataset_info

    @property
    def environment(self) -> dict:
        group = {"group": self.fit.names} if self.fit.models.stacked else {}
        return {**self.fit.environment, **group}

    @property
    def samples_seen(self) -> int:
        return self.fit.samples_seen

    def running_loss(self) -> float:
        return self.fit.running_loss()[self.index]

    def checkpoint_state(self, epoch: int) -> dict:
        """What resuming this model needs: a single model's whole fit; for a member of a stack,
        a pointer to its group (whose one checkpoint a fit-level callback writes)."""
        if not self.fit.models.stacked:
            return self.fit.checkpoint_state(epoch)
        return {"epoch": epoch, "group": self.fit.names, "member": self.index, "history": self.history}

    def requested_stop(self) -> Callback | None:
        return next((cb for cb in self.callbacks if cb.stop_training), None)

    def state(self) -> dict:
        return {"history": self.history, "done": self.done, "stop_reason": self.stop_reason,
                "early": self.early.state_dict() if self.early else None, "final_state": self.final_state,
                "restored_epoch": self.restored_epoch,
                "callbacks": {k: cb.state_dict() for k, cb in stateful(self.callbacks).items()}}

    def load(self, saved: dict) -> None:
        self.history = list(saved.get("history", []))
        self.done, self.stop_reason = saved.get("done", False), saved.get("stop_reason", "")
        self.final_state, self.restored_epoch = saved.get("final_state"), saved.get("restored_epoch")
        if self.early is not None and saved.get("early"):
            self.early.load_state_dict(saved["early"])
        kept = saved.get("callbacks") or {}
        for key, cb in stateful(self.callbacks).items():
            if kept.get(key) is not None:
                cb.load_state_dict(kept[key])


class Fit:
    """fit() for the models of `models` (core.fit_models.OneModel or Stack), one `Member` each."""

    def __init__(self, models, configs: list[RunConfig], device: torch.device, names: list[str] | None = None,
                 member_callbacks: list[list[Callback]] | None = None, callbacks=(), dataset_info: dict | None = None):
        self.models, self.configs, self.device = models, configs, device
        self.base, self.n = configs[0], len(configs)
        self.names = list(names or [str(i) for i in range(self.n)])
        self.callbacks = list(callbacks)
        self.dataset_info = dataset_info or {}
        self.members = [Member(self, i, self.names[i], c, (member_callbacks or [()] * self.n)[i])
                        for i, c in enumerate(configs)]
        self.steps = Steps(models, configs, device)
        self.steps_per_epoch = self.steps.steps_per_epoch
        self.environment = self.steps.describe()
        self.train_seconds = 0.0          # training time of the finished epochs, resumed runs included
        self.samples_seen = 0
        self._resumed_from: int | None = None
        self._t_begin = time.perf_counter()

    def active(self) -> list[Member]:
        return [m for m in self.members if not m.done]

    def running_loss(self) -> list[float]:
        """Each member's mean training loss over this epoch's batches so far (syncs the device)."""
        return self.steps.running_loss()

    # --- checkpoints ------------------------------------------------------------------------------

    def checkpoint_state(self, epoch: int) -> dict:
        """Everything needed to resume after `epoch` (0-based) exactly where training was:
        weights, optimizer and schedule, gradient scaler, each member's history, early stopping
        and callbacks' memory, the training time so far. (The random state needs no saving:
        every epoch reseeds from (seed, epoch).)"""
        steps = self.steps
        return {"epoch": epoch, self.models.weights_key: self.models.module.state_dict(),
                "optimizer": plain_optimizer_state(steps.optimizer.state_dict()),
                "scheduler": steps.scheduler.state_dict() if steps.scheduler else None,
                "scaler": steps.scaler.state_dict() if steps.scaler else None, "train_seconds": self.train_seconds,
                "members": [m.state() for m in self.members]}

    def load_checkpoint(self, state: dict) -> int:
        """Restore a `checkpoint_state`; returns the epoch to continue from."""
        if "members" not in state:   # a single run's checkpoint from before the one loop
            kept = dict(state.get("callbacks") or {})
            early = kept.pop("EarlyStopping:0", None) if self.base.early_stopping else None
            state = {**state, "members": [{"history": state.get("history", []), "early": early, "callbacks": kept}]}
        steps = self.steps
        self.models.module.load_state_dict(state[self.models.weights_key])
        load_optimizer_state(steps.optimizer, state["optimizer"])
        if steps.scheduler and state.get("scheduler"):
            steps.scheduler.load_state_dict(state["scheduler"])
            keep_tensor_hyperparameters(steps.optimizer)
        if steps.scaler and state.get("scaler"):
            steps.scaler.load_state_dict(state["scaler"])
        for member, saved in zip(self.members, state["members"]):
            member.load(saved)
        self.train_seconds = float(state.get("train_seconds") or sum(h["seconds"] for h in self.members[0].history))
        self._resumed_from = int(state["epoch"]) + 1
        return self._resumed_from

    # --- one epoch --------------------------------------------------------------------------------

    def train_epoch(self, epoch: int) -> tuple[list[float], list[float], list[dict]]:
        """One pass over each model's shuffled training rows; returns each member's mean loss,
        accuracy and mean gradient norm of each layer's kernel. A member whose callback asks to
        stop mid-epoch is marked `stopping`; the epoch ends early once every member is."""
        steps = self.steps
        self.models.module.train()
        torch.manual_seed(epoch_seed(self.base.seed, epoch))
        steps.begin_epoch([rows[shuffle_order(epoch_seed(m.config.seed, epoch), len(rows), self.device)]
                           for m, rows in zip(self.members, self.models.rows)])
        self.samples_seen = 0
        active = self.active()
        n_steps = steps.steps_per_epoch
        for b in range(n_steps):
            self.samples_seen += steps.run(b)
            for member in active:
                if member.stopping is not None:
                    continue
                for cb in member.callbacks:
                    cb.on_batch_end(member, epoch, b, n_steps)
                stopper = member.requested_stop()
                if stopper is not None and (b + 1 < n_steps or isinstance(stopper, Cancel)):
                    member.stopping = stopper.stop_reason
            if all(m.stopping is not None for m in active):
                break
        if steps.graphs is not None:
            self.environment = steps.describe()
        return steps.results()

    # --- the epochs -------------------------------------------------------------------------------

    def fit(self, start_epoch: int = 0) -> list[Member]:
        """Train from `start_epoch` (after `load_checkpoint`, the epoch it returned) until every
        member is done: all its epochs, early stopping, or a callback's stop. Returns the members;
        each done one holds its `result`."""
        self._t_begin = time.perf_counter()
        for cb in self.callbacks:
            cb.on_train_begin(self)
        for member in self.active():
            for cb in member.callbacks:
                cb.on_train_begin(member)
        for member in self.active():   # resumed after the epoch that stopped it early
            if member.early is not None and member.early.stop_training:
                self._finish(member, member.early.stop_reason)
        for epoch in range(start_epoch, self.base.epochs):
            active = self.active()
            if not active:
                break
            for cb in self.callbacks:
                cb.on_epoch_begin(self, epoch)
            for member in active:
                for cb in member.callbacks:
                    cb.on_epoch_begin(member, epoch)
            t0 = time.perf_counter()
            lr0 = float(self.steps.optimizer.param_groups[0]["lr"])
            losses, accuracies, norms = self.train_epoch(epoch)
            for member in active:
                if member.stopping is not None:   # stopped mid-epoch: keeps only its finished epochs
                    self._finish(member, member.stopping)
            active = self.active()
            if not active:
                break
            vals = self.models.validate([m.index for m in active])
            seconds = time.perf_counter() - t0
            self.train_seconds += seconds
            logs = {}
            for member in active:
                i, val = member.index, vals[member.index]
                log = {"epoch": epoch + 1, "train_loss": losses[i], "train_accuracy": accuracies[i],
                       "val_loss": val["loss"], "val_accuracy": val["accuracy"], "seconds": seconds,
                       "lr": lr0 * (float(self.steps.rates.scale[i]) if self.steps.rates is not None else 1.0),
                       "samples_per_second": min(self.samples_seen, len(member.train_index)) / seconds,
                       "val_confusion": confusion_matrix(val["labels"], val["preds"],
                                                         num_classes=2 if member.config.num_outputs == 1 else 10
                                                         ).tolist(),
                       "grad_norm": norms[i]}
                if member.config.l2:
                    log["l2_penalty"] = self.models.l2_value(i)
                member.history.append(log)
                logs[member.name] = log
                if member.early is not None:   # judged before any checkpoint of this epoch is written
                    member.early.on_epoch_end(member, epoch, log)
            for cb in self.callbacks:
                cb.on_epoch_end(self, epoch, logs)
            for member in active:
                for cb in member.callbacks:
                    cb.on_epoch_end(member, epoch, logs[member.name])
            for member in active:
                stopper = member.early if member.early is not None and member.early.stop_training \
                    else member.requested_stop()
                if stopper is not None:
                    self._finish(member, stopper.stop_reason)
        for member in self.active():
            self._finish(member, "")
        for cb in self.callbacks:
            cb.on_train_end(self)
        return self.members

    def _finish(self, member: Member, reason: str) -> None:
        """`member` is done (all epochs, early stopping, or stopped): fix its weights (the best
        epoch's, when early stopping restores them), evaluate it on the test set, and tell its
        callbacks (`on_train_end`, with `member.result` set). In a stack the others go on
        computing it, unused, so nothing has to be re-stacked."""
        i, config = member.index, member.config
        seconds_here = time.perf_counter() - self._t_begin
        model = self.models.member_model(i)
        early = member.early
        if early is not None and early.stop_training and early.restore_best and early.best_state is not None:
            model.load_state_dict(early.best_state)
            member.restored_epoch = early.best_epoch
        member.done, member.stop_reason, member.stopping = True, reason, None
        if self.models.stacked:
            member.final_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        test = evaluate(model, self.models.test_x, self.models.test_y, config)
        extra = {"restored_epoch": member.restored_epoch, "resumed_from": self._resumed_from,
                 "environment": member.environment}
        if self.models.stacked:
            extra["vectorized"] = self.n
        member.result = TrainResult(
            config=config, model=self.models.result_model(i, model), history=list(member.history), test=test,
            device=str(self.device), device_name=device_name(self.device), dataset=self.dataset_info,
            train_index=member.train_index, val_index=member.val_index, stop_reason=reason,
            seconds=self.train_seconds, seconds_this_process=seconds_here, extra=extra)
        for cb in member.callbacks:
            cb.on_train_end(member)
