"""Faults, as a suite: nothing stuck, nothing lost, every page opens.

The command line is killed with SIGKILL just before and just after every file rename of a
training, a vectorised k-fold, a fold-by-fold k-fold (its last fold) and a sweep; each file
kind of a run and the index is deleted, truncated or replaced by garbage; the disk fills up
at several points of a training and of an import; a corpus of hostile and wrongly typed
archives is imported. After every fault:

- no run is queued or running without a live process behind it;
- `runs list` and `runs show` answer without a traceback;
- the runs that were there before are byte-identical;
- a run the fault touched says why (its status and error), and can be resumed or deleted;
- no temporary file, staging folder or half-built index is left behind.

At the end every page of the app opens (AppTest) on the store that went through all of it.
The README states the counts (the `COUNTS` this module prints with `-s`).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import multiprocessing
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
from core.cli import main
from core.config import RunConfig
from core.store import ACTIVE, RunStore
from core.store.processes import process_alive
from tests.conftest import ROOT, open_page
from tests.waiting import wait_until

pytestmark = pytest.mark.slow

LEFTOVER = re.compile(r"\.tmp(\.npz)?$|^\.import-|^\.creating-|^\.index\.sqlite\.new-")
COUNTS: dict[str, int] = {}

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

def cli(*args) -> tuple[int, str]:
    """`python -m core ARGS` in this process: its status and everything it printed."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        try:
            code = main(list(args))
        except BaseException:  # noqa: BLE001 - a traceback is a failure of the suite, shown
            import traceback

            traceback.print_exc(file=out)
            code = 99
    return code, out.getvalue()


def run_digests(root: Path, ids) -> dict:
    """Every file of these runs' folders, as (inode, size, modification time in ns): any write,
    truncation or replacement changes it, and a store of a hundred runs is compared in
    milliseconds, not by hashing gigabytes after each of hundreds of faults."""
    out = {}
    for run_id in ids:
        for p in sorted((root / run_id).rglob("*")):
            if p.is_file():
                st = p.stat()
                out[str(p.relative_to(root))] = (st.st_ino, st.st_size, st.st_mtime_ns)
    return out


