"""Hyperparameter sweeps on Optuna: a search space over the run config, a strategy (grid,
random, TPE), a budget (trials and/or minutes) and pruning of poor trials from their
per-epoch validation accuracy (Optuna's median pruner).

One driver process asks Optuna for trials and tells it their results (the ask-and-tell
interface), so only one process writes the study and the run store; Optuna's maintainers
advise against SQLite storage for parallel workers. The trials themselves train wherever the
executor puts them (core.executors: local worker processes, or Ray tasks): every trial is a
normal run of the store, in the sweep's group, with `extra.sweep` and `extra.params`.

A sweep's state lives in the store, under `sweeps/SWEEP_ID/`: `sweep.json` (what was asked)
and Optuna's journal file (the study), so a sweep survives a restart of the app and an
interrupted one is resumed with `run_sweep(..., resume=SWEEP_ID)`. A file `cancel` there
stops it: the driver cancels its running trials and ends.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

from core.config import RunConfig
from core.search_space import (GRID_POINTS, KINDS, PARAMS, STRATEGIES, SweepError, apply_params,  # noqa: F401
                               check_space, default_space, grid_values, load_space, space_size, suggest)

FINISHED = ("finished", "failed", "cancelled", "interrupted", "pruned", "missing")

# --- the sweep ------------------------------------------------------------------------------

@dataclass
class SweepSpec:
    """What a sweep was asked to do: saved as sweep.json, enough to resume it."""

    sweep_id: str
    base: dict
    space: dict
    strategy: str = "tpe"
    trials: int = 16
    minutes: float | None = None
    seed: int = 0
    executor: str = "local"
    parallel: int = 1
    pruning: bool = True
    startup_trials: int = 4
    created: float = field(default_factory=time.time)
    owner: str | None = None  # classroom mode: who launched it; its trial runs are stored as theirs

    def to_json(self) -> dict:
        return dict(self.__dict__)


def sweeps_root(store) -> Path:
    return store.root / "sweeps"


def sweep_folder(store, sweep_id: str) -> Path:
    if not sweep_id.startswith("sweep-") or "/" in sweep_id or ".." in sweep_id:
        raise SweepError(f"not a sweep id: {sweep_id!r}")
    return sweeps_root(store) / sweep_id


def list_sweeps(store) -> list[dict]:
    """Every stored sweep's spec, newest first."""
    out = []
    root = sweeps_root(store)
    for path in sorted(root.glob("sweep-*/sweep.json"), reverse=True) if root.exists() else []:
        try:
            out.append(json.loads(path.read_text()))
        except (OSError, json.JSONDecodeError):
            continue
    return out


def request_cancel(store, sweep_id: str) -> None:
    """Ask the sweep's driver to stop: it cancels its running trials and ends."""
    (sweep_folder(store, sweep_id) / "cancel").write_text("cancelled")


def _sampler(strategy: str, space: dict, seed: int, startup: int):
    import optuna

    if strategy in ("grid", "random"):
        # a grid is its points enqueued in order (run_sweep): Optuna's GridSampler stops the
        # study from inside tell() when the grid is done, which ask-and-tell does not allow
        return optuna.samplers.RandomSampler(seed=seed)
    if strategy == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if strategy == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup)
    raise SweepError(f"unknown strategy {strategy!r}; allowed: {', '.join(STRATEGIES)}")


