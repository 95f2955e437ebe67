"""The bridge from the training loop (core.fit) to the store: small callbacks (core.callbacks)
that write a run into its folder and index as it trains, so any process can watch it and resume
it. The one writer of a training run: the same callbacks write a single run and each member of
a vectorised group (whose one checkpoint `GroupCheckpoint` writes for the whole stack)."""

from __future__ import annotations

import time

from core.callbacks import Callback, Cancel, Checkpoint

GROUP_CHECKPOINT = "group_checkpoint.pt"


class MarkRunning(Callback):
    """Writes the device, data set and environment once the trainer has them."""

    def __init__(self, store, run_id: str, data_dir=None):
        self.store, self.run_id, self.data_dir = store, run_id, data_dir
        self._written: dict = {}

    def on_train_begin(self, trainer):
        from core.models import count_parameters

        self.store.mark_running(self.run_id, str(trainer.device), trainer.device_name, trainer.dataset_info,
                                count_parameters(trainer.model), data_dir=self.data_dir,
                                node=getattr(trainer, "node", None), extra_environment=trainer.environment)
        self._written = dict(trainer.environment)

    def on_epoch_end(self, trainer, epoch, log):
        if trainer.environment != self._written:  # e.g. graphs captured, or a capture that failed
            self.store.update_environment(self.run_id, trainer.environment)
            self._written = dict(trainer.environment)


class StoreWriter(Callback):
    """Writes history after every epoch, and live progress (at most twice a second) and the
    first layer's weights (at most every two seconds, for the "what it learned" view) while
    an epoch runs."""

    def __init__(self, store, run_id: str, min_interval: float = 0.5, snapshot_interval: float = 2.0):
        self.store, self.run_id = store, run_id
        self.min_interval, self.snapshot_interval = min_interval, snapshot_interval
        self._last = self._last_snapshot = 0.0
        self._t0 = time.perf_counter()

    def on_train_begin(self, trainer):
        self.store.save_first_layer(self.run_id, trainer.model, epoch=len(trainer.history))

    def on_epoch_begin(self, trainer, epoch):
        self._t0 = time.perf_counter()

    def on_batch_end(self, trainer, epoch, batch, num_batches):
        now = time.time()
        if now - self._last < self.min_interval:
            return
        self._last = now
        elapsed = max(time.perf_counter() - self._t0, 1e-9)
        self.store.set_progress(self.run_id, {
            "epoch": epoch + 1, "epochs": trainer.config.epochs, "batch": batch + 1, "batches": num_batches,
            "loss": trainer.running_loss(), "samples_per_second": trainer.samples_seen / elapsed})
        if now - self._last_snapshot >= self.snapshot_interval:
            self._last_snapshot = now
            self.store.save_first_layer(self.run_id, trainer.model, epoch=epoch + (batch + 1) / num_batches)

    def on_epoch_end(self, trainer, epoch, log):
        self.store.record_history(self.run_id, trainer.history)
        self.store.save_first_layer(self.run_id, trainer.model, epoch=epoch + 1)


class SaveResult(Callback):
    """Stores the run's result (weights, test predictions, status) once it is done."""

    def __init__(self, store, run_id: str):
        self.store, self.run_id = store, run_id

    def on_train_end(self, trainer):
        self.store.save_result(self.run_id, trainer.result)


class GroupCheckpoint(Callback):
    """A callback of a vectorised group's whole fit: after every epoch, the stack's checkpoint
    (every member's weights, optimizer state, history; each member's config, so a deleted one
    can be rebuilt), written once and linked into every present member's folder
    (`save_group_checkpoint`). It runs before the members' own callbacks, so a run
    whose history shows an epoch always has a checkpoint of it."""

    def __init__(self, store, run_ids: list[str], configs):
        self.store, self.run_ids = store, run_ids
        self.configs = [c.to_dict() for c in configs]

    def on_epoch_end(self, fit, epoch, logs):
        state = {**fit.checkpoint_state(epoch), "run_ids": self.run_ids, "configs": self.configs}
        save_group_checkpoint(self.store, self.run_ids, state)


def store_callbacks(store, run_id: str, data_dir=None) -> list[Callback]:
    """What a training run (or a member of a group) needs to write itself into the store as it
    goes: mark it running, stop on request, checkpoint every epoch (and keep the best weights),
    record history, store the result."""
    folder = store.folder(run_id)
    callbacks = [
        MarkRunning(store, run_id, data_dir),
        Cancel(folder.cancel_reason),
        Checkpoint(folder / "checkpoint.pt", best_path=folder / "weights_best.pt"),
        StoreWriter(store, run_id),
        SaveResult(store, run_id),
    ]
    return callbacks


def save_group_checkpoint(store, run_ids: list[str], state: dict) -> None:
    """The stack's checkpoint, written once and hard-linked into every present member's folder
    (a copy where the file system has no hard links). Each link replaces its old file
    atomically, so a crash between two leaves each folder a whole checkpoint, old or new."""
    from core.atomic import atomic_link
    from core.store import atomic_torch_save

    folders = [store.folder(r) for r in run_ids if store.folder(r).exists()]
    if not folders:
        return
    first = folders[0] / GROUP_CHECKPOINT
    atomic_torch_save(state, first)
    for folder in folders[1:]:
        atomic_link(first, folder / GROUP_CHECKPOINT)
