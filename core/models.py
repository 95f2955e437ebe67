"""Model architectures as data (a list of layer specs), the PyTorch modules built from them,
the presets of the course, and a Keras-style summary.

An architecture is a list of plain dicts, one per layer, so that the train page can add,
remove and reorder layers, the run store can save it as JSON, and the CLI can name a preset:

    {"type": "conv", "filters": 32, "kernel": 3, "padding": "same", "stride": 1, "activation": "relu"}
    {"type": "pool", "kind": "max", "size": 2}
    {"type": "dropout", "rate": 0.25}
    {"type": "batchnorm"}
    {"type": "flatten"}
    {"type": "global_avg_pool"}
    {"type": "dense", "units": 128, "activation": "relu"}

What each kind does (shape, build, label, code, editor fields) is its entry in core/layer_kinds.py.

The output layer (10 units with softmax, or 1 unit with sigmoid for a one-vs-rest task) is
appended by the builder, so a user-built model can never lose it. The network returns
logits: the softmax is applied inside the loss (cross-entropy = log-softmax + NLL, which is
numerically safer than softmax then log) and when probabilities are asked for.
"""

from __future__ import annotations

import math
from collections import Counter

import torch
from torch import nn

from core.layer_kinds import (ACTIVATIONS, INPUT_SHAPE, KINDS, LAYER_TYPES, MAX_DROPOUT, MAX_SPAN, MAX_WIDTH,
                              PADDINGS, POOL_KINDS, ArchitectureError, activation_module, check, kind_of)

__all__ = ["ACTIVATIONS", "INPUT_SHAPE", "KINDS", "LAYER_TYPES", "MAX_DROPOUT", "MAX_SPAN", "MAX_WIDTH", "PADDINGS",
           "POOL_KINDS", "PRESETS", "ArchitectureError", "LabModel", "activation_module", "build_model",
           "count_parameters", "first_layer_weights", "kernel_parameters", "output_shapes", "summary"]


# --- presets ----------------------------------------------------------------------------

def course_mlp() -> list[dict]:
    """The course's demo MLP: Flatten -> Dense 256 ReLU -> 64 ReLU -> 32 ReLU (-> Dense 10 softmax)."""
    return [
        {"type": "flatten"},
        {"type": "dense", "units": 256, "activation": "relu"},
        {"type": "dense", "units": 64, "activation": "relu"},
        {"type": "dense", "units": 32, "activation": "relu"},
    ]


def lenet5() -> list[dict]:
    """LeNet-5 (LeCun et al. 1998) on 28x28 input: the first conv pads to keep 28x28, as the
    original's 32x32 input did; tanh and average pooling, as in the paper."""
    return [
        {"type": "conv", "filters": 6, "kernel": 5, "padding": "same", "activation": "tanh"},
        {"type": "pool", "kind": "avg", "size": 2},
        {"type": "conv", "filters": 16, "kernel": 5, "padding": "valid", "activation": "tanh"},
        {"type": "pool", "kind": "avg", "size": 2},
        {"type": "flatten"},
        {"type": "dense", "units": 120, "activation": "tanh"},
        {"type": "dense", "units": 84, "activation": "tanh"},
    ]


def fast_cnn() -> list[dict]:
    """A small CNN that reaches 99% on MNIST in three epochs (~20 s) on a 2-core CPU (bench/).

    Two conv blocks with batch norm (which lets a high learning rate train stably) and one
    small dense layer: few multiply-adds per image, so an epoch is a few seconds.
    """
    return [
        {"type": "conv", "filters": 16, "kernel": 3, "padding": "same", "activation": "relu"},
        {"type": "batchnorm"},
        {"type": "pool", "kind": "max", "size": 2},
        {"type": "conv", "filters": 32, "kernel": 3, "padding": "same", "activation": "relu"},
        {"type": "batchnorm"},
        {"type": "pool", "kind": "max", "size": 2},
        {"type": "flatten"},
        {"type": "dense", "units": 64, "activation": "relu"},
    ]


