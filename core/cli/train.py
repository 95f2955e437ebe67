"""`python -m core train|devices|summary|worker`.

With `--json`, the last line of stdout is one JSON object; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from core.cli.common import (TerminalProgress, UsageError, add_data_arguments, config_from_args, emit,
                             hardware_note, load_data, open_store)
from core.config import LOSSES, LR_SCHEDULES, OPTIMIZERS, PRECISIONS, RunConfig
from core.devices import list_devices
from core.models import PRESETS


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    """The training options; None means: the preset's recommended value."""
    add_data_arguments(p)
    p.add_argument("--model", choices=list(PRESETS),
                   help="mlp (the default) = the course's MLP with the slides' recipe, mlp-fast = the same MLP "
                        "tuned, cnn = the small fast CNN, lenet5")
    p.add_argument("--config", metavar="FILE", help="a run's config.json, or a config written by hand (any "
                                                    "architecture): the run to train; other flags override its "
                                                    "fields")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--optimizer", choices=OPTIMIZERS)
    p.add_argument("--momentum", type=float)
    p.add_argument("--loss", choices=LOSSES)
    p.add_argument("--positive-class", type=int, help="for binary_crossentropy: the digit that is 'positive'")
    p.add_argument("--lr-schedule", choices=LR_SCHEDULES)
    p.add_argument("--l2", type=float, metavar="LAMBDA", help="L2 regularization of the kernels, as Keras' l2(LAMBDA)")
    p.add_argument("--precision", choices=PRECISIONS)
    p.add_argument("--device", help="auto (the default), cpu, cuda, cuda:N or mps")
    p.add_argument("--seed", type=int)
    p.add_argument("--val-split", type=float)
    p.add_argument("--early-stopping", type=int, metavar="PATIENCE")
    p.add_argument("--augment", action="store_true", default=None)
    p.add_argument("--train-subset", type=int)
    p.add_argument("--name")
    p.add_argument("--json", action="store_true", help="print the result as one JSON line")


def cmd_train(args) -> int:
    from core.callbacks import Progress
    from core.devices import resolve_device

    config = config_from_args(args)
    if args.tensorboard:
        if args.no_store:
            raise UsageError("--tensorboard writes a stored run's files: it does not go with --no-store")
        folder = Path(args.tensorboard)
        if folder.exists() and not folder.is_dir():
            raise UsageError(f"--tensorboard {folder}: is a file; name a folder")
        if not (folder if folder.is_dir() else folder.parent.resolve()).is_dir():
            raise UsageError(f"--tensorboard {folder}: the folder {folder.parent} does not exist")
    hardware_note(config, resolve_device(config.device))  # a missing device is an argument error, before loading data
    dataset = load_data(config, args.data_dir)
    progress = Progress(TerminalProgress(), every=10)
    if args.no_store:
        from core.training import train

        result = train(config, dataset, callbacks=[progress])
        out = {"run_id": None, "run_dir": None, **result.summary()}
    elif args.tensorboard:
        from core.handover.tensorboard import TensorBoardLive, write_run
        from core.runner import train_run

        folder = Path(args.tensorboard)
        store = open_store(args.runs_dir)
        out = train_run(store, config, dataset, lambda run_id: [progress, TensorBoardLive(folder / run_id)],
                        data_dir=args.data_dir)
        # the rest (hyperparameters, images, PR curves, embedding) once the run is stored
        write_run(folder / out["run_id"], store, out["run_id"], args.data_dir, scalars=False)
        out["tensorboard"] = str(folder / out["run_id"])
    else:
        from core.runner import train_run

        out = train_run(open_store(args.runs_dir), config, dataset, callbacks=[progress], data_dir=args.data_dir)
    emit(out, args.json, f"test accuracy {out['test_accuracy']:.4f}, test loss {out['test_loss']:.4f}, "
                         f"{out['epochs_run']} epoch(s) on {out['device']} in {out['seconds']:.1f} s"
                         + (f"; run {out['run_id']} in {out['run_dir']}" if out.get("run_id") else ""))
    return 0


def cmd_devices(args) -> int:
    devices = list_devices()
    if args.json:
        print(json.dumps([d.to_dict() for d in devices]))
    else:
        for d in devices:
            print(d.label + ("  (no bf16 instructions: bf16 trains many times slower than fp32 here)"
                             if d.bf16 is False else ""))
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
    from core.executors.worker import run_worker
    from core.store import RunStore

    return run_worker(RunStore(args.runs_dir), args.runs, args.data_dir, args.slots, waited=args.waited,
                      resume=args.resume)


def add_parsers(sub) -> None:
    t = sub.add_parser("train", help="train a model and store the run")
    add_train_arguments(t)
    t.add_argument("--no-store", action="store_true", help="train without saving a run")
    t.add_argument("--tensorboard", metavar="DIR", help="also write TensorBoard event files into DIR/RUN_ID while "
                                                        "training (as `runs export RUN DIR --format tensorboard`)")
    t.set_defaults(handler=cmd_train)
    d = sub.add_parser("devices", help="list the devices training can use")
    d.add_argument("--json", action="store_true")
    d.set_defaults(handler=cmd_devices)
    s = sub.add_parser("summary", help="Keras-style summary of a preset")
    s.add_argument("--model", choices=list(PRESETS), default="mlp")
    s.add_argument("--json", action="store_true")
    s.set_defaults(handler=cmd_summary)
    w = sub.add_parser("worker", help="(internal) train one queued job of the store: a run or a vectorised group")
    w.add_argument("runs", nargs="+")
    w.add_argument("--runs-dir")
    w.add_argument("--data-dir")
    w.add_argument("--slots", type=int)
    w.add_argument("--waited", choices=["claimed", "cancelled"], help=argparse.SUPPRESS)
    w.add_argument("--resume", metavar="RUN", help="the job is this stopped run (or its group), queued to resume")
    w.set_defaults(handler=cmd_worker)
