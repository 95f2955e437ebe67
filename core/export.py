"""A trained model as a self-contained ONNX file, and its smaller variants (fp16, int8).

The exported graph needs nothing from the lab: its input `pixels` is float32 (N, 1, 28, 28)
in [0, 1] (white digit on black, centred by mass like MNIST's), the run's normalisation is
inside it, and its output `probabilities` is (N, 10) (N, 2 for a one-vs-rest run) with the
softmax inside. The weights are inside the one file. Metadata names the run, the lab's
version and the preprocessing.

Before export the network is rewritten for inference, exactly (the ONNX file is then checked
against PyTorch on the whole test set, core.ship): dropout and linear activations are dropped,
batch norm is folded
into the dense or unpadded convolution it feeds (or the one it follows), and a batch norm
between a ReLU and a pooling layer moves after the pooling (a per-channel affine commutes with
average pooling, and with max pooling when its scale is positive). The lab's CNNs put batch
norm after the activation, which no runtime folds by itself; left in place it keeps the
layers around it in float in the int8 model, which then ran slower than fp32 at batch 256 on
this project's CPU (after the rewrite int8 is the faster one: bench/ship.py prints both).

int8 uses ONNX Runtime's static post-training quantization (onnxruntime.quantization,
calibrated on digits of the run's training split) in the operator format, whose int8 kernels
are fixed in the file; `quantization_notes` says which operations stay float and why.
"""

from __future__ import annotations

import copy
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

import core

VARIANTS = ("none", "fp16", "int8")  # --quantize: none = the fp32 export
INPUT_NAME, OUTPUT_NAME = "pixels", "probabilities"
OPSET = 20


class ExportError(RuntimeError):
    """The model could not be exported or quantized; the message says which step and why."""


# --- the network as one inference graph --------------------------------------------------

def _affine(bn: nn.BatchNorm1d | nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """Batch norm in eval mode as y = a * x + b, per channel."""
    a = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps) if bn.affine else 1 / torch.sqrt(bn.running_var + bn.eps)
    b = (bn.bias.detach() if bn.affine else 0) - bn.running_mean * a
    return a, b


def _fold_before(layer: nn.Module, a: torch.Tensor, b: torch.Tensor, flattened: bool) -> bool:
    """Fold y = a*x + b (x before `layer`, per channel) into `layer`: a Linear (after a flatten
    of C x H x W, each channel's value repeated over its pixels) or a Conv2d without padding.
    False when it cannot be done exactly (a padded convolution would see b at its borders)."""
    if isinstance(layer, nn.Linear):
        if layer.in_features % a.numel():
            return False
        spatial = layer.in_features // a.numel()
        if spatial > 1 and not flattened:
            return False
        a_in, b_in = a.repeat_interleave(spatial), b.repeat_interleave(spatial)
        with torch.no_grad():
            layer.bias += layer.weight @ b_in
            layer.weight *= a_in
        return True
    if isinstance(layer, nn.Conv2d) and not flattened and layer.padding in ((0, 0), 0, "valid") and layer.groups == 1:
        with torch.no_grad():
            bias = layer.bias.detach() if layer.bias is not None else torch.zeros(layer.out_channels)
            layer.bias = nn.Parameter(bias + (layer.weight * b[None, :, None, None]).sum((1, 2, 3)))
            layer.weight *= a[None, :, None, None]
        return True
    return False


def _fold_after(layer: nn.Module, a: torch.Tensor, b: torch.Tensor) -> bool:
    """Fold a batch norm that directly follows a Linear or Conv2d into it (always exact)."""
    if not isinstance(layer, (nn.Linear, nn.Conv2d)):
        return False
    shape = (-1, 1) if isinstance(layer, nn.Linear) else (-1, 1, 1, 1)
    with torch.no_grad():
        bias = layer.bias.detach() if layer.bias is not None else torch.zeros(a.numel())
        layer.bias = nn.Parameter(bias * a + b)
        layer.weight *= a.reshape(shape)
    return True


