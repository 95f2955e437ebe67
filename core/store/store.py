"""The run store: every training run, its files and its status, on disk, for every process.

A store folder (default `./runs`, or `--runs-dir`, or MNIST_LAB_RUNS) holds one folder per
run (core.store.folder: the truth) and `index.sqlite` (core.store.index: a cache of the
folders for fast listing and the job queue). `RunStore` is the one object pages, the CLI,
workers and executors use; it keeps folder and index in step.

Run ids are made here (date-time-random hex) and checked against a strict pattern before any
path is built from them, so a name or tag can never reach the file system. Every file is
written to a temporary name and renamed, so a crash or a full disk never leaves half a file.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING

from core.settings import settings
from core.store.files import (MAX_NAME, MAX_TAG, FileDamaged, RunStoreError, atomic_write_json, clean_text, disk_text)
import core.store.upkeep as upkeep
from core.store.folder import META_FIELDS, RUN_ID, RunFolder, check_run_id
from core.store.records import ACTIVE, Status
from core.store.index import IndexBroken, RunIndex
from core.store.liveness import reap
from core.store.processes import host, process_start_time
from core.store.reading import RunReaders
from core.store.recording import TrainingRecords

if TYPE_CHECKING:  # a listing needs no config module (it imports torch: seconds for `runs list`)
    from core.config import RunConfig


def default_root() -> Path:
    return settings().runs


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(3)


class RunStore(TrainingRecords, RunReaders):
    """The run store at `root` (see the module docstring). Safe to use from several processes.

    Opening it checks the index: a missing, unreadable or corrupt index is rebuilt from the
    run folders (the broken file kept aside), and run folders the index does not know are
    added to it. `notice` then says what was done, for the app and the CLI to show.
    """

    def __init__(self, root: str | os.PathLike | None = None):
        self.root = Path(root) if root else default_root()
        if self.root.exists() and not self.root.is_dir():
            raise RunStoreError(f"run store folder {self.root} is a file, not a folder")
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:  # a folder under a file, no permission: one message naming it
            raise RunStoreError(f"run store folder {self.root}: {exc.strerror or exc}") from exc
        self.db_path = self.root / "index.sqlite"
        self.notice: str | None = None
        self.index = RunIndex(self.db_path, on_broken=self._repair)
        existed = self.db_path.exists()
        self.remove_leftovers()
        upkeep.keep_reserve(self.root)
        try:
            if not existed:
                raise IndexBroken("no index file")
            self.index.check()
        except IndexBroken as exc:
            self._repair(exc)
            if not existed and not self.folder_ids():
                self.notice = None  # a new, empty store: nothing was repaired
            elif not existed:
                self.notice = (f"The run index was missing; it was rebuilt from {len(self.folder_ids())} run "
                               "folder(s). Nothing was lost.")
        else:
            self._migrate()
            added = self._reconcile()
            if added:
                self.notice = f"{added} run folder(s) the index did not know were added to it."

    # --- the index as a cache of the folders -----------------------------------------------------

    def folder_ids(self) -> list[str]:
        return sorted(p.name for p in self.root.iterdir() if RUN_ID.match(p.name) and p.is_dir())

    def _reconcile(self) -> int:
        return upkeep.reconcile(self)

    def _migrate(self) -> None:
        upkeep.migrate(self)

    def _repair(self, exc: Exception) -> None:
        upkeep.repair(self, exc)

    def remove_leftovers(self, older_than: float = 600.0) -> int:
        """Remove what a process killed mid-write left behind (core.store.upkeep)."""
        return upkeep.remove_leftovers(self, older_than)

    def rebuild_index(self) -> int:
        """Rebuild the index from the folders on purpose (`python -m core runs reindex`): in
        place, in one transaction, so no reader ever misses a row (core.store.upkeep)."""
        return upkeep.rebuild(self)

    # --- paths ---------------------------------------------------------------------------------

    def folder(self, run_id: str) -> RunFolder:
        return RunFolder(self.root, run_id)

    def run_dir(self, run_id: str) -> Path:
        return self.folder(run_id).path

    def existing_folder(self, run_id: str) -> RunFolder:
        """The run's folder; a RunStoreError when it was deleted behind the store's back."""
        return self._existing(run_id)

    def _existing(self, run_id: str) -> RunFolder:
        folder = self.folder(run_id)
        if not folder.exists():
            raise RunStoreError(f"run {run_id}: its folder {folder.path} is missing (deleted outside the lab?)")
        return folder

    # --- creating and finishing runs --------------------------------------------------------------

    def create(self, config: RunConfig, status: str = "queued", group: str | None = None,
               executor: str = "local") -> str:
        """A new run for `config`: its folder with config.json and run.json, and its index row."""
        from core.models import summary

        name = clean_text(config.name, MAX_NAME, "run name")  # refuse before anything is written
        run_id = new_run_id()
        while self.folder(run_id).exists():
            run_id = new_run_id()
        folder = self.folder(run_id)
        now = time.time()
        # The creating process answers for the run until a worker is recorded (record_worker,
        # mark_started): killed in between, the run is reaped as interrupted instead of staying
        # queued or running forever with no process behind it.
        pid = os.getpid()
        meta = {"name": name or run_id, "status": status, "created": now, "grp": group, "tags": [], "note": "",
                "host": host(), "device": config.device, "executor": executor, "pid": pid,
                "pid_start": process_start_time(pid)}
        # Written under a staging name and renamed: a process killed at its first write leaves
        # a staging folder (removed by remove_leftovers), never a run folder without a config.
        staging = RunFolder(self.root, run_id)
        staging.path = self.root / f".creating-{pid}-{run_id}"
        try:
            staging.path.mkdir()
            atomic_write_json(staging / "config.json", {"config": config.to_dict(),
                                                        "architecture": config.architecture(),
                                                        "summary": summary(config.architecture(), config.num_outputs)})
            staging.write_meta(**meta)
            row = staging.index_row()
            row["created"] = now
            os.replace(staging.path, folder.path)
            self.index.insert(row, replace=True)
        except BaseException as exc:
            shutil.rmtree(staging.path, ignore_errors=True)
            shutil.rmtree(folder.path, ignore_errors=True)
            try:
                self.index.delete(run_id)
            except Exception:  # noqa: BLE001 - the first error is the one to report
                pass
            if isinstance(exc, OSError):
                raise RunStoreError(f"could not create a run in {self.root}: {disk_text(exc)}") from exc
            raise
        return run_id

    def _set(self, run_id: str, **fields) -> None:
        """Change a run's fields in its run.json (those it keeps) and its index row."""
        folder = self.folder(run_id)
        meta = {k: v for k, v in fields.items() if k in META_FIELDS}
        if meta and folder.exists():
            try:
                folder.write_meta(**meta)
            except FileDamaged:  # run.json damaged behind the lab's back: written again whole, from the index
                row = upkeep.clean_row(dict(self.index.get(run_id) or {"tags": None, "progress": None}))
                folder.write_meta({k: row[k] for k in META_FIELDS if k in row}, **meta)
        if "tags" in fields and not isinstance(fields["tags"], str):
            fields["tags"] = json.dumps(fields["tags"])
        if folder.exists():  # files the lab has just written are sound: no listing needs to check them
            fields["checked"] = json.dumps(folder.signature())
        self.index.update(run_id, **fields)

    def group_members(self, run_id: str) -> list[str]:
        """The runs trained together with `run_id` as one vectorised model (itself included),
        or just [run_id]."""
        # From run.json, the truth: a process killed between writing it and the index row
        # leaves the index without the group, and one member resumed alone would leave the
        # others unresumable.
        try:
            info = self.folder(run_id).read_meta().get("vectorized")
        except RunStoreError:
            info = None
        if not isinstance(info, dict):
            info = self.get(run_id).get("vectorized")
        members = (info or {}).get("group") if isinstance(info, dict) else None
        return [m for m in members if isinstance(m, str) and RUN_ID.match(m)] if members else [run_id]

    # --- reading ------------------------------------------------------------------------

    def _reap(self, rows: list[dict]) -> list[dict]:
        """Runs whose worker died are marked interrupted (noticed by whoever reads next); runs
        whose folder was deleted behind the store's back are shown as missing."""
        out = []
        for run in reap(self.index, self.root, rows):
            if not (self.root / run["id"]).is_dir():
                run.update(status="missing", error="its folder is missing (deleted outside the lab?)")
            upkeep.clean_row(run)
            out.append(run)
        return out

    def _check_listed(self, runs: list[dict]) -> list[dict]:
        """The stopped runs whose JSON files changed since they were last found sound are
        checked (core.store.folder: RunFolder.problem); a damaged one is listed as damaged with
        the reason, so no page picks it as a finished run. Stats only for unchanged runs (the
        index keeps the stats of the files it last found sound, for every process)."""
        for run in runs:
            if run["status"] in (*ACTIVE, "damaged", "missing") or not RUN_ID.match(run["id"]):
                continue
            folder = self.folder(run["id"])
            signature = json.dumps(folder.signature())
            if run.get("checked") == signature:
                continue
            problem = folder.problem(run)
            if problem is None:
                self.index.set_checked(run["id"], signature)
                run["checked"] = signature
            elif self.mark_damaged(run["id"], problem) or self.index.get(run["id"])["status"] == Status.DAMAGED:
                run.update(status=Status.DAMAGED, error=problem, progress=None)
        return runs

    def check_files(self, run_id: str) -> str | None:
        """Every file of a stopped run checked, arrays and weights loaded (`runs show`): the
        problem (the run is then listed as damaged), or None."""
        run = self.get(run_id)
        if run["status"] in ACTIVE or run["status"] == "missing":
            return None
        problem = self.folder(run_id).problem(run, full=True)
        if problem:
            self.mark_damaged(run_id, problem)
        return problem

    def list(self, status: str | None = None, tag: str | None = None, text: str | None = None,
             group: str | None = None) -> list[dict]:
        """All runs, newest first, optionally filtered by status, tag, group and a text in
        name/model/note."""
        runs = self._check_listed(self._reap(self.index.all()))
        if status:
            runs = [r for r in runs if r["status"] == status]
        if tag:
            runs = [r for r in runs if tag in r["tags"]]
        if group:
            runs = [r for r in runs if r.get("grp") == group]
        if text:
            t = text.lower()
            runs = [r for r in runs if t in (r["name"] + " " + (r["model"] or "") + " " + r["note"]).lower()]
        return runs

    def get(self, run_id: str) -> dict:
        check_run_id(run_id)
        row = self.index.get(run_id)
        if row is None:
            raise RunStoreError(f"no run {run_id!r} in {self.root}")
        return self._reap([row])[0]

    # --- editing ------------------------------------------------------------------------

    def rename(self, run_id: str, name: str) -> None:
        self.get(run_id)
        self._set(run_id, name=clean_text(name, MAX_NAME, "run name") or run_id)

    def set_tags(self, run_id: str, tags: list[str]) -> None:
        self.get(run_id)
        if not isinstance(tags, (list, tuple)):
            raise RunStoreError(f"tags must be a list of text, got {type(tags).__name__}")
        clean = sorted({clean_text(t, MAX_TAG, "tag") for t in tags} - {""})
        self._set(run_id, tags=clean)

    def set_note(self, run_id: str, note: str) -> None:
        self.get(run_id)
        if not isinstance(note, str):
            raise RunStoreError(f"a note must be text, got {type(note).__name__}")
        self._set(run_id, note=note[:10000])

    def set_owner(self, run_id: str, owner: str) -> None:
        """Who started the run (classroom mode: a student's name, or "teacher")."""
        self.get(run_id)
        self._set(run_id, owner=clean_text(owner, MAX_NAME, "owner"))

    def delete(self, run_id: str) -> None:
        run = self.get(run_id)
        if run["status"] == Status.RUNNING:
            raise RunStoreError(f"run {run_id} is running; cancel it before deleting it")
        self.index.delete(run_id)
        shutil.rmtree(self.run_dir(run_id), ignore_errors=True)

    # --- export and import ------------------------------------------------------------------

    def export_zip(self, run_id: str, file) -> Path:
        from core.store.archive import export_zip

        return export_zip(self, run_id, file)

    def import_zip(self, file) -> str:
        from core.store.archive import import_zip

        return import_zip(self, file)

    def add_imported(self, staging: Path, meta: dict) -> str:
        """Move a checked, staged run folder into the store under a new id (for archive.py)."""
        run_id = new_run_id()
        while self.folder(run_id).exists():
            run_id = new_run_id()
        folder = self.folder(run_id)
        os.replace(staging, folder.path)
        try:
            folder.write_meta(**meta, created=time.time())
            self.index.insert(folder.index_row(), replace=True)
        except BaseException:
            shutil.rmtree(folder.path, ignore_errors=True)
            self.index.delete(run_id)
            raise
        return run_id
