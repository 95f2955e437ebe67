"""Reading a run's files through the store: its config, history, metrics, predictions, weights,
checkpoint and model, each read marking the run damaged when a file turns out damaged. A part of
RunStore (its base class), kept apart from creating, listing and editing runs."""

from __future__ import annotations

from contextlib import contextmanager
from typing import TYPE_CHECKING

import numpy as np

from core.store.files import FileDamaged
from core.store.records import ACTIVE
from core.store.records import Status

if TYPE_CHECKING:  # imported where a config is read (core.store.folder): it imports torch
    from core.config import RunConfig


class RunReaders:
    """RunStore's readers of a run's files (they use its folder(), _existing() and index)."""

    @contextmanager
    def _reading(self, run_id: str):
        """Reading a run's files: one that turns out damaged marks the run damaged in the index
        (listed as such, with the reason, and left out of the pages' pickers from then on);
        the FileDamaged error goes on to the caller. The folder keeps its own status, so a
        repaired file and `runs reindex` bring the run back."""
        try:
            yield
        except FileDamaged as exc:
            self.mark_damaged(run_id, str(exc))
            raise

    def mark_damaged(self, run_id: str, reason: str) -> bool:
        """List a run as damaged (index only); True when it was not yet. Active runs are left to
        their worker, which reports its own failure."""
        row = self.index.get(run_id)
        if row is None or row["status"] in ACTIVE or row["status"] == Status.DAMAGED:
            return False
        return self.index.update_if(run_id, row["status"], status=Status.DAMAGED, error=reason[:2000], progress=None)

    def saved_config(self, run_id: str) -> dict:
        """config.json as stored: the config with the data set and device the run recorded."""
        with self._reading(run_id):
            return self._existing(run_id).saved_config()

    def config(self, run_id: str) -> RunConfig:
        with self._reading(run_id):
            return self._existing(run_id).config()

    def history(self, run_id: str) -> list[dict]:
        folder = self.folder(run_id)
        with self._reading(run_id):
            return folder.history() if folder.exists() else []

    def metrics(self, run_id: str) -> dict:
        folder = self.folder(run_id)
        with self._reading(run_id):
            return folder.metrics() if folder.exists() else {}

    def predictions(self, run_id: str) -> dict[str, np.ndarray]:
        with self._reading(run_id):
            return self._existing(run_id).predictions()

    def load_weights(self, run_id: str, which: str = "best") -> dict:
        """A run's weights as a state dict, loaded without unpickling code (weights_only=True)."""
        with self._reading(run_id):
            return self._existing(run_id).load_weights(which)

    def load_checkpoint(self, run_id: str) -> dict | None:
        with self._reading(run_id):
            return self._existing(run_id).load_checkpoint()

    def load_model(self, run_id: str, which: str = "best"):
        from core.models import build_model

        config = self.config(run_id)
        model = build_model(config.architecture(), config.num_outputs)
        model.load_state_dict(self.load_weights(run_id, which))
        return model.eval()
