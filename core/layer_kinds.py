"""Every layer kind the lab builds, one entry each: how it checks its settings and shapes its
output, how many parameters and multiply-accumulates it has, how it is built (one model, and a
stack of N in core/stacked.py), its summary label and Keras name, its PyTorch and Keras code
(core/codegen.py) and its fields in the train page's layer editor.

A new layer kind is one class here and one line in KINDS: core/models.py, core/stacked.py,
core/cost.py, core/codegen.py and the train page read everything from its entry, and
tests/test_layer_kinds.py runs every registered kind through all of them. (Written by hand:
the lab's layer specs are plain dicts in a run's config, which no library's layer registry
reads; Keras' and PyTorch's layers are what each entry builds or writes.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

INPUT_SHAPE = (1, 28, 28)
ACTIVATIONS = ("linear", "sigmoid", "tanh", "relu", "leaky_relu")
PADDINGS = ("valid", "same")
POOL_KINDS = ("max", "avg")
MAX_WIDTH = 16_384  # units of a dense layer, filters of a convolution: beyond it a typo, not a lab model
MAX_SPAN = 28       # a kernel, stride or pooling window: at most the digit's side
MAX_DROPOUT = 0.99  # the editor's bounds are these (a shared link inside them never breaks a widget)
TORCH_ACT = {"relu": "nn.ReLU()", "sigmoid": "nn.Sigmoid()", "tanh": "nn.Tanh()",
             "leaky_relu": "nn.LeakyReLU(0.01)", "linear": None}


class ArchitectureError(ValueError):
    """An architecture that cannot be built: says which layer and why."""


@dataclass(frozen=True)
class Field:
    """One setting of a layer in the editor: a whole number, a number or a choice."""
    key: str
    default: object
    low: float | None = None
    high: float | None = None
    step: float | None = None
    options: tuple = ()


def check(cond: bool, index: int, layer: dict, message: str) -> None:
    if not cond:
        raise ArchitectureError(f"layer {index + 1} ({layer.get('type', '?')}): {message}")


def positive_int(layer: dict, key: str, index: int, default=None, most: int = MAX_WIDTH) -> int:
    value = layer.get(key, default)
    check(isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= most, index, layer,
          f"{key} must be a whole number from 1 to {most:,}, got {value!r}")
    return value


def activation_module(name: str, alpha: float = 0.01) -> nn.Module:
    if name == "leaky_relu":
        return nn.LeakyReLU(alpha)
    return {"linear": nn.Identity, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "relu": nn.ReLU}[name]()


def _needs_image(shape, index, layer, what: str) -> None:
    check(len(shape) == 3, index, layer,
          f"{what} needs an image (CxHxW) input, but it comes after a flatten/dense layer")


class LayerKind:
    """The defaults say what a kind without a setting does; subclasses fill in the rest."""
    name = ""
    keras = ""              # the Keras layer's default name ("dense", "conv2d", ...)
    fields: tuple[Field, ...] = ()
    has_activation = False  # a dense or conv layer's own activation
    weighted = False        # has a kernel (L2 and the gradient norms apply to it)

    def out_shape(self, layer: dict, shape: tuple, index: int) -> tuple:
        """Check `layer`'s settings against its input `shape`; its output shape."""
        return shape

    def params(self, layer: dict, in_shape: tuple, out_shape: tuple) -> int:
        return 0

    def macs(self, layer: dict, in_shape: tuple, out_shape: tuple) -> int:
        """Multiply-accumulates for one digit (comparisons, averages and moves count none)."""
        return 0

    def block(self, layer: dict, in_shape: tuple) -> nn.Module:
        raise NotImplementedError

    def keras_name(self, layer: dict) -> str:
        return self.keras

    def label(self, layer: dict) -> str:
        raise NotImplementedError

    def stacked(self, model, op: dict, t: torch.Tensor, image: bool, n: int, b: int) -> tuple[torch.Tensor, bool]:
        """The stacked forward (core/stacked.py) of this layer for N models at once: an image is
        (B, N*C, H, W), features are (N, B, F); returns the output and whether it is an image."""
        return t, image

    def torch_code(self, layer: dict, in_shape: tuple) -> list[str]:
        raise NotImplementedError

    def keras_code(self, layer: dict, in_shape: tuple, reg: str) -> list[str]:
        raise NotImplementedError

    def window(self, layer: dict) -> tuple[int, int] | None:
        """(side, stride) of the input window one output position is computed from, for the
        receptive field (core.cost.receptive_fields); (1, 1) keeps positions, None mixes all."""
        return (1, 1)


