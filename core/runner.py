"""The runner: the one code that trains stored runs, fresh or resumed, one run or a vectorised
group, writing every epoch, result and failure into the store as it goes. The worker process,
the inline executor, the CLI (`train`, `kfold`, `runs resume`) and the Ray driver train through
here; RunStore only stores. Where the loop itself runs is the `engine`: `HERE` (this process), or
a Ray task whose callbacks the driver replays (core.executors.ray_task.OnRay); what a stored run
goes through (checked, started, written epoch by epoch, failed or interrupted) is written here once.

    train_run(store, config)       one run, fresh (or resumed with resume=True)
    train_job(store, run_ids)      one job of an executor's plan: a run, or a group as one stack
    train_group(store, run_ids)    runs of one group as one vectorised model
    resume(store, run_id)          a stopped run, or the whole group it was trained in

A vectorised group's checkpoint (the stack: every member's weights, optimizer state, history)
is written into every member's folder, as hard links of one file (no extra disk, one write), so
any member resumes the whole group whichever member's folder is left, and deleting one member
leaves the others resumable: the checkpoint keeps every member's config, so a deleted member
is rebuilt into the stack from it (its place is needed to restore the stack) and set aside as
done, never written anywhere.
"""

from __future__ import annotations

from pathlib import Path

from core.config import RunConfig
from core.store.files import RunStoreError, failure_text
from core.store.records import ACTIVE, RESUMABLE, Status
from core.store.writer import GROUP_CHECKPOINT, save_group_checkpoint  # noqa: F401



# --- where the loop runs --------------------------------------------------------------------


class Here:
    """The engine that trains in this process: the one loop (core.fit) on this machine's device."""

    def check(self, config: RunConfig) -> None:
        """Refuse, before the run starts, a precision its device cannot train in."""
        from core.devices import resolve_device
        from core.training import check_precision

        check_precision(config, resolve_device(config.device))

    def start(self, store, run_id: str) -> None:
        """This process trains the run from now on."""
        store.mark_started(run_id)

    def train(self, config: RunConfig, dataset, callbacks, resume_state, name: str):
        from core.training import train

        return train(config, dataset, callbacks=callbacks, resume_state=resume_state)

    def train_group(self, configs, dataset, callbacks, member_callbacks, resume_state, names) -> dict:
        from core.group_training import train_group as train_stack

        return train_stack(configs, dataset, callbacks=callbacks, member_callbacks=member_callbacks,
                           resume_state=resume_state, names=names)


HERE = Here()


# --- one run --------------------------------------------------------------------------------


def train_run(store, config: RunConfig, dataset=None, callbacks=(), run_id: str | None = None,
              resume: bool = False, data_dir=None, engine: Here = HERE) -> dict:
    """Train `config` (on `engine`: here by default), writing the run into the store; returns the
    CLI's summary dict. `callbacks` is a list, or a function of the run id that returns one (for
    a callback that writes where the run's id names, as `train --tensorboard DIR`)."""
    from core.data import load_dataset
    from core.store.writer import store_callbacks
    from core.training import check_against_data

    if dataset is None:
        dataset = load_dataset(config.dataset, data_dir)
    check_against_data(config, dataset)  # refuse before a run folder exists
    if not resume:
        engine.check(config)
    run_id = run_id or store.create(config, status=Status.RUNNING)
    folder = store.folder(run_id)
    state = store.load_checkpoint(run_id) if resume else None
    engine.start(store, run_id)
    try:
        extra = callbacks(run_id) if callable(callbacks) else list(callbacks)
        result = engine.train(config, dataset, [*store_callbacks(store, run_id, data_dir), *extra], state, run_id)
    except KeyboardInterrupt:
        store.mark_failed(run_id, "interrupted from the keyboard", status=Status.INTERRUPTED)
        raise
    except BaseException as exc:
        store.mark_failed(run_id, failure_text(exc))
        raise
    # No result: the engine ended the run itself (cancelled or lost on Ray); its record is final.
    summary = result.summary() if result is not None else {}
    return {"run_id": run_id, "run_dir": str(folder.path.resolve()), **summary, "status": store.get(run_id)["status"]}


def train_job(store, run_ids: list[str], dataset=None, data_dir=None, engine: Here = HERE) -> list[dict]:
    """One job of an executor's plan (core.executors.base.plan_jobs): a single run, or the runs
    of one vectorised group trained as one stack. Runs are already in the store."""
    if len(run_ids) > 1:
        return train_group(store, run_ids, data_dir=data_dir, dataset=dataset, engine=engine)
    config = store.config(run_ids[0])
    return [train_run(store, config, _dataset_for(config, dataset, data_dir), run_id=run_ids[0], data_dir=data_dir,
                      engine=engine)]


def _dataset_for(config: RunConfig, dataset, data_dir):
    """`dataset` when it is the config's data set (a caller's in-memory one), else loaded by name."""
    from core.data import load_dataset

    return dataset if dataset is not None and dataset.name == config.dataset else load_dataset(config.dataset, data_dir)


# --- resuming --------------------------------------------------------------------------------