def _rewrite_one(layers: list[nn.Module]) -> bool:
    """Apply one exact rewrite to the first batch norm that allows one; False when none does."""
    for i, bn in enumerate(layers):
        if not isinstance(bn, (nn.BatchNorm1d, nn.BatchNorm2d)):
            continue
        a, b = _affine(bn)
        if i > 0 and _fold_after(layers[i - 1], a, b):
            del layers[i]
            return True
        j = i + 1
        while j < len(layers) and isinstance(layers[j], nn.Flatten):
            j += 1
        if j < len(layers) and _fold_before(layers[j], a, b, flattened=j > i + 1):
            del layers[i]
            return True
        pool = layers[i + 1] if i + 1 < len(layers) else None
        if isinstance(pool, nn.AvgPool2d) or (isinstance(pool, nn.MaxPool2d) and bool((a > 0).all())):
            layers[i], layers[i + 1] = pool, bn  # the next pass may fold it further on
            return True
    return False


def inference_layers(model) -> list[nn.Module]:
    """The model's layers in order, rewritten for inference (see the module docstring); the
    model itself is not changed."""
    layers = [m for m in copy.deepcopy(model).layers_in_order() if not isinstance(m, (nn.Dropout, nn.Identity))]
    while _rewrite_one(layers):
        pass
    return layers


class ShippedModel(nn.Module):
    """Pixels in [0, 1] -> class probabilities: the run's normalisation, the network rewritten
    for inference, and the softmax (or, for a one-vs-rest run, [1 - sigmoid, sigmoid])."""

    def __init__(self, model, mean: float, std: float):
        super().__init__()
        self.mean, self.std = float(mean), float(std)
        self.binary = model.num_outputs == 1
        self.net = nn.Sequential(*inference_layers(model)).eval()

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        logits = self.net((pixels - self.mean) / self.std)
        if self.binary:
            p = torch.sigmoid(logits[:, :1])
            return torch.cat([1 - p, p], 1)
        return torch.softmax(logits, 1)


# --- files -------------------------------------------------------------------------------

@dataclass
class ExportInfo:
    """What the file's metadata says: who made it and what input it expects."""

    run_id: str
    mean: float
    std: float
    classes: int
    variant: str = "none"
    extra: dict = field(default_factory=dict)

    def metadata(self) -> dict[str, str]:
        return {**self.extra,
            "mnist_lab.run_id": self.run_id,
            "mnist_lab.version": core.__version__,
            "mnist_lab.variant": {"none": "fp32"}.get(self.variant, self.variant),
            "mnist_lab.input": f"{INPUT_NAME}: float32 (N, 1, 28, 28), pixels in [0, 1], a white digit on black "
                               "centred by mass in 28x28 (MNIST's preprocessing)",
            "mnist_lab.normalization": f"inside the graph: (pixels - {self.mean:.6f}) / {self.std:.6f}",
            "mnist_lab.output": f"{OUTPUT_NAME}: float32 (N, {self.classes}), softmax inside",
        }


def _set_metadata(model_proto, info: ExportInfo) -> None:
    """Replace the file's metadata with the lab's, and drop the exporter's per-node stack traces
    (about 20 KB of text the runtime never reads, 5% of the small CNN's file)."""
    del model_proto.metadata_props[:]
    for key, value in info.metadata().items():
        model_proto.metadata_props.add(key=key, value=value)
    model_proto.producer_name = "mnist-lab"
    model_proto.producer_version = core.__version__
    for node in model_proto.graph.node:
        del node.metadata_props[:]
        node.doc_string = ""


