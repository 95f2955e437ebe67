"""The CUDA path: runs only on a machine with an NVIDIA GPU, skipped cleanly elsewhere."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from core.config import RunConfig
from core.devices import list_devices, resolve_device
from core.training import train

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU on this machine")


def test_cuda_devices_are_listed_first_with_name_and_memory():
    first = list_devices()[0]
    assert first.kind == "cuda" and first.memory_gb > 0 and first.name
    assert resolve_device("auto").type == "cuda"


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_cnn_trains_on_cuda_with_mixed_precision(small, precision):
    cfg = RunConfig.from_preset("cnn", dataset="mnist-sample", device="cuda", epochs=2, batch_size=64,
                                precision=precision)
    result = train(cfg, small)
    assert result.device.startswith("cuda")
    assert np.isfinite(result.history[-1]["train_loss"]) and result.test["accuracy"] > 0.8
    assert result.test["probs"].dtype == np.float32


def test_cuda_and_cpu_agree_closely_in_fp32(small):
    cfg = RunConfig.from_preset("mlp", dataset="mnist-sample", epochs=1, batch_size=100)
    gpu = train(cfg.replace(device="cuda"), small)
    cpu = train(cfg.replace(device="cpu"), small)
    assert abs(gpu.test["accuracy"] - cpu.test["accuracy"]) < 0.05