def check_resumable(store, run_id: str) -> dict | None:
    """The run's checkpoint; None for a run that stopped before its first epoch ended (it
    trains again from the start: a run killed between its creation and its start is not
    stuck); refused for a run that trained epochs but left no checkpoint."""
    checkpoint = store.load_checkpoint(run_id)
    if checkpoint is None and store.get(run_id)["epochs_done"]:
        raise RunStoreError(f"run {run_id} has no checkpoint to resume from")
    return checkpoint


def _stopped(claimed: bool) -> tuple:
    """The statuses a run to resume may have: a stopped one, or running when this process is
    the worker that claimed it for the resume (core.executors.worker, `worker --resume`)."""
    return (*RESUMABLE, Status.RUNNING) if claimed else RESUMABLE


def unstarted_members(store, run_id: str, claimed: bool = False) -> list[str]:
    """The runs of `run_id`'s vectorised group that stopped before their first epoch ended
    (killed before the group's first checkpoint): they train again from the start, together.
    A member that finished meanwhile (resumed alone: a process killed while it wrote the
    group's membership) is left as it is."""
    return [r for r in store.group_members(run_id)
            if store.index.get(r) and store.get(r)["status"] in _stopped(claimed) and not store.get(r)["epochs_done"]
            and store.load_checkpoint(r) is None]


def resume_group(store, run_id: str, claimed: bool = False) -> list[str] | None:
    """The vectorised group `resume(store, run_id)` trains again (from its checkpoint, or from
    the start when it stopped before one), or None when the run resumes alone."""
    checkpoint = store.load_checkpoint(run_id) if store.get(run_id)["status"] != "missing" else None
    if checkpoint and checkpoint.get("group"):
        return list(checkpoint["group"])
    unstarted = unstarted_members(store, run_id, claimed) if checkpoint is None else []
    return unstarted if len(unstarted) > 1 else None


def resume_members(store, run_id: str) -> list[str]:
    """The runs a resume of `run_id` trains: the run, or its group's present members that are
    not done (those `train_group` starts). Refused while one of them is queued or running."""
    group = resume_group(store, run_id)
    if group is None:
        members = [run_id]
    else:
        state = load_group_checkpoint(store, group)
        present = [r for r in group if store.index.get(r)]
        members = present if state is None else \
            [r for i, r in enumerate(group) if r in present and not state["members"][i]["done"]]
    busy = sorted({store.get(r)["status"] for r in members} - set(RESUMABLE))
    if busy and group is None:
        raise RunStoreError(f"run {run_id} is {busy[0]}; only interrupted, cancelled or failed runs resume")
    if busy:
        raise RunStoreError(f"the group of run {run_id} is still {'/'.join(busy)}")
    return members


def resume(store, run_id: str, callbacks=(), data_dir=None, claimed: bool = False) -> dict:
    """Resume a stopped run, or the vectorised group it was trained in (all of the group's
    stopped runs, from any member). For a group the answer is the run's own summary plus
    `group` (the member ids) and `group_results` (each member trained now). `claimed`: this
    process is the worker that took the queued runs of `resume_members` (they read running)."""
    group = resume_group(store, run_id, claimed)
    if group is None:
        return resume_run(store, run_id, callbacks, data_dir, claimed)
    stopped = [store.get(r)["status"] for r in group if store.index.get(r)]
    if not claimed and any(s in (Status.QUEUED, Status.RUNNING) for s in stopped):
        raise RunStoreError(f"the group of run {run_id} is still {'/'.join(sorted(set(stopped)))}")
    results = {r["run_id"]: r for r in train_group(store, group, data_dir=data_dir, resume=True)}
    out = results.get(run_id) or {"run_id": run_id, **store.get(run_id)}
    return {**out, "group": group, "group_results": [results[r] for r in group if r in results]}


def resume_run(store, run_id: str, callbacks=(), data_dir=None, claimed: bool = False) -> dict:
    """Continue one interrupted, cancelled or failed run (not of a group) from its last
    checkpoint, on the same data it was trained on, to the same result it would have reached."""
    run = store.get(run_id)
    if run["status"] not in _stopped(claimed):
        raise RunStoreError(f"run {run_id} is {run['status']}; only interrupted, cancelled or failed runs resume")
    checkpoint = check_resumable(store, run_id)
    if (checkpoint is None and len(unstarted_members(store, run_id, claimed)) > 1) or (checkpoint or {}).get("group"):
        raise RunStoreError(f"run {run_id} was trained in a vectorised group; resume the group with "
                            f"`python -m core runs resume {run_id}` (it resumes all its runs)")
    config = store.config(run_id)
    dataset, data_dir = dataset_of(store, run_id, data_dir)
    store.folder(run_id).clear_cancel()  # the request that stopped it, not one for this resume
    # No checkpoint: it stopped before its first epoch ended and starts again, as the same run.
    return train_run(store, config, dataset, callbacks=callbacks, run_id=run_id, resume=checkpoint is not None,
                     data_dir=data_dir)


