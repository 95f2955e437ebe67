"""Experiment helpers (core.experiments) and the k-fold and under/overfitting pages."""

from __future__ import annotations

import numpy as np
import pytest

from core.config import RunConfig
from core.data import kfold_assignments
from core.experiments import (capacity_configs, config_diff, diagnose, fold_balance, fold_grid, kfold_configs,
                              kfold_summary, overfit_epoch, smooth)
from core.models import summary
from core.store import RunStore
from tests.conftest import open_page
from tests.test_page_train import wait_for


def hist(train, val):
    return [{"epoch": i + 1, "train_loss": t, "val_loss": v, "train_accuracy": 0, "val_accuracy": 0}
            for i, (t, v) in enumerate(zip(train, val))]


def test_overfitting_starts_where_validation_loss_turns_up_while_training_loss_falls():
    assert overfit_epoch(hist([1.0, 0.5, 0.3, 0.2, 0.1], [1.0, 0.6, 0.5, 0.6, 0.8])) == 3
    assert overfit_epoch(hist([1.0, 0.5, 0.3, 0.2], [1.0, 0.6, 0.5, 0.45])) is None
    assert overfit_epoch(hist([1.0, 0.5], [1.0, 2.0])) is None  # too short to tell


def test_diagnosis_follows_the_course_table():
    assert diagnose(0.30, 0.32) == "underfitting"
    assert diagnose(0.01, 0.12) == "overfitting"
    assert diagnose(0.01, 0.02) == "good fit"


def test_smoothing_zero_is_raw_and_keeps_the_first_value():
    v = np.array([1.0, 0.0, 1.0, 0.0])
    assert np.array_equal(smooth(v, 0.0), v)
    s = smooth(v, 0.6)
    assert s[0] == pytest.approx(1.0) and 0 < s[1] < 1


def test_stratified_folds_keep_the_class_balance(sample):
    spread = {}
    for strat in (True, False):
        folds = kfold_assignments(sample.train_labels, 5, seed=0, stratified=strat)
        spread[strat] = fold_balance(sample.train_labels, folds).std(axis=0).mean()
        grid = fold_grid(folds, 30)
        assert len(grid) == 5 * 30 and (grid.groupby("sample").role.apply(lambda r: (r == "validation").sum()) == 1).all()
    assert spread[True] < spread[False] / 3


def test_kfold_configs_and_summary():
    cfgs = kfold_configs(RunConfig.from_preset("cnn"), 4, stratified=False)
    assert [c.kfold for c in cfgs] == [(4, i, False) for i in range(4)]
    runs = [{"status": "finished", "last_val_accuracy": a} for a in (0.9, 0.8)] + [{"status": "running",
                                                                                     "last_val_accuracy": None}]
    s = kfold_summary(runs)
    assert s["folds_done"] == 2 and s["mean"] == pytest.approx(0.85) and s["std"] == pytest.approx(np.std([0.9, 0.8], ddof=1))


def test_a_running_k_fold_shows_its_progress_in_epochs_not_only_folds_done(kept):
    """A vectorised k-fold's folds all end at the very end: "Folds done 0 of 5" until then. The
    group's bar counts epochs: a fold in its third of four epochs, half-way, is 2.5 of 4."""
    import os

    from core.experiments import group_progress

    group = "kfold-20261202-120000-000"
    base = RunConfig.from_preset("mlp", dataset="mnist-sample", epochs=4, device="cpu")
    first, _ = [kept.create(c, status="queued", group=group) for c in kfold_configs(base, 2)]
    kept.record_worker(first, os.getpid())
    assert kept.claim_slot([first], "cpu", 1)  # running, its worker this process
    kept.record_history(first, [{"epoch": e, "train_loss": 0.5, "train_accuracy": 0.8, "val_loss": 0.5,
                                 "val_accuracy": 0.8, "seconds": 1.0} for e in (1, 2)])
    kept.set_progress(first, {"epoch": 3, "epochs": 4, "batch": 30, "batches": 60, "loss": 0.4,
                              "samples_per_second": 1000.0})
    done = group_progress(kept.list(group=group))
    assert done == {"fraction": 2.5 / 8, "epochs_done": 2.5, "epochs": 8, "ended": 0, "runs": 2}
    at = open_page("pages/kfold.py")
    assert not at.exception
    bars = [p.proto.text for p in at.get("progress") if "runs ended" in p.proto.text]
    assert bars == ["0 of 2 runs ended · 31% of their epochs done"]