class Dense(LayerKind):
    name, keras, has_activation, weighted = "dense", "dense", True, True
    fields = (Field("units", 64, 1, MAX_WIDTH), Field("activation", "relu", options=ACTIVATIONS))

    def out_shape(self, layer, shape, index):
        units = positive_int(layer, "units", index)
        check(len(shape) == 1, index, layer, f"gets a {'x'.join(map(str, shape))} feature map; add a flatten "
                                             "layer before it")
        return (units,)

    def params(self, layer, in_shape, out_shape):
        return in_shape[0] * out_shape[0] + out_shape[0]

    def macs(self, layer, in_shape, out_shape):
        return in_shape[0] * out_shape[0]

    def block(self, layer, in_shape):
        return nn.Sequential(nn.Linear(in_shape[0], layer["units"]),
                             activation_module(layer.get("activation", "linear"), layer.get("alpha", 0.01)))

    def label(self, layer):
        return f"Dense({layer['units']}, {layer.get('activation', 'linear')})"

    def window(self, layer):
        return None

    def stacked(self, model, op, t, image, n, b):
        return torch.baddbmm(model.tensor(op, "b"), t, model.tensor(op, "w")), image

    def torch_code(self, layer, in_shape):
        return [f"nn.Linear({in_shape[0]}, {layer['units']}),"]

    def keras_code(self, layer, in_shape, reg):
        return [f"layers.Dense({layer['units']}{_keras_act(layer)}{reg}),"]


