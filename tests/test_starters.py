"""A first open is never empty: a fresh lab trains small starter runs in the background, the
pages show their progress and then their results, and a user who deletes them does not get
them back."""

from __future__ import annotations

import json

import pytest

from core.runner import train_run
from core import starters
from core.config import RunConfig
from core.executors.local import LocalExecutor
from core.store import RunStore
from tests.conftest import open_page
from tests.waiting import wait_for_runs


def test_starters_plan_the_draw_model_first_then_the_pages_a_newcomer_opens():
    plan = starters.plan()
    prefixes = [prefix for prefix, _, _ in plan]
    assert prefixes[:3] == ["draw", "kfold-", "fit-"]
    assert {"reg-", "grad-"} <= set(prefixes)
    configs = [c for _, group, _ in plan for c in group]
    assert all(c.dataset == "mnist-sample" and c.extra.get("starter") for c in configs)
    assert {c.model for c in configs} >= {"mlp", "mlp-fast"}  # the experiments page compares the two recipes


def test_a_store_that_already_has_runs_gets_no_starters(tmp_path, monkeypatch, small):
    monkeypatch.setenv("MNIST_LAB_STARTERS", "1")
    store = RunStore(tmp_path)
    train_run(store, RunConfig.from_preset("mlp", dataset="mnist-sample", epochs=1, train_subset=200),
                                small)
    assert starters.ensure_started(store, LocalExecutor(store)) == []
    assert len(store.list()) == 1
    assert "skipped" in json.loads((tmp_path / starters.MARKER).read_text())


def wait(store, ids, timeout=240):
    wait_for_runs(store, ids, timeout=timeout, every=0.5)


@pytest.mark.slow
def test_first_open_starts_the_starters_shows_progress_then_results_and_never_again(tmp_path, monkeypatch):
    monkeypatch.setenv("MNIST_LAB_RUNS", str(tmp_path))
    monkeypatch.setenv("MNIST_LAB_STARTERS", "1")
    store = RunStore(tmp_path)
    at = open_page("pages/metrics.py")  # the first open: nothing clicked
    assert not at.exception
    started = json.loads((tmp_path / starters.MARKER).read_text())["runs"]
    assert len(started) == sum(len(c) for _, c, _ in starters.plan())
    assert any("starter runs are training" in i.value for i in at.info)  # waits with progress, not "train first"
    assert at.get("progress")
    draw = next(r for r in store.list() if r["name"].startswith("draw model"))
    at = open_page("pages/draw.py")
    assert any("is training" in i.value for i in at.info)
    try:
        wait(store, [draw["id"]])
        assert store.get(draw["id"])["status"] == "finished"
        at = open_page("pages/draw.py")
        assert not at.exception and at.selectbox(key="d_run").value == draw["id"]  # the canvas has its model
        at = open_page("pages/metrics.py")
        assert {m.label for m in at.metric} >= {"Test accuracy", "Mistakes"}
    finally:
        executor = LocalExecutor(store)
        for run in store.list():
            if run["status"] in ("queued", "running"):
                executor.cancel(run["id"])
        wait(store, started)
    for run in store.list():
        store.delete(run["id"])
    open_page("pages/metrics.py")  # a user who deleted them: not started again
    assert starters.ensure_started(RunStore(tmp_path), LocalExecutor(store)) == []
    assert store.list() == []
