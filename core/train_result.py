"""What training one config gives: its model, history, test results and where it ran, for a
single run and for each member of a vectorised group alike (core.fit makes it)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from core.config import RunConfig
from core.models import LabModel, count_parameters


@dataclass
class TrainResult:
    config: RunConfig
    model: LabModel
    history: list[dict]
    test: dict                      # loss, accuracy, preds, probs, labels
    device: str
    device_name: str
    dataset: dict                   # Dataset.describe()
    train_index: np.ndarray
    val_index: np.ndarray
    stop_reason: str = ""
    seconds: float = 0.0            # training time of all epochs, resumed runs included
    seconds_this_process: float = 0.0
    extra: dict = field(default_factory=dict)

    @property
    def epochs_run(self) -> int:
        return len(self.history)

    def summary(self) -> dict:
        """The JSON-friendly result the CLI prints and the run store keeps."""
        return {
            "device": self.device, "device_name": self.device_name, "epochs_run": self.epochs_run,
            "test_accuracy": self.test["accuracy"], "test_loss": self.test["loss"],
            "best_val_accuracy": max((h["val_accuracy"] for h in self.history), default=None),
            "stop_reason": self.stop_reason, "seconds": self.seconds,
            "seconds_this_process": self.seconds_this_process, "resumed_from_epoch": self.extra.get("resumed_from"),
            "parameters": count_parameters(self.model), "dataset": self.dataset,
            "history": [{k: v for k, v in h.items() if k != "val_confusion"} for h in self.history],
        }
