"""Starter runs: what a newcomer sees on the first open, before training anything.

A fresh lab has no runs, and the draw, metrics, under/overfitting, k-fold and backpropagation
pages would all say "train first". Instead, the first time the app opens a store, it starts a
few small runs on the offline sample in the background, the draw model first (a usable canvas
within about a minute on a 2-core laptop; bench/first_open.py measures it), then a k-fold, the
capacity and regularization studies, the slides' MLP recipe next to the tuned one, and the
sigmoid/ReLU gradient comparison. Pages that wait for them show their progress.

They are started once per store: a file `starters.json` in the store folder records it, so a
user who deletes them does not get them back. MNIST_LAB_STARTERS=0 turns them off.
"""

from __future__ import annotations

import json
import os
import time

from core.config import RunConfig
from core.settings import settings
from core.store.records import ACTIVE

MARKER = "starters.json"
DATASET = "mnist-sample"


def enabled() -> bool:
    return settings().starters


def plan() -> list[tuple[str, list[RunConfig], bool]]:
    """(group prefix, configs, vectorize) of every starter, in the order they train."""
    from core.experiments import (activation_configs, capacity_configs, kfold_configs, regularization_base,
                                  regularization_configs)
    from core.handwriting import default_config

    tag = {"starter": True}
    draw = default_config(DATASET, extra=tag)
    kfold = kfold_configs(RunConfig.from_preset("mlp-fast", dataset=DATASET, epochs=3, name="starter: mlp-fast 5-fold",
                                                extra=tag), 5)
    slides = RunConfig.from_preset("mlp", dataset=DATASET, name="starter: the slides' MLP recipe", extra=tag)
    tuned = RunConfig.from_preset("mlp-fast", dataset=DATASET, name="starter: the tuned MLP recipe", extra=tag)
    capacity = capacity_configs(RunConfig.from_preset("mlp", dataset=DATASET, epochs=40, train_subset=500,
                                                      lr_schedule="constant", lr=1e-3, batch_size=32, extra=tag),
                                [2, 8, 128, 2048])
    grads = activation_configs(RunConfig.from_preset("mlp", dataset=DATASET, epochs=3, name="course MLP", extra=tag))
    regularize = regularization_configs(regularization_base(DATASET, 60, 1000).replace(extra=tag), 2048, 1e-3, 0.5)
    # the pages the newcomer opens first get theirs first: draw, k-fold, under/overfitting
    return [("draw", [draw], False), ("kfold-", kfold, True), ("fit-", capacity, False), ("", [slides], False),
            ("", [tuned], False), ("grad-", grads, False), ("reg-", regularize, False)]


def ensure_started(store, executor, dataset=None) -> list[str]:
    """Start the starter runs if this store never had them (and has no runs of its own);
    returns the ids started (empty when nothing was started)."""
    from core.launch import group_name

    path = store.root / MARKER
    if not enabled() or path.exists():
        return []
    try:  # claim: exactly one process creates the marker
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return []
    with os.fdopen(fd, "w") as f:
        if store.list():  # a store someone already uses: leave it as it is
            f.write(json.dumps({"skipped": "the store already had runs", "time": time.time()}))
            return []
        f.write(json.dumps({"started": time.time(), "runs": []}))
    ids = []
    for prefix, configs, vectorize in plan():
        group = group_name(prefix) if prefix and prefix != "draw" else (prefix or None)
        ids += executor.submit(configs, group=group, vectorize=vectorize, dataset=dataset)
    from core.atomic import atomic_write_json

    atomic_write_json(path, {"started": time.time(), "runs": ids})
    return ids


def active_starters(store) -> list[dict]:
    """Starter runs still queued or running."""
    return [r for r in store.list() if r["status"] in ACTIVE and r.get("starter")]
