"""Keeping a store sound whatever happened to it: the index rebuilt from the run folders when
it is missing, corrupt or replaced (also while the lab runs), rebuilt on demand without a
reader ever missing a row, folders written by older versions given their run.json, what a
killed process left half-written removed, and rows of an index edited by hand read safely.

Functions of a RunStore (core.store.store), kept apart from its everyday reading and writing.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from contextlib import contextmanager
from pathlib import Path

from core.atomic import atomic_write_bytes
from core.store.files import RunStoreError
from core.store.folder import META_FIELDS, RUN_ID, RunFolder
from core.store.records import ACTIVE, Status
from core.store.index import IndexBroken
from core.store.processes import process_alive

RESERVE, RESERVE_BYTES = ".reserve", 256 * 1024  # room to record why runs failed on a full disk
# What an interrupted write leaves: core.atomic's temporary files, archive.py's import staging,
# RunStore.create's staging folder, RunIndex.build_aside's new index (each names the writing pid).
LEFTOVER = re.compile(r"^\.(?:.+\.(?P<pid>\d+)\.[0-9a-f]{6}\.tmp(?:\.npz)?|import-(?P<pid2>\d+)-[0-9a-f]{6}"
                      r"|creating-(?P<pid3>\d+)-.+|index\.sqlite\.new-(?P<pid4>\d+)-[0-9a-f]{6}(?:-wal|-shm)?)$")
NUMBERS = ("lr", "batch_size", "epochs", "epochs_done", "params", "seconds", "best_val_accuracy",
           "last_val_accuracy", "test_accuracy", "test_loss")


def folder_row(root: Path, run_id: str) -> dict:
    """A run folder's index row, read from its files; a folder whose config cannot be read is
    listed as damaged with the reason (a run is created under a staging name and renamed, so
    a run folder without its config is damaged, not half-made)."""
    folder = RunFolder(root, run_id)
    try:
        row = folder.index_row()
    except RunStoreError as exc:
        return folder.damaged_row(str(exc))
    if row["status"] in ACTIVE and not process_alive(row["pid"], row["pid_start"]):
        row.update(status=Status.INTERRUPTED, error="its worker was gone when the index was rebuilt")
    return row


def reconcile(store) -> int:
    """Add the run folders the index lacks; how many were added."""
    known = store.index.ids()
    return sum(store.index.insert(folder_row(store.root, run_id)) for run_id in store.folder_ids()
               if run_id not in known)


@contextmanager
def lock(root: Path):
    """The store's lock (a file lock, across processes) around repairing and rebuilding the
    index, so that two processes finding it broken at once repair it once."""
    try:
        import fcntl
    except ImportError:  # Windows: no fcntl; repairs there are not serialized
        yield
        return
    with open(root / "index.lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def repair(store, exc: Exception) -> None:
    """The index file is broken, missing or emptied (deleted while the lab runs, replaced by a
    folder): under the store's lock, unless another process repaired it meanwhile, a complete
    new index is built aside from the folders and renamed into place, and the broken file is
    kept. Readers in between wait on the lock and then read the new index."""
    with lock(store.root):
        if store.db_path.is_file():
            try:
                store.index.check()
                if store.index.ids() or not store.folder_ids():
                    return  # repaired by another process while this one waited for the lock
            except IndexBroken:
                pass
        new = store.index.build_aside([folder_row(store.root, run_id) for run_id in store.folder_ids()])
        kept = store.index.move_aside()
        os.replace(new, store.db_path)
    store.notice = (f"The run index was unreadable ({exc}); it was rebuilt from {len(store.folder_ids())} run "
                    f"folder(s){f' and the broken file was kept as {kept.name}' if kept else ''}. Nothing was lost.")


def rebuild(store) -> int:
    """Every row again from the folders, in place, in one transaction (RunIndex.replace_all)."""
    with lock(store.root):
        return store.index.replace_all(lambda: [folder_row(store.root, run_id) for run_id in store.folder_ids()])


def migrate(store) -> None:
    """Give every run folder written before run.json existed its run.json, from the index
    (name, tags, note, group and status were kept only there), so the folders alone hold
    everything from now on."""
    for row in store.index.all():
        folder = RunFolder(store.root, row["id"]) if RUN_ID.match(row["id"]) else None
        if folder is None or not folder.exists() or (folder / "run.json").exists():
            continue
        meta = {k: row.get(k) for k in META_FIELDS if k not in ("vectorized",)}
        meta["tags"] = loads(row["tags"], list) or []
        try:
            folder.write_meta(**meta)
        except OSError:
            return  # a read-only or full disk: the index still has it; try again next time


def remove_leftovers(store, older_than: float = 600.0) -> int:
    """Remove what a process killed mid-write left behind: the temporary files of atomic
    writes (`.NAME.PID.xxxxxx.tmp`), half-staged imports and run folders being created, and
    half-built indexes, once their process is gone (or, the pid being reused, after
    `older_than` seconds). Returns how many were removed."""
    removed, now = 0, time.time()
    sweeps = store.root / "sweeps"
    places = [store.root, *(store.root / run_id for run_id in store.folder_ids()),
              *(p for p in (sweeps.iterdir() if sweeps.is_dir() else ()) if p.is_dir())]
    for place in places:
        try:
            entries = list(place.iterdir())
        except OSError:
            continue
        for entry in entries:
            match = LEFTOVER.match(entry.name)
            if not match:
                continue
            try:
                age = now - entry.lstat().st_mtime
            except OSError:
                continue
            if process_alive(int(next(g for g in match.groups() if g)), None) and age < older_than:
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            removed += 1
    return removed


def keep_reserve(root: Path) -> None:
    """A small file kept free to delete when the disk is full (RunStore.mark_failed)."""
    path = root / RESERVE
    if not path.exists():
        try:
            atomic_write_bytes(path, bytes(RESERVE_BYTES))
        except OSError:
            pass  # a full or read-only disk: no reserve this time


def loads(text, kind: type):
    """A JSON column of the index, or None when it is empty or not a `kind`."""
    try:
        value = json.loads(text) if text else None
    except (TypeError, ValueError):
        return None
    return value if isinstance(value, kind) else None


def clean_row(run: dict) -> dict:
    """An index row as the pages read it. The index is a cache anyone can edit: a column that
    is not what the lab writes reads as empty (the run folder keeps the truth; `runs reindex`
    restores it)."""
    run["tags"] = [t for t in loads(run["tags"], list) or [] if isinstance(t, str)]
    run["progress"] = loads(run["progress"], dict)
    run["vectorized"] = loads(run.get("vectorized"), dict)
    for key in ("name", "note"):
        if not isinstance(run.get(key), str):
            run[key] = str(run.get(key) or "")
    for key in NUMBERS:
        if not isinstance(run.get(key), (int, float)) or isinstance(run.get(key), bool):
            run[key] = 0 if key == "epochs_done" else None
    return run
