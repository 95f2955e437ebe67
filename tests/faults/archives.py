"""A corpus of archives that import but would break the lab: a sound run's archive with one
file wrongly typed (tests/test_faults.py imports each and expects it refused, by name)."""

from __future__ import annotations

import io
import json

import numpy as np


def json_member(name, change):
    def apply(members):
        value = json.loads(members[name])
        members[name] = json.dumps(change(value)).encode()
    return apply


def npz_member(name, change):
    def apply(members):
        with np.load(io.BytesIO(members[name])) as z:
            arrays = {k: z[k] for k in z.files}
        change(arrays)
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        members[name] = buf.getvalue()
    return apply


def config_member(**fields):
    return json_member("config.json", lambda saved: {**saved, "config": {**saved["config"], **fields}})


WRONGLY_TYPED = {
    "metrics: accuracy as text": json_member("metrics.json", lambda m: {**m, "test_accuracy": "0.9"}),
    "metrics: accuracy NaN": json_member("metrics.json", lambda m: {**m, "test_accuracy": float("nan")}),
    "metrics: accuracy 7": json_member("metrics.json", lambda m: {**m, "best_val_accuracy": 7}),
    "metrics: a list": json_member("metrics.json", lambda m: [m]),
    "metrics: epochs as text": json_member("metrics.json", lambda m: {**m, "epochs_run": "1"}),
    "history: minimal": json_member("history.json", lambda h: [{"val_accuracy": 0.5}]),
    "history: NaN accuracy": json_member("history.json", lambda h: [{**h[0], "val_accuracy": float("nan")}]),
    "history: epochs out of order": json_member("history.json", lambda h: [{**h[0], "epoch": 3}]),
    "history: an object": json_member("history.json", lambda h: {"epochs": h}),
    "history: confusion of text": json_member("history.json", lambda h: [{**h[0], "val_confusion": [["a"]]}]),
    "predictions: empty": npz_member("predictions.npz", lambda a: a.update(
        labels=a["labels"][:0], preds=a["preds"][:0], probs=a["probs"][:0])),
    "predictions: label 99": npz_member("predictions.npz", lambda a: a["labels"].__setitem__(0, 99)),
    "predictions: NaN probabilities": npz_member("predictions.npz", lambda a: a["probs"].__setitem__(0, np.nan)),
    "predictions: labels as floats": npz_member("predictions.npz", lambda a: a.update(labels=a["labels"] + 0.5)),
    "predictions: 3 classes": npz_member("predictions.npz", lambda a: a.update(probs=a["probs"][:, :3])),
    "split: garbage": lambda m: m.__setitem__("split.npz", b"PK\x03\x04 garbage"),
    "split: overlapping": npz_member("split.npz", lambda a: a.update(val_index=a["train_index"][:5])),
    "config: lr true": config_member(lr=True),
    "config: augment 'no'": config_member(augment="no"),
    "config: restore_best 'yes'": config_member(restore_best="yes"),
    "config: extra a list": config_member(extra=[1, 2]),
    "config: name a number": config_member(name=123),
    "config: seed 2**80": config_member(seed=2**80),
    "config: kfold a number": config_member(kfold=3),
    "environment: a list": lambda m: m.__setitem__("environment.json", b"[1, 2]"),
}
