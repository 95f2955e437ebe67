"""The store's index: one SQLite row per run, so that listing, filtering and the job queue are
fast and safe from several processes at once (WAL mode: many readers, one writer at a time).

The index is a cache of the run folders (core.store.folder), never the only copy of
anything a user would miss: when its file is missing, unreadable or corrupt, the store moves
the broken file aside and rebuilds it from the folders (`RunIndex.rebuild`). Only live
progress and the pids of workers are kept nowhere else; they matter only while a run is active.

The scheduler's operations are here, as single SQL statements that SQLite serializes
against every other writer: claiming a slot on a device, listing a device's queue.
"""

from __future__ import annotations

import os
import secrets
import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable
from urllib.request import pathname2url

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL DEFAULT '',
    status TEXT NOT NULL,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    model TEXT, dataset TEXT, device TEXT, optimizer TEXT, lr REAL, batch_size INTEGER,
    epochs INTEGER, epochs_done INTEGER NOT NULL DEFAULT 0,
    params INTEGER, seconds REAL,
    best_val_accuracy REAL, last_val_accuracy REAL, test_accuracy REAL, test_loss REAL,
    tags TEXT NOT NULL DEFAULT '[]', note TEXT NOT NULL DEFAULT '', error TEXT,
    pid INTEGER, pid_start TEXT, host TEXT,
    progress TEXT, config TEXT NOT NULL, grp TEXT
);
CREATE INDEX IF NOT EXISTS runs_status ON runs(status);
"""
# Columns added after the first version of the schema: added to an older index when it opens.
ADDED_COLUMNS = {"node": "TEXT", "executor": "TEXT", "vectorized": "TEXT",
                 # 1 for a fresh lab's starter runs (core.starters): they queue behind every run a person starts
                 "starter": "INTEGER NOT NULL DEFAULT 0",
                 # classroom mode: the student (or "teacher") who started the run; NULL for one user's lab
                 "owner": "TEXT",
                 # the stats of the run's JSON files when they were last found sound (RunStore.list)
                 "checked": "TEXT",
                 # what the run is (core.store.records): multiclass or binary, and its group's kind
                 "task": "TEXT", "group_kind": "TEXT"}
COLUMNS = ("id", "name", "status", "created", "updated", "model", "dataset", "device", "optimizer", "lr",
           "batch_size", "epochs", "epochs_done", "params", "seconds", "best_val_accuracy", "last_val_accuracy",
           "test_accuracy", "test_loss", "tags", "note", "error", "pid", "pid_start", "host", "progress", "config",
           "grp", *ADDED_COLUMNS)


QUEUE_ORDER = "starter, created, id"  # people's runs first, each kind first come, first served


def _fill_kinds(db) -> None:
    """Task and group kind of the rows of an index from before those columns."""
    import json

    from core.store.records import group_kind_of, task_of

    for row in db.execute("SELECT id, config, grp FROM runs").fetchall():
        try:
            config = json.loads(row["config"] or "{}")
        except ValueError:
            config = {}
        db.execute("UPDATE runs SET task = ?, group_kind = ? WHERE id = ?",
                   (task_of(config if isinstance(config, dict) else {}), group_kind_of(row["grp"]), row["id"]))


class IndexBroken(Exception):
    """The index file is not a readable SQLite database (corrupt, truncated, not a database)."""


def _broken(exc: sqlite3.Error, path: Path) -> bool:
    """A corrupt, missing or emptied file, as opposed to a busy one ('database is locked' is an
    OperationalError too): the index was deleted, replaced by a folder or truncated behind the
    store's back, which the store repairs instead of failing."""
    if isinstance(exc, sqlite3.DatabaseError) and not isinstance(exc, sqlite3.OperationalError):
        return True
    text = str(exc)
    return "no such table" in text or ("unable to open database file" in text and not path.is_file())