def content_digests(root: Path, ids) -> dict:
    """The bytes of every file of these runs' folders."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for run_id in ids for p in sorted((root / run_id).rglob("*")) if p.is_file()}


def store_processes(root: Path) -> list[int]:
    """Processes working on this store (a sweep's workers go on after its driver is killed)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and int(proc.name) != os.getpid():
            try:
                if str(root).encode() in (proc / "cmdline").read_bytes():
                    pids.append(int(proc.name))
            except OSError:
                pass
    return pids


def wait_idle(root: Path, timeout: float = 90.0) -> list[dict]:
    """The store's runs once no process works on it any more and none is active behind a
    live process (a sweep's workers finish their trial after the driver is killed)."""
    end = time.time() + timeout
    while True:
        runs = RunStore(root).list()
        alive = [r for r in runs if r["status"] in ACTIVE and process_alive(r["pid"], r["pid_start"])]
        if (not alive and not store_processes(root)) or time.time() > end:
            return runs
        time.sleep(0.2)


def check_after_fault(root: Path, before: dict, old_ids: set, what: str) -> list[str]:
    """Everything that must hold after a fault; the list of what did not (empty: all held)."""
    problems = []
    runs = wait_idle(root)
    for r in runs:
        if r["status"] in ACTIVE:
            problems.append(f"{what}: run {r['id']} is {r['status']} with no live process")
        if r["id"] not in old_ids and r["status"] not in ("finished",) and not r["error"]:
            problems.append(f"{what}: run {r['id']} is {r['status']} and does not say why")
    left = [str(p.relative_to(root)) for p in root.rglob("*") if LEFTOVER.search(p.name)]
    if left:
        problems.append(f"{what}: left behind {left}")
    code, out = cli("runs", "list", "--runs-dir", str(root))
    if code != 0 or "Traceback" in out:
        problems.append(f"{what}: runs list said {out[-500:]}")
    for r in runs:
        if r["id"] not in old_ids:
            code, out = cli("runs", "show", r["id"], "--runs-dir", str(root))
            if code != 0 or "Traceback" in out:
                problems.append(f"{what}: runs show {r['id']} said {out[-500:]}")
    after = run_digests(root, before_ids(before))
    if after != before:
        changed = sorted(k for k in set(after) | set(before) if after.get(k) != before.get(k))
        problems.append(f"{what}: runs that were there before changed: {changed[:5]}")
    return problems


def before_ids(digests: dict) -> set:
    return {k.split(os.sep)[0] for k in digests}


@pytest.fixture(scope="module")
def forkserver():
    """Processes forked from a server that has imported torch and the lab: a kill point costs
    its training, not an interpreter start."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["torch", "core.cli", "core.store.store", "core.training",
                                "tests.faults.kill_at_rename", "tests.faults.forkserver_preload"])
    return ctx


def run_killed(ctx, args: list[str], kill_at: int, when: str, tmp: Path) -> tuple[int, str]:
    from tests.faults.kill_at_rename import run_command

    output = tmp / f"out-{kill_at}-{when}.txt"
    count = tmp / "renames.txt"
    proc = ctx.Process(target=run_command, args=(args, kill_at, when, str(count) if not kill_at else None,
                                                 str(output)))
    proc.start()
    proc.join(300)
    assert proc.exitcode is not None, f"{args} with a kill at rename {kill_at} did not end in 300 s"
    text = output.read_text() if output.exists() else ""
    return proc.exitcode, text


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
            "print(reads, short)\n")
    reader = subprocess.Popen([os.sys.executable, "-c", code, str(store_root / "index.sqlite"), str(len(ids))],
                              stdout=subprocess.PIPE, text=True, cwd=ROOT,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
    time.sleep(1)
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


# --- a full disk -------------------------------------------------------------------------------------

@pytest.fixture
def small_disk(tmp_path):
    """A 48 MiB file system of its own (tmpfs; needs root), unmounted after the test."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small file system here (needs root): {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(disk: Path, leave: int) -> Path:
    """Fill the disk but `leave` bytes."""
    filler = disk / "filler"
    stat = os.statvfs(disk)
    free = stat.f_bavail * stat.f_frsize + (filler.stat().st_size if filler.exists() else 0)
    with open(filler, "wb") as f:
        f.truncate(0)
        f.write(b"\0" * max(0, free - leave))
    return filler


# Free space left when the command starts: nothing (the store cannot even be opened to write),
# less than a run's config, less than its first checkpoint, less than its results.
FREE_BYTES = (0, 8 * 1024, 96 * 1024, 600 * 1024, 2 * 1024 * 1024)


def test_a_full_disk_at_any_point_fails_with_the_reason_and_loses_nothing(forkserver, small_disk, tmp_path, small):
    from tests.faults.kill_at_rename import run_command

    root = small_disk / "runs"
    train_run(RunStore(root), RunConfig.from_preset("mlp-fast", dataset="mnist-sample", epochs=1,
                                                               train_subset=200, name="bystander"), small)
    problems = []
    for leave in FREE_BYTES:
        old_ids = {r["id"] for r in RunStore(root).list()}
        before = run_digests(root, old_ids)
        filler = fill(small_disk, leave)
        output = tmp_path / f"out-{leave}.txt"
        proc = forkserver.Process(target=run_command, args=(
            ["train", "--dataset", "mnist-sample", "--epochs", "2", "--train-subset", "300", "--model", "mlp-fast",
             "--runs-dir", str(root), "--json"], 0, "before", None, str(output)))
        started = time.time()
        proc.start()
        proc.join(120)
        out = output.read_text()
        what = f"{leave // 1024} KiB free"
        if time.time() - started > 30:
            problems.append(f"{what}: the command took {time.time() - started:.0f} s to end (at most 30)")
        if proc.exitcode == 0:
            pass  # it fit: nothing to explain
        elif "Traceback" in out or "error:" not in out or not re.search(r"disk is full|disk full", out):
            problems.append(f"{what}: exit {proc.exitcode}, said {out[-600:]}")
        filler.unlink()
        problems += check_after_fault(root, before, old_ids, what)
        for r in RunStore(root).list():
            if r["id"] not in old_ids and r["status"] == "failed" and "disk" not in (r["error"] or ""):
                problems.append(f"{what}: run failed saying {r['error']!r}, not that the disk is full")
    COUNTS["full-disk points (training)"] = len(FREE_BYTES)
    assert not problems, "\n".join(problems)


def test_an_import_onto_a_full_disk_is_refused_in_one_line_and_changes_nothing(small_disk, tmp_path, small):
    root = small_disk / "runs"
    store = RunStore(root)
    train_run(store, RunConfig.from_preset("mlp-fast", dataset="mnist-sample", epochs=1,
                                                      train_subset=200), small)
    run_id = store.list()[0]["id"]
    archive = tmp_path / "run.zip"
    assert cli("runs", "export", run_id, str(archive), "--runs-dir", str(root))[0] == 0
    for leave in (0, 64 * 1024, archive.stat().st_size // 2):
        before = content_digests(root, [run_id])
        filler = fill(small_disk, leave)
        code, out = cli("runs", "import", str(archive), "--runs-dir", str(root))
        filler.unlink()
        assert code == 2 and "Traceback" not in out and re.search(r"disk is full|disk full", out), out
        assert content_digests(root, [run_id]) == before
        assert [r["id"] for r in RunStore(root).list()] == [run_id]
        assert not [p for p in root.rglob("*") if LEFTOVER.search(p.name)]
    COUNTS["full-disk points (import)"] = 3


# --- archives that import but would break the lab -------------------------------------------------------

def _json_member(name, change):
    def apply(members):
        value = json.loads(members[name])
        members[name] = json.dumps(change(value)).encode()
    return apply


def _npz_member(name, change):
    def apply(members):
        with np.load(io.BytesIO(members[name])) as z:
            arrays = {k: z[k] for k in z.files}
        change(arrays)
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        members[name] = buf.getvalue()
    return apply


def _config(**fields):
    return _json_member("config.json", lambda saved: {**saved, "config": {**saved["config"], **fields}})


WRONGLY_TYPED = {
    "metrics: accuracy as text": _json_member("metrics.json", lambda m: {**m, "test_accuracy": "0.9"}),
    "metrics: accuracy NaN": _json_member("metrics.json", lambda m: {**m, "test_accuracy": float("nan")}),
    "metrics: accuracy 7": _json_member("metrics.json", lambda m: {**m, "best_val_accuracy": 7}),
    "metrics: a list": _json_member("metrics.json", lambda m: [m]),
    "metrics: epochs as text": _json_member("metrics.json", lambda m: {**m, "epochs_run": "1"}),
    "history: minimal": _json_member("history.json", lambda h: [{"val_accuracy": 0.5}]),
    "history: NaN accuracy": _json_member("history.json", lambda h: [{**h[0], "val_accuracy": float("nan")}]),
    "history: epochs out of order": _json_member("history.json", lambda h: [{**h[0], "epoch": 3}]),
    "history: an object": _json_member("history.json", lambda h: {"epochs": h}),
    "history: confusion of text": _json_member("history.json", lambda h: [{**h[0], "val_confusion": [["a"]]}]),
    "predictions: empty": _npz_member("predictions.npz", lambda a: a.update(
        labels=a["labels"][:0], preds=a["preds"][:0], probs=a["probs"][:0])),
    "predictions: label 99": _npz_member("predictions.npz", lambda a: a["labels"].__setitem__(0, 99)),
    "predictions: NaN probabilities": _npz_member("predictions.npz", lambda a: a["probs"].__setitem__(0, np.nan)),
    "predictions: labels as floats": _npz_member("predictions.npz", lambda a: a.update(labels=a["labels"] + 0.5)),
    "predictions: 3 classes": _npz_member("predictions.npz", lambda a: a.update(probs=a["probs"][:, :3])),
    "split: garbage": lambda m: m.__setitem__("split.npz", b"PK\x03\x04 garbage"),
    "split: overlapping": _npz_member("split.npz", lambda a: a.update(val_index=a["train_index"][:5])),
    "config: lr true": _config(lr=True),
    "config: augment 'no'": _config(augment="no"),
    "config: restore_best 'yes'": _config(restore_best="yes"),
    "config: extra a list": _config(extra=[1, 2]),
    "config: name a number": _config(name=123),
    "config: seed 2**80": _config(seed=2**80),
    "config: kfold a number": _config(kfold=3),
    "environment: a list": lambda m: m.__setitem__("environment.json", b"[1, 2]"),
}


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
