"""Training: the Keras workflow in one call, reproducible, cancellable, resumable, on the CPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from core.callbacks import Callback, Cancel, Checkpoint, Progress
from core.config import ConfigError, RunConfig
from core.devices import DeviceError, list_devices, resolve_device
from core.store import load_state_dict
from core.training import train

FAST = dict(dataset="mnist-sample", device="cpu", batch_size=100, epochs=2)


def small_mlp(**kw) -> RunConfig:
    layers = [{"type": "flatten"}, {"type": "dense", "units": 32, "activation": "relu"}]
    return RunConfig(**{"model": "custom", "layers": layers, **FAST, **kw})


def test_fit_and_evaluate_return_history_and_test_probabilities(small):
    result = train(small_mlp(), small)
    assert result.epochs_run == 2
    h = result.history[-1]
    for key in ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "seconds", "lr"):
        assert np.isfinite(h[key])
    assert np.array(h["val_confusion"]).sum() == 200  # 20% of 1,000 held out for validation
    probs = result.test["probs"]
    assert probs.shape == (300, 10) and np.allclose(probs.sum(1), 1, atol=1e-5)
    assert result.test["accuracy"] == pytest.approx((probs.argmax(1) == small.test_labels).mean())
    assert result.test["accuracy"] > 0.6


def test_same_seed_same_weights_bit_for_bit(small):
    cfg = small_mlp(model="custom", layers=[{"type": "flatten"}, {"type": "dense", "units": 16, "activation": "relu"},
                                            {"type": "dropout", "rate": 0.3}])
    a, b = train(cfg, small), train(cfg, small)
    for (k, va), vb in zip(a.model.state_dict().items(), b.model.state_dict().values()):
        assert torch.equal(va, vb), k
    assert [h["train_loss"] for h in a.history] == [h["train_loss"] for h in b.history]
    c = train(cfg.replace(seed=1), small)
    assert not torch.equal(a.model.state_dict()["blocks.dense.0.weight"], c.model.state_dict()["blocks.dense.0.weight"])


def test_cancel_stops_within_one_batch_and_keeps_finished_epochs(small):
    seen = []

    class Count(Callback):
        def on_batch_end(self, trainer, epoch, batch, num_batches):
            seen.append((epoch, batch))

    # 800 training samples / 100 = 8 batches an epoch; cancel at the 3rd batch of epoch 2.
    cancel = Cancel(lambda: len(seen) >= 11)
    result = train(small_mlp(epochs=5), small, callbacks=[Count(), cancel])
    assert result.stop_reason == "cancelled" and len(seen) == 11
    assert result.epochs_run == 1  # the cut-short epoch is not recorded as finished


def test_early_stopping_restores_the_best_epoch(small):
    cfg = small_mlp(epochs=30, lr=0.05, optimizer="sgd", early_stopping=2)
    result = train(cfg, small)
    assert result.epochs_run < 30 and "early stopping" in result.stop_reason
    best = min(range(result.epochs_run), key=lambda i: result.history[i]["val_loss"])
    assert result.extra["restored_epoch"] == best


def test_resume_from_checkpoint_reaches_the_same_weights(small, tmp_path):
    cfg = small_mlp(epochs=4, lr_schedule="onecycle", model="custom",
                    layers=[{"type": "flatten"}, {"type": "dense", "units": 16}, {"type": "dropout", "rate": 0.2}])
    full = train(cfg, small)

    class StopAfter(Callback):
        def on_epoch_end(self, trainer, epoch, log):
            if epoch == 1:
                self.stop_training, self.stop_reason = True, "test stop"

    ckpt = tmp_path / "ckpt.pt"
    train(cfg, small, callbacks=[Checkpoint(ckpt), StopAfter()])
    resumed = train(cfg, small, resume_state=load_state_dict(ckpt))
    assert resumed.epochs_run == 4
    for va, vb in zip(full.model.state_dict().values(), resumed.model.state_dict().values()):
        assert torch.equal(va, vb)


def test_progress_reports_batches_and_epochs(small):
    events = []
    train(small_mlp(), small, callbacks=[Progress(events.append, every=3)])
    batches = [e for e in events if e["kind"] == "batch"]
    assert [e["batch"] for e in batches[:3]] == [3, 6, 8]  # every 3rd batch and the last
    assert [e["epoch"] for e in events if e["kind"] == "epoch"] == [1, 2]
    assert all(e["samples_per_second"] > 0 for e in batches)


def test_binary_crossentropy_one_vs_rest(small):
    result = train(small_mlp(loss="binary_crossentropy", positive_class=7), small)
    assert result.test["probs"].shape == (300, 2)
    assert set(np.unique(result.test["labels"])) == {0, 1}
    assert result.test["accuracy"] > 0.85  # "is it a 7?" is 90% "no"
    assert np.array(result.history[-1]["val_confusion"]).shape == (2, 2)


@pytest.mark.slow
def test_cnn_and_bf16_autocast_train_on_cpu(small):
    cfg = RunConfig.from_preset("cnn", **{**FAST, "epochs": 1, "precision": "bf16"})
    result = train(cfg, small)
    assert result.epochs_run == 1 and np.isfinite(result.history[0]["train_loss"])


def test_fp16_needs_cuda(small):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ConfigError, match="fp16 mixed precision needs a CUDA GPU"):
        train(small_mlp(precision="fp16"), small)


def test_batch_larger_than_the_training_set_is_refused(small):
    with pytest.raises(ConfigError, match=r"batch size 5000 is larger than the training set \(800 samples"):
        train(small_mlp(batch_size=5000), small)


def test_train_subset_keeps_a_stratified_subset(small):
    result = train(small_mlp(train_subset=200, epochs=1), small)
    assert len(result.train_index) == 200
    assert np.bincount(small.train_labels[result.train_index]).min() >= 15


@pytest.mark.parametrize("field,value,message", [
    ("epochs", 0, "epochs must be a whole number from 1 to 10,000"),
    ("epochs", -3, "epochs must be a whole number from 1 to 10,000"),
    ("batch_size", 0, "batch size must be a whole number from 1 to 1,000,000"),
    ("lr", 0.0, "learning rate must be > 0"),
    ("lr", -1e-3, "learning rate must be > 0"),
    ("val_split", 1.0, "validation split must be between 0 and 1"),
    ("optimizer", "rmsprop", "allowed: adam, sgd"),
    ("dataset", "cifar", "allowed: mnist, fashion-mnist, mnist-sample"),
    ("model", "resnet", "allowed: mlp, mlp-fast, lenet5, cnn, cnn-accurate, custom"),
])
def test_bad_hyperparameters_name_the_field(field, value, message):
    with pytest.raises(ConfigError, match=message) as info:
        RunConfig(**{field: value})
    assert info.value.field == field


def test_config_round_trips_through_json():
    cfg = RunConfig.from_preset("cnn", seed=3, epochs=2)
    import json

    assert RunConfig.from_dict(json.loads(cfg.to_json())) == cfg


def test_bf16_on_hardware_without_bf16_units_is_flagged_before_it_trains_many_times_slower():
    """PyTorch's own test picks the kernel: without oneDNN's bf16 support (an AVX2-only CPU) a bf16
    matrix product takes a slow generic path, and the lab says so instead of a silent 15-17x longer wait."""
    from core.devices import DeviceInfo, bf16_warning, cpu_has_bf16

    assert cpu_has_bf16() is bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    assert list_devices()[-1].bf16 is cpu_has_bf16()
    laptop = DeviceInfo("cpu", "cpu", "AMD Ryzen 5 3500U (8 threads)", threads=8, bf16=False)
    text = bf16_warning("bf16", laptop)
    assert "AMD Ryzen 5 3500U" in text and "no bf16 instructions" in text and "Use fp32 here" in text
    assert bf16_warning("fp32", laptop) is None
    assert bf16_warning("bf16", DeviceInfo("cpu", "cpu", "Xeon", threads=8, bf16=True)) is None
    assert bf16_warning("bf16", DeviceInfo("mps", "mps", "Apple MPS")) is None  # not known: nothing claimed
    assert bf16_warning("bf16", None) is None                                   # a device not here: refused elsewhere
    turing = DeviceInfo("cuda:0", "cuda", "Tesla T4", 15.0, bf16=False)
    assert "cuda:0 (Tesla T4)" in bf16_warning("bf16", turing) and "Ampere" in bf16_warning("bf16", turing)


def test_devices_list_the_cpu_and_refuse_what_is_not_there():
    devices = list_devices()
    assert devices[-1].id == "cpu" and "threads" in devices[-1].name
    assert resolve_device("cpu").type == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match=r"device 'cuda:0' is not available \(no CUDA GPU is visible\); available: auto"):
            resolve_device("cuda")
    with pytest.raises(DeviceError, match="available: auto"):
        resolve_device("cuda:7")
    with pytest.raises(DeviceError, match="unknown device 'tpu'"):
        resolve_device("tpu")
