"""`python -m core kfold`: a k-fold cross-validation in this process, trained as one vectorised
model when the folds allow it (core.group_training), else fold by fold.

The last line of stdout (with --json) is one JSON object: `folds` (each `run_id`,
`val_accuracy`: the fold's last-epoch validation accuracy), `mean`, `std` (sample standard
deviation over folds), `seconds` (training time of all folds, without the process start and
the data loading) and `vectorized` (true when the folds trained as one model).
"""

from __future__ import annotations

import numpy as np

from core.cli.common import config_from_args, emit, hardware_note, load_data, note, open_store, preset_command
from core.config import PRECISIONS


def run_kfold(store, base, k: int, stratified: bool, dataset, data_dir=None, vectorize: bool = True) -> dict:
    """Train the k folds of `base` into the store; returns the command's JSON object."""
    from core.executors.base import plan_jobs, record_plan
    from core.experiments import kfold_configs
    from core.launch import group_name
    from core.runner import train_group, train_run
    from core.training import check_against_data

    configs = kfold_configs(base, k, stratified)
    for config in configs:
        check_against_data(config, dataset)
    plan, reason = plan_jobs(configs, vectorize, dataset, refused="asked to train fold by fold")
    group = group_name("kfold-")
    ids = [store.create(c, status="running", group=group, executor="cli") for c in configs]
    record_plan(store, ids, plan, reason)
    if len(plan) == 1 and len(plan[0]) > 1:
        train_group(store, ids, data_dir=data_dir)
        seconds = max(store.metrics(r).get("seconds") or 0.0 for r in ids)  # the stack's training time
    else:
        if vectorize:
            note(f"folds trained one by one: {reason}")
        for run_id, config in zip(ids, configs):
            train_run(store, config, dataset, run_id=run_id, data_dir=data_dir)
        seconds = sum(store.metrics(r).get("seconds") or 0.0 for r in ids)
    folds = [{"run_id": r, "val_accuracy": store.get(r)["last_val_accuracy"]} for r in ids]
    scores = np.array([f["val_accuracy"] for f in folds], dtype=float)
    return {"group": group, "folds": folds, "mean": float(scores.mean()),
            "std": float(scores.std(ddof=1)) if len(scores) > 1 else 0.0, "seconds": seconds,
            "vectorized": reason is None, "why_not_vectorized": reason}


def cmd_kfold(args) -> int:
    from core.cli.common import UsageError
    from core.devices import resolve_device

    if not 2 <= args.k <= 10:
        raise UsageError(f"argument --k: must be between 2 and 10, got {args.k}")
    base = config_from_args(args, name=f"{args.model} {args.k}-fold")
    base = base.replace(device=str(resolve_device(base.device)))
    hardware_note(base, base.device)
    dataset = load_data(base, args.data_dir)
    out = run_kfold(open_store(args.runs_dir), base, args.k, not args.no_stratify, dataset, args.data_dir,
                    vectorize=not args.one_by_one)
    emit(out, args.json, "\n".join(f"fold {i + 1}: validation accuracy {f['val_accuracy']:.4f}  ({f['run_id']})"
                                   for i, f in enumerate(out["folds"]))
         + f"\nmean {out['mean']:.4f} ± {out['std']:.4f} (sample std), {out['seconds']:.1f} s of training"
         + (", vectorised" if out["vectorized"] else ", fold by fold"))
    return 0


def add_parsers(sub) -> None:
    p = preset_command(sub, "kfold", "k-fold cross-validation of a preset (folds trained as one vectorised model)")
    p.add_argument("--k", type=int, default=5)
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--precision", choices=PRECISIONS)
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-stratify", action="store_true", help="KFold instead of StratifiedKFold")
    p.add_argument("--one-by-one", action="store_true", help="train the folds one after another (for comparison)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_kfold)