def open_study(store, spec: SweepSpec):
    """The sweep's Optuna study, in a journal file in its folder (one writer: the driver)."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    folder = sweep_folder(store, spec.sweep_id)
    storage = JournalStorage(JournalFileBackend(str(folder / "study.journal")))
    pruner = (optuna.pruners.MedianPruner(n_startup_trials=spec.startup_trials, n_warmup_steps=0)
              if spec.pruning else optuna.pruners.NopPruner())
    return optuna.create_study(study_name=spec.sweep_id, storage=storage, direction="maximize", load_if_exists=True,
                               sampler=_sampler(spec.strategy, spec.space, spec.seed, spec.startup_trials),
                               pruner=pruner)


def new_sweep(store, base: RunConfig, space: dict | None = None, strategy: str = "tpe", trials: int = 16,
              minutes: float | None = None, seed: int = 0, executor: str = "local", parallel: int = 1,
              pruning: bool = True, startup_trials: int = 4, owner: str | None = None) -> SweepSpec:
    """Check and save a new sweep (nothing trains yet); returns its spec."""
    space = check_space(space if space is not None else default_space(base.model))
    if strategy not in STRATEGIES:
        raise SweepError(f"unknown strategy {strategy!r}; allowed: {', '.join(STRATEGIES)}")
    if trials < 1 or trials > 1000:
        raise SweepError(f"trials must be between 1 and 1000, got {trials}")
    if minutes is not None and not (math.isfinite(minutes) and minutes > 0):  # NaN compares False: it looped forever
        raise SweepError(f"minutes must be a number above 0, got {minutes}")
    apply_params(base, {k: grid_values(v)[0] for k, v in space.items()})  # a trial's config can be built
    sweep_id = time.strftime("sweep-%Y%m%d-%H%M%S-") + os.urandom(2).hex()
    spec = SweepSpec(sweep_id, base.to_dict(), space, strategy, trials, minutes, seed, executor, max(1, parallel),
                     pruning, startup_trials, owner=owner)
    folder = sweep_folder(store, sweep_id)
    folder.mkdir(parents=True)
    from core.atomic import atomic_write_json

    atomic_write_json(folder / "sweep.json", spec.to_json())
    return spec


def load_spec(store, sweep_id: str) -> SweepSpec:
    path = sweep_folder(store, sweep_id) / "sweep.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise SweepError(f"no readable sweep {sweep_id!r} in {store.root}") from exc
    return SweepSpec(**{k: v for k, v in data.items() if k in SweepSpec.__dataclass_fields__})


def _value(history: list[dict]) -> float | None:
    return max((h["val_accuracy"] for h in history), default=None)


def run_sweep(store, executor, spec: SweepSpec, dataset=None, on_update=None, poll_s: float = 0.5,
              enqueue: list[dict] = ()) -> dict:
    """Drive the sweep to its end: ask Optuna for trials, start them on `executor`, report
    their per-epoch validation accuracy (pruning the poor ones), tell Optuna the results.
    Trials of an earlier driver still running or lost are taken up again (resume). Returns
    `sweep_result`. `on_update(result)` is called as trials progress."""
    from optuna.trial import TrialState

    folder = sweep_folder(store, spec.sweep_id)
    study = open_study(store, spec)
    if spec.strategy == "grid" and not study.get_trials(deepcopy=False):
        names = list(spec.space)
        for values in itertools.islice(itertools.product(*(grid_values(spec.space[n]) for n in names)), spec.trials):
            study.enqueue_trial(dict(zip(names, values)))
    for params in enqueue:
        study.enqueue_trial(params)
    base = RunConfig.from_dict(spec.base)
    from core.atomic import atomic_write_json
    from core.store.processes import process_start_time

    (folder / "result.json").unlink(missing_ok=True)
    atomic_write_json(folder / "driver.json", {"pid": os.getpid(), "pid_start": process_start_time(os.getpid()),
                                              "host": socket.gethostname(), "started": time.time()})
    deadline = spec.created + spec.minutes * 60 if spec.minutes else math.inf
    active: dict[int, tuple] = {}  # trial number -> (trial, run_id, epochs reported)
    # Resume: trials left RUNNING by a driver that died; their runs may still train (local
    # workers outlive the driver) or be over.
    # They are followed to their end and told by number (no more pruning for them).
    for frozen in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        # A driver killed between creating the trial's run and noting its id in the study
        # leaves the run with no link from the trial: the run's config names its trial.
        run_id = frozen.user_attrs.get("run_id") or _run_of_trial(store, spec.sweep_id, frozen.number)
        if run_id:
            active[frozen.number] = (None, run_id, 0)
        else:
            study.tell(frozen.number, state=TrialState.FAIL)
    retried: set[str] = set()

    def counted() -> int:  # trials asked so far (enqueued ones still waiting are not)
        return len([t for t in study.get_trials(deepcopy=False) if t.state != TrialState.WAITING])

    cancelled = False
    while True:
        cancelled = cancelled or (folder / "cancel").exists()
        if cancelled:
            for number, (trial, run_id, _) in list(active.items()):
                executor.cancel(run_id, "cancelled")
        # start trials while there is budget and room
        while not cancelled and len(active) < spec.parallel and counted() < spec.trials \
                and time.time() < deadline:
            if spec.strategy == "grid" and counted() >= space_size(spec.space, "grid"):
                break
            trial = study.ask()
            params = suggest(trial, spec.space)
            config = trial_config(base, spec.sweep_id, trial.number, params)
            try:
                run_id = executor.submit([config], group=spec.sweep_id, dataset=dataset)[0]
            except Exception as exc:  # noqa: BLE001 - a trial the executor refuses fails, the sweep goes on
                study.tell(trial, state=TrialState.FAIL)
                _note(folder, f"trial {trial.number} refused: {exc}")
                continue
            if spec.owner:
                store.set_owner(run_id, spec.owner)
            trial.set_user_attr("run_id", run_id)
            active[trial.number] = (trial, run_id, 0)
        executor.poll()
        for number, (trial, run_id, reported) in list(active.items()):
            run = store.get(run_id)
            history = store.history(run_id)
            for h in history[reported:] if trial is not None else ():
                trial.report(h["val_accuracy"], h["epoch"])
                reported = h["epoch"]
                if spec.pruning and trial.should_prune() and run["status"] in ("queued", "running"):
                    executor.cancel(run_id, "pruned")
            active[number] = (trial, run_id, reported)
            if run["status"] not in FINISHED:
                continue
            value = _value(store.history(run_id))
            which = trial if trial is not None else number
            if run["status"] == "finished" and value is not None:
                study.tell(which, value)
            elif run["status"] == "pruned":
                study.tell(which, state=TrialState.PRUNED)
            elif run["status"] == "interrupted" and run_id not in retried and not cancelled:
                # a node or worker lost mid-trial: retried once, from its checkpoint (or from
                # the start when it had none yet: its driver or worker died before epoch 1 ended)
                retried.add(run_id)
                try:
                    executor.resume(run_id)
                    continue
                except Exception:  # noqa: BLE001 - cannot resume: the trial fails
                    study.tell(which, state=TrialState.FAIL)
            else:
                study.tell(which, state=TrialState.FAIL)
            del active[number]
        if on_update:
            on_update(sweep_result(store, spec.sweep_id))
        if not active and (cancelled or counted() >= spec.trials or time.time() >= deadline
                           or (spec.strategy == "grid" and counted() >= space_size(spec.space, "grid"))):
            break
        time.sleep(poll_s)
    result = sweep_result(store, spec.sweep_id)
    atomic_write_json(folder / "result.json", result)
    return result


def driver_running(store, sweep_id: str) -> bool:
    """Is a driver process of this machine working on the sweep now?"""
    from core.store.processes import process_alive

    folder = sweep_folder(store, sweep_id)
    if (folder / "result.json").exists():
        return False
    try:
        info = json.loads((folder / "driver.json").read_text())
    except (OSError, json.JSONDecodeError):
        return time.time() - (folder / "sweep.json").stat().st_mtime < 60  # a driver still starting
    return info.get("host") == socket.gethostname() and process_alive(info["pid"], info.get("pid_start"))


def _note(folder: Path, text: str) -> None:
    with open(folder / "notes.log", "a") as f:
        f.write(f"{time.strftime('%H:%M:%S')} {text}\n")


def trial_config(base: RunConfig, sweep_id: str, number: int, params: dict) -> RunConfig:
    """The run of trial `number`: `base` with the trial's params, its sweep and number in
    `extra` (what the sweep's table shows, and how a resumed driver finds the trial's run)."""
    return apply_params(base, params).replace(
        name=f"{sweep_id} trial {number}",
        extra={**base.extra, "sweep": sweep_id, "trial": number, "params": params})


def _run_of_trial(store, sweep_id: str, number: int) -> str | None:
    """The id of the run the sweep created for trial `number`, if it created one."""
    for run in sweep_runs(store, sweep_id):
        if (json.loads(run["config"] or "{}").get("extra") or {}).get("trial") == number:
            return run["id"]
    return None


def sweep_runs(store, sweep_id: str) -> list[dict]:
    """The sweep's runs (its trials), oldest first."""
    return sorted(store.list(group=sweep_id), key=lambda r: r["created"])