class RunIndex:
    """The SQLite index at `path`. `on_broken` is called once when the file turns out to be
    broken in the middle of the store's life; it repairs the file and the operation is retried."""

    def __init__(self, path: str | Path, on_broken: Callable[[Exception], None] | None = None):
        self.path = Path(path)
        self.on_broken = on_broken

    @contextmanager
    def _connect(self, create: bool = False):
        # Only `check` may create the file: an operation on an index deleted while the lab runs
        # fails (and the store rebuilds it) instead of writing into a new, empty database.
        target = self.path if create else f"file:{pathname2url(str(self.path.resolve()))}?mode=rw"
        db = sqlite3.connect(target, timeout=30, isolation_level=None, uri=not create)
        db.row_factory = sqlite3.Row
        try:
            db.execute("PRAGMA busy_timeout=30000")
            db.execute("PRAGMA journal_mode=WAL")
            yield db
        finally:
            db.close()

    def _run(self, fn):
        """Run `fn(db)`; a broken file is repaired (by `on_broken`) and `fn` retried once."""
        try:
            with self._connect() as db:
                return fn(db)
        except sqlite3.Error as exc:
            if not _broken(exc, self.path) or self.on_broken is None:
                raise
            self.on_broken(exc)
            with self._connect() as db:
                return fn(db)

    # --- opening -----------------------------------------------------------------------------

    def check(self) -> None:
        """Create the schema if needed and check the file; raises IndexBroken when it is not a
        usable database (the caller then rebuilds it)."""
        try:
            with self._connect(create=True) as db:
                if db.execute("PRAGMA quick_check").fetchone()[0] != "ok":
                    raise IndexBroken(f"{self.path}: integrity check failed")
                db.executescript(SCHEMA)
                have = {r["name"] for r in db.execute("PRAGMA table_info(runs)")}
                for name, kind in ADDED_COLUMNS.items():
                    if name not in have:
                        db.execute(f"ALTER TABLE runs ADD COLUMN {name} {kind}")
                if "starter" not in have:  # an index from before the column: its starter runs, from their configs
                    db.execute("UPDATE runs SET starter = 1 WHERE config LIKE '%\"starter\": true%'")
                if "task" not in have or "group_kind" not in have:  # the same for task and group kind
                    _fill_kinds(db)
                db.execute("SELECT COUNT(*) FROM runs").fetchone()
        except sqlite3.Error as exc:
            if _broken(exc, self.path) or "unable to open database file" in str(exc):
                raise IndexBroken(f"{self.path}: {exc}") from exc
            raise

    def move_aside(self) -> Path | None:
        """Keep the broken file (and its WAL files) for inspection under a dated name; None when
        there was no file (only WAL files of a deleted index, which are removed: replayed into a
        new index they would corrupt it)."""
        if not self.path.exists() and not self.path.is_symlink():
            for suffix in ("-wal", "-shm"):
                Path(str(self.path) + suffix).unlink(missing_ok=True)
            return None
        stamp = time.strftime("%Y%m%d-%H%M%S")
        kept = self.path.with_name(f"{self.path.name}.broken-{stamp}-{secrets.token_hex(2)}")
        for suffix in ("", "-wal", "-shm"):
            src = Path(str(self.path) + suffix)
            if src.exists():
                src.replace(Path(str(kept) + suffix))
        return kept

    def build_aside(self, rows: list[dict]) -> Path:
        """A complete new index holding `rows`, in a file next to this one, ready to be renamed
        over it (readers never see a half-filled index)."""
        path = self.path.with_name(f".{self.path.name}.new-{os.getpid()}-{secrets.token_hex(3)}")
        new = RunIndex(path)
        try:
            new.check()
            new.insert_all(rows)
        except BaseException:
            for suffix in ("", "-wal", "-shm"):
                Path(str(path) + suffix).unlink(missing_ok=True)
            raise
        return path

    def replace_all(self, rows_fn: Callable[[], list[dict]]) -> int:
        """Replace every row by `rows_fn()` in one transaction that holds the write lock while
        `rows_fn` reads the run folders: a concurrent reader sees the old rows until the new
        ones are committed (never a missing row), and a concurrent writer waits and then
        applies its change on top. Live progress, known only here, is kept."""
        def swap(db):
            db.execute("BEGIN IMMEDIATE")
            try:
                progress = dict(db.execute("SELECT id, progress FROM runs WHERE progress IS NOT NULL").fetchall())
                rows = rows_fn()
                for row in rows:
                    row.setdefault("progress", None)
                    row["progress"] = row["progress"] or progress.get(row["id"])
                db.execute("DELETE FROM runs")
                _insert_all(db, rows)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            return len(rows)
        return self._run(swap)

    # --- rows --------------------------------------------------------------------------------

    def insert(self, row: dict, replace: bool = False) -> bool:
        """Add a row (columns not given take their defaults); False when the id already exists."""
        cols = [c for c in COLUMNS if c in row]
        verb = "INSERT OR REPLACE" if replace else "INSERT OR IGNORE"
        sql = f"{verb} INTO runs ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})"
        return self._run(lambda db: db.execute(sql, [row[c] for c in cols]).rowcount == 1)

    def insert_all(self, rows: list[dict]) -> None:
        """Add or replace these rows, in one transaction."""
        def write(db):
            db.execute("BEGIN")
            _insert_all(db, rows)
            db.execute("COMMIT")
        self._run(write)

    def update(self, run_id: str, **fields) -> None:
        fields["updated"] = time.time()
        bad = set(fields) - set(COLUMNS)
        if bad:
            raise ValueError(f"unknown index column(s): {', '.join(sorted(bad))}")
        cols = ", ".join(f"{k} = ?" for k in fields)
        self._run(lambda db: db.execute(f"UPDATE runs SET {cols} WHERE id = ?", [*fields.values(), run_id]))

    def update_if(self, run_id: str, expected: str, worker: int | None = None, **fields) -> bool:
        """Update only while the run's status is still `expected` (a compare-and-set), and, when
        `worker` is given, while its recorded worker pid is still that one (a job handed to
        another process since the row was read: core.executors.zygote.hand_over)."""
        fields["updated"] = time.time()
        cols = ", ".join(f"{k} = ?" for k in fields)
        guard, args = ("", []) if worker is None else (" AND pid IS ?", [worker])
        return self._run(lambda db: db.execute(f"UPDATE runs SET {cols} WHERE id = ? AND status = ?{guard}",
                                               [*fields.values(), run_id, expected, *args]).rowcount == 1)

    def set_checked(self, run_id: str, signature: str) -> None:
        """Record that the run's files with these stats were found sound (not an edit: the
        row's `updated` time stays)."""
        self._run(lambda db: db.execute("UPDATE runs SET checked = ? WHERE id = ?", (signature, run_id)))

    def get(self, run_id: str) -> dict | None:
        rows = self._run(lambda db: db.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchall())
        return dict(rows[0]) if rows else None

    def all(self) -> list[dict]:
        """Every row, newest first."""
        return [dict(r) for r in self._run(lambda db: db.execute("SELECT * FROM runs ORDER BY created DESC, id DESC")
                                           .fetchall())]

    def ids(self) -> set[str]:
        return {r[0] for r in self._run(lambda db: db.execute("SELECT id FROM runs").fetchall())}

    def delete(self, run_id: str) -> None:
        self._run(lambda db: db.execute("DELETE FROM runs WHERE id = ?", (run_id,)))

    # --- the scheduler's operations ------------------------------------------------------------

    def claim(self, run_ids: list[str], device: str, limit: int) -> bool:
        """Atomically turn these queued runs (one job: a run, or a vectorised group) into running
        ones if the job is first in its device's queue and the device has a free slot.

        One statement, so SQLite serializes it against every other claim. A job is one worker
        process: running runs are counted by distinct worker pid, so a group of five runs
        trained together takes one slot.

        A fresh lab's starter runs never keep a person waiting: the queue puts them behind every
        run a person started, and a person's job counts only the slots other people's jobs hold,
        so it starts at once beside a starter that is training (which runs at the lowest CPU
        priority: core.executors.queue). A starter takes a slot only when nobody's run waits."""
        marks = ", ".join("?" * len(run_ids))
        starter = self._run(lambda db: db.execute(
            f"SELECT MIN(starter) FROM runs WHERE id IN ({marks})", run_ids).fetchone()[0])
        busy = "status='running' AND device=?" + ("" if starter else " AND starter=0")
        sql = (f"UPDATE runs SET status='running', updated=? WHERE id IN ({marks}) AND status='queued'"
               f" AND (SELECT COUNT(DISTINCT COALESCE(pid, id)) FROM runs WHERE {busy}) < ?"
               f" AND (SELECT id FROM runs WHERE status='queued' AND device=? ORDER BY {QUEUE_ORDER} LIMIT 1)"
               f" IN ({marks})")
        args = [time.time(), *run_ids, device, limit, device, *run_ids]
        return self._run(lambda db: db.execute(sql, args).rowcount) > 0

    def queued(self, device: str) -> list[dict]:
        """The device's queue, first in line first."""
        rows = self._run(lambda db: db.execute(
            f"SELECT * FROM runs WHERE status='queued' AND device=? ORDER BY {QUEUE_ORDER}", (device,)).fetchall())
        return [dict(r) for r in rows]

    def running_jobs(self, device: str) -> int:
        """How many worker processes are training on `device` now."""
        return self._run(lambda db: db.execute(
            "SELECT COUNT(DISTINCT COALESCE(pid, id)) FROM runs WHERE status='running' AND device=?",
            (device,)).fetchone()[0])


def _insert_all(db, rows: list[dict]) -> None:
    for row in rows:
        cols = [c for c in COLUMNS if c in row]
        db.execute(f"INSERT OR REPLACE INTO runs ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                   [row[c] for c in cols])
