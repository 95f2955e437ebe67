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
            found.append(DeviceInfo(f"cuda:{i}", "cuda", props.name, round(props.total_memory / 2**30, 1)))
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        found.append(DeviceInfo("mps", "mps", "Apple MPS (Metal)"))
    threads = torch.get_num_threads()
    found.append(DeviceInfo("cpu", "cpu", f"{_cpu_name()} ({threads} threads)", threads=threads))
    return found


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
    for d in list_devices():
        if d.id == str(device) or (device.type == "cuda" and d.id == f"cuda:{device.index or 0}"):
            return d.name
    return str(device)


def set_threads() -> None:
    """Use every core for intra-op work (MNIST_LAB_THREADS overrides, e.g. to share a box)."""
    n = settings().threads
    if n:
        torch.set_num_threads(n)