def sweep_result(store, sweep_id: str) -> dict:
    """The CLI's JSON: sweep_id, trials (run_id, status, params, value, node) and best."""
    trials = []
    for run in sweep_runs(store, sweep_id):
        config = json.loads(run["config"] or "{}")
        params = (config.get("extra") or {}).get("params", {})
        value = _value(store.history(run["id"]))
        trials.append({"run_id": run["id"], "trial": (config.get("extra") or {}).get("trial"),
                       "status": run["status"], "params": params, "value": value,
                       "node": run.get("node") or run.get("host") or socket.gethostname(),
                       "epochs": run["epochs_done"]})
    done = [t for t in trials if t["status"] == "finished" and t["value"] is not None]
    best = max(done, key=lambda t: t["value"], default=None)
    return {"sweep_id": sweep_id, "trials": trials,
            "best": {"run_id": best["run_id"], "params": best["params"], "value": best["value"]} if best else None}


def best_so_far(result: dict):
    """(trial index, best value up to it) for the best-so-far curve."""
    import pandas as pd

    rows, best = [], -math.inf
    for i, t in enumerate(result["trials"], start=1):
        if t["status"] == "finished" and t["value"] is not None:
            best = max(best, t["value"])
        rows.append({"trial": i, "value": t["value"], "best so far": best if best > -math.inf else None,
                     "status": t["status"]})
    return pd.DataFrame(rows)