class Conv(LayerKind):
    name, keras, has_activation, weighted = "conv", "conv2d", True, True
    fields = (Field("filters", 16, 1, MAX_WIDTH), Field("kernel", 3, 1, MAX_SPAN),
              Field("padding", "same", options=PADDINGS), Field("stride", 1, 1, MAX_SPAN),
              Field("activation", "relu", options=ACTIVATIONS))

    def window(self, layer):
        return layer["kernel"], layer.get("stride", 1)

    def out_shape(self, layer, shape, index):
        filters = positive_int(layer, "filters", index)
        k = positive_int(layer, "kernel", index, most=MAX_SPAN)
        s = positive_int(layer, "stride", index, 1, most=MAX_SPAN)
        padding = layer.get("padding", "valid")
        check(padding in PADDINGS, index, layer, f"padding must be 'valid' or 'same', got {padding!r}")
        _needs_image(shape, index, layer, "a convolution")
        _, h, w = shape
        if padding == "valid":
            check(k <= h and k <= w, index, layer,
                  f"kernel {k}x{k} is larger than its {h}x{w} input (with padding 'valid' the output would be "
                  "empty); use a smaller kernel, padding 'same', or fewer pooling layers before it")
            return (filters, (h - k) // s + 1, (w - k) // s + 1)
        return (filters, math.ceil(h / s), math.ceil(w / s))

    def params(self, layer, in_shape, out_shape):
        return in_shape[0] * layer["kernel"] ** 2 * out_shape[0] + out_shape[0]

    def macs(self, layer, in_shape, out_shape):
        return math.prod(out_shape) * in_shape[0] * layer["kernel"] ** 2

    def block(self, layer, in_shape):
        act = activation_module(layer.get("activation", "linear"), layer.get("alpha", 0.01))
        k, s = layer["kernel"], layer.get("stride", 1)
        if layer.get("padding", "valid") == "valid":
            return nn.Sequential(nn.Conv2d(in_shape[0], layer["filters"], k, stride=s), act)
        if s == 1:
            return nn.Sequential(nn.Conv2d(in_shape[0], layer["filters"], k, padding="same"), act)
        # PyTorch's padding='same' refuses stride > 1; pad the way Keras/TF does (more on the right).
        h, w = in_shape[1:]
        ph = max((math.ceil(h / s) - 1) * s + k - h, 0)
        pw = max((math.ceil(w / s) - 1) * s + k - w, 0)
        pad = nn.ZeroPad2d((pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))
        return nn.Sequential(pad, nn.Conv2d(in_shape[0], layer["filters"], k, stride=s), act)

    def label(self, layer):
        return (f"Conv2D({layer['filters']}, {layer['kernel']}x{layer['kernel']}, {layer.get('padding', 'valid')}, "
                f"stride {layer.get('stride', 1)}, {layer.get('activation', 'linear')})")

    def stacked(self, model, op, t, image, n, b):
        if "pad" in op:
            t = F.pad(t, op["pad"])
        return F.conv2d(t, model.tensor(op, "w"), model.tensor(op, "b"), stride=op["stride"],
                        padding=op["padding"], groups=n), image

    def torch_code(self, layer, in_shape):
        pad = "'same'" if layer.get("padding", "valid") == "same" else "0"
        stride = layer.get("stride", 1)
        return [f"nn.Conv2d({in_shape[0]}, {layer['filters']}, kernel_size={layer['kernel']}, "
                f"padding={pad}{'' if stride == 1 else f', stride={stride}'}),"]

    def keras_code(self, layer, in_shape, reg):
        stride = layer.get("stride", 1)
        return [f"layers.Conv2D({layer['filters']}, ({layer['kernel']}, {layer['kernel']}), "
                f"padding='{layer.get('padding', 'valid')}'{_keras_act(layer)}"
                f"{'' if stride == 1 else f', strides={stride}'}{reg}),"]


class Pool(LayerKind):
    name = "pool"
    fields = (Field("kind", "max", options=POOL_KINDS), Field("size", 2, 1, MAX_SPAN))

    def out_shape(self, layer, shape, index):
        size = positive_int(layer, "size", index, 2, most=MAX_SPAN)
        stride = positive_int(layer, "stride", index, size, most=MAX_SPAN)
        check(layer.get("kind", "max") in POOL_KINDS, index, layer,
              f"kind must be 'max' or 'avg', got {layer.get('kind')!r}")
        _needs_image(shape, index, layer, "pooling")
        c, h, w = shape
        check(size <= h and size <= w, index, layer, f"pool size {size}x{size} is larger than its {h}x{w} input")
        return (c, (h - size) // stride + 1, (w - size) // stride + 1)

    def block(self, layer, in_shape):
        size = layer.get("size", 2)
        return (nn.MaxPool2d if layer.get("kind", "max") == "max" else nn.AvgPool2d)(size, layer.get("stride", size))

    def keras_name(self, layer):
        return "max_pooling2d" if layer.get("kind", "max") == "max" else "average_pooling2d"

    def label(self, layer):
        size = layer.get("size", 2)
        return f"{'MaxPooling2D' if layer.get('kind', 'max') == 'max' else 'AveragePooling2D'}({size}x{size})"

    def stacked(self, model, op, t, image, n, b):
        return (F.max_pool2d if op["pool"] == "max" else F.avg_pool2d)(t, op["size"], op["stride"]), image

    def window(self, layer):
        size = layer.get("size", 2)
        return size, layer.get("stride", size)

    def torch_code(self, layer, in_shape):
        cls = "nn.MaxPool2d" if layer.get("kind", "max") == "max" else "nn.AvgPool2d"
        size, stride = self.window(layer)
        return [f"{cls}({size}{'' if stride == size else f', stride={stride}'}),"]

    def keras_code(self, layer, in_shape, reg):
        cls = "MaxPooling2D" if layer.get("kind", "max") == "max" else "AveragePooling2D"
        s, stride = self.window(layer)
        return [f"layers.{cls}(({s}, {s}){'' if stride == s else f', strides={stride}'}),"]


class GlobalAveragePooling(LayerKind):
    """The mean of each feature map: (C, H, W) -> (C,), no weights. A CNN's usual end in place of
    flatten + a large dense layer: one value per filter, so the classifier after it is small."""
    name, keras = "global_avg_pool", "global_average_pooling2d"

    def out_shape(self, layer, shape, index):
        _needs_image(shape, index, layer, "global average pooling")
        return (shape[0],)

    def block(self, layer, in_shape):
        return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())

    def window(self, layer):
        return None

    def label(self, layer):
        return "GlobalAveragePooling2D"

    def stacked(self, model, op, t, image, n, b):
        return t.mean((2, 3)).reshape(b, n, -1).transpose(0, 1), False

    def torch_code(self, layer, in_shape):
        return ["nn.AdaptiveAvgPool2d(1),  # global average pooling: the mean of each feature map",
                "nn.Flatten(),"]

    def keras_code(self, layer, in_shape, reg):
        return ["layers.GlobalAveragePooling2D(),"]


class Dropout(LayerKind):
    name, keras = "dropout", "dropout"
    fields = (Field("rate", 0.25, 0.0, MAX_DROPOUT, 0.05),)

    def out_shape(self, layer, shape, index):
        rate = layer.get("rate", 0.5)
        check(isinstance(rate, (int, float)) and not isinstance(rate, bool) and 0.0 <= rate <= MAX_DROPOUT, index,
              layer, f"rate must be in [0, 1) (at most {MAX_DROPOUT}), got {rate!r}")
        return shape

    def block(self, layer, in_shape):
        return nn.Dropout(layer.get("rate", 0.5))

    def label(self, layer):
        return f"Dropout({layer.get('rate', 0.5)})"

    def stacked(self, model, op, t, image, n, b):
        return F.dropout(t, op["rate"], model.training), image

    def torch_code(self, layer, in_shape):
        return [f"nn.Dropout({layer.get('rate', 0.5)}),"]

    def keras_code(self, layer, in_shape, reg):
        return [f"layers.Dropout({layer.get('rate', 0.5)}),"]


class BatchNorm(LayerKind):
    name, keras = "batchnorm", "batch_normalization"

    def params(self, layer, in_shape, out_shape):
        return 4 * in_shape[0]  # scale, shift, running mean and variance (as Keras counts them)

    def macs(self, layer, in_shape, out_shape):
        return math.prod(out_shape)  # a scale and a shift per value

    def block(self, layer, in_shape):
        return nn.BatchNorm2d(in_shape[0]) if len(in_shape) == 3 else nn.BatchNorm1d(in_shape[0])

    def label(self, layer):
        return "BatchNormalization"

    def stacked(self, model, op, t, image, n, b):
        return model.batchnorm(op, t, image, model.mask), image

    def torch_code(self, layer, in_shape):
        return [f"nn.BatchNorm{'2d' if len(in_shape) == 3 else '1d'}({in_shape[0]}),  # momentum 0.1, eps 1e-5"]

    def keras_code(self, layer, in_shape, reg):
        return ["layers.BatchNormalization(momentum=0.9, epsilon=1e-5),  # PyTorch's defaults (its momentum 0.1 is "
                "Keras' 0.9)"]


class Flatten(LayerKind):
    name, keras = "flatten", "flatten"

    def out_shape(self, layer, shape, index):
        return (int(math.prod(shape)),)

    def block(self, layer, in_shape):
        return nn.Flatten()

    def label(self, layer):
        return "Flatten"

    def stacked(self, model, op, t, image, n, b):
        return (t.reshape(b, n, -1).transpose(0, 1), False) if image else (t, image)

    def torch_code(self, layer, in_shape):
        return ["nn.Flatten(),"]

    def keras_code(self, layer, in_shape, reg):
        return ["layers.Flatten(),"]


def _keras_act(layer: dict) -> str:
    act = layer.get("activation", "linear")
    return "" if act == "leaky_relu" else f", activation='{act}'"


KINDS: dict[str, LayerKind] = {k.name: k for k in (Dense(), Conv(), Pool(), Dropout(), BatchNorm(), Flatten(),
                                                    GlobalAveragePooling())}
LAYER_TYPES = tuple(KINDS)


def kind_of(layer: dict) -> LayerKind:
    return KINDS[layer["type"]]


def editor_defaults(kind: str) -> dict:
    """A new layer of `kind` as the editor adds it."""
    return {f.key: f.default for f in KINDS[kind].fields}
