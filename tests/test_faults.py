"""Faults, as a suite: nothing stuck, nothing lost, every page opens.

The command line is killed with SIGKILL just before and just after every file rename of a
training, a vectorised k-fold, a fold-by-fold k-fold (its last fold) and a sweep; each file
kind of a run and the index is deleted, truncated or replaced by garbage; a corpus of wrongly
typed archives (tests/faults/archives.py) is imported; the disk fills up at several points of a
training and of an import (tests/test_disk_full.py). After every fault (tests/faults/checks.py):

- no run is queued or running without a live process behind it;
- `runs list` and `runs show` answer without a traceback;
- the runs that were there before are byte-identical;
- a run the fault touched says why (its status and error), and can be resumed or deleted;
- no temporary file, staging folder or half-built index is left behind.

At the end every page of the app opens (AppTest) on the store that went through all of it.
The README states the counts (the `COUNTS` this module prints with `-s`, the full disk's too
when tests/test_disk_full.py runs in the same session, before it).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from core.runner import train_run
from core.config import RunConfig
from core.store import RunStore
from tests.conftest import ROOT, open_page
from tests.faults.archives import WRONGLY_TYPED
from tests.faults.checks import (COUNTS, check_after_fault, cli, content_digests, make_forkserver, run_digests,
                                 run_killed, wait_idle)
from tests.waiting import wait_until

pytestmark = pytest.mark.slow


# On 600 real digits of the offline sample written as an IDX folder (`data_args`): each of the
# hundreds of kill points costs its process and its writes, not a training.
KILLED_COMMANDS = {
    "train": ["train", "--epochs", "2", "--model", "mlp-fast"],
    "kfold": ["kfold", "--k", "2", "--epochs", "1", "--model", "mlp-fast"],
    "kfold --one-by-one": ["kfold", "--one-by-one", "--k", "2", "--epochs", "1", "--model", "mlp-fast"],
    "sweep": ["sweep", "--trials", "1", "--epochs", "1", "--model", "mlp-fast", "--strategy", "random",
              "--parallel", "1", "--no-pruning"],
}


# --- tools ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def forkserver():
    return make_forkserver()


@pytest.fixture(scope="module")
def data_args(tmp_path_factory, sample) -> list[str]:
    """`--dataset mnist --data-dir D`: D holds 600 training and 100 test digits of the sample."""
    from core.idx import write_idx

    folder = tmp_path_factory.mktemp("idx")
    write_idx(folder / "train-images-idx3-ubyte.gz", sample.train_images[:600])
    write_idx(folder / "train-labels-idx1-ubyte.gz", sample.train_labels[:600].astype(np.uint8))
    write_idx(folder / "t10k-images-idx3-ubyte.gz", sample.test_images[:100])
    write_idx(folder / "t10k-labels-idx1-ubyte.gz", sample.test_labels[:100].astype(np.uint8))
    return ["--dataset", "mnist", "--data-dir", str(folder)]


@pytest.fixture(scope="module")
def store_root(tmp_path_factory, small):
    """One store that goes through every fault of the module, starting with one finished run."""
    root = tmp_path_factory.mktemp("faults") / "runs"
    train_run(RunStore(root), RunConfig.from_preset("mlp-fast", dataset="mnist-sample", epochs=1,
                                                               train_subset=200, name="bystander"), small)
    return root


# --- SIGKILL at every rename -------------------------------------------------------------------------

@pytest.mark.parametrize("command", list(KILLED_COMMANDS))
def test_a_command_killed_at_any_rename_leaves_no_stuck_run_and_changes_no_other_run(command, forkserver, data_args,
                                                                                      store_root, tmp_path):
    args = [*KILLED_COMMANDS[command], *data_args, "--runs-dir", str(store_root), "--json"]
    ids_before = {r["id"] for r in RunStore(store_root).list()}
    code, out = run_killed(forkserver, args, 0, "before", tmp_path)
    assert code == 0, out
    wait_idle(store_root)
    renames = int((tmp_path / "renames.txt").read_text())
    first = 1
    if command == "kfold --one-by-one":  # the first fold's renames are the single training's; the last fold's
        new = [r for r in RunStore(store_root).list() if r["id"] not in ids_before]
        first = renames // 2
        assert len(new) == 2
    problems, points = [], 0
    # The last fold of a fold-by-fold k-fold is a plain training, whose "after" points the
    # `train` command covers: its "before" points are the ones that can differ (the fold's run
    # is created while the first fold's are finished), and they keep the suite's time down.
    sides = ("before",) if command == "kfold --one-by-one" else ("before", "after")
    for kill_at in range(first, renames + 1):
        for when in sides:
            store = RunStore(store_root)
            old_ids = {r["id"] for r in store.list()}
            before = run_digests(store_root, old_ids)
            code, out = run_killed(forkserver, args, kill_at, when, tmp_path)
            what = f"{command} killed {when} rename {kill_at}/{renames}"
            if code != -9:
                problems.append(f"{what}: not killed (exit {code}): {out[-300:]}")
            problems += check_after_fault(store_root, before, old_ids, what)
            points += 1
    COUNTS[f"kill points: {command}"] = points
    assert not problems, "\n".join(problems[:20])


def test_every_interrupted_run_resumes_to_the_end_or_is_said_to_be_a_groups(store_root):
    """After all the kills: each interrupted run resumes (a vectorised k-fold's members resume
    with their group) and ends finished; none stays interrupted without a way out."""
    store = RunStore(store_root)
    interrupted = [r for r in store.list() if r["status"] == "interrupted"]
    assert interrupted, "the kills left no interrupted run: the suite did not kill anything mid-run"
    failures = []
    for r in interrupted:
        if store.get(r["id"])["status"] != "interrupted":
            continue  # resumed with its group already
        code, out = cli("runs", "resume", r["id"], "--runs-dir", str(store_root))
        if code != 0 and "resume the group" in out:
            group_first = re.search(r"runs resume (\S+)`", out).group(1)
            code, out = cli("runs", "resume", group_first, "--runs-dir", str(store_root))
        if code != 0 or "Traceback" in out or store.get(r["id"])["status"] != "finished":
            failures.append(f"{r['id']} ({r['error']}): {out[-300:]}")
    COUNTS["interrupted runs resumed"] = len(interrupted)
    assert not failures, "\n".join(failures[:10])


# --- damaged files of a run ---------------------------------------------------------------------------

RUN_FILES = ("config.json", "run.json", "history.json", "metrics.json", "predictions.npz", "split.npz",
             "weights_last.pt", "weights_best.pt", "checkpoint.pt", "environment.json", "first_layer.npz")
DAMAGES = {
    "deleted": lambda p: p.unlink(),
    "truncated": lambda p: p.write_bytes(p.read_bytes()[: max(1, p.stat().st_size // 2)]),
    "garbage": lambda p: p.write_bytes(b"\x00\x01 not what the lab writes {"),
    "emptied": lambda p: p.write_bytes(b""),
}
# Files a run does without: deleting one leaves a sound run (run.json is rebuilt from the other
# files; the best weights fall back to the last; no split, environment or checkpoint is needed to
# show or use a finished run).
OPTIONAL = {"run.json", "split.npz", "weights_best.pt", "checkpoint.pt", "environment.json", "first_layer.npz"}


def copy_run(root: Path, source_id: str, index: int) -> str:
    """A copy of a run under a new id (the store adds it when it next opens)."""
    new_id = time.strftime("%Y%m%d-%H%M%S") + f"-{index:06x}"
    shutil.copytree(root / source_id, root / new_id)
    meta = json.loads((root / new_id / "run.json").read_text())
    (root / new_id / "run.json").write_text(json.dumps({**meta, "id": new_id, "name": f"copy {index}"}))
    return new_id


@pytest.fixture(scope="module")
def damaged(store_root):
    """One copy of the bystander per (file, damage), damaged so; {(file, damage): run id}."""
    source = next(r["id"] for r in RunStore(store_root).list() if r["name"] == "bystander")
    cases = {}
    for i, name in enumerate(RUN_FILES):
        for j, (damage, apply) in enumerate(DAMAGES.items()):
            run_id = copy_run(store_root, source, 0xD00 + i * 16 + j)
            if (store_root / run_id / name).exists():
                cases[(name, damage)] = run_id
                apply(store_root / run_id / name)
            else:
                shutil.rmtree(store_root / run_id)
    COUNTS["damaged run files"] = len(cases)
    return cases


def test_a_run_with_any_damaged_file_is_listed_as_damaged_naming_the_file_and_nothing_else_changes(
        store_root, damaged):
    store = RunStore(store_root)  # adds the copies to the index
    others = {r["id"] for r in store.list()} - set(damaged.values())
    before = content_digests(store_root, others)
    problems = []
    for (name, damage), run_id in damaged.items():
        code, out = cli("runs", "show", run_id, "--runs-dir", str(store_root), "--json")
        if code != 0 or "Traceback" in out:
            problems.append(f"{name} {damage}: runs show said {out[-300:]}")
            continue
        run = RunStore(store_root).get(run_id)
        if damage == "deleted" and name in OPTIONAL:
            if run["status"] != "finished":
                problems.append(f"{name} {damage}: a sound run listed as {run['status']} ({run['error']})")
        elif run["status"] != "damaged" or name not in (run["error"] or ""):
            problems.append(f"{name} {damage}: listed as {run['status']} ({run['error']}), expected damaged naming it")
    code, out = cli("runs", "list", "--runs-dir", str(store_root))
    assert code == 0 and "Traceback" not in out and "is damaged:" in out, out[-500:]
    assert content_digests(store_root, others) == before
    assert not problems, "\n".join(problems)


def test_a_damaged_run_can_be_deleted_and_a_repaired_one_comes_back_with_reindex(store_root, damaged, tmp_path):
    store = RunStore(store_root)
    run_id = damaged[("history.json", "garbage")]
    assert store.get(run_id)["status"] == "damaged"
    code, out = cli("runs", "export", run_id, str(tmp_path / "x.zip"), "--runs-dir", str(store_root))
    assert code == 2 and "damaged" in out and not (tmp_path / "x.zip").exists(), out
    source = next(r["id"] for r in store.list() if r["name"] == "bystander")
    shutil.copy(store_root / source / "history.json", store_root / run_id / "history.json")
    assert cli("runs", "reindex", "--runs-dir", str(store_root))[0] == 0
    assert RunStore(store_root).get(run_id)["status"] == "finished"
    gone = damaged[("config.json", "garbage")]
    assert cli("runs", "delete", gone, "--runs-dir", str(store_root))[0] == 0
    assert not (store_root / gone).exists()
    del damaged[("config.json", "garbage")]


# --- the index --------------------------------------------------------------------------------------

def _index_files(root: Path):
    return [root / n for n in ("index.sqlite", "index.sqlite-wal", "index.sqlite-shm")]


INDEX_DAMAGES = {
    "deleted": lambda root: [p.unlink(missing_ok=True) for p in _index_files(root)],
    "deleted without its WAL": lambda root: (root / "index.sqlite").unlink(),
    "replaced by a folder": lambda root: ([p.unlink(missing_ok=True) for p in _index_files(root)],
                                          (root / "index.sqlite").mkdir()),
    "garbage": lambda root: (root / "index.sqlite").write_bytes(b"not a database" * 100),
    "truncated": lambda root: (root / "index.sqlite").write_bytes((root / "index.sqlite").read_bytes()[:1000]),
    "emptied": lambda root: (root / "index.sqlite").write_bytes(b""),
    "tags not JSON": lambda root: _sql(root, "UPDATE runs SET tags = '{not json', note = 7, name = 5, progress = '[oops', vectorized = 'x'"),
    "numbers as text": lambda root: _sql(root, "UPDATE runs SET test_accuracy = 'high', epochs = 'many'"),
}


def _sql(root: Path, statement: str) -> None:
    import sqlite3

    db = sqlite3.connect(root / "index.sqlite")
    db.execute(statement)
    db.commit()
    db.close()


@pytest.mark.parametrize("damage", list(INDEX_DAMAGES))
def test_a_damaged_index_is_rebuilt_from_the_folders_with_every_run_and_says_so(store_root, damage):
    wait_idle(store_root)  # a worker of an earlier test may still be writing to its log
    ids = {r["id"] for r in RunStore(store_root).list()}
    before = content_digests(store_root, ids)
    INDEX_DAMAGES[damage](store_root)
    code, out = cli("runs", "list", "--runs-dir", str(store_root), "--json")
    assert code == 0 and "Traceback" not in out, out[-500:]
    listed = {r["id"] for r in json.loads(out.strip().splitlines()[-1])}
    if damage not in ("tags not JSON", "numbers as text"):
        assert listed == ids
    assert cli("runs", "reindex", "--runs-dir", str(store_root))[0] == 0
    assert {r["id"] for r in RunStore(store_root).list()} == ids
    assert content_digests(store_root, ids) == before
    COUNTS["index damages"] = len(INDEX_DAMAGES)


def test_the_index_deleted_or_broken_while_a_training_writes_does_not_stop_it(forkserver, store_root, tmp_path):
    from tests.faults.kill_at_rename import run_command

    for i, damage in enumerate(("deleted", "garbage", "replaced by a folder")):
        output = tmp_path / f"out{i}.txt"
        ids = {r["id"] for r in RunStore(store_root).list()}
        proc = forkserver.Process(target=run_command, args=(
            ["train", "--dataset", "mnist-sample", "--epochs", "6", "--model", "mlp-fast", "--name", f"live {damage}",
             "--runs-dir", str(store_root), "--json"], 0, "before", None, str(output)))
        proc.start()
        new = wait_until(lambda: [r for r in RunStore(store_root).list()
                                  if r["id"] not in ids and r["epochs_done"] >= 1], 120, "the training's first epoch")
        INDEX_DAMAGES[damage](store_root)
        proc.join(300)
        assert proc.exitcode == 0, output.read_text()[-1000:]
        run = RunStore(store_root).get(new[0]["id"])
        assert run["status"] == "finished" and run["epochs_done"] == 6, run


def test_a_running_runs_files_damaged_while_it_writes_are_written_again_and_it_finishes(forkserver, store_root,
                                                                                        tmp_path):
    """The trainer rewrites its run's files whole (history, run.json, weights, checkpoint)
    after each epoch: damaged in between, they are sound again when it ends."""
    from tests.faults.kill_at_rename import run_command

    ids = {r["id"] for r in RunStore(store_root).list()}
    output = tmp_path / "out.txt"
    proc = forkserver.Process(target=run_command, args=(
        ["train", "--dataset", "mnist-sample", "--epochs", "6", "--model", "mlp-fast", "--name", "live files",
         "--runs-dir", str(store_root), "--json"], 0, "before", None, str(output)))
    proc.start()
    new = wait_until(lambda: [r for r in RunStore(store_root).list() if r["id"] not in ids and r["epochs_done"] >= 1],
                     120, "the training's first epoch")
    folder = store_root / new[0]["id"]
    for name in ("history.json", "run.json", "weights_last.pt", "checkpoint.pt", "first_layer.npz"):
        if (folder / name).exists():
            DAMAGES["garbage"](folder / name)
    proc.join(300)
    assert proc.exitcode == 0, output.read_text()[-1000:]
    run = RunStore(store_root).get(new[0]["id"])
    assert run["status"] == "finished" and run["epochs_done"] == 6, run
    assert RunStore(store_root).check_files(new[0]["id"]) is None


def test_reindex_never_hides_a_row_from_a_concurrent_reader(store_root):
    """`runs reindex` ten times while another process lists the store again and again: every
    listing has every run, and no broken-index file is left."""
    ids = {r["id"] for r in RunStore(store_root).list()}
    kept_before = set(store_root.glob("index.sqlite.broken-*"))
    code = ("import sys, time\nfrom core.store.index import RunIndex\nidx = RunIndex(sys.argv[1])\n"
            "n = int(sys.argv[2]); short = 0; end = time.time() + 15; reads = 0\n"
            "while time.time() < end:\n    got = len(idx.ids()); reads += 1\n    short += got < n\n"
            "    if reads == 1: print('reading', flush=True)\n"
            "print(reads, short)\n")
    reader = subprocess.Popen([os.sys.executable, "-c", code, str(store_root / "index.sqlite"), str(len(ids))],
                              stdout=subprocess.PIPE, text=True, cwd=ROOT,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert reader.stdout.readline().strip() == "reading"  # the reader is reading the index
    for _ in range(10):
        assert cli("runs", "reindex", "--runs-dir", str(store_root))[0] == 0
    reads, short = map(int, reader.communicate(timeout=60)[0].split())
    assert reads > 50 and short == 0, (reads, short)
    assert set(store_root.glob("index.sqlite.broken-*")) == kept_before


def test_leftovers_of_a_killed_write_are_removed_once_their_process_is_gone(store_root):
    some = next(r["id"] for r in RunStore(store_root).list())
    dead = 2**22 + 12345  # above Linux's default pid_max: no such process
    files = [store_root / some / f".history.json.{dead}.abcdef.tmp", store_root / f".runs.{dead}.123456.tmp.npz"]
    folders = [store_root / f".creating-{dead}-20260101-000000-abcdef", store_root / f".import-{dead}-abcdef"]
    mine = store_root / some / f".metrics.json.{os.getpid()}.fedcba.tmp"  # a live writer's: kept
    for f in [*files, mine]:
        f.write_bytes(b"half")
    for d in folders:
        d.mkdir()
        (d / "config.json").write_text("{}")
    RunStore(store_root)
    assert not any(p.exists() for p in [*files, *folders]) and mine.exists()
    mine.unlink()


# --- archives that import but would break the lab -------------------------------------------------------

@pytest.fixture(scope="module")
def archive(store_root, tmp_path_factory):
    source = next(r["id"] for r in RunStore(store_root).list() if r["name"] == "bystander")
    path = tmp_path_factory.mktemp("archive") / "bystander.zip"
    RunStore(store_root).export_zip(source, path)
    with zipfile.ZipFile(path) as z:
        return {n: z.read(n) for n in z.namelist()}


@pytest.mark.parametrize("case", list(WRONGLY_TYPED))
def test_an_archive_with_a_wrongly_typed_file_is_refused_naming_the_archive(case, archive, store_root, tmp_path):
    members = dict(archive)
    WRONGLY_TYPED[case](members)
    path = tmp_path / "shared-by-a-friend.zip"
    with zipfile.ZipFile(path, "w") as z:
        for name, content in members.items():
            z.writestr(name, content)
    ids = {r["id"] for r in RunStore(store_root).list()}
    before = content_digests(store_root, ids)
    code, out = cli("runs", "import", str(path), "--runs-dir", str(store_root))
    assert code == 2 and "Traceback" not in out, out
    assert "shared-by-a-friend.zip" in out and ".import-" not in out, out
    assert {r["id"] for r in RunStore(store_root).list()} == ids and content_digests(store_root, ids) == before
    COUNTS["wrongly typed archives"] = len(WRONGLY_TYPED)


def test_the_untouched_archive_imports(archive, store_root, tmp_path):
    """The corpus's base is a sound archive: each case above is refused for its change alone."""
    path = tmp_path / "sound.zip"
    with zipfile.ZipFile(path, "w") as z:
        for name, content in archive.items():
            z.writestr(name, content)
    code, out = cli("runs", "import", str(path), "--runs-dir", str(store_root))
    assert code == 0, out


