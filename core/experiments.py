"""Experiments made of several runs, and what the pages say about runs: the table of runs,
config differences, smoothing, k-fold groups, the capacity study and the under/overfitting
diagnosis of the course (high/high, low/high, low/low errors).

Plain functions over the run store's rows and histories, so the CLI, a notebook and the pages
compute the same numbers.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from core.config import RunConfig
from core.store.records import ACTIVE

# --- the table of runs ------------------------------------------------------------------

TABLE_COLUMNS = ["id", "name", "status", "model", "params", "optimizer", "lr", "batch_size", "epochs",
                 "epochs_done", "device", "seconds", "best_val_accuracy", "last_val_accuracy",
                 "test_accuracy", "dataset", "tags", "created"]


def runs_table(runs: list[dict]) -> pd.DataFrame:
    """One row per run (the store's rows), the columns the experiments page shows."""
    df = pd.DataFrame(runs, columns=[c for c in TABLE_COLUMNS])
    if df.empty:
        return df
    df["tags"] = df["tags"].map(lambda t: ", ".join(t or []))
    df["created"] = pd.to_datetime(df["created"], unit="s").dt.strftime("%Y-%m-%d %H:%M")
    return df


def readable(value, digits: int = 4):
    """A float rounded to `digits` significant digits for a table (a sweep's learning rate
    0.0016756813861488488 reads 0.001676); anything else as it is. The stored value is untouched."""
    if isinstance(value, float) and np.isfinite(value) and value != 0:
        return float(f"{value:.{digits}g}")
    return value


NOT_USED = "—"  # a setting the run's training never reads


def config_diff(configs: dict[str, RunConfig]) -> pd.DataFrame:
    """Configs side by side (one column per run), with a `differs` column for highlighting.
    A setting the run does not use reads "—" (a multi-class run's positive class, Adam's
    momentum): "7" and "0.9" there read as if they had shaped the run."""
    rows = {}
    for run_id, cfg in configs.items():
        d = cfg.to_dict()
        d["layers"] = " | ".join(_layer_text(layer) for layer in cfg.architecture())
        d.pop("extra", None)
        if cfg.num_outputs != 1:
            d["positive_class"] = NOT_USED
        if cfg.optimizer != "sgd":
            d["momentum"] = NOT_USED
        rows[run_id] = {k: (str(v) if isinstance(v, (list, tuple, dict)) else readable(v)) for k, v in d.items()}
    df = pd.DataFrame(rows)
    df["differs"] = df.astype(str).nunique(axis=1) > 1
    return df


def _layer_text(layer: dict) -> str:
    keys = [k for k in layer if k != "type"]
    return layer["type"] + ("(" + ", ".join(f"{k}={layer[k]}" for k in keys) + ")" if keys else "")


def smooth(values, weight: float) -> np.ndarray:
    """TensorBoard's exponential moving average with debiasing (weight 0 = raw values).

    By hand because pandas' ewm has no debiasing at the start and TensorBoard users expect
    this exact curve; a few lines.
    """
    values = np.asarray(values, dtype=float)
    out, last, num = np.empty_like(values), 0.0, 0
    for i, v in enumerate(values):
        num += 1
        last = last * weight + (1 - weight) * v
        out[i] = last / (1 - weight ** num) if weight > 0 else v
    return out


def distinct_labels(names: dict[str, str]) -> dict[str, str]:
    """Run id -> a legend label: the run's name, with the end of its id where two runs share a
    name (a chart colours by label: two "mlp" runs would otherwise be one line of one colour)."""
    counts: dict[str, int] = {}
    for name in names.values():
        counts[name] = counts.get(name, 0) + 1
    return {run_id: name if counts[name] == 1 else f"{name} ({run_id[-6:]})" for run_id, name in names.items()}


def curves_frame(histories: dict[str, list[dict]], labels: dict[str, str] | None = None) -> pd.DataFrame:
    """Long table for curve charts: run, label, epoch, split (train/validation), metric, value."""
    rows = []
    for run_id, history in histories.items():
        for h in history:
            for split, prefix in (("train", "train_"), ("validation", "val_")):
                for metric in ("loss", "accuracy"):
                    rows.append({"run": run_id, "label": (labels or {}).get(run_id, run_id), "epoch": h["epoch"],
                                 "split": split, "metric": metric, "value": h[prefix + metric]})
    return pd.DataFrame(rows, columns=["run", "label", "epoch", "split", "metric", "value"])


def hyperparameter_frame(runs: list[dict], configs: dict[str, RunConfig], name: str) -> pd.DataFrame:
    """Finished runs: one hyperparameter against test accuracy."""
    rows = []
    for r in runs:
        if r["status"] != "finished" or r["id"] not in configs or r["test_accuracy"] is None:
            continue
        value = r.get(name) if name in ("params", "seconds") else getattr(configs[r["id"]], name)
        rows.append({"run": r["id"], "name": r["name"], name: value, "test_accuracy": r["test_accuracy"]})
    return pd.DataFrame(rows)


def _speed_key(config: dict) -> tuple:
    from core.models import preset_layers

    layers = config.get("layers") or (preset_layers(config["model"]) if config.get("model") != "custom" else [])
    return (json.dumps(layers, sort_keys=True), config.get("dataset"), config.get("batch_size"),
            config.get("precision"), config.get("loss"), bool(config.get("augment")))


def device_speeds(runs: list[dict], config: RunConfig) -> pd.DataFrame:
    """Seconds per epoch of the stored runs that trained the same thing as `config` (same
    layers, data set, batch size, precision, loss and augmentation), by device, fastest first,
    with the speed-up over the slowest device (the CPU, usually)."""
    want = _speed_key(config.to_dict())
    rows = []
    for r in runs:
        if r["status"] != "finished" or not r.get("seconds") or not r.get("epochs_done"):
            continue
        try:
            saved = json.loads(r["config"])
        except (TypeError, ValueError):
            continue
        if _speed_key(saved) == want:
            rows.append({"device": r["device"], "seconds per epoch": r["seconds"] / r["epochs_done"]})
    if not rows:
        return pd.DataFrame(columns=["device", "runs", "seconds per epoch", "speed-up"])
    df = (pd.DataFrame(rows).groupby("device")["seconds per epoch"].agg(["median", "count"]).reset_index()
          .rename(columns={"median": "seconds per epoch", "count": "runs"}).sort_values("seconds per epoch"))
    df["speed-up"] = df["seconds per epoch"].max() / df["seconds per epoch"]
    return df[["device", "runs", "seconds per epoch", "speed-up"]].reset_index(drop=True)


# --- gradients per layer ----------------------------------------------------------------------

def activation_configs(base: RunConfig, activations=("sigmoid", "relu")) -> list[RunConfig]:
    """The same network with its hidden layers' activation changed: to see vanishing gradients."""
    out = []
    for act in activations:
        layers = tuple({**layer, "activation": act} if layer["type"] in ("dense", "conv") else dict(layer)
                       for layer in base.architecture())
        out.append(base.replace(model="custom", layers=layers, name=f"{base.name or base.model} with {act}",
                                extra={**base.extra, "activation": act}))
    return out


def gradient_norms_frame(histories: dict[str, list[dict]]) -> pd.DataFrame:
    """Long table (run, epoch, layer, depth, norm) of the mean gradient norm of each layer's
    kernel per epoch, from the runs' histories (core.training samples it every few steps)."""
    rows = []
    for label, history in histories.items():
        for h in history:
            for depth, (layer, norm) in enumerate((h.get("grad_norm") or {}).items(), start=1):
                rows.append({"run": label, "epoch": h["epoch"], "layer": layer, "depth": depth, "norm": norm})
    return pd.DataFrame(rows, columns=["run", "epoch", "layer", "depth", "norm"])


# --- k-fold -----------------------------------------------------------------------------

def kfold_configs(base: RunConfig, k: int, stratified: bool = True) -> list[RunConfig]:
    """One config per fold of a k-fold cross-validation of `base`."""
    return [base.replace(kfold=(k, fold, stratified), name=f"{base.name or base.model} fold {fold + 1} of {k}")
            for fold in range(k)]


def fold_grid(folds: np.ndarray, show: int = 60) -> pd.DataFrame:
    """For the first `show` samples: in iteration i (fold i held out), is the sample used for
    training or validation? Long form (iteration, sample, role) for a grid chart."""
    k = int(folds.max()) + 1
    rows = [{"iteration": f"fold {i + 1}", "sample": s, "role": "validation" if folds[s] == i else "train"}
            for i in range(k) for s in range(min(show, len(folds)))]
    return pd.DataFrame(rows)


def fold_balance(labels: np.ndarray, folds: np.ndarray) -> pd.DataFrame:
    """Share of each class in each fold's validation part (rows: fold, columns: class)."""
    df = pd.crosstab(pd.Series(folds + 1, name="fold"), pd.Series(labels, name="class"), normalize="index")
    return df


def kfold_summary(runs: list[dict]) -> dict:
    """Per-fold validation accuracy (last epoch's) and mean and standard deviation over folds."""
    scores = [r["last_val_accuracy"] for r in runs if r["status"] == "finished" and r["last_val_accuracy"] is not None]
    return {"folds_done": len(scores), "folds": len(runs), "scores": scores,
            "mean": float(np.mean(scores)) if scores else None,
            "std": float(np.std(scores, ddof=1)) if len(scores) > 1 else None}


def group_progress(runs: list[dict]) -> dict:
    """How far a group of runs (a k-fold, a study) is, in epochs: a run that ended (finished,
    early-stopped, cancelled, failed) counts whole, a queued one zero, a running one its
    finished epochs plus the part of the epoch its live progress reports. A vectorised group's
    folds finish together at the very end, so "folds done" alone says 0 of 5 until then."""
    total = done = 0.0
    for r in runs:
        epochs = r["epochs"] or 0
        total += epochs
        if r["status"] not in ACTIVE:
            done += epochs
        else:
            prog = r.get("progress") or {}
            part = prog["batch"] / prog["batches"] if prog.get("epoch") == r["epochs_done"] + 1 else 0.0
            done += min(r["epochs_done"] + part, epochs)
    return {"fraction": done / total if total else 0.0, "epochs_done": done, "epochs": total,
            "ended": sum(r["status"] not in ACTIVE for r in runs), "runs": len(runs)}


# --- under- and overfitting ---------------------------------------------------------------

CAPACITIES = (2, 8, 32, 128, 512)


def capacity_configs(base: RunConfig, units=CAPACITIES) -> list[RunConfig]:
    """The capacity study: the same task with one hidden dense layer of growing width."""
    return [base.replace(model="custom", name=f"capacity {u} units",
                         layers=({"type": "flatten"}, {"type": "dense", "units": int(u), "activation": "relu"}),
                         extra={**base.extra, "capacity": int(u)})
            for u in units]


REGULARIZATION_ARMS = (("none", False, False), ("L2", True, False), ("dropout", False, True),
                       ("L2 + dropout", True, True))


def regularization_configs(base: RunConfig, units: int = 2048, l2: float = 1e-4, dropout: float = 0.5) -> list[RunConfig]:
    """The course's third remedy, "regularize": the same over-large model (one hidden layer of
    `units`) on the same small training set, without regularization, with L2 on its kernels,
    with dropout, and with both."""
    out = []
    for arm, use_l2, use_dropout in REGULARIZATION_ARMS:
        layers = [{"type": "flatten"}, {"type": "dense", "units": int(units), "activation": "relu"}]
        if use_dropout:
            layers.append({"type": "dropout", "rate": float(dropout)})
        out.append(base.replace(model="custom", layers=tuple(layers), l2=float(l2) if use_l2 else 0.0,
                                name=f"regularize: {arm}", extra={**base.extra, "regularization": arm}))
    return out


def regularization_base(dataset: str = "mnist-sample", epochs: int = 60, subset: int = 1000) -> RunConfig:
    """The training of the regularization study: SGD with momentum 0.9 at a constant 0.01,
    batch 32, on `subset` training digits. Measured on the sample with 2048 units, L2 1e-3 and
    dropout 0.5 (60 epochs): final validation loss 0.410 without regularization, 0.351 with
    L2, 0.390 with dropout, 0.333 with both, the unregularized one turning up after epoch 8.
    With Adam at 0.001 the L2 run ended worse than the plain one (0.504 vs 0.439)."""
    return RunConfig.from_preset("mlp", dataset=dataset, epochs=epochs, train_subset=subset, optimizer="sgd",
                                 lr=0.01, momentum=0.9, lr_schedule="constant", batch_size=32)


def regularization_frame(runs: list[dict], histories: dict[str, list[dict]], arms: dict[str, str]) -> pd.DataFrame:
    """One row per arm of the regularization study: final train and validation error and loss,
    the lowest validation loss and its epoch, and whether the validation loss turned up
    (`overfit_epoch`) and how far it ended above its lowest.

    No underfitting/overfitting label: every arm is the same over-large model and memorizes
    its training digits (training error 0), so the course's table calls all four "overfitting"
    and cannot tell them apart; what regularization changes, and this study shows, is whether
    the validation loss turns up."""
    rows = []
    for r, h, last in _with_history(runs, histories):
        best = min(range(len(h)), key=lambda i: h[i]["val_loss"])
        turn = overfit_epoch(h)
        rows.append({"arm": arms[r["id"]], "status": r["status"], "train error": 1 - last["train_accuracy"],
                     "validation error": 1 - last["val_accuracy"], "final validation loss": last["val_loss"],
                     "lowest validation loss": h[best]["val_loss"], "lowest at epoch": h[best]["epoch"],
                     "above its lowest": loss_rise(h),
                     "validation loss turned up": f"after epoch {turn}" if turn else "no",
                     "test accuracy": r.get("test_accuracy")})
    order = {arm: i for i, (arm, _, _) in enumerate(REGULARIZATION_ARMS)}
    return pd.DataFrame(rows).sort_values("arm", key=lambda s: s.map(order)) if rows else pd.DataFrame(rows)


def regularization_caption(frame: pd.DataFrame) -> str:
    """What the regularization study's chart and table show, from their numbers: which arm ended
    with the lowest validation loss, and whether the unregularized one turned up."""
    best = frame.loc[frame["final validation loss"].idxmin()]
    text = f"Lowest final validation loss: **{best['arm']}** ({best['final validation loss']:.4f})"
    plain = frame[frame["arm"] == "none"]
    if plain.empty:
        return text + "."
    plain = plain.iloc[0]
    if best["arm"] != "none":
        text += f", against {plain['final validation loss']:.4f} without regularization"
    if plain["validation loss turned up"] == "no":
        return text + (". Without regularization the validation loss did not turn up in these epochs: more epochs "
                       "or fewer training digits make the overfitting show.")
    held = [a for a in frame.loc[frame["validation loss turned up"] == "no", "arm"]]
    text += (f". Without regularization the validation loss was lowest at epoch {int(plain['lowest at epoch'])} and "
             f"ended {plain['above its lowest']:.0%} above it")
    return text + (f"; {' and '.join(held)} did not turn up." if held else ".")


def _with_history(runs: list[dict], histories: dict[str, list[dict]]):
    """(run, its history, its last epoch) for the runs that finished at least one epoch."""
    for r in runs:
        h = histories.get(r["id"]) or []
        if h:
            yield r, h, h[-1]


def overfit_epoch(history: list[dict]) -> int | None:
    """The epoch where overfitting starts: validation loss at its minimum and rising after it
    while training loss keeps falling. None when validation loss never turns up."""
    if len(history) < 3:
        return None
    val = np.array([h["val_loss"] for h in history])
    train = np.array([h["train_loss"] for h in history])
    best = int(val.argmin())
    if best >= len(history) - 1:
        return None
    rises = val[-1] > val[best] * 1.02   # a real turn, not noise
    train_falls = train[-1] < train[best]
    return history[best]["epoch"] if rises and train_falls else None


DIAGNOSIS_HIGH = 0.1  # a training error this high is "high" in the course's table


def diagnose(train_error: float, val_error: float, high: float = DIAGNOSIS_HIGH, gap: float = 0.03,
             achievable: float | None = None) -> str:
    """The course's table: underfitting (high train and validation error), overfitting (low
    train error, high validation error), a good fit (both low).

    A validation error is "high" when it is `gap` above the training error, or, with
    `achievable` (the lowest validation error other models reached on the same data), `gap`
    above that: on a few hundred digits no model gets near its training error, and the
    course's "good fit" is the balance the data allows, not a zero gap."""
    if train_error >= high:
        return "underfitting"
    floor = train_error if achievable is None else max(train_error, achievable)
    if val_error - floor >= gap:
        return "overfitting"
    return "good fit"


def loss_rise(history: list[dict]) -> float:
    """How far the last validation loss ended above the run's lowest (0.19: 19% above)."""
    val = [h["val_loss"] for h in history]
    return val[-1] / min(val) - 1 if history and min(val) > 0 else 0.0


def curve_verdict(history: list[dict]) -> str:
    """The annotated run's diagnosis, from its last epoch and its validation-loss curve.

    The course gives two signs of overfitting: the table's (training error low, validation
    error high) and the MLP demo's (validation loss turns up while training loss falls). They
    can disagree, a model that memorized its digits with a validation loss still flat, so the
    text says both and how they relate, never "overfitting" next to "no sign of overfitting"."""
    last = history[-1]
    train_err, val_err = 1 - last["train_accuracy"], 1 - last["val_accuracy"]
    verdict = diagnose(train_err, val_err)
    turn = overfit_epoch(history)
    text = f"**Diagnosis: {verdict}.** Training error {train_err:.2%}, validation error {val_err:.2%}"
    if verdict == "underfitting":
        text += f": {DIAGNOSIS_HIGH:.0%} or more of its own training digits are still wrong."
    elif verdict == "overfitting":
        text += (f": {(val_err - train_err) * 100:.1f} points worse on new digits than on the ones it learned.")
    else:
        text += ": both low and close."
    if turn:
        text += (f" Validation loss was lowest at epoch {turn} and ended {loss_rise(history):.0%} above it while the "
                 "training loss kept falling")
        return text + (", though the model has not learned its training digits yet: capacity or epochs first."
                       if verdict == "underfitting" else
                       ": overfitting begins there (early stopping would keep that epoch).")
    if verdict == "overfitting":
        return text + (" Its validation loss did not turn up in these epochs: the gap between the errors shows the "
                       "overfitting, the loss curve not (yet).")
    return text + " Validation loss did not turn up: no sign of overfitting in these epochs."


def capacity_caption(frame: pd.DataFrame) -> str:
    """How the capacity study's regimes were judged, with its numbers (the fitting page's caption)."""
    fitted = frame[frame["train_error"] < DIAGNOSIS_HIGH]
    text = (f"High training error means {DIAGNOSIS_HIGH:.0%} or more. A validation error counts as high when it is "
            "3 points or more above the lowest validation error the other models reached on the same digits "
            "(what this much data allows), and above the model's own training error.")
    if len(fitted):
        best = fitted.loc[fitted["val_error"].idxmin()]
        text += (f" Here the lowest is {best['val_error']:.2%}, by {int(best['capacity'])} units, while the training "
                 f"errors of the models that fit reach {fitted['train_error'].min():.2%}: the gap that is left is what "
                 "more training digits would close.")
    return text


def capacity_frame(runs: list[dict], histories: dict[str, list[dict]], configs: dict[str, RunConfig]) -> pd.DataFrame:
    """Final train and validation error of each run of a capacity study, with the diagnosis.

    Each model is judged against the others of the study (`diagnose`'s `achievable`: the
    lowest validation error another model that fits its training set reached on the same
    data): one wide enough to learn the task and as good on new digits as this data allows is a
    good fit; one that learned its training digits and is clearly worse on new ones overfits."""
    rows = []
    for r, _, last in _with_history(runs, histories):
        cap = configs[r["id"]].extra.get("capacity")
        train_err, val_err = 1 - last["train_accuracy"], 1 - last["val_accuracy"]
        rows.append({"run": r["id"], "capacity": cap, "params": r["params"], "status": r["status"],
                     "train_error": train_err, "val_error": val_err,
                     "train_loss": last["train_loss"], "val_loss": last["val_loss"]})
    for row in rows:
        others = [o["val_error"] for o in rows if o is not row and o["train_error"] < DIAGNOSIS_HIGH]
        row["regime"] = diagnose(row["train_error"], row["val_error"], achievable=min(others) if others else None)
    return pd.DataFrame(rows).sort_values("capacity") if rows else pd.DataFrame(rows)
