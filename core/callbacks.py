"""Small callback objects for the training loop, each doing one thing (as in Keras/Lightning):
progress reports, early stopping, a checkpoint every epoch, and cooperative cancel.

The loop calls the hooks; a callback asks the loop to stop by setting `stop_training`.
"""

from __future__ import annotations

import copy
import os
import time
from pathlib import Path
from typing import Callable

from core.atomic import atomic_torch_save


class Callback:
    """The hooks a training loop calls. A callback whose behaviour depends on earlier epochs
    (early stopping's patience, the best loss seen) returns that memory from `state_dict`
    and takes it back in `load_state_dict`: the trainer puts it in every checkpoint, so a
    resumed run behaves exactly as if it had never stopped."""

    stop_training: bool = False
    stop_reason: str = ""

    def on_train_begin(self, trainer) -> None: ...
    def on_epoch_begin(self, trainer, epoch: int) -> None: ...
    def on_batch_end(self, trainer, epoch: int, batch: int, num_batches: int) -> None: ...
    def on_epoch_end(self, trainer, epoch: int, log: dict) -> None: ...
    def on_train_end(self, trainer) -> None: ...
    def state_dict(self) -> dict | None: return None
    def load_state_dict(self, state: dict) -> None: ...


class Progress(Callback):
    """Calls `report(event)` every `every` batches and at every epoch end, for progress bars.

    An event is a plain dict: {"kind": "batch"|"epoch", "epoch" (1-based), "epochs", "batch", "batches",
    "loss" (running mean of this epoch), "samples_per_second", and on epoch end the epoch log}.
    Reading the running loss forces a device sync, so it is done only every `every` batches.
    """

    def __init__(self, report: Callable[[dict], None], every: int = 20):
        self.report, self.every = report, max(1, every)

    def on_epoch_begin(self, trainer, epoch):
        self._t0 = time.perf_counter()

    def on_batch_end(self, trainer, epoch, batch, num_batches):
        if (batch + 1) % self.every and batch + 1 != num_batches:
            return
        elapsed = max(time.perf_counter() - self._t0, 1e-9)
        self.report({
            "kind": "batch", "epoch": epoch + 1, "epochs": trainer.config.epochs, "batch": batch + 1,
            "batches": num_batches, "loss": trainer.running_loss(),
            "samples_per_second": trainer.samples_seen / elapsed,
        })

    def on_epoch_end(self, trainer, epoch, log):
        self.report({"kind": "epoch", "epochs": trainer.config.epochs, **log})


class EarlyStopping(Callback):
    """Stop when `monitor` (validation loss) has not improved for `patience` epochs;
    with `restore_best`, put back the weights of the best epoch at the end."""

    def __init__(self, patience: int, monitor: str = "val_loss", restore_best: bool = True,
                 min_delta: float = 0.0):
        self.patience, self.monitor, self.restore_best, self.min_delta = patience, monitor, restore_best, min_delta
        self.best = float("inf")
        self.best_epoch = -1
        self.best_state = None
        self.wait = 0

    def on_epoch_end(self, trainer, epoch, log):
        value = log[self.monitor]
        if value < self.best - self.min_delta:
            self.best, self.best_epoch, self.wait = value, epoch, 0
            if self.restore_best:
                self.best_state = copy.deepcopy(trainer.model.state_dict())
        else:
            self.wait += 1
            if self.wait >= self.patience:
                self.stop_training = True
                self.stop_reason = (f"early stopping: {self.monitor} did not improve for "
                                    f"{self.patience} epoch(s); best was epoch {self.best_epoch + 1}")

    def on_train_end(self, trainer):
        if self.restore_best and self.best_state is not None and self.stop_training:
            trainer.model.load_state_dict(self.best_state)
            trainer.restored_epoch = self.best_epoch

    def state_dict(self) -> dict:
        return {"best": self.best, "best_epoch": self.best_epoch, "wait": self.wait, "best_state": self.best_state,
                "stop_training": self.stop_training, "stop_reason": self.stop_reason}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.best_epoch, self.wait = state["best"], state["best_epoch"], state["wait"]
        self.best_state = state.get("best_state")
        self.stop_training, self.stop_reason = state.get("stop_training", False), state.get("stop_reason", "")


class Checkpoint(Callback):
    """After every epoch, save what resuming needs (weights, optimizer, scheduler, history).

    Written to a temporary file and renamed, so a crash mid-write never leaves a broken
    checkpoint. Optionally also keeps the best weights (lowest validation loss) in `best_path`:
    the best is judged from the trainer's history, so a resumed run (or a member of a group,
    whose checkpoint the group writes) judges exactly as a straight one.
    """

    def __init__(self, path: str | os.PathLike, best_path: str | os.PathLike | None = None,
                 on_saved: Callable[[int], None] | None = None):
        self.path = Path(path)
        self.best_path = Path(best_path) if best_path else None
        self.on_saved = on_saved

    def on_epoch_end(self, trainer, epoch, log):
        earlier = min((h["val_loss"] for h in trainer.history[:-1]), default=float("inf"))
        if self.best_path is not None and log["val_loss"] < earlier:
            atomic_torch_save({k: v.cpu() for k, v in trainer.model.state_dict().items()}, self.best_path)
        atomic_torch_save(trainer.checkpoint_state(epoch), self.path)
        if self.on_saved:
            self.on_saved(epoch)


class Cancel(Callback):
    """Cooperative cancel: `should_cancel()` is asked after every batch; a truthy answer stops
    the run within that batch, keeping every finished epoch. The answer may be the reason
    ("cancelled" by a user, "pruned" by a sweep). The check must be cheap (a flag, a file's
    existence); the worker process uses a file so another process can set it."""

    def __init__(self, should_cancel: Callable[[], bool | str | None]):
        self.should_cancel = should_cancel
        self.cancelled = False

    def on_batch_end(self, trainer, epoch, batch, num_batches):
        answer = self.should_cancel()
        if answer:
            self.cancelled = self.stop_training = True
            self.stop_reason = answer if isinstance(answer, str) else "cancelled"