# --- after all of it: every page opens ------------------------------------------------------------------

def _pages():
    from ui.navigation import PAGES

    return [path for pages in PAGES.values() for path, _, _ in pages]


@pytest.mark.parametrize("page", _pages())
def test_every_page_opens_on_the_store_that_went_through_every_fault(page, store_root, damaged, monkeypatch):
    monkeypatch.setenv("MNIST_LAB_RUNS", str(store_root))
    statuses = {r["status"] for r in RunStore(store_root).list()}
    assert "damaged" in statuses and "finished" in statuses
    at = open_page(page)
    assert not at.exception, f"{page}: {at.exception}"
    assert not [e.value for e in at.error if "Traceback" in str(e.value)]


def test_pages_of_a_running_app_open_after_its_index_is_deleted(store_root, monkeypatch):
    """The app's store object lives as long as the server: an index deleted (or broken) under
    it is rebuilt on the next page load, not an error on every page until a restart."""
    monkeypatch.setenv("MNIST_LAB_RUNS", str(store_root))
    assert not open_page("pages/experiments.py").exception
    for damage in ("deleted", "garbage"):
        INDEX_DAMAGES[damage](store_root)
        for page in ("pages/experiments.py", "pages/metrics.py", "pages/train.py"):
            at = open_page(page)
            assert not at.exception, f"{damage}, {page}: {at.exception}"
    assert len(RunStore(store_root).list()) > 10


def test_counts(capsys):
    """The suite's counts, for the README (`pytest tests/test_faults.py -s -k counts`, after the rest)."""
    with capsys.disabled():
        print("\n" + "\n".join(f"{k}: {v}" for k, v in sorted(COUNTS.items())))
