"""Resume is exact: a worker killed with SIGKILL in the middle of an epoch and resumed from its
checkpoint ends with the same run as one never interrupted (every epoch's history, learning
rates, best and last weights and test predictions, bit for bit on the CPU), for every option
that carries state from one epoch to the next, for single runs and vectorised groups.

The worker is a real `python -m core worker` process; it is held at a known batch by the
tests' pause hook (tests/hooks/sitecustomize.py: so the kill lands mid-epoch every time, not
by luck; the lab's code has no such hook) and killed with
SIGKILL, which no code can catch. The resume goes through the real `python -m core runs resume`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch

from core.config import RunConfig
from core.executors.inline import InlineExecutor
from core.executors.local import LocalExecutor
from core.runner import resume as resume_here
from core.store import RunStore, RunStoreError
from tests.conftest import ROOT, pause_workers_at, subprocess_env, write_mnist_folder
from tests.waiting import wait_until, wait_for_runs

pytestmark = pytest.mark.slow

TINY = [{"type": "flatten"}, {"type": "dense", "units": 32, "activation": "relu"}]
BASE = dict(model="custom", layers=TINY, dataset="mnist-sample", device="cpu", batch_size=64, epochs=5,
            train_subset=1000, lr=2e-3, seed=4)
PAUSE = "3:5"  # epoch 3, batch 5: two epochs done, the third half-way


def wait_for(store, run_ids, statuses=("finished", "failed", "cancelled", "interrupted", "pruned"), timeout=180):
    return wait_for_runs(store, run_ids, statuses, timeout)


def straight_and_killed(store, monkeypatch, configs, vectorize=False):
    """Train `configs` once straight, and once killed at PAUSE; returns both lists of run ids."""
    executor = LocalExecutor(store)
    straight = executor.submit(configs, group="straight", vectorize=vectorize)
    assert all(r["status"] == "finished" for r in wait_for(store, straight)), [store.get(r) for r in straight]
    pause_workers_at(monkeypatch, PAUSE)
    killed = executor.submit(configs, group="killed", vectorize=vectorize)
    pause_workers_at(monkeypatch, None)
    marker = store.run_dir(killed[0]) / "paused"
    wait_until(marker.exists, 120, "the worker to reach the pause point")
    pid = store.get(killed[0])["pid"]
    os.kill(pid, signal.SIGKILL)
    runs = wait_for(store, killed, statuses=("interrupted",), timeout=30)
    assert all("died" in r["error"] and r["epochs_done"] == 2 for r in runs)
    return straight, killed


def resume(store, run_id, *extra):
    r = subprocess.run([sys.executable, "-m", "core", "runs", "resume", run_id, "--runs-dir", str(store.root),
                        "--json", *extra], cwd=ROOT, capture_output=True, text=True, env=subprocess_env(), timeout=300)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


def assert_same_run(store, a, b):
    ha, hb = store.history(a), store.history(b)
    assert len(ha) == len(hb) and ha
    for x, y in zip(ha, hb):
        assert set(x) == set(y)
        for key in x:
            if key not in ("seconds", "samples_per_second"):
                assert x[key] == y[key], f"epoch {x['epoch']}: {key} {x[key]} != {y[key]}"
    for which in ("last", "best"):
        wa, wb = store.load_weights(a, which), store.load_weights(b, which)
        assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa), which
    pa, pb = store.predictions(a), store.predictions(b)
    assert all(np.array_equal(pa[k], pb[k]) for k in pa)
    ma, mb = store.metrics(a), store.metrics(b)
    assert ma["test_accuracy"] == mb["test_accuracy"] and ma["stop_reason"] == mb["stop_reason"]
    assert store.get(a)["status"] == store.get(b)["status"]


CASES = {
    "onecycle schedule": dict(lr_schedule="onecycle"),
    "cosine schedule": dict(lr_schedule="cosine"),
    "early stopping with restore-best": dict(early_stopping=2, restore_best=True, lr=0.01, epochs=12,
                                             train_subset=300),
    "augmentation": dict(augment=True),
    "dropout": dict(layers=TINY + [{"type": "dropout", "rate": 0.5}]),
    "bf16": dict(precision="bf16"),
    "binary loss": dict(loss="binary_crossentropy", positive_class=3),
    "k-fold run": dict(kfold=(3, 1, True), train_subset=0, batch_size=128),
    "L2": dict(l2=1e-3),
}


@pytest.mark.parametrize("option", list(CASES))
def test_a_run_killed_mid_epoch_resumes_to_the_same_run(tmp_path, monkeypatch, option):
    store = RunStore(tmp_path / "runs")
    config = RunConfig(**{**BASE, **CASES[option]})
    (a,), (b,) = straight_and_killed(store, monkeypatch, [config])
    out = resume(store, b)
    assert out["status"] == store.get(a)["status"] and out["epochs_run"] == len(store.history(a))
    assert [h["epoch"] for h in out["history"]] == list(range(1, out["epochs_run"] + 1))
    assert out["resumed_from_epoch"] == 2
    assert out["seconds"] == pytest.approx(sum(h["seconds"] for h in store.history(b)), rel=1e-6)
    assert 0 < out["seconds_this_process"] < out["seconds"] + 5
    assert_same_run(store, a, b)
    if option == "early stopping with restore-best":
        stop = store.metrics(a)["stop_reason"]
        assert stop.startswith("early stopping") and len(store.history(a)) > 3, stop  # stopped after the kill


GROUPS = {
    "k-fold folds": [RunConfig(**{**BASE, "kfold": (3, fold, True), "train_subset": 0, "batch_size": 128,
                                   "lr_schedule": "onecycle"}) for fold in range(3)],
    "learning-rate grid with early stopping": [RunConfig(**{**BASE, "lr": lr, "early_stopping": 1, "epochs": 8,
                                                            "train_subset": 300}) for lr in (0.002, 0.02, 0.08)],
}


@pytest.mark.parametrize("kind", list(GROUPS))
def test_a_vectorised_group_killed_mid_epoch_resumes_to_the_same_runs(tmp_path, monkeypatch, kind):
    store = RunStore(tmp_path / "runs")
    straight, killed = straight_and_killed(store, monkeypatch, GROUPS[kind], vectorize=True)
    assert store.get(straight[0])["vectorized"] == {"group": straight}
    out = resume(store, killed[1])  # any run of the group resumes the whole group
    assert out["group"] == killed
    for a, b in zip(straight, killed):
        assert_same_run(store, a, b)



def test_deleting_a_member_of_a_killed_group_leaves_the_others_resumable_from_any_folder(tmp_path, monkeypatch):
    """The group's checkpoint is in every member's folder (one file, hard-linked): deleting the
    first member, whose folder once held the only copy, leaves the others resumable, to the same
    runs; the deleted run stays deleted."""
    store = RunStore(tmp_path / "runs")
    straight, killed = straight_and_killed(store, monkeypatch, GROUPS["k-fold folds"], vectorize=True)
    copies = [store.run_dir(r) / "group_checkpoint.pt" for r in killed]
    assert all(c.exists() for c in copies) and len({c.stat().st_ino for c in copies}) == 1
    store.delete(killed[0])
    InlineExecutor(store).resume(killed[2])  # the inline executor resumes a group too (core.runner)
    assert [store.get(r)["status"] for r in killed[1:]] == ["finished", "finished"]
    for a, b in zip(straight[1:], killed[1:]):
        assert_same_run(store, a, b)
    assert not store.run_dir(killed[0]).exists() and killed[0] not in {r["id"] for r in store.list()}

def test_resume_uses_the_data_folder_the_run_was_trained_on_and_refuses_other_data(tmp_path, monkeypatch):
    data = write_mnist_folder(tmp_path / "mnist", n_train=600, n_test=100)
    store = RunStore(tmp_path / "runs")
    config = RunConfig(**{**BASE, "dataset": "mnist", "train_subset": 0})
    executor = LocalExecutor(store, data_dir=str(data))
    pause_workers_at(monkeypatch, "2:3")
    run_id = executor.submit([config])[0]
    pause_workers_at(monkeypatch, None)
    wait_until((store.run_dir(run_id) / "paused").exists, 120, "the worker to reach the pause point")
    os.kill(store.get(run_id)["pid"], signal.SIGKILL)
    wait_for(store, [run_id], statuses=("interrupted",))
    saved = json.loads((store.run_dir(run_id) / "config.json").read_text())
    assert saved["data_dir"] == str(data.resolve())
    # Without the folder (no --data-dir, the recorded one moved away) the run is not resumed on the
    # offline sample, as it silently was before: the message says which data it needs.
    data.rename(tmp_path / "moved")
    with pytest.raises(RunStoreError, match="was trained on mnist from folder .* Pass --data-dir"):
        resume_here(store, run_id)
    assert store.get(run_id)["status"] == "interrupted"
    out = resume(store, run_id, "--data-dir", str(tmp_path / "moved"))
    assert out["status"] == "finished" and out["epochs_run"] == 5


@pytest.mark.parametrize("status", ["running", "queued"])
def test_a_run_whose_creator_died_before_any_worker_is_interrupted_and_resumes_from_the_start(tmp_path, status):
    """Killed between its creation and its start (issue 28): it used to stay queued or running forever,
    holding a slot, with `runs delete` and `runs resume` both refusing it."""
    import subprocess
    import sys

    from core.config import RunConfig
    from core.store import RunStore
    from tests.conftest import ROOT, subprocess_env

    code = ("import os\nfrom core.config import RunConfig\nfrom core.store import RunStore\n"
            f"RunStore({str(tmp_path)!r}).create(RunConfig.from_preset('mlp', dataset='mnist-sample', epochs=1, "
            f"train_subset=300), status={status!r})\nos._exit(9)\n")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=subprocess_env(), check=False, timeout=120)
    store = RunStore(tmp_path)
    (run,) = store.list()
    assert run["status"] == "interrupted" and "died" in run["error"]
    out = resume_here(store, run["id"])
    assert out["status"] == "finished" and store.get(run["id"])["epochs_done"] == 1
    assert RunConfig.from_dict(store.folder(run["id"]).saved_config()["config"]).epochs == 1
