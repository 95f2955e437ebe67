"""The run store as a package: a store written before the split opens after it, the index is
a cache that is rebuilt from the run folders, and the scheduler's operations are public and
atomic."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import threading
import zipfile
from pathlib import Path

import pytest

from core.runner import train_run, resume
from core.config import RunConfig
from core.store import RunStore, RunStoreError

OLD_STORE = Path(__file__).parent / "data" / "store-before-split.zip"


@pytest.fixture
def old_store(tmp_path) -> RunStore:
    """The store made by the code before the split (commit 33b1e72): a finished run with tags
    and a note, a cancelled run, a k-fold group of two, a run whose worker was killed, and one
    drawing in "my handwriting"."""
    with zipfile.ZipFile(OLD_STORE) as z:
        z.extractall(tmp_path)
    return RunStore(tmp_path / "runs")


def by_name(store):
    return {r["name"]: r for r in store.list()}


def test_a_store_written_before_the_split_opens_with_every_run(old_store):
    runs = by_name(old_store)
    assert {n: r["status"] for n, r in runs.items()} == {
        "finished one": "finished", "cancelled one": "cancelled", "fold 1 of 2": "finished",
        "fold 2 of 2": "finished", "killed one": "interrupted"}
    assert runs["finished one"]["tags"] == ["course", "old"] and runs["finished one"]["note"] == "written before the split"
    assert {runs[f"fold {i} of 2"]["grp"] for i in (1, 2)} == {"kfold-20261124-120000"}
    first = runs["finished one"]["id"]
    assert old_store.config(first).layers[1]["units"] == 8
    assert len(old_store.history(first)) == 2 and old_store.predictions(first)["probs"].shape == (200, 10)
    assert old_store.load_model(first) is not None
    from core.handwriting import HandwritingSet

    assert len(HandwritingSet(old_store.root)) == 1


@pytest.mark.slow
def test_an_old_interrupted_run_resumes_and_an_old_run_exports(old_store, tmp_path):
    killed = by_name(old_store)["killed one"]
    out = resume(old_store, killed["id"])
    assert out["status"] == "finished" and out["epochs_run"] == 40
    zpath = old_store.export_zip(by_name(old_store)["finished one"]["id"], tmp_path / "old.zip")
    assert RunStore(tmp_path / "other").import_zip(zpath)


def _index_view(store):
    return sorted((r["id"], r["name"], r["status"], tuple(r["tags"]), r["note"], r["grp"], r["epochs_done"],
                   r["test_accuracy"]) for r in store.list())


def test_a_missing_index_is_rebuilt_from_the_run_folders(old_store):
    before = _index_view(old_store)
    old_store.rename(by_name(old_store)["cancelled one"]["id"], "renamed after the split")
    before = _index_view(old_store)
    for suffix in ("", "-wal", "-shm"):
        Path(str(old_store.db_path) + suffix).unlink(missing_ok=True)
    again = RunStore(old_store.root)
    assert _index_view(again) == before
    assert "rebuilt from 5 run folder(s)" in again.notice


@pytest.mark.parametrize("damage", ["garbage", "truncated", "zeroed page"])
def test_a_corrupt_index_is_rebuilt_and_the_broken_file_kept_aside(old_store, damage):
    before = _index_view(old_store)
    raw = old_store.db_path.read_bytes()
    if damage == "garbage":
        old_store.db_path.write_bytes(b"this is not a database" * 100)
    elif damage == "truncated":
        old_store.db_path.write_bytes(raw[:1000])
    else:
        old_store.db_path.write_bytes(raw[:100] + b"\0" * 4096 + raw[4196:])
    damaged = old_store.db_path.read_bytes()
    again = RunStore(old_store.root)
    assert _index_view(again) == before
    assert "unreadable" in again.notice and "Nothing was lost" in again.notice
    kept = list(old_store.root.glob("index.sqlite.broken-*"))
    assert len(kept) == 1 and kept[0].read_bytes() == damaged


def test_an_index_broken_while_the_store_is_open_is_repaired_on_the_next_operation(old_store):
    before = _index_view(old_store)
    old_store.db_path.write_bytes(b"\x00" * 8192)
    assert _index_view(old_store) == before
    assert "rebuilt" in old_store.notice


def test_a_run_folder_deleted_behind_the_stores_back_shows_as_missing(old_store):
    run = by_name(old_store)["finished one"]
    shutil.rmtree(old_store.run_dir(run["id"]))
    shown = by_name(old_store)["finished one"]
    assert shown["status"] == "missing" and "missing" in shown["error"]
    assert old_store.history(run["id"]) == []
    with pytest.raises(RunStoreError, match="folder .* is missing"):
        old_store.config(run["id"])
    old_store.delete(run["id"])
    assert "finished one" not in by_name(old_store)


def test_a_run_folder_the_index_does_not_know_is_added_when_the_store_opens(old_store, tmp_path):
    other = RunStore(tmp_path / "elsewhere")
    with zipfile.ZipFile(OLD_STORE) as z:
        z.extractall(tmp_path / "copy")
    source = next(p for p in (tmp_path / "copy" / "runs").iterdir() if p.is_dir())
    shutil.copytree(source, other.root / source.name)
    again = RunStore(other.root)
    assert [r["id"] for r in again.list()] == [source.name]
    assert "added to it" in again.notice


def test_every_run_folder_holds_what_its_index_row_says(tmp_path, small):
    store = RunStore(tmp_path)
    out = train_run(store, RunConfig(model="custom", layers=[{"type": "flatten"},
                                                                        {"type": "dense", "units": 8}],
                                                dataset="mnist-sample", device="cpu", batch_size=100, epochs=2,
                                                name="kept"), small)
    store.set_tags(out["run_id"], ["a"])
    meta = json.loads((store.run_dir(out["run_id"]) / "run.json").read_text())
    assert meta["name"] == "kept" and meta["status"] == "finished" and meta["tags"] == ["a"]
    row = store.folder(out["run_id"]).index_row()
    live = store.get(out["run_id"])
    for key in ("name", "status", "epochs_done", "test_accuracy", "best_val_accuracy", "model", "lr", "grp"):
        assert row[key] == live[key], key


@pytest.fixture
def live_pids():
    """Three real processes to stand for three workers (a dead pid's runs would be reaped)."""
    procs = [subprocess.Popen(["sleep", "60"]) for _ in range(3)]
    yield [p.pid for p in procs]
    for p in procs:
        p.kill()
        p.wait()



def test_a_reader_that_read_a_job_before_it_was_handed_over_does_not_mark_it_interrupted(tmp_path, live_pids):
    """A waiting worker hands its job to a zygote's fork and exits (core.executors.zygote.hand_over):
    a reader holding the row from before, with the old (now dead) pid, must not mark it interrupted."""
    from core.store.liveness import reap

    store = RunStore(tmp_path)
    run_id = store.create(RunConfig.from_preset("mlp", dataset="mnist-sample", device="cpu"))
    dead = subprocess.Popen(["true"])
    dead.wait()
    store.record_worker(run_id, dead.pid)
    assert store.claim_slot([run_id], "cpu", 1)
    rows = store.index.all()  # read while the first worker is recorded
    store.record_worker(run_id, live_pids[0])  # handed over
    [row] = reap(store.index, store.root, rows)
    assert row["status"] == "running" and row["pid"] == live_pids[0]
    assert store.get(run_id)["status"] == "running"
    store.record_worker(run_id, dead.pid)  # the worker it was handed to died: that is noticed
    assert store.get(run_id)["status"] == "interrupted"

def test_claiming_a_slot_is_atomic_and_first_in_line_first(tmp_path, live_pids):
    store = RunStore(tmp_path)
    config = RunConfig.from_preset("cnn", dataset="mnist-sample", device="cpu")
    ids = [store.create(config) for _ in range(4)]
    for run_id, pid in zip(ids, [live_pids[0], live_pids[1], live_pids[1], live_pids[2]]):
        store.record_worker(run_id, pid)  # runs 2 and 3 are one job (a vectorised group)
    assert [store.queue_position(i) for i in ids] == [1, 2, 3, 4]
    assert not store.claim_slot([ids[1]], "cpu", 1)  # not first in line
    wins = []

    def claim(run_id):
        if store.claim_slot([run_id], "cpu", 1):
            wins.append(run_id)

    threads = [threading.Thread(target=claim, args=(ids[0],)) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert wins == [ids[0]]
    assert store.running_jobs("cpu") == 1
    assert not store.claim_slot([ids[1]], "cpu", 1)  # the one slot is taken
    assert store.claim_slot([ids[1], ids[2]], "cpu", 2)  # a group takes one slot, all its runs start
    assert store.running_jobs("cpu") == 2 and store.queue_position(ids[3]) == 1
    assert sqlite3.connect(store.db_path).execute("PRAGMA integrity_check").fetchone()[0] == "ok"
