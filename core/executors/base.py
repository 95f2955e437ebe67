"""The one interface every way of running training implements, so that the launchers (train,
k-fold, capacity study, sweep) never care where a run trains.

An executor takes configs and returns run ids at once; the runs are in the store from that
moment (status queued) and the store is where their progress, history and results appear,
whoever trains them. A launcher can then ask the executor to cancel a run, ask where it
ran, and (for executors whose work is relayed by a driver, such as Ray) call `poll` to let
it move results into the store.

    LocalExecutor (core.executors.local)  worker processes on this machine, a queue per device
    RayExecutor   (core.executors.ray)    Ray tasks on a cluster; this process writes the store
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

from core.config import RunConfig


class Executor(ABC):
    """Runs training jobs somewhere and keeps their runs in `store` up to date."""

    name = "executor"

    def __init__(self, store, data_dir=None):
        self.store, self.data_dir = store, data_dir

    @abstractmethod
    def submit(self, configs: Sequence[RunConfig], group: str | None = None, vectorize: bool = False,
               dataset=None) -> list[str]:
        """Queue `configs` as runs (one group when `group` is given) and start them; returns
        their run ids at once. With `vectorize`, configs of one architecture may train as one
        vectorised model (core.group_training); the executor falls back to one by one, and
        records why, when they cannot. Refuses, before anything is stored, a device that is not
        there and a setting the data cannot train with (when `dataset` is given)."""

    @abstractmethod
    def resume(self, run_id: str) -> None:
        """Continue an interrupted, cancelled or failed run (or its vectorised group)."""

    def cancel(self, run_id: str, reason: str = "cancelled") -> None:
        """Stop a run within one batch, keeping its finished epochs ("pruned" for a sweep)."""
        self.store.request_cancel(run_id, reason)

    def progress(self, run_id: str) -> dict:
        """Status, finished epochs and the live progress of the epoch in flight."""
        run = self.store.get(run_id)
        return {"status": run["status"], "epochs_done": run["epochs_done"], "epochs": run["epochs"],
                "progress": run["progress"], "node": run.get("node")}

    def where(self, run_id: str) -> str | None:
        """Where the run trains or trained: a hostname for local workers, a Ray node id on Ray."""
        run = self.store.get(run_id)
        return run.get("node") or run.get("host")

    def poll(self) -> None:
        """Move news from the workers into the store (nothing to do where workers write it)."""

    def active(self, run_ids: Sequence[str]) -> list[str]:
        """Those of `run_ids` that are queued or running."""
        runs = {r["id"]: r for r in self.store.list()}
        return [i for i in run_ids if i in runs and runs[i]["status"] in ("queued", "running")]

    def capacity(self, device: str = "cpu") -> int:
        """How many jobs on `device` train at once (a sweep keeps this many trials in flight)."""
        return 1

    def close(self) -> None:
        """Release what the executor holds (a cluster connection); runs already started go on."""


def prepare(store, configs: Sequence[RunConfig], dataset=None) -> list[RunConfig]:
    """Check configs before anything is stored: the device exists here and can train in the
    precision asked for, and (with `dataset`) the batch fits the training set. Returns them
    with `auto` resolved to the device that will train, and with the data set the run will
    really train on: "mnist" asked for where only the offline sample is found is stored as
    "mnist-sample", so the config, the index and every table say what the numbers come from."""
    from core.devices import resolve_device
    from core.training import check_against_data, check_precision

    out = []
    for config in configs:
        device = resolve_device(config.device)
        check_precision(config, device)
        config = config.replace(device=str(device))
        if dataset is not None:
            if dataset.name != config.dataset and config.dataset == "mnist" and dataset.is_sample:
                config = config.replace(dataset=dataset.name)
            check_against_data(config, dataset)
        out.append(config)
    return out


def plan_jobs(configs: Sequence[RunConfig], vectorize: bool, dataset=None,
              refused: str | None = None) -> tuple[list[list[int]], str | None]:
    """Which configs train together: ([indexes of one job], ...) and, when `vectorize` was asked
    for several configs that cannot share a stack, the reason (recorded with every run). Every
    executor and the CLI's kfold plan with this one function. `refused` is the reason to give
    when vectorize was not asked (kfold --one-by-one says so)."""
    from core.group_training import vectorize_plan

    n = len(configs)
    if n < 2:
        return [[i] for i in range(n)], None
    if not vectorize:
        return [[i] for i in range(n)], refused
    reason = vectorize_plan(list(configs), dataset)
    return ([list(range(n))] if reason is None else [[i] for i in range(n)]), reason


def record_plan(store, ids: list[str], jobs: list[list[int]], reason: str | None) -> None:
    """What each run's job is: its vectorised group, or why it trains alone (None: nothing to say)."""
    for job in jobs:
        for i in job:
            store.set_vectorized(ids[i], {"group": [ids[j] for j in job]} if len(job) > 1 else
                                 ({"reason": reason} if reason else None))
