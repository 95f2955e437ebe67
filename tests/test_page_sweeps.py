"""The Sweeps page: build a space (its size shown), launch a sweep that a background driver
runs, then the trials table, best-so-far curve, parallel coordinates and importances."""

from __future__ import annotations


import pytest

from core import sweeps
from core.store import RunStore
from tests.conftest import open_page
from tests.waiting import wait_until


def test_the_space_builder_shows_its_size_and_refuses_a_bad_space():
    at = open_page("pages/sweeps.py")
    assert not at.exception
    at.radio(key="s_strategy").set_value("grid").run()
    assert any("config(s)" in c.value for c in at.caption)
    at.select_slider(key="s_lr").set_value((1e-3, 1e-3)).run()  # an empty range: lr left out, still valid
    assert not at.exception


@pytest.mark.slow
def test_a_sweep_launched_from_the_page_runs_in_the_background_and_shows_its_results(tmp_path, monkeypatch):
    monkeypatch.setenv("MNIST_LAB_RUNS", str(tmp_path))
    at = open_page("pages/sweeps.py")
    at.selectbox(key="s_model").set_value("mlp-fast").run()
    at.number_input(key="s_epochs").set_value(1).run()
    at.radio(key="s_strategy").set_value("random").run()
    at.number_input(key="s_trials").set_value(3).run()
    at = at.button(key="s_go").click().run()
    assert not at.exception, at.exception
    store = RunStore(tmp_path)
    sweep_id = sweeps.list_sweeps(store)[0]["sweep_id"]
    wait_until(lambda: not sweeps.driver_running(store, sweep_id), 240, "the sweep's driver to finish", every=1)
    result = sweeps.sweep_result(store, sweep_id)
    assert len(result["trials"]) == 3 and all(t["status"] == "finished" for t in result["trials"])
    at = open_page("pages/sweeps.py")
    assert not at.exception
    shown = at.dataframe[0].value
    assert sorted(shown["run"]) == sorted(t["run_id"] for t in result["trials"])
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Best validation accuracy"] == f"{result['best']['value']:.2%}"
    assert at.button(key="s_longer")
    # every trial is a normal run: the metrics page opens it
    at = open_page("pages/metrics.py", query={"run": result["best"]["run_id"]})
    assert not at.exception


def test_an_interrupted_sweep_offers_resume_and_the_ray_cluster_is_offered_when_configured(tmp_path, monkeypatch):
    from core.config import RunConfig

    monkeypatch.setenv("MNIST_LAB_RUNS", str(tmp_path))
    store = RunStore(tmp_path)
    spec = sweeps.new_sweep(store, RunConfig.from_preset("mlp", dataset="mnist-sample", epochs=1),
                            {"lr": {"log": [1e-4, 1e-2]}}, "random", trials=2)
    import json
    import os

    folder = sweeps.sweep_folder(store, spec.sweep_id)
    (folder / "driver.json").write_text(json.dumps({"pid": 2 ** 22 + 7, "host": os.uname().nodename}))
    at = open_page("pages/sweeps.py")
    assert not at.exception
    assert at.button(key="s_resume") is not None
    assert "s_executor" not in [r.key for r in at.radio]  # no cluster configured: no choice shown
    monkeypatch.setenv("MNIST_LAB_RAY_ADDRESS", "127.0.0.1:6379")
    for page, key in (("pages/sweeps.py", "s_executor"), ("pages/train.py", "t_executor"),
                      ("pages/kfold.py", "k_executor")):
        at = open_page(page)
        assert at.radio(key=key).options == ["this machine", "the Ray cluster"]
