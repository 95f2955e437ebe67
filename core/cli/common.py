"""What every command of `python -m core` shares: the argument parser that reports a bad
argument as one `error:` line with exit status 2, the errors that count as the user's, and
the terminal progress bar (a tqdm bar per epoch on stderr; silent when stderr is not a terminal)."""

from __future__ import annotations

import argparse
import json
import sys

from core.config import ConfigError
from core.data import DataError
from core.devices import DeviceError
from core.idx import IdxError
from core.models import ArchitectureError
from core.store import RunStoreError

USER_ERRORS = (ConfigError, DataError, DeviceError, IdxError, ArchitectureError, RunStoreError)


class UsageError(Exception):
    """A bad argument or input: printed as one `error:` line, exit status 2."""


class Parser(argparse.ArgumentParser):
    """argparse that reports a bad argument as one `error: ...` line and exit status 2."""

    def error(self, message):  # noqa: D401 - argparse's hook
        raise UsageError(message)


def fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def note(message: str) -> None:
    """A line for the user on stderr (stdout stays one JSON line with --json)."""
    print(f"note: {message}", file=sys.stderr)


def emit(obj, as_json: bool, text: str) -> None:
    print(json.dumps(obj, default=str) if as_json else text)


def open_store(runs_dir):
    """The run store, saying on stderr when its index had to be rebuilt from the run folders."""
    from core.store import RunStore

    store = RunStore(runs_dir)
    if store.notice:
        note(store.notice)
    return store


class TerminalProgress:
    """A tqdm bar per epoch on stderr; silent when stderr is not a terminal."""

    def __init__(self):
        from tqdm import tqdm

        self.tqdm, self.bar = tqdm, None

    def __call__(self, event: dict) -> None:
        if event["kind"] == "batch":
            if self.bar is None:
                self.bar = self.tqdm(total=event["batches"], desc=f"epoch {event['epoch']}/{event['epochs']}",
                                     unit="batch", file=sys.stderr, disable=None, leave=True)
            self.bar.n = event["batch"]
            self.bar.set_postfix(loss=f"{event['loss']:.4f}", refresh=False)
            self.bar.refresh()
        else:
            if self.bar is not None:
                self.bar.set_postfix(loss=f"{event['train_loss']:.4f}", val_acc=f"{event['val_accuracy']:.4f}")
                self.bar.close()
                self.bar = None
