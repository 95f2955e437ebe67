"""The run store: runs written by the trainer, read back by any process, never corrupted."""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import threading
import zipfile

import numpy as np
import pytest
import torch

from core.runner import train_run
from core.config import RunConfig
from core.store import RunStore, RunStoreError, load_state_dict
from tests.conftest import ROOT, subprocess_env
from tests.waiting import wait_until

FAST = dict(dataset="mnist-sample", device="cpu", batch_size=100, epochs=2)


def tiny(**kw):
    return RunConfig(**{"model": "custom", "layers": [{"type": "flatten"}, {"type": "dense", "units": 16}], **FAST, **kw})


@pytest.fixture
def store(tmp_path):
    return RunStore(tmp_path / "runs")


@pytest.fixture
def finished(store, small):
    out = train_run(store, tiny(name="first"), small)
    return out["run_id"]


def test_a_finished_run_has_every_file_and_its_index_row(store, finished):
    folder = store.run_dir(finished)
    for name in ("config.json", "history.json", "metrics.json", "predictions.npz", "split.npz",
                 "weights_last.pt", "weights_best.pt", "checkpoint.pt", "environment.json"):
        assert (folder / name).exists(), name
    run = store.get(finished)
    assert run["status"] == "finished" and run["epochs_done"] == 2 and run["name"] == "first"
    saved = json.loads((folder / "config.json").read_text())
    assert saved["dataset"]["fingerprint"] == "test-small" and saved["device"] == "cpu"
    assert "torch" in json.loads((folder / "environment.json").read_text())
    assert len(store.history(finished)[0]["val_confusion"]) == 10
    preds = store.predictions(finished)
    assert preds["probs"].shape == (300, 10)
    assert store.metrics(finished)["test_accuracy"] == pytest.approx((preds["preds"] == preds["labels"]).mean())


@pytest.mark.slow
def test_a_new_process_sees_finished_runs_without_retraining(store, finished):
    code = ("import json,sys; from core.store import RunStore; s=RunStore(sys.argv[1]); r=s.get(sys.argv[2]);"
            "print(json.dumps([r['status'], len(s.history(sys.argv[2])), float(s.predictions(sys.argv[2])['probs'].sum())]))")
    out = subprocess.run([sys.executable, "-c", code, str(store.root), finished], capture_output=True, text=True,
                         cwd=ROOT, env=subprocess_env(), check=True)
    status, epochs, total = json.loads(out.stdout)
    assert status == "finished" and epochs == 2 and total == pytest.approx(300, rel=1e-4)


def test_loaded_model_reproduces_the_stored_predictions(store, finished, small):
    from core.data import to_tensor

    model = store.load_model(finished, which="last")
    with torch.no_grad():
        probs = torch.softmax(model(to_tensor(small.test_images, small.mean, small.std)), 1).numpy()
    assert np.allclose(probs, store.predictions(finished)["probs"], atol=1e-5)


def test_rename_tag_note_and_filter(store, finished):
    store.rename(finished, "baseline MLP")
    store.set_tags(finished, ["course", "mlp", "course"])
    store.set_note(finished, "the slide's recipe")
    run = store.list(tag="course")[0]
    assert run["name"] == "baseline MLP" and run["tags"] == ["course", "mlp"] and run["note"] == "the slide's recipe"
    assert store.list(text="baseline") and not store.list(text="nothing like it")
    assert not store.list(status="failed")


@pytest.mark.parametrize("bad", ["../escape", "a/b", "..", "x\\y", "nul\0"])
def test_names_and_tags_cannot_escape_the_store(store, finished, bad):
    with pytest.raises(RunStoreError):
        store.rename(finished, bad)
    with pytest.raises(RunStoreError):
        store.set_tags(finished, [bad])
    with pytest.raises(RunStoreError, match="is not a run id"):
        store.get("../" + finished)
    assert store.get(finished)["name"] == "first"


def test_delete_removes_the_row_and_the_files(store, finished):
    folder = store.run_dir(finished)
    store.delete(finished)
    assert not folder.exists() and store.list() == []