def accurate_cnn() -> list[dict]:
    """A CNN for 99.5% on MNIST: two blocks of two 3x3 convolutions (32, then 64 filters) with
    batch norm, a dense layer with dropout, trained on augmented digits. Measured on an H100
    with bench/gpu_speed.py (README); on a laptop CPU an epoch takes about a minute."""
    def block(filters: int) -> list[dict]:
        conv = {"type": "conv", "filters": filters, "kernel": 3, "padding": "same", "activation": "relu"}
        return [conv, {"type": "batchnorm"}, dict(conv), {"type": "batchnorm"}, {"type": "pool", "kind": "max", "size": 2}]

    return [*block(32), *block(64), {"type": "flatten"}, {"type": "dense", "units": 128, "activation": "relu"},
            {"type": "dropout", "rate": 0.3}]


# name -> title, layers, recommended training settings, and what the preset is for
PRESETS: dict[str, dict] = {
    "mlp": {
        "title": "Course MLP, the slides' recipe (Dense 256-64-32)",
        "layers": course_mlp,
        # Exactly the lecture's demo: Adam(0.001), fit(epochs=32, batch_size=50, validation_split=0.2).
        "train": {"optimizer": "adam", "lr": 1e-3, "batch_size": 50, "epochs": 32, "val_split": 0.2,
                  "lr_schedule": "constant"},
        "about": "The lecture's MNIST MLP demo as the slides write it: Adam with a constant learning rate of "
                 "0.001, 32 epochs of batch 50, 20% validation. It overfits after a few epochs (validation loss "
                 "rises while training loss keeps falling), as the slides show.",
    },
    "mlp-fast": {
        "title": "Course MLP, tuned (one-cycle, 10 epochs)",
        "layers": course_mlp,
        # The same network; a one-cycle schedule peaking at 2e-3 gets it to ~98.2% in 10 epochs (bench/).
        "train": {"optimizer": "adam", "lr": 2e-3, "batch_size": 50, "epochs": 10, "val_split": 0.2,
                  "lr_schedule": "onecycle"},
        "about": "The same network as the slides' recipe, trained differently: a one-cycle learning-rate "
                 "schedule (warm up to 0.002, then anneal) for 10 epochs instead of a constant 0.001 for 32. "
                 "Same accuracy in a third of the epochs, and no overfitting at the end.",
    },
    "lenet5": {
        "title": "LeNet-5 (LeCun et al. 1998)",
        "layers": lenet5,
        "train": {"optimizer": "adam", "lr": 2e-3, "batch_size": 64, "epochs": 12, "lr_schedule": "onecycle"},
        "about": "The classic CNN: two 5x5 tanh convolutions with average pooling, then dense 120 and 84.",
        "reference": {"test_error": 0.0095,
                      "citation": "Y. LeCun, L. Bottou, Y. Bengio, P. Haffner, \"Gradient-based learning applied to "
                                  "document recognition\", Proceedings of the IEEE 86(11):2278-2324, 1998",
                      "figure": "LeNet-5: 0.95% test error on MNIST (0.8% when trained with distorted images)",
                      # measured with tests/test_accuracy.py's recipe, seeds 0 and 1, full MNIST, CPU
                      "lab": "0.93% mean test error over seeds 0 and 1 (98.89% and 99.25% accuracy) after 12 epochs"},
    },
    "cnn": {
        "title": "Small fast CNN",
        "layers": fast_cnn,
        # Batch norm lets a one-cycle schedule peak at 1e-2; batches above 128 were slower here.
        "train": {"optimizer": "adam", "lr": 1e-2, "batch_size": 128, "epochs": 3, "lr_schedule": "onecycle"},
        "about": "Two small convolution blocks with batch norm: 99% on MNIST in three epochs on a laptop CPU.",
    },
    "cnn-accurate": {
        "title": "Accurate CNN (99.5%, augmented)",
        "layers": accurate_cnn,
        "train": {"optimizer": "adam", "lr": 5e-3, "batch_size": 128, "epochs": 15, "lr_schedule": "onecycle",
                  "augment": True},
        "about": "Two blocks of two convolutions with batch norm, dropout, 15 epochs on randomly shifted, rotated "
                 "and rescaled digits: over 99.5% on MNIST. Seconds on a GPU, about a quarter of an hour on a "
                 "laptop CPU.",
    },
}


