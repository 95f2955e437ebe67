"""A test hook, not part of the lab: Python imports this module at the start of every process
whose PYTHONPATH holds this folder (tests/conftest.py's `pause_workers_at` puts it there for the
workers a test starts). With LAB_TEST_PAUSE_AT="EPOCH:BATCH" (both 1-based), a process that
trains a stored run (core.runner: a single run or a vectorised group) writes a file `paused`
into the run's folder when it reaches that batch and waits there, so that a test can kill it
mid-epoch at a known place (the kill itself is real: SIGKILL of the worker process).

The lab's code knows nothing of this: the hook wraps core.runner's entry points when that
module is imported (an import hook, so a worker still waits in the queue without torch).
"""

import os
import sys

POINT = os.environ.get("LAB_TEST_PAUSE_AT", "")


def _point() -> tuple[int, int]:
    epoch, batch = (int(v) for v in POINT.split(":"))
    return epoch, batch


def _pause_if_at(folder, epoch: int, batch: int) -> None:
    """Wait forever at the pause point; epoch and batch are 0-based."""
    import time
    from pathlib import Path

    if _point() == (epoch + 1, batch + 1):
        (Path(folder) / "paused").write_text(f"{epoch + 1}:{batch + 1}")
        while True:
            time.sleep(3600)


def _install(runner) -> None:
    """Wrap core.runner: a single run, or the first member of a group, gets one more callback."""
    import functools

    from core.callbacks import Callback

    class PauseAt(Callback):
        def __init__(self, folder):
            self.folder = folder

        def on_batch_end(self, trainer, epoch, batch, num_batches):
            _pause_if_at(self.folder, epoch, batch)

    train_run = runner.train_run

    @functools.wraps(train_run)
    def paused_train_run(store, config, dataset=None, callbacks=(), *args, **kwargs):
        def with_pause(run_id):
            extra = callbacks(run_id) if callable(callbacks) else list(callbacks)
            return [*extra, PauseAt(store.run_dir(run_id))]
        return train_run(store, config, dataset, with_pause, *args, **kwargs)

    runner.train_run = paused_train_run
    train_group = runner.train_group

    @functools.wraps(train_group)
    def paused_train_group(store, run_ids, *args, **kwargs):
        first = next(r for r in run_ids if store.index.get(r))  # its batches are the group's batches

        def with_pause(run_id):
            return [PauseAt(store.run_dir(run_id))] if run_id == first else []
        return train_group(store, run_ids, *args, callbacks=with_pause, **kwargs)

    runner.train_group = paused_train_group


class _WrapRunner:
    """Finds core.runner with the normal path finder, and installs the pause once it has run."""

    def find_spec(self, name, path=None, target=None):
        if name != "core.runner":
            return None
        from importlib.machinery import PathFinder

        spec = PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module

        def exec_and_install(module):
            exec_module(module)
            _install(module)

        spec.loader.exec_module = exec_and_install
        return spec


if POINT:
    _point()  # a malformed value fails here, loudly, not by never pausing
    sys.meta_path.insert(0, _WrapRunner())
