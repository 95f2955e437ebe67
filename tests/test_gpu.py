"""The CUDA path: runs only on a machine with an NVIDIA GPU, skipped cleanly elsewhere."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from core.callbacks import Callback
from core.config import RunConfig
from core.data import Dataset
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


def test_cuda_and_cpu_agree_closely_in_fp32(sample):
    # Each device shuffles with its own generator (a CUDA run draws its order on the GPU), so the
    # two runs see the batches in different orders: equal within run-to-run noise, not bit for bit.
    cfg = RunConfig.from_preset("mlp", dataset="mnist-sample", epochs=3, batch_size=100)
    gpu = train(cfg.replace(device="cuda"), sample)
    cpu = train(cfg.replace(device="cpu"), sample)
    assert abs(gpu.test["accuracy"] - cpu.test["accuracy"]) < 0.03


# --- the step as a CUDA graph (core.cuda_graphs) --------------------------------------------

def _cnn(epochs: int, **kw) -> RunConfig:
    # 3,200 training rows at batch 96: 33 full batches and a ragged last one of 32 every epoch.
    return RunConfig.from_preset("cnn", dataset="mnist-sample", device="cuda", epochs=epochs, batch_size=96,
                                 val_split=0.2, **kw)


def test_a_cuda_run_trains_as_a_graph_with_the_accuracy_of_eager_training(sample, monkeypatch):
    graphed = train(_cnn(3), sample)
    monkeypatch.setenv("MNIST_LAB_CUDA_GRAPHS", "0")
    eager = train(_cnn(3), sample)
    assert graphed.extra["environment"]["training_loop"] == "cuda-graph", graphed.extra["environment"]
    assert eager.extra["environment"] == {"training_loop": "eager",
                                          "eager_reason": "CUDA graphs turned off (MNIST_LAB_CUDA_GRAPHS=0)"}
    assert graphed.test["accuracy"] > 0.9
    # Same seed, same batches: equal within run-to-run noise (GPU kernels do not add in a fixed
    # order, and the difference grows over the epochs of a chaotic training run).
    # (Mid-run epochs at one-cycle's peak rate differ more: 0.909 against 0.876 once, on 800 rows.)
    assert abs(graphed.test["accuracy"] - eager.test["accuracy"]) <= 0.02
    assert abs(graphed.history[-1]["val_accuracy"] - eager.history[-1]["val_accuracy"]) <= 0.02
    assert graphed.history[0]["train_loss"] == pytest.approx(eager.history[0]["train_loss"], rel=0.05)
    for g, e in zip(graphed.history, eager.history):
        assert g["lr"] == pytest.approx(e["lr"], rel=1e-5)   # the one-cycle schedule reaches the graph


def test_the_ragged_last_batch_is_captured_once_not_every_epoch(sample):
    result = train(_cnn(5), sample)
    # full batches with and without the gradient-norm sample (every 10th step), and the ragged last one
    assert result.extra["environment"].get("graphs_captured") == 3, result.extra["environment"]


def test_what_cannot_be_captured_trains_eagerly_and_the_run_says_why(sample, monkeypatch):
    fp16 = train(_cnn(1, precision="fp16"), sample)
    assert fp16.extra["environment"]["training_loop"] == "eager"
    assert "fp16" in fp16.extra["environment"]["eager_reason"]
    sgd = train(_cnn(1, optimizer="sgd", momentum=0.9, lr=0.05), sample)
    assert "momentum" in sgd.extra["environment"]["eager_reason"]
    # An op that waits for the GPU inside the step: the capture fails, training goes on eagerly.
    import core.fit_steps as steps   # the one training step's module

    real = steps.augment_batch

    def syncing(x, background):
        float(x.sum())
        return real(x, background)

    monkeypatch.setattr(steps, "augment_batch", syncing)
    broken = train(_cnn(2, augment=True), sample)
    env = broken.extra["environment"]
    assert env["training_loop"] == "eager" and "could not be captured" in env["eager_reason"]
    assert broken.test["accuracy"] > 0.85 and len(broken.history) == 2


def test_a_graphed_run_resumed_from_its_checkpoint_ends_where_a_straight_run_ends(sample):
    cfg = RunConfig.from_preset("mlp-fast", dataset="mnist-sample", device="cuda", epochs=3, batch_size=64)
    straight = train(cfg, sample)

    class StopAfterTwo(Callback):
        def on_epoch_end(self, trainer, epoch, log):
            if epoch == 1:
                self.state = trainer.checkpoint_state(epoch)
                self.stop_training = True

    stop = StopAfterTwo()
    train(cfg, sample, callbacks=[stop])
    resumed = train(cfg, sample, resume_state=stop.state)
    for k, v in straight.model.state_dict().items():
        assert torch.allclose(v.cpu(), resumed.model.state_dict()[k].cpu(), atol=1e-5), k
    assert [h["lr"] for h in resumed.history] == pytest.approx([h["lr"] for h in straight.history])


def test_folds_trained_as_one_graphed_stack_equal_folds_trained_one_by_one(sample):
    from core.experiments import kfold_configs
    from core.group_training import train_group

    data = Dataset("mnist-sample", sample.train_images[:1500], sample.train_labels[:1500], sample.test_images[:300],
                   sample.test_labels[:300], source="test", fingerprint="vec-gpu")
    base = RunConfig(model="custom", layers=[{"type": "flatten"}, {"type": "dense", "units": 64, "activation": "relu"}],
                     dataset="mnist-sample", device="cuda", epochs=2, batch_size=64, lr_schedule="onecycle", lr=3e-3)
    configs = kfold_configs(base, 7)   # training sets of 1285 and 1286 rows: masked padding in the stack
    stacked = train_group(configs, data)
    assert stacked[0].extra["vectorized"] == 7
    for i, config in enumerate(configs):
        single = train(config, data)
        for a, b in zip(single.history, stacked[i].history):
            assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-3, abs=1e-4)
        for k, v in single.model.state_dict().items():
            assert torch.allclose(v.float().cpu(), stacked[i].model.state_dict()[k].float().cpu(), atol=1e-3), k


def test_a_gpu_trains_several_jobs_at_once_and_the_cpu_one(monkeypatch):
    from core.executors.local import slots_for

    monkeypatch.delenv("MNIST_LAB_JOBS_PER_DEVICE", raising=False)
    assert slots_for("cuda:0") > 1 and slots_for("cpu") == 1


def test_kfold_command_on_the_gpu_trains_the_folds_as_one_stack(tmp_path):
    from tests.test_cli import cli

    r = cli("kfold", "--dataset", "mnist-sample", "--model", "mlp", "--k", "5", "--epochs", "2", "--device", "cuda",
            "--runs-dir", str(tmp_path), "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["vectorized"] is True and len(out["folds"]) == 5 and all(f["val_accuracy"] > 0.85 for f in out["folds"])
