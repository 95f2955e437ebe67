"""Faults, continued: the disk fills up at several points of a training and of an import (a real
48 MiB tmpfs; skipped, saying why, where one cannot be mounted). After each: the command said
the disk is full in one line, nothing was lost, nothing is stuck or left behind (the checks of
tests/faults/checks.py). Runs before tests/test_faults.py, whose test_counts prints the counts."""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

import pytest

from core.config import RunConfig
from core.runner import train_run
from core.store import RunStore
from tests.faults.checks import COUNTS, LEFTOVER, check_after_fault, cli, content_digests, make_forkserver, run_digests

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def forkserver():
    return make_forkserver()


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
