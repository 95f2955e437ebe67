"""The one config object a run is made from: every hyperparameter, the architecture, the data
set and the device. The app builds it, the CLI builds it, the trainer reads only it, and the
run store saves it as JSON next to the run.

A config that constructs is a config that trains: `RunConfig(...)` validates every field
once, at the edge, and says which field is wrong, what was given and what is allowed.
"""

from __future__ import annotations

import dataclasses
import math
import json
import re
from dataclasses import dataclass, field

from core.data import DATASETS
from core.models import PRESETS, ArchitectureError, output_shapes, preset_layers

OPTIMIZERS = ("adam", "sgd")
LOSSES = ("categorical_crossentropy", "binary_crossentropy")
PRECISIONS = ("fp32", "bf16", "fp16")
LR_SCHEDULES = ("constant", "onecycle", "cosine")


class ConfigError(ValueError):
    """A hyperparameter is out of range; `field` names it."""

    def __init__(self, field_name: str, message: str):
        super().__init__(f"{field_name}: {message}")
        self.field = field_name


MAX_LR, MAX_BATCH, MAX_EPOCHS = 10.0, 1_000_000, 10_000  # beyond them a value is a typo, not an experiment
DEVICE_NAME = re.compile(r"[a-z]{1,10}(:\d{1,2})?")  # the syntax; which devices exist: core.devices


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v) -> bool:
    """A real number: JSON's true/false are not numbers here, and NaN/inf are no setting."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


@dataclass(frozen=True)
class RunConfig:
    """Everything that defines a training run. Defaults are the course's MLP recipe."""

    model: str = "mlp"                 # a preset name, or "custom" with `layers`
    layers: tuple = ()                 # layer specs (core.models); empty = the preset's
    dataset: str = "mnist"
    loss: str = "categorical_crossentropy"
    positive_class: int = 7            # for binary_crossentropy: "is it a 7?"
    optimizer: str = "adam"
    lr: float = 1e-3
    momentum: float = 0.9              # SGD only
    batch_size: int = 50
    epochs: int = 32
    val_split: float = 0.2
    seed: int = 0
    device: str = "auto"
    precision: str = "fp32"            # bf16 autocast on CPU/CUDA, fp16 (+grad scaling) on CUDA
    lr_schedule: str = "constant"
    l2: float = 0.0                    # Keras' kernel_regularizer=l2(l2): l2 * sum of squared kernels added to the loss
    early_stopping: int = 0            # patience in epochs; 0 = off
    restore_best: bool = True          # with early stopping: keep the best epoch's weights
    augment: bool = False              # random small shifts/rotations/scales (for drawn digits)
    train_subset: int = 0              # use only this many training samples (0 = all)
    kfold: tuple = ()                  # (k, fold, stratified) for a k-fold run, else ()
    name: str = ""
    extra: dict = field(default_factory=dict)  # free-form notes (e.g. an experiment group)

    def __post_init__(self):
        if self.model not in PRESETS and self.model != "custom":
            raise ConfigError("model", f"unknown model {self.model!r}; allowed: {', '.join(PRESETS)}, custom")
        if self.model == "custom" and not self.layers:
            raise ConfigError("layers", "a custom model needs at least one layer")
        if not isinstance(self.layers, (list, tuple)) or not all(isinstance(layer, dict) for layer in self.layers):
            raise ConfigError("layers", "must be a list of layers, each like {\"type\": \"dense\", \"units\": 64}")
        object.__setattr__(self, "layers", tuple(dict(layer) for layer in self.layers))
        if not isinstance(self.kfold, (tuple, list)):
            raise ConfigError("kfold", f"must be a list (k, fold[, stratified]), got {self.kfold!r}")
        object.__setattr__(self, "kfold", tuple(self.kfold))
        try:
            output_shapes(self.architecture(), self.num_outputs)
        except ArchitectureError as exc:
            raise ConfigError("layers", str(exc)) from exc
        if self.dataset not in DATASETS:
            raise ConfigError("dataset", f"unknown dataset {self.dataset!r}; allowed: {', '.join(DATASETS)}")
        if self.loss not in LOSSES:
            raise ConfigError("loss", f"unknown loss {self.loss!r}; allowed: {', '.join(LOSSES)}")
        if not (_is_int(self.positive_class) and 0 <= self.positive_class <= 9):
            raise ConfigError("positive_class", f"must be a class 0..9, got {self.positive_class!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError("optimizer", f"unknown optimizer {self.optimizer!r}; allowed: {', '.join(OPTIMIZERS)}")
        if not (_is_num(self.lr) and 0 < self.lr <= MAX_LR):
            raise ConfigError("lr", f"learning rate must be > 0 and at most {MAX_LR:g}, got {self.lr!r}")
        if not (_is_num(self.momentum) and 0 <= self.momentum < 1):
            raise ConfigError("momentum", f"must be in [0, 1), got {self.momentum!r}")
        if not (_is_int(self.batch_size) and 1 <= self.batch_size <= MAX_BATCH):
            raise ConfigError("batch_size", f"batch size must be a whole number from 1 to {MAX_BATCH:,}, "
                                            f"got {self.batch_size!r}")
        if not (_is_int(self.epochs) and 1 <= self.epochs <= MAX_EPOCHS):
            raise ConfigError("epochs", f"epochs must be a whole number from 1 to {MAX_EPOCHS:,}, got {self.epochs!r}")
        if not (_is_num(self.val_split) and 0 < self.val_split < 1):
            raise ConfigError("val_split", f"validation split must be between 0 and 1 (exclusive), got {self.val_split!r}")
        if not (_is_int(self.seed) and 0 <= self.seed < 2**32):  # NumPy's and scikit-learn's seed range
            raise ConfigError("seed", f"seed must be a whole number from 0 to {2**32 - 1:,}, got {self.seed!r}")
        if self.precision not in PRECISIONS:
            raise ConfigError("precision", f"unknown precision {self.precision!r}; allowed: {', '.join(PRECISIONS)}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ConfigError("lr_schedule", f"unknown schedule {self.lr_schedule!r}; allowed: {', '.join(LR_SCHEDULES)}")
        if not (_is_num(self.l2) and 0 <= self.l2 <= 1):
            raise ConfigError("l2", f"L2 factor must be a number between 0 and 1 (Keras' l2(0.0001) is 0.0001), "
                                    f"got {self.l2!r}")
        if not (_is_int(self.early_stopping) and self.early_stopping >= 0):
            raise ConfigError("early_stopping", f"patience must be a whole number >= 0, got {self.early_stopping!r}")
        if not (_is_int(self.train_subset) and self.train_subset >= 0):
            raise ConfigError("train_subset", f"must be a whole number >= 0, got {self.train_subset!r}")
        for name in ("restore_best", "augment"):  # a saved or imported config: "no" is not False
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(name, f"must be true or false, got {getattr(self, name)!r}")
        if not isinstance(self.name, str):
            raise ConfigError("name", f"must be text, got {self.name!r}")
        if not isinstance(self.extra, dict):
            raise ConfigError("extra", f"must be an object of notes, got {type(self.extra).__name__}")
        if self.kfold:
            k, fold = self.kfold[0], self.kfold[1] if len(self.kfold) > 1 else None
            if len(self.kfold) > 3 or (len(self.kfold) == 3 and not isinstance(self.kfold[2], bool)):
                raise ConfigError("kfold", f"needs (k, fold[, stratified]), got {self.kfold!r}")
            if not (_is_int(k) and 2 <= k <= 10 and _is_int(fold) and 0 <= fold < k):
                raise ConfigError("kfold", f"needs (k, fold) with 2 <= k <= 10 and 0 <= fold < k, got {self.kfold!r}")
        if not isinstance(self.device, str) or not DEVICE_NAME.fullmatch(self.device):
            raise ConfigError("device", f"must be a device name such as auto, cpu, cuda, cuda:0, mps; got {self.device!r}")

    @classmethod
    def from_preset(cls, model: str = "mlp", **overrides) -> "RunConfig":
        """A preset's architecture and its recommended training settings, then `overrides`."""
        if model not in PRESETS:
            raise ConfigError("model", f"unknown model {model!r}; allowed: {', '.join(PRESETS)}")
        settings = dict(PRESETS[model]["train"])
        settings.update({k: v for k, v in overrides.items() if v is not None})
        return cls(model=model, **settings)

    @property
    def num_outputs(self) -> int:
        return 1 if self.loss == "binary_crossentropy" else 10

    def architecture(self) -> list[dict]:
        """The body layers (the output layer is added by the builder)."""
        return [dict(layer) for layer in self.layers] if self.layers else preset_layers(self.model)

    def check_data_size(self, train_size: int) -> None:
        """Checks that need the data set: a batch larger than the training set is refused."""
        if self.batch_size > train_size:
            raise ConfigError("batch_size", f"batch size {self.batch_size} is larger than the training set "
                                            f"({train_size} samples after the validation split)")

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["layers"] = [dict(layer) for layer in self.layers]  # empty for a preset: see architecture()
        d["kfold"] = list(self.kfold)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> "RunConfig":
        """Rebuild (and re-validate) a config saved by `to_dict`; unknown keys are refused."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ConfigError(sorted(unknown)[0], f"unknown config field(s): {', '.join(sorted(unknown))}")
        return cls(**d)

    def replace(self, **changes) -> "RunConfig":
        return dataclasses.replace(self, **changes)


# --- sharing a setup through a link ---------------------------------------------------------

SHARED_FIELDS = ("model", "dataset", "loss", "positive_class", "optimizer", "lr", "momentum", "batch_size",
                 "epochs", "val_split", "seed", "device", "precision", "lr_schedule", "l2", "early_stopping",
                 "augment", "train_subset")


def to_query_params(config: RunConfig) -> dict[str, str]:
    """The fields a teacher shares, as URL query parameters (layers as compact JSON)."""
    out = {}
    for name in SHARED_FIELDS:
        value = getattr(config, name)
        out[name] = str(int(value)) if isinstance(value, bool) else str(value)
    if config.layers:
        out["layers"] = json.dumps(list(config.layers), separators=(",", ":"))
    return out


MAX_LINK_VALUE = 4000  # characters of one link parameter (a 20-layer network's JSON is ~1,500)


def from_query_params(params: dict[str, str]) -> RunConfig:
    """Rebuild a config from a shared link; a bad value raises ConfigError naming the field.
    Fields not in the link take the model preset's settings."""
    kinds = {f.name: f.type for f in dataclasses.fields(RunConfig)}
    values: dict = {}
    unknown = sorted(set(params) - set(SHARED_FIELDS) - {"layers"})
    if unknown:
        shown = ", ".join(repr(k[:40]) for k in unknown[:5])
        raise ConfigError("link", f"unknown parameter(s) {shown}; a link may set: {', '.join(SHARED_FIELDS)}, layers")
    for name, raw in params.items():
        if len(str(raw)) > MAX_LINK_VALUE:
            raise ConfigError(name, f"the link's value is {len(str(raw)):,} characters long; at most "
                                    f"{MAX_LINK_VALUE:,} are read")
    for name in SHARED_FIELDS + ("layers",):
        if name not in params:
            continue
        raw = params[name]
        try:
            if name == "layers":
                parsed = json.loads(raw)
                if not isinstance(parsed, list):
                    raise ConfigError("layers", "must be a JSON list of layers")
                values[name] = tuple(parsed)
            elif kinds[name] in ("int", int):
                values[name] = int(raw)
            elif kinds[name] in ("float", float):
                values[name] = float(raw)
            elif kinds[name] in ("bool", bool):
                values[name] = raw.lower() in ("1", "true", "yes")
            else:
                values[name] = raw
        except (ValueError, TypeError) as exc:
            raise ConfigError(name, f"cannot read {raw!r} from the link ({exc})") from exc
    model = values.pop("model", "mlp")
    if model in PRESETS:
        return RunConfig.from_preset(model, **values)
    return RunConfig(model=model, **values)