def importances(store, sweep_id: str) -> dict[str, float]:
    """Optuna's parameter importances (fANOVA) of the finished trials; empty with too few."""
    import optuna

    spec = load_spec(store, sweep_id)
    study = open_study(store, spec)
    complete = [t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.COMPLETE]
    if len(complete) < 3 or len(spec.space) < 2:
        return {}
    try:
        return dict(optuna.importance.get_param_importances(study))
    except (RuntimeError, ValueError):
        return {}


def parallel_frame(result: dict):
    """Long table for a parallel-coordinates chart: one row per (trial, parameter), the value
    scaled to 0..1 over the sweep (log scale for a log-uniform parameter), the raw value and
    the trial's validation accuracy."""
    import numpy as np
    import pandas as pd

    trials = [t for t in result["trials"] if t["params"]]
    rows = []
    names = sorted({k for t in trials for k in t["params"]})
    for name in names:
        raw = [t["params"].get(name) for t in trials]
        numeric = [v for v in raw if isinstance(v, (int, float)) and not isinstance(v, bool)]
        cats = sorted({str(v) for v in raw}) if len(numeric) != len(raw) else None
        log = bool(numeric) and min(numeric) > 0 and max(numeric) / min(numeric) > 20
        for t, v in zip(trials, raw):
            if cats is not None:
                scaled = cats.index(str(v)) / max(len(cats) - 1, 1)
            else:
                lo, hi = min(numeric), max(numeric)
                f = (np.log10 if log else float)
                scaled = 0.5 if hi == lo else (f(v) - f(lo)) / (f(hi) - f(lo))
            rows.append({"trial": t["trial"], "parameter": name, "scaled": float(scaled), "value": str(v),
                         "accuracy": t["value"], "status": t["status"]})
    return pd.DataFrame(rows, columns=["trial", "parameter", "scaled", "value", "accuracy", "status"])
