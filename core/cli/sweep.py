"""`python -m core sweep`: a hyperparameter sweep on Optuna, driven from this process, its
trials trained by the local worker processes or a Ray cluster (core.sweeps).

The last line of stdout (with --json) is one JSON object: `sweep_id`, `trials` (each `run_id`,
`status`, `params`, `value` = best validation accuracy, `node` = where it ran: the hostname
for local, the Ray node id for Ray) and `best` (`run_id`, `params`, `value`). A bad space
file is one `error:` line and exit status 2.
"""

from __future__ import annotations

import math

import sys

from core.cli.common import config_from_args, emit, load_data, note, open_store, preset_command


def cmd_sweep(args) -> int:
    from core import sweeps
    from core.cli.common import UsageError
    from core.devices import resolve_device
    from core.executors import get_executor, ray_address

    store = open_store(args.runs_dir)
    if args.resume:
        spec = sweeps.load_spec(store, args.resume)
        from core.config import RunConfig

        base = RunConfig.from_dict(spec.base)
    else:
        space = sweeps.load_space(args.space) if args.space else None
        base = config_from_args(args, name="")
        base = base.replace(device=str(resolve_device(base.device)))
        if args.executor == "ray" and not (args.ray_address or ray_address()):
            raise UsageError("--executor ray needs --ray-address HEAD:6379 (or MNIST_LAB_RAY_ADDRESS)")
        if args.parallel is not None and args.parallel < 1:
            raise UsageError(f"--parallel must be 1 or more, got {args.parallel}")
        if args.minutes is not None and not (math.isfinite(args.minutes) and args.minutes > 0):
            raise UsageError(f"--minutes must be a number above 0, got {args.minutes}")
        spec = None
    dataset = load_data(base, args.data_dir)
    executor = get_executor(args.executor if not args.resume else spec.executor, store, args.data_dir,
                            address=args.ray_address)
    try:
        if spec is None:
            parallel = args.parallel or executor.capacity(base.device)
            spec = sweeps.new_sweep(store, base, space, args.strategy, args.trials, args.minutes, args.seed,
                                    args.executor, parallel, pruning=not args.no_pruning)
        note(f"sweep {spec.sweep_id}: {spec.trials} trial(s), {spec.strategy}, {spec.parallel} at a time on "
             f"{spec.executor}")
        done: set[str] = set()

        def progress(result: dict) -> None:
            for t in result["trials"]:
                if t["run_id"] not in done and t["status"] in sweeps.FINISHED:
                    done.add(t["run_id"])
                    value = f"{t['value']:.4f}" if t["value"] is not None else "-"
                    print(f"trial {t['trial']}: {t['status']:<9} best val acc {value}  {t['params']}",
                          file=sys.stderr)

        result = sweeps.run_sweep(store, executor, spec, dataset=dataset, on_update=progress)
    finally:
        executor.close()
    best = result["best"]
    emit(result, args.json, f"sweep {result['sweep_id']}: {len(result['trials'])} trial(s); best "
         + (f"{best['value']:.4f} with {best['params']} ({best['run_id']})" if best else "none finished"))
    return 0


def add_parsers(sub) -> None:
    p = preset_command(sub, "sweep", "hyperparameter sweep (Optuna: grid, random or TPE, with pruning)")
    p.add_argument("--trials", type=int, default=16)
    p.add_argument("--epochs", type=int, help="epochs per trial (unless the space searches epochs)")
    p.add_argument("--strategy", choices=["grid", "random", "tpe"], default="tpe")
    p.add_argument("--space", metavar="FILE.json", help="the search space (default: one for the model)")
    p.add_argument("--minutes", type=float, help="stop starting trials after this many minutes")
    p.add_argument("--executor", choices=["local", "ray"], default="local")
    p.add_argument("--ray-address", help="HEAD:6379 of a Ray cluster (or MNIST_LAB_RAY_ADDRESS)")
    p.add_argument("--parallel", type=int, help="trials at once (default: what the executor can run at once)")
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0, help="the sampler's and every trial's seed")
    p.add_argument("--no-pruning", action="store_true")
    p.add_argument("--resume", metavar="SWEEP_ID", help="continue an interrupted sweep of this store")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_sweep)
