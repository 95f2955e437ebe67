"""Runs whose worker process died are marked interrupted by whoever reads the store next.

Torch-free on purpose: a worker waiting in its device's queue (core.executors.queue) notices
dead workers ahead of it without importing the facade, so the queue never stalls behind a
crashed job.
"""

from __future__ import annotations

from pathlib import Path

from core.store.folder import RunFolder
from core.store.records import ACTIVE, Status
from core.store.processes import host, process_alive


def reap(index, root: Path, rows: list[dict]) -> list[dict]:
    """Mark the active runs among `rows` whose worker on this host is gone as interrupted, in
    the index and in their folder; returns `rows`, updated in place."""
    here = host()
    for run in rows:
        if run["status"] in ACTIVE and run["pid"] and run["host"] in (None, here) \
                and not process_alive(run["pid"], run["pid_start"]):
            error = (f"the worker process {run['pid']} died; resume continues from epoch "
                     f"{run['epochs_done'] + 1}")
            if index.update_if(run["id"], run["status"], worker=run["pid"], status=Status.INTERRUPTED, error=error,
                               progress=None):
                try:
                    RunFolder(Path(root), run["id"]).write_meta(status=Status.INTERRUPTED, error=error)
                except (OSError, ValueError):
                    pass  # a full disk, or a damaged run.json (listed as damaged): the index says it
                run.update(status=Status.INTERRUPTED, error=error, progress=None)
            else:  # it moved on since `rows` were read (finished, or handed to another process)
                run.update(index.get(run["id"]) or {})
    return rows