def test_capacity_configs_grow_the_hidden_layer():
    cfgs = capacity_configs(RunConfig.from_preset("mlp"), [2, 64])
    params = [summary(c.architecture())["total_params"] for c in cfgs]
    assert params == [784 * 2 + 2 + 2 * 10 + 10, 784 * 64 + 64 + 64 * 10 + 10]
    assert [c.extra["capacity"] for c in cfgs] == [2, 64]


def test_config_diff_marks_only_what_differs():
    a, b = RunConfig.from_preset("mlp"), RunConfig.from_preset("mlp", lr=0.1)
    d = config_diff({"a": a, "b": b})
    assert bool(d.loc["lr", "differs"]) and not bool(d.loc["batch_size", "differs"])
    # what a run does not use reads "—", not a value that looks as if it shaped it
    c = RunConfig.from_preset("mlp", optimizer="sgd", loss="binary_crossentropy", positive_class=3)
    d = config_diff({"a": a, "c": c})
    assert (d.loc["positive_class", "a"], d.loc["positive_class", "c"]) == ("—", 3)
    assert (d.loc["momentum", "a"], d.loc["momentum", "c"]) == ("—", 0.9)


@pytest.mark.slow
def test_kfold_page_draws_folds_and_runs_a_real_cross_validation():
    at = open_page("pages/kfold.py")
    assert not at.exception
    at.slider(key="k_k").set_value(3).run()
    at.number_input(key="k_epochs").set_value(1).run()
    at.button(key="k_go").click().run()
    assert not at.exception
    wait_for(at, lambda a: all(r["status"] == "finished" for r in RunStore().list()) and len(RunStore().list()) == 3,
             timeout=180)
    at.run()
    shown = {m.label: m.value for m in at.metric}
    accs = [r["last_val_accuracy"] for r in RunStore().list()]
    assert shown["Folds done"] == "3 of 3"
    assert any("These 3 models train together as one vectorised model" in c.value for c in at.caption)
    assert len({r["pid"] for r in RunStore().list()}) == 1
    assert shown["Mean validation accuracy"] == f"{np.mean(accs):.2%}"
    assert shown["Standard deviation"] == f"{np.std(accs, ddof=1):.2%}"
    # Each fold validated on a different third of the data.
    folds = sorted(RunStore().config(r["id"]).kfold[1] for r in RunStore().list())
    assert folds == [0, 1, 2]


@pytest.mark.slow
def test_fitting_page_runs_the_capacity_experiment_and_diagnoses_it():
    at = open_page("pages/fitting.py")
    assert not at.exception
    at.multiselect(key="f_units").set_value([1, 512]).run()
    at.number_input(key="f_subset").set_value(200).run()
    at.number_input(key="f_epochs").set_value(25).run()
    at.button(key="f_go").click().run()
    wait_for(at, lambda a: len(RunStore().list()) == 2 and all(r["status"] == "finished" for r in RunStore().list()),
             timeout=180)
    at.run()
    table = at.dataframe[-1].value.set_index("capacity")
    assert table.loc[1, "regime"] == "underfitting"      # one hidden unit cannot learn ten digits
    assert table.loc[512, "train_error"] < 0.02           # 512 units memorize 200 digits ...
    assert table.loc[512, "val_error"] > table.loc[512, "train_error"] + 0.05  # ... and do worse on new ones
    assert table.loc[512, "regime"] == "overfitting"
    # The annotated view of any run says where validation loss turns up.
    assert any("Diagnosis" in m.value for m in at.markdown)