class Evil:
    def __reduce__(self):
        return (os.system, ("touch /tmp/mnist-lab-pwned",))


def test_a_model_file_with_a_malicious_pickle_is_refused_without_running_it(store, finished):
    marker = "/tmp/mnist-lab-pwned"
    if os.path.exists(marker):
        os.remove(marker)
    path = store.run_dir(finished) / "weights_best.pt"
    torch.save({"weights": Evil()}, path)  # a pickle that runs a shell command when unpickled
    with pytest.raises(RunStoreError, match="not a valid weights file, refused"):
        store.load_weights(finished, "best")
    with pytest.raises(RunStoreError):
        load_state_dict(path)
    path.write_bytes(pickle.dumps(Evil()))
    with pytest.raises(RunStoreError):
        load_state_dict(path)
    assert not os.path.exists(marker)


def test_export_and_import_round_trip(store, finished, tmp_path):
    store.set_tags(finished, ["keep"])
    zpath = store.export_zip(finished, tmp_path / "run.zip")
    new_id = store.import_zip(zpath)
    assert new_id != finished
    imported = store.get(new_id)
    assert imported["status"] == "finished" and imported["tags"] == ["keep"]
    assert imported["test_accuracy"] == pytest.approx(store.get(finished)["test_accuracy"])
    assert np.array_equal(store.predictions(new_id)["probs"], store.predictions(finished)["probs"])


def _rezip(src, dst, change):
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        items = {n: zin.read(n) for n in zin.namelist()}
        change(items)
        for n, data in items.items():
            zout.writestr(n, data)
    return dst


@pytest.mark.parametrize("change,message", [
    (lambda d: d.__setitem__("config.json", b"{not json"), "config.json is not valid JSON"),
    (lambda d: d.pop("weights_last.pt"), "missing weights_last.pt"),
    (lambda d: d.__setitem__("../../evil.txt", b"x"), "unexpected member '../../evil.txt'"),
    (lambda d: d.__setitem__("/etc/passwd", b"x"), "unexpected member"),
    (lambda d: d.__setitem__("weights_last.pt", pickle.dumps(Evil())), "not a valid weights file"),
    (lambda d: d.__setitem__("manifest.json", b'{"format": "something else"}'), "not an MNIST Lab run export"),
    (lambda d: d.__setitem__("config.json", json.dumps({"config": {"epochs": 0}}).encode()), "not hold a valid run config"),
])
def test_a_corrupt_or_hostile_zip_is_refused_and_the_store_is_unchanged(store, finished, tmp_path, change, message):
    good = store.export_zip(finished, tmp_path / "good.zip")
    bad = _rezip(good, tmp_path / "bad.zip", change)
    before = sorted(p.name for p in store.root.iterdir())
    rows_before = [r["id"] for r in store.list()]
    with pytest.raises(RunStoreError, match=message):
        store.import_zip(bad)
    assert sorted(p.name for p in store.root.iterdir()) == before
    assert [r["id"] for r in store.list()] == rows_before
    assert not (tmp_path.parent / "evil.txt").exists()


def test_not_a_zip_is_refused(store, tmp_path):
    path = tmp_path / "x.zip"
    path.write_bytes(b"hello")
    with pytest.raises(RunStoreError, match="not a zip file"):
        store.import_zip(path)


