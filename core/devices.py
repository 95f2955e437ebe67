"""The hardware a run can use: what is there, which is best, and a clear error for what is not.

Asking for a device that is not there is an error, never a silent fall-back to the CPU: a
researcher who asked for `cuda:1` must not get CPU numbers labelled as GPU numbers.
"""

from __future__ import annotations

import platform
from dataclasses import asdict, dataclass

import torch

from core.settings import settings


class DeviceError(ValueError):
    """The device asked for does not exist here; the message lists what does."""


@dataclass(frozen=True)
class DeviceInfo:
    id: str            # what --device takes: "cpu", "cuda:0", "mps"
    kind: str          # cpu | cuda | mps
    name: str          # "AMD EPYC (2 threads)", "NVIDIA H100 80GB HBM3", "Apple MPS"
    memory_gb: float | None = None
    threads: int | None = None
    bf16: bool | None = None  # bf16 arithmetic in hardware (None: not known, e.g. MPS)

    @property
    def label(self) -> str:
        """One line for a picker: id, name and memory."""
        mem = f", {self.memory_gb:.0f} GB" if self.memory_gb else ""
        return f"{self.id}: {self.name}{mem}"

    def to_dict(self) -> dict:
        return asdict(self)


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "CPU"


def list_devices() -> list[DeviceInfo]:
    """Every device this machine can train on, best first (CUDA GPUs, then MPS, then the CPU)."""
    found = []
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            found.append(DeviceInfo(f"cuda:{i}", "cuda", props.name, round(props.total_memory / 2**30, 1),
                                    bf16=props.major >= 8))  # Ampere and later have bf16 tensor cores
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        found.append(DeviceInfo("mps", "mps", "Apple MPS (Metal)"))
    threads = torch.get_num_threads()
    found.append(DeviceInfo("cpu", "cpu", f"{_cpu_name()} ({threads} threads)", threads=threads,
                            bf16=cpu_has_bf16()))
    return found


def cpu_has_bf16() -> bool | None:
    """Whether PyTorch's fast (oneDNN) bf16 kernels run on this CPU: AVX512 with BF16, or AMX, on
    x86; the bf16 extensions on ARM. It is PyTorch's own test, the one that picks the kernel.
    Without them (an AVX2-only CPU: most laptops), a bf16 matrix product takes a slow generic path
    (`python bench/kfold_speed.py` prints it: 66x the fp32 time for the course MLP's first layer at
    batch 50 on an AVX2-only EPYC, the README's run), so bf16 training is many times slower than fp32 there, the
    opposite of what a user picks it for. None when this PyTorch build does not say."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return None


def bf16_warning(precision: str, device: DeviceInfo | None) -> str | None:
    """The line a page or the command line shows before bf16 trains on hardware without bf16
    arithmetic: it still trains (same results), only much slower. None when nothing to say."""
    if precision != "bf16" or device is None or device.bf16 is not False:
        return None
    if device.kind == "cpu":
        return (f"bf16 on this CPU, {device.name}, is slow: it has no bf16 instructions (AVX512-BF16 or AMX), so "
                "PyTorch computes bf16 matrix products on a slow generic path and training takes many times "
                "longer than in fp32. Use fp32 here; bf16 pays off on a CPU or GPU with bf16 units.")
    return (f"bf16 on {device.id} ({device.name}) is slow: this GPU has no bf16 tensor cores (they came with "
            "NVIDIA's Ampere generation), so bf16 is emulated. Use fp32 (or fp16) here.")


def info(device: torch.device | str, among: list[DeviceInfo] | None = None) -> DeviceInfo | None:
    """The DeviceInfo of a device of this machine (None if it is not here); `among`: a list
    already made (a page's cached one), instead of asking the hardware again."""
    name = str(device)
    name = "cuda:0" if name == "cuda" else name
    return next((d for d in (list_devices() if among is None else among) if d.id == name), None)


def best_device() -> str:
    return list_devices()[0].id


def resolve_device(spec: str = "auto") -> torch.device:
    """Turn `auto`, `cpu`, `cuda`, `cuda:N` or `mps` into a torch.device that exists here."""
    spec = (spec or "auto").strip().lower()
    available = [d.id for d in list_devices()]
    if spec == "auto":
        return torch.device(available[0])
    if spec == "cuda":
        spec = "cuda:0"
    if spec in available:
        return torch.device(spec)
    allowed = ", ".join(["auto"] + available)
    if spec.startswith("cuda"):
        why = "no CUDA GPU is visible" if not torch.cuda.is_available() else \
            f"only {torch.cuda.device_count()} CUDA GPU(s) here"
        raise DeviceError(f"device {spec!r} is not available ({why}); available: {allowed}")
    if spec == "mps":
        raise DeviceError(f"device 'mps' is not available (Apple GPUs only, on macOS); available: {allowed}")
    raise DeviceError(f"unknown device {spec!r}; available: {allowed}")


def device_name(device: torch.device) -> str:
    found = info(device)
    return found.name if found else str(device)


def set_threads() -> None:
    """Use every core for intra-op work (MNIST_LAB_THREADS overrides, e.g. to share a box)."""
    n = settings().threads
    if n:
        torch.set_num_threads(n)