def preset_differences(a: str, b: str) -> list[str]:
    """What preset `b` trains differently from preset `a`, as short phrases ("lr 0.001 -> 0.002")."""
    ta, tb = PRESETS[a]["train"], PRESETS[b]["train"]
    out = []
    for key in sorted(set(ta) | set(tb)):
        if ta.get(key) != tb.get(key):
            out.append(f"{key} {ta.get(key, 'default')} -> {tb.get(key, 'default')}")
    if PRESETS[a]["layers"]() != PRESETS[b]["layers"]():
        out.append("different layers")
    return out


def preset_layers(name: str) -> list[dict]:
    if name not in PRESETS:
        raise ArchitectureError(f"unknown model {name!r}; allowed: {', '.join(PRESETS)}")
    return PRESETS[name]["layers"]()


# --- validation and shapes --------------------------------------------------------------

MAX_LAYERS = 64
# A model's size is bounded before anything is built (a shared link is a config: one with a
# 512-filter 'same' convolution then dense 4096 asked 1.6 billion weights, 7 GB, of a page view).
MAX_PARAMS = 50_000_000          # 200 MB of float32 weights; the largest preset has about 0.3 M
MAX_VALUES_PER_DIGIT = 4_000_000  # every layer's outputs for one digit: 16 MB, 1 GB at batch 64


def output_shapes(layers: list[dict], num_outputs: int = 10) -> list[tuple[int, ...]]:
    """The output shape (without the batch) of every layer, the output layer included.

    Checks the whole architecture first, so every impossible one is explained before any
    training: a kernel or pool larger than its input, a dense layer on an image without a
    flatten, a conv after a flatten, an unknown activation, a dropout rate outside [0, 0.99], a
    model over MAX_PARAMS weights or MAX_VALUES_PER_DIGIT outputs per digit.
    """
    shape: tuple[int, ...] = INPUT_SHAPE
    shapes = []
    if len(layers) > MAX_LAYERS:
        raise ArchitectureError(f"{len(layers)} layers; the lab builds at most {MAX_LAYERS}")
    params = values = 0
    for i, layer in enumerate(layers):
        before = shape
        kind = layer.get("type")
        check(kind in LAYER_TYPES, i, layer, f"unknown layer type {kind!r}; allowed: {', '.join(LAYER_TYPES)}")
        if "activation" in layer or KINDS[kind].has_activation:
            act = layer.get("activation", "linear")
            check(act in ACTIVATIONS, i, layer, f"unknown activation {act!r}; allowed: {', '.join(ACTIVATIONS)}")
        shape = KINDS[kind].out_shape(layer, shape, i)
        params += KINDS[kind].params(layer, before, shape)
        values += int(math.prod(shape))
        check(params <= MAX_PARAMS, i, layer,
               f"the model has {params:,} weights up to here; the lab builds at most {MAX_PARAMS:,} "
               f"({MAX_PARAMS * 4 // 10**6:,} MB): fewer units or filters, or a pooling layer before the flatten")
        check(values <= MAX_VALUES_PER_DIGIT, i, layer,
               f"the layers up to here output {values:,} values per digit; the lab allows at most "
               f"{MAX_VALUES_PER_DIGIT:,}: fewer filters, or pooling")
        shapes.append(shape)
    if len(shape) != 1:
        raise ArchitectureError(
            f"the last layer gives a {'x'.join(map(str, shape))} feature map; add a flatten layer "
            "before the output layer"
        )
    shapes.append((num_outputs,))
    return shapes


# --- building ---------------------------------------------------------------------------

def _keras_name(layer: dict, seen: Counter) -> str:
    base = kind_of(layer).keras_name(layer)
    n = seen[base]
    seen[base] += 1
    return base if n == 0 else f"{base}_{n}"