def export_fp32(shipped: ShippedModel, path: Path, info: ExportInfo) -> Path:
    """torch.onnx.export (the dynamo exporter) with a dynamic batch, weights inside the file."""
    import onnx

    try:
        torch.onnx.export(shipped.eval(), (torch.rand(2, 1, 28, 28),), str(path), input_names=[INPUT_NAME],
                          output_names=[OUTPUT_NAME], dynamic_shapes=({0: torch.export.Dim("N")},), dynamo=True,
                          external_data=False, opset_version=OPSET, verbose=False)
    except Exception as exc:  # noqa: BLE001 - the exporter raises many kinds; the reason goes to the user
        raise ExportError(f"torch.onnx.export failed: {type(exc).__name__}: {str(exc).splitlines()[0]}") from exc
    proto = onnx.load(str(path))
    _set_metadata(proto, info)
    onnx.save(proto, str(path))
    return path


def to_fp16(fp32_path: Path, path: Path, info: ExportInfo) -> Path:
    """Weights and arithmetic in float16; input and output stay float32 so callers do not change."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    proto = convert_float_to_float16(onnx.load(str(fp32_path)), keep_io_types=True)
    _set_metadata(proto, ExportInfo(info.run_id, info.mean, info.std, info.classes, "fp16"))
    onnx.save(proto, str(path))
    return path


class _Calibration:
    """onnxruntime.quantization's CalibrationDataReader protocol over an array of digits."""

    def __init__(self, images: np.ndarray, batch: int = 32):
        self.batches = iter([{INPUT_NAME: images[i:i + batch]} for i in range(0, len(images), batch)])

    def get_next(self):
        return next(self.batches, None)


def _first_conv_one_channel(proto) -> list[str]:
    """The names of convolutions that read the one-channel input image: kept in float (int8
    would save only their few weights, and ONNX Runtime's int8 convolution is slower than its
    float one on a single input channel)."""
    from onnx import numpy_helper

    weights = {init.name: init for init in proto.graph.initializer}
    out = []
    for node in proto.graph.node:
        if node.op_type == "Conv" and len(node.input) > 1 and node.input[1] in weights:
            if numpy_helper.to_array(weights[node.input[1]]).shape[1] == 1:
                out.append(node.name)
    return out


def _predicted(path: Path, images: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.concatenate([sess.run(None, {INPUT_NAME: images[i:i + 1000]})[0].argmax(1)
                           for i in range(0, len(images), 1000)])


def to_int8(fp32_path: Path, path: Path, info: ExportInfo, calibration: np.ndarray,
            selection: np.ndarray | None = None) -> Path:
    """Static int8 quantization, calibrated on `calibration` ((N, 1, 28, 28) float32 digits of
    the run's training split): int8 weights and uint8 activations (what ONNX Runtime's x86
    kernels take), the softmax kept float.

    Weights are quantized per tensor and per channel, and the file keeps the one whose
    predictions agree more often with the fp32 file's on `selection` (digits of the run's
    validation split, never its test set); a tie keeps per tensor. Per channel helps a layer
    whose filters have very different ranges and costs accuracy where the calibration is thin
    (on the course MLP it did both, by run), so it is decided by measurement, per run."""
    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory(prefix="mnist-lab-int8-") as tmp:
        pre = Path(tmp) / "pre.onnx"
        candidates = {}
        try:
            quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=True)
            proto = onnx.load(str(pre))
            keep_float = [n.name for n in proto.graph.node if n.op_type == "Softmax"] + _first_conv_one_channel(proto)
            for per_channel in (False, True) if selection is not None and len(selection) else (False,):
                candidates[per_channel] = Path(tmp) / f"int8-{'channel' if per_channel else 'tensor'}.onnx"
                quantize_static(str(pre), str(candidates[per_channel]), _Calibration(calibration.astype(np.float32)),
                                quant_format=QuantFormat.QOperator, activation_type=QuantType.QUInt8,
                                weight_type=QuantType.QInt8, per_channel=per_channel, nodes_to_exclude=keep_float)
        except Exception as exc:  # noqa: BLE001 - the quantizer raises many kinds; the reason goes to the user
            raise ExportError(f"int8 quantization failed: {type(exc).__name__}: {exc}") from exc
        scores = {}
        if len(candidates) > 1:
            reference = _predicted(fp32_path, selection)
            scores = {pc: float((_predicted(c, selection) == reference).mean()) for pc, c in candidates.items()}
        chosen = max(candidates, key=lambda pc: (scores.get(pc, 0.0), not pc))
        proto = onnx.load(str(candidates[chosen]))
    weights = "per channel" if chosen else "per tensor"
    if scores:
        weights += (f" (agreement with fp32 on {len(selection)} validation digits: per tensor "
                    f"{scores[False]:.2%}, per channel {scores[True]:.2%})")
    _set_metadata(proto, ExportInfo(info.run_id, info.mean, info.std, info.classes, "int8",
                                    {"mnist_lab.int8_weights": weights}))
    onnx.save(proto, str(path))
    return path


