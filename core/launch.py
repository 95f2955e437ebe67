"""The launchers: what the train page, the k-fold and capacity pages, the sweep driver and the
starter runs call to start training. They build configs and hand them to an executor
(core.executors) and nothing else, so any of them runs on this machine or on a Ray cluster.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from core.config import RunConfig
from core.executors.base import Executor


def group_name(prefix: str) -> str:
    """A new group's name: the prefix and the time (k-fold-20261124-101500)."""
    return f"{prefix}{time.strftime('%Y%m%d-%H%M%S')}-{int(time.time() * 1000) % 1000:03d}"


def launch_run(executor: Executor, config: RunConfig, dataset=None, group: str | None = None) -> str:
    """One run in the background; returns its id at once."""
    return executor.submit([config], group=group, dataset=dataset)[0]


def launch_group(executor: Executor, configs: Sequence[RunConfig], prefix: str, dataset=None,
                 vectorize: bool = True) -> tuple[str, list[str]]:
    """Several runs as one group (trained as one vectorised model when they can be);
    returns the group's name and the run ids."""
    group = group_name(prefix)
    return group, executor.submit(list(configs), group=group, vectorize=vectorize, dataset=dataset)


def launch_kfold(executor: Executor, base: RunConfig, k: int, stratified: bool = True, dataset=None,
                 vectorize: bool = True) -> tuple[str, list[str]]:
    from core.experiments import kfold_configs

    return launch_group(executor, kfold_configs(base, k, stratified), "kfold-", dataset, vectorize)


def launch_capacity(executor: Executor, base: RunConfig, units: Sequence[int], dataset=None) -> tuple[str, list[str]]:
    """The capacity study: models of growing width (different architectures: one by one)."""
    from core.experiments import capacity_configs

    return launch_group(executor, capacity_configs(base, units), "fit-", dataset, vectorize=False)


def launch_regularization(executor: Executor, base: RunConfig, units: int, l2: float, dropout: float,
                          dataset=None) -> tuple[str, list[str]]:
    """The course's "regularize" arm: one over-large model on a small training set, without
    and with L2 and dropout."""
    from core.experiments import regularization_configs

    return launch_group(executor, regularization_configs(base, units, l2, dropout), "reg-", dataset, vectorize=False)


def launch_activation_comparison(executor: Executor, base: RunConfig, dataset=None,
                                 activations=("sigmoid", "relu")) -> tuple[str, list[str]]:
    """The same network with sigmoid and with ReLU hidden layers: vanishing gradients, measured."""
    from core.experiments import activation_configs

    return launch_group(executor, activation_configs(base, activations), "grad-", dataset, vectorize=False)


def launch_sweep(store, base: RunConfig, space: dict, strategy: str, trials: int, minutes: float | None = None,
                 executor: str = "local", data_dir=None, ray_address: str | None = None, pruning: bool = True,
                 parallel: int = 1, owner: str | None = None) -> str:
    """A sweep driven by a background process of this machine (`python -m core sweep --resume`),
    so it outlives the page; returns its id at once. Its state is in the store (core.sweeps).
    `owner` (classroom mode) is stored with the sweep and with each of its trial runs."""
    from core import sweeps

    spec = sweeps.new_sweep(store, base, space, strategy, trials, minutes, base.seed, executor, parallel, pruning,
                            owner=owner)
    resume_sweep(store, spec.sweep_id, data_dir, ray_address)
    return spec.sweep_id


def resume_sweep(store, sweep_id: str, data_dir=None, ray_address: str | None = None) -> None:
    """Start a background driver for a stored sweep (a new one, or one whose driver died)."""
    from core import sweeps
    from core.executors.local import spawn_core

    args = ["sweep", "--resume", sweep_id]
    if data_dir:
        args += ["--data-dir", str(data_dir)]
    if ray_address:
        args += ["--ray-address", ray_address]
    spawn_core(store, args, sweeps.sweep_folder(store, sweep_id) / "driver.log")