class LabModel(nn.Module):
    """A sequence of named blocks (one per layer spec) returning logits.

    Blocks are kept by name, the names a Keras summary would show, so that feature maps and
    activations can be read layer by layer (`forward_features`) for the pages.
    """

    def __init__(self, layers: list[dict], num_outputs: int = 10):
        super().__init__()
        shapes = output_shapes(layers, num_outputs)
        self.layer_specs = [dict(layer) for layer in layers]
        self.num_outputs = num_outputs
        self.blocks = nn.ModuleDict()
        seen: Counter = Counter()
        in_shape = INPUT_SHAPE
        for layer, out_shape in zip(layers, shapes):
            self.blocks[_keras_name(layer, seen)] = kind_of(layer).block(layer, in_shape)
            in_shape = out_shape
        out_spec = {"type": "dense"}
        self.output_name = _keras_name(out_spec, seen)
        self.blocks[self.output_name] = nn.Linear(in_shape[0], num_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Calls the leaf modules directly: nested Sequential calls cost ~5% of a small MLP's step.
        for module in self.layers_in_order():
            x = module(x)
        return x

    def layers_in_order(self) -> list[nn.Module]:
        """The leaf modules in the order `forward` runs them (what an inference export rewrites)."""
        leaves = self.__dict__.get("_leaf_cache")
        if leaves is None:
            leaves = [m for block in self.blocks.values()
                      for m in (block if isinstance(block, nn.Sequential) else [block])]
            self.__dict__["_leaf_cache"] = leaves
        return leaves

    def forward_features(self, x: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
        """Every block's output for `x`, in order: what the pages draw as feature maps."""
        outputs = []
        for name, block in self.blocks.items():
            x = block(x)
            outputs.append((name, x))
        return outputs


def build_model(layers: list[dict], num_outputs: int = 10) -> LabModel:
    """Build the network for an architecture (raises ArchitectureError when it cannot be built)."""
    return LabModel(layers, num_outputs)


# --- Keras-style summary ----------------------------------------------------------------

def summary(layers: list[dict], num_outputs: int = 10) -> dict:
    """What Keras' `model.summary()` prints, as data: one row per layer and the totals.

    Output shapes are written channels-last like Keras, `(None, 28, 28, 16)`, so they match
    the course's slides. Batch norm's running mean and variance count as non-trainable
    parameters, as in Keras.
    """
    shapes = output_shapes(layers, num_outputs)  # checks the size first
    with torch.device("meta"):  # shapes and counts only: no weight is allocated for a summary
        model = build_model(layers, num_outputs)
    out_act = "softmax" if num_outputs > 1 else "sigmoid"
    specs = list(layers) + [{"type": "dense", "units": num_outputs, "activation": out_act}]
    rows = []
    for (name, block), layer, shape in zip(model.blocks.items(), specs, shapes):
        trainable = sum(p.numel() for p in block.parameters() if p.requires_grad)
        non_trainable = sum(b.numel() for n, b in block.named_buffers() if "running" in n)
        keras_shape = (shape[1], shape[2], shape[0]) if len(shape) == 3 else shape
        rows.append({
            "layer": name,
            "type": kind_of(layer).label(layer),
            "output_shape": "(None, " + ", ".join(map(str, keras_shape)) + ")",
            "params": trainable + non_trainable,
            "trainable": trainable,
        })
    total = sum(r["params"] for r in rows)
    trainable = sum(r["trainable"] for r in rows)
    return {"rows": rows, "total_params": total, "trainable_params": trainable,
            "non_trainable_params": total - trainable}


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def kernel_parameters(model: LabModel) -> list[tuple[str, nn.Parameter]]:
    """The weight matrices and convolution kernels, by layer name (what Keras calls kernels:
    L2 regularization and the per-layer gradient norms apply to these, not to biases or
    batch norm's scale and shift)."""
    out = []
    for name, block in model.blocks.items():
        for m in (block if isinstance(block, nn.Sequential) else [block]):
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                out.append((name, m.weight))
    return out  # (by module, not by kind: the output layer's Linear is a kernel too)


def first_layer_weights(model: LabModel):
    """The first layer's weights as small images, when that layer reads the input image:
    an MLP's first dense layer as one 28x28 image per unit, a CNN's first convolution as
    one kxk image per filter (its first input channel). None for other architectures."""
    specs = model.layer_specs
    kernels = kernel_parameters(model)
    if not kernels or not specs:
        return None
    weight = kernels[0][1].detach().float().cpu()
    first = next((s for s in specs if s["type"] in ("dense", "conv")), None)
    before = specs[:specs.index(first)] if first else []
    if first and first["type"] == "dense" and weight.shape[1] == 28 * 28 and all(
            s["type"] in ("flatten", "dropout") for s in before):
        return weight.reshape(-1, 28, 28).numpy()
    if first and first["type"] == "conv" and all(s["type"] == "dropout" for s in before):
        return weight[:, 0].numpy()
    return None
