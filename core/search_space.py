"""A sweep's search space over the run config: what may be searched and how (log-uniform,
uniform, integer, choice), checked before anything trains; the values a grid takes; Optuna's
suggestion of one trial; and a trial's values applied to the base config (core.sweeps)."""

from __future__ import annotations

import json
import math
from pathlib import Path

from core.config import RunConfig

STRATEGIES = ("grid", "random", "tpe")
KINDS = ("log", "float", "int", "choice")
# what a space may search over, and how each value enters the run config
PARAMS = {
    "lr": "learning rate (log-uniform)", "batch_size": "batch size", "depth": "hidden layers (MLP)",
    "width": "units per hidden layer (MLP)", "dropout": "dropout rate after each hidden layer (MLP)",
    "l2": "L2 regularization λ", "optimizer": "adam or sgd", "epochs": "epochs",
}
GRID_POINTS = 4  # values a grid takes from a continuous range


class SweepError(ValueError):
    """A search space or sweep setting that cannot be used, with what is wrong."""


def default_space(model: str) -> dict:
    """A sensible space for the model: learning rate and batch size always; for the course
    MLP also its depth, width, dropout and L2."""
    space = {"lr": {"log": [1e-4, 1e-2]}, "batch_size": {"choice": [32, 64, 128]}}
    if model in ("mlp", "mlp-fast"):
        space.update({"depth": {"int": [1, 3]}, "width": {"choice": [64, 128, 256]},
                      "dropout": {"float": [0.0, 0.5]}, "l2": {"choice": [0.0, 1e-4, 1e-3]}})
    return space


def check_space(space) -> dict:
    """The space if it is valid; otherwise a SweepError naming the first problem."""
    if not isinstance(space, dict) or not space:
        raise SweepError("the space must be a JSON object of parameters, e.g. {\"lr\": {\"log\": [0.0001, 0.01]}}")
    for name, spec in space.items():
        if name not in PARAMS:
            raise SweepError(f"unknown parameter {name!r}; allowed: {', '.join(PARAMS)}")
        if not isinstance(spec, dict) or len(spec) != 1 or next(iter(spec)) not in KINDS:
            raise SweepError(f"{name}: give one of {', '.join(KINDS)}, e.g. {{\"log\": [0.0001, 0.01]}}")
        kind, values = next(iter(spec.items()))
        if kind == "choice":
            if not isinstance(values, list) or not values:
                raise SweepError(f"{name}: choice needs a non-empty list of values")
            if name == "optimizer" and not set(values) <= {"adam", "sgd"}:
                raise SweepError("optimizer: the choices are adam and sgd")
            if name != "optimizer" and not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                               for v in values):
                raise SweepError(f"{name}: choices must be numbers")
        else:
            if not (isinstance(values, list) and len(values) == 2
                    and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)):
                raise SweepError(f"{name}: {kind} needs [low, high] as two numbers")
            low, high = values
            if not low < high:
                raise SweepError(f"{name}: low ({low}) must be below high ({high})")
            if kind == "log" and low <= 0:
                raise SweepError(f"{name}: a log range must be above 0")
            if kind == "int" and not (float(low).is_integer() and float(high).is_integer()):
                raise SweepError(f"{name}: int needs whole numbers")
        _check_values(name, spec)
    return space


def _check_values(name: str, spec: dict) -> None:
    kind, values = next(iter(spec.items()))
    bounds = {"lr": (1e-7, 10.0), "batch_size": (1, 4096), "depth": (1, 6), "width": (1, 4096),
              "dropout": (0.0, 0.95), "l2": (0.0, 1.0), "epochs": (1, 200)}
    if name in bounds:
        low, high = bounds[name]
        for v in values:
            if not low <= v <= high:
                raise SweepError(f"{name}: {v} is outside {low}..{high}")


def load_space(path) -> dict:
    """A space from a JSON file, checked (SweepError with what is wrong)."""
    try:
        space = json.loads(Path(path).read_text())
    except OSError as exc:
        raise SweepError(f"cannot read the space file {path}: {exc.strerror or exc}") from exc
    except json.JSONDecodeError as exc:
        raise SweepError(f"the space file {path} is not valid JSON: {exc}") from exc
    return check_space(space)


def grid_values(spec: dict) -> list:
    """The values a grid sweep tries for one parameter."""
    kind, values = next(iter(spec.items()))
    if kind == "choice":
        return list(values)
    low, high = values
    if kind == "int":
        return list(range(int(low), int(high) + 1))
    if kind == "log":
        return [float(f"{low * (high / low) ** (i / (GRID_POINTS - 1)):.3g}") for i in range(GRID_POINTS)]
    return [round(low + (high - low) * i / (GRID_POINTS - 1), 6) for i in range(GRID_POINTS)]


def space_size(space: dict, strategy: str) -> float:
    """How many distinct configs the strategy can try (inf for a continuous random/TPE space)."""
    if strategy == "grid":
        return math.prod(len(grid_values(s)) for s in space.values())
    if any(next(iter(s)) in ("log", "float") for s in space.values()):
        return math.inf
    return math.prod(len(grid_values(s)) for s in space.values())


def suggest(trial, space: dict) -> dict:
    """The trial's parameters, from Optuna's sampler."""
    params = {}
    for name, spec in space.items():
        kind, values = next(iter(spec.items()))
        if kind == "log":
            params[name] = trial.suggest_float(name, values[0], values[1], log=True)
        elif kind == "float":
            params[name] = trial.suggest_float(name, values[0], values[1])
        elif kind == "int":
            params[name] = trial.suggest_int(name, int(values[0]), int(values[1]))
        else:
            params[name] = trial.suggest_categorical(name, values)
    return params


def apply_params(base: RunConfig, params: dict) -> RunConfig:
    """The run config of one trial: the base with the trial's parameters put in."""
    changes = {k: params[k] for k in ("lr", "batch_size", "l2", "optimizer", "epochs") if k in params}
    if "batch_size" in changes:
        changes["batch_size"] = int(changes["batch_size"])
    if "epochs" in changes:
        changes["epochs"] = int(changes["epochs"])
    if {"depth", "width", "dropout"} & params.keys():
        hidden = [layer for layer in base.architecture() if layer["type"] == "dense"]
        depth = int(params.get("depth", len(hidden) or 1))
        width = int(params.get("width", hidden[0]["units"] if hidden else 128))
        act = hidden[0].get("activation", "relu") if hidden else "relu"
        layers = [{"type": "flatten"}]
        for _ in range(depth):
            layers.append({"type": "dense", "units": width, "activation": act})
            if params.get("dropout"):
                layers.append({"type": "dropout", "rate": round(float(params["dropout"]), 4)})
        changes.update(model="custom", layers=tuple(layers))
    return base.replace(**changes)