def test_two_runs_started_from_two_threads_both_finish(store, small):
    results, errors = {}, []

    def go(i):
        try:
            results[i] = train_run(store, tiny(name=f"thread {i}", seed=i), small)
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=go, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    runs = {r["name"]: r for r in store.list()}
    assert set(runs) == {"thread 0", "thread 1"}
    for r in runs.values():
        assert r["status"] == "finished" and r["epochs_done"] == 2 and len(store.history(r["id"])) == 2
    import sqlite3

    assert sqlite3.connect(store.db_path).execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def _cli(*args, **kw):
    return subprocess.Popen([sys.executable, "-m", "core", *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=subprocess_env(), **kw)


@pytest.mark.slow
def test_killed_worker_marks_run_interrupted_and_resume_completes_it(store):
    args = ["--dataset", "mnist-sample", "--model", "cnn", "--epochs", "8", "--batch-size", "16", "--device", "cpu",
            "--runs-dir", str(store.root), "--seed", "3"]
    proc = _cli("train", *args)
    run = wait_until(lambda: proc.poll() is not None or next((r for r in store.list() if r["epochs_done"] >= 2), None),
                     120, "two finished epochs (to kill it mid-epoch 3)", every=0.02)
    assert proc.poll() is None, "the run ended before it could be killed"
    run_id = run["id"]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    run = store.get(run_id)  # reading notices the dead worker
    assert run["status"] == "interrupted" and "died" in run["error"]
    done = run["epochs_done"]
    assert done >= 2 and len(store.history(run_id)) == done
    assert load_state_dict(store.run_dir(run_id) / "checkpoint.pt")["epoch"] == done - 1

    out = subprocess.run([sys.executable, "-m", "core", "runs", "resume", run_id, "--runs-dir", str(store.root), "--json"],
                         cwd=ROOT, capture_output=True, text=True, env=subprocess_env())
    assert out.returncode == 0, out.stderr
    resumed = json.loads(out.stdout.strip().splitlines()[-1])
    assert resumed["status"] == "finished" and resumed["epochs_run"] == 8

    # The same config trained without interruption reaches the same weights.
    straight = train_run(store, RunConfig.from_preset("cnn", dataset="mnist-sample", epochs=8,
                                                                 batch_size=16, device="cpu", seed=3))
    a = store.load_weights(run_id, "last")
    b = store.load_weights(straight["run_id"], "last")
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_runs_cli_lists_shows_exports_imports_deletes(store, finished, tmp_path):
    def run(*args):
        r = subprocess.run([sys.executable, "-m", "core", "runs", *args, "--runs-dir", str(store.root), "--json"],
                           cwd=ROOT, capture_output=True, text=True, env=subprocess_env())
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout.strip().splitlines()[-1])

    rows = run("list")
    assert rows[0]["id"] == finished and rows[0]["status"] == "finished" and rows[0]["epochs_done"] == 2
    assert run("show", finished)["config"]["epochs"] == 2
    zpath = tmp_path / "e.zip"
    run("export", finished, str(zpath))
    new_id = run("import", str(zpath))["imported"]
    run("delete", new_id)
    assert [r["id"] for r in run("list")] == [finished]
    bad = subprocess.run([sys.executable, "-m", "core", "runs", "show", "20000101-000000-abcdef",
                          "--runs-dir", str(store.root)], cwd=ROOT, capture_output=True, text=True,
                         env=subprocess_env())
    assert bad.returncode == 2 and bad.stderr.startswith("error: no run")


def test_a_refused_run_name_leaves_no_folder_behind(tmp_path):
    store = RunStore(tmp_path)
    with pytest.raises(RunStoreError, match="may not contain"):
        store.create(RunConfig.from_preset("mlp", name="a/b"))
    assert [p.name for p in tmp_path.iterdir() if p.is_dir()] == []


def test_a_run_imports_from_an_open_file_as_an_upload_gives_it(tmp_path, small):
    import io

    src = RunStore(tmp_path / "a")
    out = train_run(src, RunConfig.from_preset("mlp", **FAST), small)
    data = src.export_zip(out["run_id"], tmp_path / "run.zip").read_bytes()
    upload = io.BytesIO(data)
    upload.name = "run.zip"
    dst = RunStore(tmp_path / "b")
    new_id = dst.import_zip(upload)
    assert dst.get(new_id)["test_accuracy"] == pytest.approx(out["test_accuracy"])
    with pytest.raises(RunStoreError, match="broken.zip: not a zip file"):
        bad = io.BytesIO(b"not a zip")
        bad.name = "broken.zip"
        dst.import_zip(bad)
