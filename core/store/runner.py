"""Training stored runs: a run of the store trained in this process, fresh or resumed from its
checkpoint on the data it saw, with every epoch, result and failure written into the store
(core.store.writer's callbacks). The CLI, the workers and the inline executor train through
here (RunStore.train_in_this_process and resume_in_this_process call it); a vectorised group
trains through core.group_training.train_group_in_store.
"""

from __future__ import annotations

from pathlib import Path

from core.config import RunConfig
from core.store.files import RunStoreError, failure_text
from core.store.records import RESUMABLE, Status


def train_run(store, config: RunConfig, dataset=None, callbacks=(), run_id: str | None = None,
              resume: bool = False, data_dir=None) -> dict:
    """Train `config` here, writing the run into the store; returns the CLI's summary dict.
    `callbacks` is a list, or a function of the run id that returns one (for a callback that
    writes where the run's id names, as `train --tensorboard DIR`)."""
    from core.data import load_dataset
    from core.store.writer import store_callbacks
    from core.training import check_against_data, train

    if dataset is None:
        dataset = load_dataset(config.dataset, data_dir)
    check_against_data(config, dataset)  # refuse before a run folder exists
    if not resume:
        from core.devices import resolve_device
        from core.training import check_precision

        check_precision(config, resolve_device(config.device))
    run_id = run_id or store.create(config, status=Status.RUNNING)
    folder = store.folder(run_id)
    state = store.load_checkpoint(run_id) if resume else None
    store.mark_started(run_id)
    try:
        extra = callbacks(run_id) if callable(callbacks) else list(callbacks)
        result = train(config, dataset, callbacks=[*store_callbacks(store, run_id, data_dir), *extra],
                       resume_state=state)
        store.save_result(run_id, result)
    except KeyboardInterrupt:
        store.mark_failed(run_id, "interrupted from the keyboard", status=Status.INTERRUPTED)
        raise
    except BaseException as exc:
        store.mark_failed(run_id, failure_text(exc))
        raise
    return {"run_id": run_id, "run_dir": str(folder.path.resolve()), **result.summary(),
            "status": store.get(run_id)["status"]}




def check_resumable(store, run_id: str) -> dict | None:
    """The run's checkpoint; None for a run that stopped before its first epoch ended (it
    trains again from the start: a run killed between its creation and its start is not
    stuck); refused for a run of a vectorised group whose group trained epochs but left no
    checkpoint."""
    checkpoint = store.load_checkpoint(run_id)
    if checkpoint is None and store.get(run_id)["epochs_done"]:
        raise RunStoreError(f"run {run_id} has no checkpoint to resume from")
    return checkpoint


def unstarted_members(store, run_id: str) -> list[str]:
    """The runs of `run_id`'s vectorised group that stopped before their first epoch ended
    (killed before the group's first checkpoint): they train again from the start, together.
    A member that finished meanwhile (resumed alone: a process killed while it wrote the
    group's membership) is left as it is."""
    return [r for r in store.group_members(run_id)
            if store.index.get(r) and store.get(r)["status"] in RESUMABLE and not store.get(r)["epochs_done"]
            and store.load_checkpoint(r) is None]


def resume_run(store, run_id: str, callbacks=(), data_dir=None) -> dict:
    """Continue an interrupted, cancelled or failed run from its last checkpoint, on the same
    data it was trained on, to the same result it would have reached."""
    run = store.get(run_id)
    if run["status"] not in RESUMABLE:
        raise RunStoreError(f"run {run_id} is {run['status']}; only interrupted, cancelled or failed runs resume")
    checkpoint = check_resumable(store, run_id)
    if checkpoint is None and len(unstarted_members(store, run_id)) > 1:
        raise RunStoreError(f"run {run_id} was trained in a vectorised group; resume the group with "
                            f"`python -m core runs resume {run_id}` (it resumes all its runs)")
    if checkpoint is None:  # stopped before its first epoch ended: it starts again, as the same run
        config = store.config(run_id)
        dataset, data_dir = dataset_of(store, run_id, data_dir)
        return train_run(store, config, dataset, callbacks=callbacks, run_id=run_id, data_dir=data_dir)
    if checkpoint.get("group"):
        raise RunStoreError(f"run {run_id} was trained in a vectorised group; resume the group with "
                            f"`python -m core runs resume {checkpoint['group'][0]}` (it resumes all its runs)")
    config = store.config(run_id)
    dataset, data_dir = dataset_of(store, run_id, data_dir)
    return train_run(store, config, dataset, callbacks=callbacks, run_id=run_id, resume=True, data_dir=data_dir)


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
