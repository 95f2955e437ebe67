"""What a model costs to run, computed from its architecture: parameters, multiply-accumulates
and activation memory per layer, and whether it fits a device class and how fast it would be
there (an estimate from the MACs, always labelled as one).

Computed from the layer specs and their output shapes (core.models), so the same numbers serve
the Ship page, the CLI and the tests without building or timing anything.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from core.layer_kinds import kind_of
from core.models import INPUT_SHAPE, output_shapes, summary

BYTES_PER_VALUE = {"fp32": 4, "fp16": 2, "int8": 1}


def layer_costs(layers: list[dict], num_outputs: int = 10) -> list[dict]:
    """One row per layer (the output layer included): its Keras name and type, output shape,
    parameters, multiply-accumulates for one digit, and the values it outputs (activations).

    MACs: a dense layer in x out; a convolution out_h x out_w x filters x (in_channels x k x k);
    batch norm one per value (a scale and shift); pooling, flatten and dropout none (they
    compare, average or move values, a cost the estimate leaves out)."""
    shapes = output_shapes(layers, num_outputs)
    rows = summary(layers, num_outputs)["rows"]
    specs = list(layers) + [{"type": "dense", "units": num_outputs}]
    out, in_shape = [], INPUT_SHAPE
    for spec, shape, row in zip(specs, shapes, rows):
        values = math.prod(shape)
        macs = kind_of(spec).macs(spec, in_shape, shape)
        out.append({"layer": row["layer"], "type": row["type"], "output_shape": row["output_shape"],
                    "params": row["params"], "macs": int(macs), "activations": int(values),
                    "inputs": int(math.prod(in_shape))})
        in_shape = shape
    return out


def receptive_fields(layers: list[dict]) -> list[int | None]:
    """For each layer, the side of the square of input pixels one of its output values is
    computed from (its receptive field), the standard recursion: a window of side k and stride s
    widens the field by (k - 1) x the input step so far, and multiplies the step by s. Padding
    only moves the window (the field may reach past the digit's border). Flatten keeps each
    value's field; None once a layer (dense, global pooling) mixes every position: from there
    every value sees the whole digit."""
    side, step, out = 1, 1, []
    for spec in layers:
        window = kind_of(spec).window(spec) if side is not None else None
        if window is None:
            side = None
        else:
            k, s = window
            side, step = side + (k - 1) * step, step * s
        out.append(side)
    return out


def feature_maps_text(name: str, shape: tuple, field: int | None, first_field: int | None,
                      side: int = INPUT_SHAPE[1]) -> str:
    """The Layers page's caption under a convolution's feature maps: how many, their size, and
    how much of the digit one value sees (its receptive field), so "deeper layers see larger
    parts" is said with the numbers of the model shown."""
    text = f"{name}: {shape[0]} maps of {shape[1]}x{shape[2]}"
    if field is None:
        return text + "."
    seen = "the whole digit" if field >= side else f"a {field}x{field} patch of the {side}x{side} digit"
    text += f"; each value is computed from {seen} (its receptive field)"
    if field == first_field:
        return text + ": small enough for edges and strokes."
    return text + f", against {first_field}x{first_field} for the first convolution: larger parts of the digit."


def totals(costs: list[dict]) -> dict:
    return {"params": sum(r["params"] for r in costs), "macs": sum(r["macs"] for r in costs),
            "layers": len(costs)}


def peak_activation_bytes(costs: list[dict], precision: str = "fp32") -> int:
    """The most memory one digit's activations need at once: a layer's input and output are
    both alive while it runs, so the peak is the largest input + output of any layer (the
    input image stays float32 in every variant: 784 x 4 bytes)."""
    size = BYTES_PER_VALUE[precision]
    peak = 0
    for i, row in enumerate(costs):
        in_bytes = row["inputs"] * (4 if i == 0 else size)
        out_bytes = row["activations"] * (4 if i == len(costs) - 1 else size)  # probabilities are float32
        peak = max(peak, in_bytes + out_bytes)
    return peak


@dataclass(frozen=True)
class Platform:
    """A device class, stated with round numbers: memory for activations (RAM), storage for the
    model (flash), multiply-accumulates per second by precision, and a fixed cost per layer
    (kernel launch or call overhead). Order-of-magnitude figures for a class, not a benchmark
    of one device: the page puts them next to what was measured on this machine."""

    name: str
    ram_bytes: int
    flash_bytes: int
    macs_per_s: dict
    per_layer_s: float
    about: str

    def fits(self, model_bytes: int, peak_activation: int) -> tuple[bool, str]:
        """Whether the model file fits the storage and its activations the RAM, and if not, why."""
        if model_bytes > self.flash_bytes:
            return False, f"model {model_bytes / 1024:,.0f} KB > flash {self.flash_bytes / 1024:,.0f} KB"
        if peak_activation > self.ram_bytes:
            return False, f"activations {peak_activation / 1024:,.0f} KB > RAM {self.ram_bytes / 1024:,.0f} KB"
        return True, "fits"

    def estimate_ms(self, macs: int, layers: int, precision: str) -> float:
        """Estimated time for one digit: the MACs at this class's rate plus a fixed cost per layer."""
        return 1000 * (macs / self.macs_per_s[precision] + layers * self.per_layer_s)


KB, MB, GB = 1024, 1024 ** 2, 1024 ** 3

PLATFORMS = {
    "microcontroller": Platform(
        "Microcontroller (Cortex-M4 class, 100 MHz)", 256 * KB, 1 * MB,
        # int8 with SIMD kernels (CMSIS-NN) about 1 MAC a cycle; float on the FPU about one in four;
        # no fp16 arithmetic, so fp16 weights are computed at the float rate.
        {"int8": 100e6, "fp16": 25e6, "fp32": 25e6}, 0.0,
        "256 KB RAM, 1 MB flash, 100 MHz: the class of board Edge Impulse and TensorFlow Lite Micro target"),
    "phone": Platform(
        "Phone (mid-range, 4 ARM cores)", 1 * GB, 4 * GB,
        {"int8": 60e9, "fp16": 40e9, "fp32": 20e9}, 5e-6,
        "about 1 GB of RAM for an app; NEON int8 and fp16 kernels"),
    "laptop": Platform(
        "Laptop CPU (4 cores, AVX2)", 8 * GB, 256 * GB,
        {"int8": 150e9, "fp16": 100e9, "fp32": 100e9}, 2e-6,
        "8 GB RAM; no fp16 arithmetic on x86, so fp16 runs at the float rate"),
}


def gpu_platform(name: str, memory_gb: float | None) -> Platform:
    """A GPU present on this machine, as a platform: its own memory, data-centre class rates and
    about 10 microseconds per kernel launch, which dominates for models this small."""
    mem = int((memory_gb or 16) * GB)
    return Platform(f"GPU ({name})", mem, mem, {"int8": 200e12, "fp16": 200e12, "fp32": 25e12}, 10e-6,
                    f"{memory_gb or 16:.0f} GB of GPU memory; a kernel launch per layer")


def platform_table(platform: Platform, variants: list[dict], costs: list[dict]) -> list[dict]:
    """For each variant (rows with `variant`, `precision`, `bytes`): fits or not, and why, and
    the estimated latency for one digit on `platform`."""
    t = totals(costs)
    out = []
    for v in variants:
        peak = peak_activation_bytes(costs, v["precision"])
        ok, why = platform.fits(v["bytes"], peak)
        out.append({"variant": v["variant"], "model_bytes": v["bytes"], "peak_activation_bytes": peak,
                    "fits": ok, "why": why,
                    "estimated_latency_ms": platform.estimate_ms(t["macs"], t["layers"], v["precision"])})
    return out
