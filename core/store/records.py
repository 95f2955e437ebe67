"""What a run is, as types: its status (one enum, with the sets of statuses that belong
together) and its index row (a typed record: the fields every listing returns).

Statuses are a StrEnum, so a row's status compares equal to its text ("finished") and is
stored as text; code names the member (Status.FINISHED) and asks the sets (ACTIVE, TERMINAL,
WITH_RESULTS, RESUMABLE) instead of spelling tuples of strings. A run's task (multi-class or
binary) and its group's kind are index columns, computed once when the run is written, so no
caller searches its config text or its group's name.
"""

from __future__ import annotations

from enum import StrEnum
from typing import TypedDict


class Status(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    FINISHED = "finished"
    FAILED = "failed"
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"
    PRUNED = "pruned"
    DAMAGED = "damaged"   # in the index only: a file is not what the lab writes (core.store.schema)


STATUSES = tuple(s.value for s in Status)
ACTIVE = (Status.QUEUED, Status.RUNNING)                       # a worker has it (or will)
TERMINAL = tuple(s for s in Status if s not in ACTIVE)         # nothing changes it but a person
WITH_RESULTS = (Status.FINISHED, Status.CANCELLED, Status.PRUNED)  # history, metrics, predictions
RESUMABLE = (Status.INTERRUPTED, Status.CANCELLED, Status.FAILED)

TASKS = ("multiclass", "binary")
# A group's kind, from the prefix its launcher gave its name (core.launch.group_name, sweeps):
# read here once, when a run is written, and kept in the index's group_kind column.
GROUP_KINDS = {"kfold-": "kfold", "sweep-": "sweep", "fit-": "capacity", "reg-": "regularization",
               "grad-": "gradients", "hw-": "hardware"}


def task_of(config: dict) -> str:
    return "binary" if config.get("loss") == "binary_crossentropy" else "multiclass"


def group_kind_of(group: str | None) -> str | None:
    if not group:
        return None
    return next((kind for prefix, kind in GROUP_KINDS.items() if group.startswith(prefix)), "group")


class RunRow(TypedDict, total=False):
    """A run as the index lists it (RunStore.list / get)."""
    id: str
    name: str
    status: Status
    created: float
    updated: float
    model: str | None
    dataset: str | None
    device: str | None
    optimizer: str | None
    lr: float | None
    batch_size: int | None
    epochs: int | None
    epochs_done: int
    params: int | None
    seconds: float | None
    best_val_accuracy: float | None
    last_val_accuracy: float | None
    test_accuracy: float | None
    test_loss: float | None
    tags: list[str]
    note: str
    error: str | None
    pid: int | None
    host: str | None
    node: str | None
    executor: str | None
    progress: dict | None
    config: str
    grp: str | None
    vectorized: dict | None
    starter: int
    owner: str | None
    task: str
    group_kind: str | None
