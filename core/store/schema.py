"""What a run's result files must hold, checked the same way when the lab reads its own runs
and when it imports someone else's: the lab never shows a number from a file it could not
have written (an accuracy of NaN or 7, a label 99, a history without epochs).

Each check returns the value when it is right and raises SchemaError saying what is wrong;
the caller adds which file (core.store.folder: the run is then listed as damaged;
core.store.archive: the archive is refused).
"""

from __future__ import annotations

import math

import numpy as np

EPOCH_FIELDS = ("epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "seconds")
ACCURACIES = ("train_accuracy", "val_accuracy")


class SchemaError(ValueError):
    """A file's content is not what the lab writes."""


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _fraction(value) -> bool:
    return _number(value) and math.isfinite(value) and 0 <= value <= 1


def check_history(history) -> list[dict]:
    """history.json: a list of epochs numbered 1, 2, ... with their losses (a diverged run's
    loss may be NaN), accuracies between 0 and 1 and seconds."""
    if not isinstance(history, list):
        raise SchemaError(f"is a {type(history).__name__}, not a list of epochs")
    for i, entry in enumerate(history, start=1):
        if not isinstance(entry, dict):
            raise SchemaError(f"epoch {i} is a {type(entry).__name__}, not an object")
        missing = [k for k in EPOCH_FIELDS if k not in entry]
        if missing:
            raise SchemaError(f"epoch {i} lacks {', '.join(missing)}")
        if entry["epoch"] != i or isinstance(entry["epoch"], bool):
            raise SchemaError(f"entry {i} says epoch {entry['epoch']!r} (epochs are numbered 1, 2, ...)")
        for k in ACCURACIES:
            if not _fraction(entry[k]):
                raise SchemaError(f"epoch {i}: {k} is {entry[k]!r}, not a number between 0 and 1")
        for k in ("train_loss", "val_loss"):
            if not _number(entry[k]):
                raise SchemaError(f"epoch {i}: {k} is {entry[k]!r}, not a number")
        if not (_number(entry["seconds"]) and math.isfinite(entry["seconds"]) and entry["seconds"] >= 0):
            raise SchemaError(f"epoch {i}: seconds is {entry['seconds']!r}")
        confusion = entry.get("val_confusion")
        if confusion is not None and not (isinstance(confusion, list) and all(
                isinstance(row, list) and all(_number(c) and c >= 0 for c in row) for row in confusion)):
            raise SchemaError(f"epoch {i}: val_confusion is not a matrix of counts")
    return history


_METRIC_KINDS = {"test_accuracy": "fraction", "best_val_accuracy": "fraction", "test_loss": "number",
                 "seconds": "seconds", "epochs_run": "count", "parameters": "count", "stop_reason": "text"}


def check_metrics(metrics) -> dict:
    """metrics.json: the final numbers, each of its kind or null."""
    if not isinstance(metrics, dict):
        raise SchemaError(f"is a {type(metrics).__name__}, not an object")
    for key, kind in _METRIC_KINDS.items():
        value = metrics.get(key)
        if value is None:
            continue
        ok = {"fraction": _fraction(value), "number": _number(value),
              "seconds": _number(value) and math.isfinite(value) and value >= 0,
              "count": isinstance(value, int) and not isinstance(value, bool) and value >= 0,
              "text": isinstance(value, str)}[kind]
        if not ok:
            raise SchemaError(f"{key} is {value!r}, not a {'number between 0 and 1' if kind == 'fraction' else kind}")
    return metrics


def check_predictions(arrays: dict) -> dict:
    """predictions.npz: for n >= 1 test digits, their labels and predicted classes (whole
    numbers below the number of classes) and one row of probabilities each."""
    missing = [k for k in ("labels", "preds", "probs") if k not in arrays]
    if missing:
        raise SchemaError(f"lacks {', '.join(missing)}")
    labels, preds, probs = arrays["labels"], arrays["preds"], arrays["probs"]
    if probs.ndim != 2 or not 2 <= probs.shape[1] <= 1000 or probs.shape[0] < 1:
        raise SchemaError(f"probs has shape {probs.shape}; expected (digits >= 1, classes >= 2)")
    n, classes = probs.shape
    for name, a in (("labels", labels), ("preds", preds)):
        if a.shape != (n,) or not np.issubdtype(a.dtype, np.integer):
            raise SchemaError(f"{name} has shape {a.shape} and type {a.dtype}; expected {n} whole numbers")
        if a.size and (a.min() < 0 or a.max() >= classes):
            raise SchemaError(f"{name} holds {int(a.min())}..{int(a.max())}; classes are 0..{classes - 1}")
    if not np.issubdtype(probs.dtype, np.floating) or not np.all(np.isfinite(probs)) \
            or probs.min() < 0 or probs.max() > 1:
        raise SchemaError("probs are not probabilities (numbers between 0 and 1)")
    return arrays


def check_split(arrays: dict) -> dict:
    """split.npz: the train and validation indices, whole numbers >= 0, no digit in both."""
    for name in ("train_index", "val_index"):
        a = arrays.get(name)
        if a is None or a.ndim != 1 or not np.issubdtype(a.dtype, np.integer) or (a.size and a.min() < 0):
            raise SchemaError(f"{name} is missing or not a list of indices")
    if np.intersect1d(arrays["train_index"], arrays["val_index"]).size:
        raise SchemaError("a digit is in both the training and the validation part")
    return arrays
