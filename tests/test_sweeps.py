"""Hyperparameter sweeps on Optuna: every trial a normal run of the store, grouped under its
sweep; grid, random and TPE; pruning of hopeless trials; a sweep that survives its driver."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys

import pytest

from core import sweeps
from core.config import RunConfig
from core.executors.local import LocalExecutor
from core.store import RunStore
from tests.conftest import ROOT, subprocess_env
from tests.waiting import wait_until


def cli(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "core", *args], capture_output=True, text=True, cwd=ROOT,
                          env=subprocess_env(), timeout=timeout)


@pytest.mark.parametrize("content, says", [
    ("{not json", "not valid JSON"),
    ('{"learning_rate": {"log": [0.001, 0.1]}}', "unknown parameter 'learning_rate'"),
    ('{"lr": {"log": [0.1, 0.001]}}', "must be below"),
    ('{"lr": {"log": [0, 0.1]}}', "above 0"),
    ('{"batch_size": {"choice": []}}', "non-empty list"),
    ('{"optimizer": {"choice": ["adam", "rmsprop"]}}', "adam and sgd"),
    ('{"depth": {"int": [1, 2.5]}}', "whole numbers"),
    ('{"dropout": {"float": [0.0, 2.0]}}', "outside"),
    ('[1, 2]', "JSON object"),
])
def test_a_bad_space_file_is_one_error_line_and_exit_status_2(tmp_path, capsys, content, says):
    """In this process for speed (the command's own main); the next test runs a real process."""
    from core.cli import main

    space = tmp_path / "space.json"
    space.write_text(content)
    status = main(["sweep", "--dataset", "mnist-sample", "--model", "mlp", "--trials", "2", "--epochs", "1",
                   "--space", str(space), "--runs-dir", str(tmp_path / "runs"), "--json"])
    err = capsys.readouterr().err
    assert status == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and says in lines[0], err
    assert not list((tmp_path / "runs").glob("2*"))  # nothing trained


@pytest.mark.slow
def test_a_missing_space_file_is_named():
    out = cli("sweep", "--dataset", "mnist-sample", "--space", "/nonexistent/space.json", "--json")
    assert out.returncode == 2 and "/nonexistent/space.json" in out.stderr


def test_space_sizes_and_trial_configs():
    space = {"lr": {"log": [1e-4, 1e-2]}, "batch_size": {"choice": [32, 64]}, "depth": {"int": [1, 3]},
             "width": {"choice": [64, 128]}, "dropout": {"float": [0.0, 0.5]}}
    assert sweeps.space_size(space, "grid") == 4 * 2 * 3 * 2 * 4
    assert sweeps.space_size(space, "tpe") == float("inf")
    assert sweeps.grid_values({"log": [1e-4, 1e-2]}) == [1e-4, 0.000464, 0.00215, 0.01]
    base = RunConfig.from_preset("mlp", dataset="mnist-sample")
    config = sweeps.apply_params(base, {"lr": 0.003, "batch_size": 64, "depth": 2, "width": 128, "dropout": 0.2,
                                        "l2": 1e-4, "optimizer": "sgd", "epochs": 3})
    assert (config.lr, config.batch_size, config.l2, config.optimizer, config.epochs) == (0.003, 64, 1e-4, "sgd", 3)
    assert [layer["type"] for layer in config.architecture()] == ["flatten", "dense", "dropout", "dense", "dropout"]
    assert {layer.get("units") for layer in config.architecture() if layer["type"] == "dense"} == {128}


@pytest.mark.slow
def test_cli_grid_sweep_json_and_every_trial_a_run_of_the_store(tmp_path):
    space = tmp_path / "space.json"
    space.write_text(json.dumps({"lr": {"choice": [0.001, 0.003]}, "batch_size": {"choice": [64]}}))
    out = cli("sweep", "--dataset", "mnist-sample", "--model", "mlp", "--trials", "5", "--epochs", "1",
              "--strategy", "grid", "--space", str(space), "--executor", "local", "--runs-dir", str(tmp_path / "runs"),
              "--json")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["sweep_id"].startswith("sweep-")
    assert len(result["trials"]) == 2  # the grid has two points, fewer than the 5 trials allowed
    assert {t["params"]["lr"] for t in result["trials"]} == {0.001, 0.003}
    store = RunStore(tmp_path / "runs")
    for t in result["trials"]:
        assert set(t) >= {"run_id", "status", "params", "value", "node"}
        assert t["status"] == "finished" and t["node"] == socket.gethostname()
        run = store.get(t["run_id"])
        assert run["grp"] == result["sweep_id"] and store.config(t["run_id"]).lr == t["params"]["lr"]
        assert t["value"] == pytest.approx(max(h["val_accuracy"] for h in store.history(t["run_id"])))
    assert result["best"]["value"] == max(t["value"] for t in result["trials"])


@pytest.mark.slow
def test_pruning_stops_a_hopeless_trial_early(tmp_path):
    store = RunStore(tmp_path)
    # Epochs of this sample take ~0.03 s: enough of them that the driver, which looks at the
    # runs' histories a few times a second, sees the hopeless trial before it could finish.
    base = RunConfig.from_preset("mlp", dataset="mnist-sample", epochs=100, batch_size=100)
    spec = sweeps.new_sweep(store, base, {"lr": {"log": [1e-4, 2.0]}}, "random", trials=3, startup_trials=2)
    result = sweeps.run_sweep(store, LocalExecutor(store), spec,
                              enqueue=[{"lr": 0.002}, {"lr": 0.002}, {"lr": 2.0}])
    hopeless = result["trials"][2]
    assert hopeless["params"]["lr"] == 2.0 and hopeless["status"] == "pruned"
    assert hopeless["epochs"] < 100
    assert [t["status"] for t in result["trials"][:2]] == ["finished", "finished"]


@pytest.mark.slow
def test_cancel_stops_the_whole_sweep(tmp_path):
    store = RunStore(tmp_path)
    base = RunConfig.from_preset("mlp", dataset="mnist-sample", epochs=50)
    spec = sweeps.new_sweep(store, base, {"lr": {"log": [1e-4, 1e-2]}}, "random", trials=5)
    import threading

    def cancel_soon():
        wait_until(lambda: store.list(group=spec.sweep_id), 120, "the sweep's first trial", every=0.2)
        sweeps.request_cancel(store, spec.sweep_id)

    threading.Thread(target=cancel_soon, daemon=True).start()
    result = sweeps.run_sweep(store, LocalExecutor(store), spec)
    assert len(result["trials"]) == 1 and result["trials"][0]["status"] == "cancelled"


@pytest.mark.slow
def test_an_interrupted_sweep_resumes_and_finishes_its_budget(tmp_path):
    runs = tmp_path / "runs"
    args = [sys.executable, "-m", "core", "sweep", "--dataset", "mnist-sample", "--model", "mlp", "--trials", "4",
            "--epochs", "2", "--strategy", "random", "--runs-dir", str(runs), "--json"]
    driver = subprocess.Popen(args, cwd=ROOT, env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    # kill the driver once its second trial has started
    store = wait_until(lambda: (runs / "index.sqlite").exists() and len(RunStore(runs).list()) >= 2 and RunStore(runs),
                       120, "the sweep's second trial", every=0.2)
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    sweep_id = sweeps.list_sweeps(store)[0]["sweep_id"]
    out = cli("sweep", "--resume", sweep_id, "--runs-dir", str(runs), "--json")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["sweep_id"] == sweep_id and len(result["trials"]) == 4
    assert all(t["status"] == "finished" for t in result["trials"]), result["trials"]


@pytest.mark.slow
def test_a_trial_whose_driver_died_before_noting_its_run_is_taken_up_on_resume(tmp_path, monkeypatch):
    """The window the test above hits now and then, made certain: the driver created trial 0's
    run and died before it wrote the run's id into the study and before a worker started it
    (the store reaps such a run as interrupted). Resuming finds the run by its trial number and
    trains it from the start; it is not left behind beside a replacement trial. Its worker is a
    fresh Python (no zygote), seconds from starting the run: the driver waits for it (the resume
    queues the run at once) rather than count the still-stopped run as failed."""
    from core.search_space import suggest

    monkeypatch.setenv("MNIST_LAB_PRELOAD", "0")
    store = RunStore(tmp_path)
    base = RunConfig.from_preset("mlp", dataset="mnist-sample", epochs=1)
    spec = sweeps.new_sweep(store, base, {"lr": {"log": [1e-3, 1e-2]}}, "random", trials=2)
    trial = sweeps.open_study(store, spec).ask()
    orphan = store.create(sweeps.trial_config(base, spec.sweep_id, trial.number, suggest(trial, spec.space)),
                          status="queued", group=spec.sweep_id)
    store.mark_failed(orphan, "the worker process died", status="interrupted")
    result = sweeps.run_sweep(store, LocalExecutor(store), spec, poll_s=0.1)
    assert [t["trial"] for t in result["trials"]] == [0, 1] and result["trials"][0]["run_id"] == orphan
    assert [t["status"] for t in result["trials"]] == ["finished", "finished"], result["trials"]
    told = sweeps.open_study(store, spec).get_trials(deepcopy=False)
    assert [(t.number, t.state.name) for t in told] == [(0, "COMPLETE"), (1, "COMPLETE")]
    assert told[0].value == result["trials"][0]["value"]


@pytest.mark.slow
def test_tpe_finds_better_configs_than_random_with_the_same_small_budget(sample, tmp_path):
    """16 trials (1 epoch on 1,000 sample digits) over a learning rate from 1e-5 to 1 and the
    batch size, for seeds 0-4: TPE's best is better on average, and once past its 4 random
    start-up trials it samples better configs than random search for every seed."""
    import statistics

    from core.executors.inline import InlineExecutor

    space = {"lr": {"log": [1e-5, 1.0]}, "batch_size": {"choice": [32, 64, 128, 256]}}
    best = {"tpe": [], "random": []}
    for seed in range(5):
        later = {}
        for strategy in ("tpe", "random"):
            store = RunStore(tmp_path / f"{strategy}-{seed}")
            base = RunConfig.from_preset("mlp", dataset="mnist-sample", epochs=1, device="cpu", train_subset=1000)
            spec = sweeps.new_sweep(store, base, space, strategy, trials=16, seed=seed, pruning=False,
                                    startup_trials=4)
            result = sweeps.run_sweep(store, InlineExecutor(store), spec, dataset=sample, poll_s=0)
            values = [t["value"] for t in result["trials"]]
            assert len(values) == 16 and None not in values
            best[strategy].append(result["best"]["value"])
            later[strategy] = statistics.mean(values[4:])
        assert later["tpe"] > later["random"], (seed, later)
    assert statistics.mean(best["tpe"]) > statistics.mean(best["random"]), best


@pytest.mark.parametrize("args, says", [
    (["--minutes", "nan"], "--minutes must be a number above 0, got nan"),
    (["--minutes", "-1"], "--minutes must be a number above 0"),
    (["--parallel", "0"], "--parallel must be 1 or more, got 0"),
    (["--parallel", "-1"], "--parallel must be 1 or more, got -1"),
])
@pytest.mark.slow
def test_a_sweep_flag_that_cannot_work_is_one_error_line_and_nothing_is_left(tmp_path, args, says):
    r = cli("sweep", "--dataset", "mnist-sample", "--runs-dir", str(tmp_path), "--trials", "1", *args, timeout=60)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and says in lines[0]
    assert not (tmp_path / "sweeps").exists() or not any((tmp_path / "sweeps").iterdir())


@pytest.mark.slow
def test_a_ray_address_where_nothing_listens_is_refused_within_seconds(tmp_path):
    import socket
    import time

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    start = time.time()
    r = cli("sweep", "--dataset", "mnist-sample", "--runs-dir", str(tmp_path), "--trials", "1", "--executor", "ray",
            "--ray-address", f"127.0.0.1:{port}", timeout=120)
    assert r.returncode == 2 and time.time() - start < 60
    assert "cannot connect to the Ray cluster" in r.stderr and "nothing answers" in r.stderr