# Why an operation of the int8 graph still computes in float (ONNX op type -> reason).
FLOAT_REASONS = {
    "Sub": "the normalisation of the float input, before the first quantize step",
    "Div": "the normalisation of the float input, before the first quantize step",
    "Softmax": "kept float so the probabilities stay close to the fp32 model's",
    "Conv": "reads the one-channel input image: int8 would save only its few weights and runs slower here",
    "BatchNormalization": "a batch norm before a 'same'-padded convolution cannot be folded into it exactly, "
                          "and ONNX Runtime's quantizer has no int8 form of it",
}
FOLLOWS_FLOAT = "runs on the output of a layer kept in float, before the next quantize step"
_MOVES_DATA = {"QuantizeLinear", "DequantizeLinear", "Reshape", "Flatten", "Transpose", "Identity", "Cast",
               "Constant", "Squeeze", "Unsqueeze", "Shape", "Concat"}


def _why_float(op: str) -> str:
    from onnxruntime.quantization.registry import QLinearOpsRegistry

    if op in FLOAT_REASONS:
        return FLOAT_REASONS[op]
    if op not in QLinearOpsRegistry:
        return "ONNX Runtime's quantizer has no int8 form of it"
    return FOLLOWS_FLOAT


def quantization_notes(int8_path: Path) -> list[dict]:
    """The operations of an int8 file that compute in float, each with why: the file's own
    answer to "which layers could not be quantized". An operation computes in float when its
    first input is a float tensor (ONNX shape inference gives every tensor's type)."""
    import onnx

    proto = onnx.shape_inference.infer_shapes(onnx.load(str(int8_path)))
    types = {v.name: v.type.tensor_type.elem_type for v in
             [*proto.graph.input, *proto.graph.value_info, *proto.graph.output]}
    types.update({init.name: init.data_type for init in proto.graph.initializer})
    notes = []
    for node in proto.graph.node:
        if node.op_type in _MOVES_DATA or not node.input:
            continue
        if types.get(node.input[0]) in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16):
            notes.append({"node": node.name, "op": node.op_type, "why": _why_float(node.op_type)})
    return notes


def write_variant(shipped: ShippedModel, info: ExportInfo, variant: str, out: Path,
                  calibration: np.ndarray | None = None, selection: np.ndarray | None = None) -> Path:
    """Export `variant` ("none", "fp16", "int8") to `out` all or nothing: built in a temporary
    folder beside it and renamed into place only when complete. int8 needs `calibration`
    digits (training split) and uses `selection` digits (validation split) to choose between
    per-tensor and per-channel weights (to_int8)."""
    if variant not in VARIANTS:
        raise ExportError(f"unknown variant {variant!r}; allowed: {', '.join(VARIANTS)}")
    out = Path(out)
    with tempfile.TemporaryDirectory(prefix=".mnist-lab-export-", dir=out.parent) as tmp:
        fp32 = export_fp32(shipped, Path(tmp) / "fp32.onnx", info)
        if variant == "none":
            result = fp32
        elif variant == "fp16":
            result = to_fp16(fp32, Path(tmp) / "fp16.onnx", info)
        else:
            if calibration is None or not len(calibration):
                raise ExportError("int8 needs calibration digits (a few hundred of the run's training split)")
            result = to_int8(fp32, Path(tmp) / "int8.onnx", info, calibration, selection)
        os.replace(result, out)
    return out
