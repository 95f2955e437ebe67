"""What a training writes into its run as it goes, the run store's side of core.store.writer
and core.runner: running on which device and data, the environment, live progress, each
epoch's history, the first layer's weights, the result, a failure; and the scheduler's marks
(started, its worker, cancel requested, queued again) and the queue (a run's place in it, a job
claiming a device's slot). A part of RunStore (its base class),
kept apart from creating, reading and editing runs."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

import core.store.upkeep as upkeep
from core.store.files import atomic_save_npz, atomic_torch_save, atomic_write_json
from core.store.folder import trained_on
from core.store.processes import environment, host, process_start_time
from core.store.records import Status


class TrainingRecords:
    """RunStore's methods that record a training (they use its folder(), get(), _set() and index)."""

    def mark_running(self, run_id: str, device: str, device_label: str, dataset: dict, params: int,
                     data_dir=None, node: str | None = None, extra_environment: dict | None = None) -> None:
        """The trainer has its device, data and model: record them."""
        pid = os.getpid()
        folder = self.folder(run_id)
        saved = folder.saved_config()
        saved.update({"dataset": dataset, "device": device, "device_name": device_label,
                      "data_dir": str(Path(data_dir).resolve()) if data_dir else saved.get("data_dir")})
        atomic_write_json(folder / "config.json", saved)
        atomic_write_json(folder / "environment.json", {**environment(), "device": device, "device_name": device_label,
                                                        **(extra_environment or {})})
        self._set(run_id, status=Status.RUNNING, pid=pid, pid_start=process_start_time(pid), host=host(),
                  node=node or host(), device=device, params=params, error=None, dataset=trained_on(saved))

    def environment(self, run_id: str) -> dict:
        """The run's environment.json ({} before its training started, or if unreadable)."""
        try:
            data = json.loads((self.folder(run_id) / "environment.json").read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def update_environment(self, run_id: str, fields: dict) -> None:
        """Add to a running run's environment.json what the trainer learnt while training (a
        CUDA graph capture that failed, and why)."""
        path = self.folder(run_id) / "environment.json"
        try:
            current = json.loads(path.read_text())
        except (OSError, ValueError):
            current = {}
        atomic_write_json(path, {**current, **fields})

    def set_vectorized(self, run_id: str, info: dict | None) -> None:
        """How the run is trained with others: {"group": [run ids]} when its group trains as one
        vectorised model, {"reason": why not} when it was asked for and could not be."""
        self.folder(run_id).write_meta(vectorized=info)
        self.index.update(run_id, vectorized=json.dumps(info) if info else None)

    def mark_started(self, run_id: str) -> None:
        """This process is now training the run (before the trainer knows its device). A cancel
        asked for meanwhile (a worker loads torch and the data for seconds after it claims its
        slot) stands: the first batch sees it. A resume clears an old one (core.runner)."""
        pid = os.getpid()
        self._set(run_id, status=Status.RUNNING, pid=pid, pid_start=process_start_time(pid), host=host())

    def record_worker(self, run_id: str, pid: int) -> None:
        """The worker process that will train (or is training) this run."""
        self._set(run_id, pid=pid, pid_start=process_start_time(pid))

    def set_progress(self, run_id: str, progress: dict | None) -> None:
        """Live progress of the epoch in flight (index only: it matters only while a run is active)."""
        self.index.update(run_id, progress=json.dumps(progress) if progress is not None else None)

    def record_history(self, run_id: str, history: list[dict]) -> None:
        """The finished epochs so far (history.json and the index's summary of it)."""
        atomic_write_json(self.folder(run_id) / "history.json", history)
        self.index.update(run_id, epochs_done=len(history), last_val_accuracy=history[-1]["val_accuracy"] if history
                          else None, best_val_accuracy=max((h["val_accuracy"] for h in history), default=None),
                          seconds=sum(h["seconds"] for h in history))

    def save_first_layer(self, run_id: str, model, epoch: float) -> None:
        """The first weight layer as it is now (MLP: 784 inputs per unit; CNN: the filters), for
        the "what the network learned" view that updates while a run trains."""
        from core.models import first_layer_weights

        weights = first_layer_weights(model)
        if weights is not None:
            # Not compressed: written from the training loop (each epoch, and every 2 s within
            # one), where zlib cost 27 ms a write for the course MLP's 784x128 floats (0.4 ms
            # without) and saved 9% of 400 KB.
            atomic_save_npz(self.folder(run_id) / "first_layer.npz", compress=False, weights=weights,
                            epoch=np.float32(epoch))

    def request_cancel(self, run_id: str, reason: str = "cancelled") -> None:
        """Ask a running (or queued) run to stop; the worker stops within one batch. `reason`
        is "cancelled" (by a user) or "pruned" (by a sweep)."""
        run = self.get(run_id)
        if run["status"] == Status.QUEUED:
            self._set(run_id, status=Status.CANCELLED if reason == "cancelled" else reason,
                      error="cancelled before it started" if reason == "cancelled" else f"{reason} before it started")
        if run["status"] != "missing":
            self.folder(run_id).request_cancel(reason)

    def save_result(self, run_id: str, result) -> None:
        """Store the results of a finished (or cancelled / early-stopped / pruned) training."""
        folder = self.folder(run_id)
        test = result.test
        atomic_save_npz(folder / "predictions.npz", labels=test["labels"].astype(np.int64),
                        preds=test["preds"].astype(np.int64), probs=test["probs"].astype(np.float32))
        atomic_save_npz(folder / "split.npz", train_index=result.train_index, val_index=result.val_index)
        atomic_torch_save(result.model.state_dict(), folder / "weights_last.pt")
        summary = result.summary()
        atomic_write_json(folder / "history.json", result.history)
        metrics = {k: summary[k] for k in ("test_accuracy", "test_loss", "best_val_accuracy", "stop_reason",
                                           "seconds", "epochs_run", "parameters")}
        atomic_write_json(folder / "metrics.json", metrics)
        reason = result.stop_reason or ""
        status = "cancelled" if reason == "cancelled" else "pruned" if reason.startswith("pruned") else "finished"
        self._set(run_id, status=status, epochs_done=result.epochs_run, test_accuracy=test["accuracy"],
                  test_loss=test["loss"], seconds=result.seconds, best_val_accuracy=summary["best_val_accuracy"],
                  last_val_accuracy=result.history[-1]["val_accuracy"] if result.history else None, progress=None,
                  error=None)

    def requeue(self, run_id: str, note: str) -> None:
        """Queue a stopped run again (an executor retrying it), saying why in its error field."""
        self._set(run_id, status=Status.QUEUED, error=note[:2000], progress=None)

    def queue_to_resume(self, run_id: str, was: str) -> bool:
        """Queue the stopped run `run_id` (status `was`) again, for a worker that resumes it once
        its device has a free slot (core.executors.local: a resumed run waits its turn as a new
        one does). This process answers for the run until that worker is recorded, as for a new
        run (create): killed in between, the run is reaped as interrupted again, never stuck.
        False: the run is not `was` any more (another resume, or a worker, took it first)."""
        pid = os.getpid()
        fields = dict(status=Status.QUEUED, progress=None, pid=pid, pid_start=process_start_time(pid), host=host(),
                      error=f"resuming after it was {was}: waiting for a free slot on its device")
        if not self.index.update_if(run_id, was, **fields):
            return False
        self._set(run_id, **fields)  # run.json too
        return True

    def mark_failed(self, run_id: str, error: str, status: str = "failed") -> None:
        """Record a run that stopped without results. On a full disk the store's reserve file
        is given up to make room for saying why (in run.json and the index); it comes back the
        next time the store opens with space to spare."""
        import sqlite3

        try:
            self._set(run_id, status=status, error=error[:2000], progress=None)
        except (OSError, sqlite3.Error):
            (self.root / upkeep.RESERVE).unlink(missing_ok=True)
            self._set(run_id, status=status, error=error[:2000], progress=None)

    def queue_position(self, run_id: str) -> int | None:
        """1 for the next queued run of its device, 2 after it, ...; None when not queued."""
        run = self.get(run_id)
        if run["status"] != Status.QUEUED:
            return None
        ids = [r["id"] for r in self.index.queued(run["device"])]
        return ids.index(run_id) + 1 if run_id in ids else None

    def claim_slot(self, run_ids: list[str], device: str, limit: int) -> bool:
        """Start these queued runs (one job) if they are first in their device's queue and the
        device has a free slot; atomic against every other process."""
        ok = self.index.claim(run_ids, device, limit)
        if ok:
            for run_id in run_ids:
                self._set(run_id, status=Status.RUNNING)
        return ok

    def running_jobs(self, device: str) -> int:
        return self.index.running_jobs(device)
