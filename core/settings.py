"""The lab's settings from the environment (`MNIST_LAB_*`), read in one place into one object.

Every module asks `settings()` instead of reading os.environ itself, so each variable has one
parser, one default and one line of documentation (VARIABLES: the README's table is checked
against it by tests/test_settings.py). `settings()` reads the environment on every call (a
dozen dictionary lookups) and parses a given set of values once: a test that sets a variable
sees it at once, and a long-running process pays nothing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

# name -> (default as the README writes it, what it does)
VARIABLES = {
    "MNIST_LAB_RUNS": ("runs", "the run store folder (the CLI's --runs-dir wins)"),
    "MNIST_LAB_DATA": ("(none)", "a folder with the four MNIST IDX files (the CLI's --data-dir wins)"),
    "MNIST_LAB_CACHE": ("~/.cache/mnist-lab", "where downloaded data sets are kept"),
    "MNIST_LAB_OFFLINE": ("0", "1: never try the network (no download, the offline sample at once)"),
    "MNIST_LAB_THREADS": ("(every core)", "threads a training uses for its tensor operations"),
    "MNIST_LAB_JOBS_PER_DEVICE": ("1 per CPU, by memory per GPU", "how many jobs train at once on each device"),
    "MNIST_LAB_WORKER_NICE": ("10", "the niceness of training workers (0: the app's priority)"),
    "MNIST_LAB_CUDA_GRAPHS": ("1", "0: train on CUDA without capturing CUDA graphs"),
    "MNIST_LAB_STARTERS": ("1", "0: the first open trains no starter runs"),
    "MNIST_LAB_PRELOAD": ("1", "0: each CPU worker starts a fresh Python instead of a fork of a preloaded one "
                                "(core/executors/zygote.py)"),
    "MNIST_LAB_RAY_ADDRESS": ("(none)", "HEAD:6379 of a Ray cluster the app and the CLI offer as an executor"),
    "MNIST_LAB_RAY_GPU_FRACTION": ("0.25", "the share of a GPU one Ray task of a CUDA run asks for"),
}

WORKER_NICENESS = 10


def _whole(value: str) -> int | None:
    """A positive whole number, or None (unset or not one: the default applies)."""
    return int(value) if value.isdigit() and int(value) > 0 else None


def _flag(value: str, default: bool) -> bool:
    if value == "":
        return default
    return value.lower() not in ("0", "false", "no", "off")


@dataclass(frozen=True)
class Settings:
    runs: Path
    data: str | None
    cache: Path
    offline: bool
    threads: int | None
    jobs_per_device: int | None
    worker_nice: int
    cuda_graphs: bool
    starters: bool
    preload: bool
    ray_address: str | None
    ray_gpu_fraction: float


@lru_cache(maxsize=8)
def _parse(values: tuple[str, ...]) -> Settings:
    v = dict(zip(VARIABLES, values))
    try:
        fraction = float(v["MNIST_LAB_RAY_GPU_FRACTION"] or 0.25)
    except ValueError:
        fraction = 0.25
    return Settings(
        runs=Path(v["MNIST_LAB_RUNS"] or "runs"),
        data=v["MNIST_LAB_DATA"] or None,
        cache=Path(v["MNIST_LAB_CACHE"] or Path.home() / ".cache" / "mnist-lab"),
        offline=_flag(v["MNIST_LAB_OFFLINE"], False),
        threads=_whole(v["MNIST_LAB_THREADS"]),
        jobs_per_device=_whole(v["MNIST_LAB_JOBS_PER_DEVICE"]),
        worker_nice=int(v["MNIST_LAB_WORKER_NICE"]) if v["MNIST_LAB_WORKER_NICE"].isdigit() else WORKER_NICENESS,
        cuda_graphs=_flag(v["MNIST_LAB_CUDA_GRAPHS"], True),
        starters=_flag(v["MNIST_LAB_STARTERS"], True),
        preload=_flag(v["MNIST_LAB_PRELOAD"], True),
        ray_address=v["MNIST_LAB_RAY_ADDRESS"] or None,
        ray_gpu_fraction=fraction if 0 < fraction <= 1 else 0.25,
    )


def settings() -> Settings:
    """The settings of the environment as it is now."""
    return _parse(tuple(os.environ.get(name, "") for name in VARIABLES))


def readme_table() -> str:
    """VARIABLES as the README's markdown table."""
    rows = ["| variable | default | what it does |", "|---|---|---|"]
    rows += [f"| `{name}` | {default} | {what} |" for name, (default, what) in VARIABLES.items()]
    return "\n".join(rows)