def dataset_of(store, run_id: str, data_dir=None):
    """The data set a run was trained on, loaded again: from `data_dir` if given, else from
    the folder the run recorded, and refused when its fingerprint differs from the one
    the run saw (resuming on other data would make it another run)."""
    from core.data import load_dataset

    saved = store.folder(run_id).saved_config()
    config = saved["config"]
    recorded = saved.get("dataset") if isinstance(saved.get("dataset"), dict) else {}
    folder = data_dir or saved.get("data_dir")
    if folder and not Path(folder).is_dir() and not data_dir:
        folder = None  # recorded on another machine; try the usual sources
    dataset = load_dataset(config["dataset"], folder, allow_download=False)
    want = recorded.get("fingerprint")
    if want and dataset.fingerprint and want != dataset.fingerprint:
        raise RunStoreError(
            f"run {run_id} was trained on {recorded.get('name', config['dataset'])} from "
            f"{recorded.get('source', 'an unknown source')} (fingerprint {want}); the data found now is "
            f"{dataset.source} (fingerprint {dataset.fingerprint}). Pass --data-dir with the folder it was "
            "trained on.")
    return dataset, folder


# --- a vectorised group ------------------------------------------------------------------------


def load_group_checkpoint(store, run_ids: list[str]) -> dict | None:
    """The newest group checkpoint found in any present member's folder, or None."""
    from core.store import load_state_dict

    paths = [store.folder(r) / GROUP_CHECKPOINT for r in run_ids if store.index.get(r)]
    paths = [p for p in paths if p.exists()]
    if not paths:
        return None
    return load_state_dict(max(paths, key=lambda p: p.stat().st_mtime_ns))


def _group_configs(store, run_ids: list[str], state: dict | None) -> list[RunConfig]:
    """Each member's config: from its run, or (a deleted member) from the group's checkpoint."""
    configs = []
    for i, run_id in enumerate(run_ids):
        if store.index.get(run_id):
            configs.append(store.config(run_id))
        elif state is not None and state.get("configs"):
            configs.append(RunConfig.from_dict(state["configs"][i]))
        else:
            raise RunStoreError(f"run {run_id} of the group was deleted and the group's checkpoint does not "
                                "keep its config (written by an older version); the group cannot be rebuilt")
    return configs


def train_group(store, run_ids: list[str], data_dir=None, resume: bool = False, dataset=None,
                callbacks=(), engine: Here = HERE) -> list[dict]:
    """Train the runs `run_ids` (one group, already in the store) as one vectorised model,
    each written into its own run by the same callbacks as a single run (core.store.writer);
    with `resume`, continue from the group's last checkpoint (found in any member's folder; the
    data it saw is loaded again). Members deleted since are trained in the stack, unused, and
    written nowhere. A fresh group trains on `dataset` when given (as a single run does).
    `callbacks`: more callbacks for each present member, a list or a function of the run id."""
    from core.store.writer import GroupCheckpoint, store_callbacks

    present = [r for r in run_ids if store.index.get(r)]
    if not present:
        raise RunStoreError("none of the group's runs is in the store any more")
    state = None
    if resume:
        dataset, data_dir = dataset_of(store, present[0], data_dir)
        state = load_group_checkpoint(store, run_ids)
        if state is None and any(store.get(r)["epochs_done"] for r in present):
            raise RunStoreError(f"group of {present[0]} has no checkpoint to resume from")
        if state is None:  # stopped before its first epoch ended: the present runs train again, as the same runs
            run_ids = present
        for i, run_id in enumerate(run_ids):
            if state is not None and run_id not in present:
                state["members"][i].update(done=True, stop_reason="deleted")
        configs = _group_configs(store, run_ids, state)
    else:
        configs = [store.config(r) for r in run_ids]
        dataset = _dataset_for(configs[0], dataset, data_dir)
    for i, run_id in enumerate(run_ids):
        if run_id in present and (state is None or not state["members"][i]["done"]):
            if resume:
                store.folder(run_id).clear_cancel()  # the request that stopped it, not one for this resume
            engine.start(store, run_id)
    per_member = [[*store_callbacks(store, r, data_dir), *(callbacks(r) if callable(callbacks) else callbacks)]
                  if r in present else [] for r in run_ids]
    try:
        results = engine.train_group(configs, dataset, [GroupCheckpoint(store, run_ids, configs)], per_member,
                                     state, run_ids)
    except KeyboardInterrupt:
        _mark_stopped(store, present, lambda r: store.mark_failed(r, "interrupted from the keyboard",
                                                                 status=Status.INTERRUPTED))
        raise
    except BaseException as exc:
        why = failure_text(exc)
        _mark_stopped(store, present, lambda r: store.mark_failed(r, why))
        raise
    return [{"run_id": run_ids[i], **res.summary(), "status": store.get(run_ids[i])["status"]}
            for i, res in sorted(results.items())]


def _mark_stopped(store, run_ids: list[str], mark) -> None:
    """Mark the group's runs still in training (or, on Ray, not started yet) as `mark` says."""
    for run_id in run_ids:
        if store.get(run_id)["status"] in ACTIVE:
            mark(run_id)
