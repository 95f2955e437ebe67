"""Drawn digits: the default model for the draw page, and the user's own handwriting set.

The default draw model is the small fast CNN trained with augmentation (small shifts,
rotations, scale and stroke-width changes, core.augment), because people draw differently from
the MNIST writers; bench/drawn_digits.py measures what that buys.

"My handwriting" is a personal test set of digits the user drew and labelled, kept on disk
next to the runs (`<runs>/handwriting.npz`, written atomically) so that any stored run can be
evaluated on it.
"""

from __future__ import annotations

import hashlib
import io
import re
from pathlib import Path

import numpy as np

from core.config import RunConfig
from core.atomic import atomic_save_npz

DRAW_EPOCHS = 4


def default_config(dataset: str = "mnist", **overrides) -> RunConfig:
    """The model the draw page offers to train in one click."""
    settings = {"dataset": dataset, "augment": True, "epochs": DRAW_EPOCHS, "name": "draw model (CNN, augmented)"}
    settings.update(overrides)
    return RunConfig.from_preset("cnn", **settings)


class HandwritingSet:
    """Labelled 28x28 drawings in [0, 1], stored in one npz file: `handwriting.npz` in the run
    store for one user's lab; in classroom mode each person has their own
    (`handwriting/<owner>.npz`), so one student's drawings and clearing touch nobody else's."""

    def __init__(self, root: str | Path, owner: str | None = None):
        if owner is None:
            self.path = Path(root) / "handwriting.npz"
        else:
            # a file name from the name a person typed: letters, digits, '-', '_' only, and a
            # hash of the exact name so "Ana" and "ana" stay two sets
            slug = re.sub(r"[^A-Za-z0-9_-]+", "-", owner).strip("-")[:40] or "person"
            digest = hashlib.sha256(owner.encode()).hexdigest()[:8]
            self.path = Path(root) / "handwriting" / f"{slug}-{digest}.npz"

    def load(self) -> tuple[np.ndarray, np.ndarray]:
        if not self.path.exists():
            return np.zeros((0, 28, 28), np.float32), np.zeros(0, np.int64)
        with np.load(self.path, allow_pickle=False) as z:
            return z["images"].astype(np.float32), z["labels"].astype(np.int64)

    def __len__(self) -> int:
        return len(self.load()[1])

    def add(self, image: np.ndarray, label: int) -> int:
        """Add one prepared drawing with its label; returns the new size of the set."""
        image = np.asarray(image, np.float32)
        if image.shape != (28, 28):
            raise ValueError(f"a drawing must be a 28x28 image, got {image.shape}")
        if not (isinstance(label, (int, np.integer)) and 0 <= int(label) <= 9):
            raise ValueError(f"the label must be a digit 0..9, got {label!r}")
        images, labels = self.load()
        images = np.concatenate([images, image[None]])
        labels = np.append(labels, int(label))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_save_npz(self.path, images=images, labels=labels)
        return len(labels)

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)

    def export(self) -> bytes:
        """The set as npz bytes (images float32 (N, 28, 28) in [0, 1], labels int64)."""
        images, labels = self.load()
        buf = io.BytesIO()
        np.savez_compressed(buf, images=images, labels=labels)
        return buf.getvalue()

    def evaluate(self, classifier) -> dict:
        """Accuracy and confusion matrix of a classifier (core.inference) on the set."""
        from core.metrics import accuracy, confusion_matrix

        images, labels = self.load()
        if not len(labels):
            return {"count": 0, "accuracy": None, "confusion": None, "preds": np.zeros(0, np.int64)}
        preds = classifier.predict_proba(images).argmax(1)
        return {"count": int(len(labels)), "accuracy": accuracy(labels, preds),
                "confusion": confusion_matrix(labels, preds, 10), "preds": preds}
