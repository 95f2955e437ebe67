"""The bridge from a training loop to the store: small callbacks (core.callbacks) that write a
run into its folder and index as it trains, so any process can watch it and resume it."""

from __future__ import annotations

import time

from core.callbacks import Callback, Cancel, Checkpoint


class MarkRunning(Callback):
    """Writes the device, data set and environment once the trainer has them."""

    def __init__(self, store, run_id: str, data_dir=None):
        self.store, self.run_id, self.data_dir = store, run_id, data_dir
        self._written: dict = {}

    def on_train_begin(self, trainer):
        from core.devices import device_name
        from core.models import count_parameters

        self.store.mark_running(self.run_id, str(trainer.device), device_name(trainer.device),
                                trainer.dataset_info, count_parameters(trainer.model), data_dir=self.data_dir,
                                extra_environment=trainer.environment)
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


def store_callbacks(store, run_id: str, data_dir=None) -> list[Callback]:
    """What a training run needs to write itself into the store as it goes: mark it running,
    stop on request, checkpoint every epoch (and keep the best weights), record history."""
    folder = store.folder(run_id)
    callbacks = [
        MarkRunning(store, run_id, data_dir),
        Cancel(folder.cancel_reason),
        Checkpoint(folder / "checkpoint.pt", best_path=folder / "weights_best.pt"),
        StoreWriter(store, run_id),
    ]
    return callbacks
