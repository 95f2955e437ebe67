"""Where training runs: one small interface (base.Executor) with a local implementation
(worker processes on this machine) and a Ray one (tasks on a cluster)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from core.settings import settings

if TYPE_CHECKING:
    from core.executors.base import Executor

EXECUTORS = ("local", "ray", "inline")


def ray_address() -> str | None:
    """The Ray cluster the app offers (MNIST_LAB_RAY_ADDRESS), or None."""
    return settings().ray_address


def get_executor(name: str, store, data_dir=None, **options) -> "Executor":
    """An executor by name: `local` (default), `ray` (options: address) or `inline` (this process)."""
    if name == "local":
        from core.executors.local import LocalExecutor

        return LocalExecutor(store, data_dir, slots=options.get("slots"))
    if name == "inline":
        from core.executors.inline import InlineExecutor

        return InlineExecutor(store, data_dir)
    if name == "ray":
        from core.executors.ray import RayExecutor

        return RayExecutor(store, data_dir, address=options.get("address") or ray_address(),
                           detached=options.get("detached", False))
    raise ValueError(f"unknown executor {name!r}; allowed: {', '.join(EXECUTORS)}")


def __getattr__(name: str):
    """`Executor` on first use: a queued worker imports core.executors.queue, which must not
    pull in the config and torch through the base class (see core/executors/queue.py)."""
    if name == "Executor":
        from core.executors.base import Executor

        return Executor
    raise AttributeError(f"module 'core.executors' has no attribute {name!r}")


__all__ = ["EXECUTORS", "Executor", "get_executor", "ray_address"]
