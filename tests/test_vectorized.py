"""Many models at once: k-fold folds, seeds and a learning-rate grid trained as one vectorised
model give what the same configs give trained one by one; what cannot be stacked trains one by
one and says why; the k-fold command line and the queue's GPU slots."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from core.config import RunConfig
from core.data import Dataset
from core.experiments import capacity_configs, kfold_configs
from core.group_training import train_group, vectorize_plan
from core.models import build_model, fast_cnn
from core.stacked import StackedModel
from core.training import train
from tests.waiting import wait_until, wait_for_runs

MLP = [{"type": "flatten"}, {"type": "dense", "units": 64, "activation": "relu"},
       {"type": "dense", "units": 32, "activation": "tanh"}]


@pytest.fixture(scope="module")
def data(sample) -> Dataset:
    return Dataset("mnist-sample", sample.train_images[:1500], sample.train_labels[:1500], sample.test_images[:300],
                   sample.test_labels[:300], source="test", fingerprint="vec")


def assert_close(single, stacked, rtol=1e-5, atol=1e-5):
    for a, b in zip(single.history, stacked.history):
        for key in ("train_loss", "val_loss", "val_accuracy", "lr"):
            assert a[key] == pytest.approx(b[key], rel=rtol, abs=atol), (a["epoch"], key)
    wa, wb = single.model.state_dict(), stacked.model.state_dict()
    for k in wa:
        assert torch.allclose(wa[k].float(), wb[k].float(), rtol=rtol, atol=atol), k
    assert np.array_equal(single.test["preds"], stacked.test["preds"])


@pytest.fixture
def one_thread():
    """One CPU thread while the test trains. With two, the CPU's GEMM adds a layer's inputs in
    another order than with one (measured on this lab's AVX-512 VM: `x @ w.T`, 5x784 by 784x64,
    differs by ~1e-6 relative between one and two threads), so one-by-one training no longer sums
    as the stack's batched matmul does; over two epochs of one-cycle training that grew past the
    comparison's 1e-5 for one of seven folds. One thread compares the two ways of training with
    the same arithmetic, which is what this test checks."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("kind", ["k-fold folds (unequal sizes)", "seeds", "learning-rate grid", "L2 per model"])
def test_a_vectorised_group_gives_what_one_by_one_training_gives(data, kind, one_thread):
    base = RunConfig(model="custom", layers=MLP, dataset="mnist-sample", device="cpu", epochs=2, batch_size=64,
                     lr_schedule="onecycle", lr=3e-3)
    configs = {"k-fold folds (unequal sizes)": kfold_configs(base, 7),   # 1500/7: training sets of 1285 and 1286
               "seeds": [base.replace(seed=s) for s in (0, 1, 2)],
               "learning-rate grid": [base.replace(lr=lr) for lr in (1e-3, 3e-3, 1e-2)],
               "L2 per model": [base.replace(l2=v) for v in (0.0, 1e-3, 1e-2)]}[kind]
    assert vectorize_plan(configs, data) is None
    if kind.startswith("k-fold"):
        from core.training import split_indices

        assert len({len(split_indices(c, data.train_labels)[0]) for c in configs}) == 2  # last batches of 5 and 6
    stacked = train_group(configs, data)
    for i, config in enumerate(configs):
        assert_close(train(config, data), stacked[i])
    assert stacked[0].extra["vectorized"] == len(configs)


def test_a_stacked_cnn_computes_each_models_outputs_gradients_and_batchnorm_statistics(data):
    torch.manual_seed(0)
    models = [build_model(fast_cnn()) for _ in range(3)]
    stack = StackedModel([build_model(fast_cnn()) for _ in range(3)])
    for i, m in enumerate(models):
        stack.load_member(i, m.state_dict())
    x = torch.randn(3, 16, 1, 28, 28)
    y = torch.randint(0, 10, (3, 16))
    mask = torch.ones(3, 16)
    mask[1, 11:] = 0  # model 1's last batch is shorter: 11 real samples, 5 of padding
    logits = stack(x, mask)
    loss = sum(F.cross_entropy(logits[i][mask[i] > 0], y[i][mask[i] > 0]) for i in range(3))
    loss.backward()
    for i, model in enumerate(models):
        real = mask[i] > 0
        out = model(x[i][real])
        F.cross_entropy(out, y[i][real]).backward()
        assert torch.allclose(out, logits[i][real], atol=1e-5)
        mine = stack.member_state_dict(i)
        for name, p in model.named_parameters():
            g = dict(stack.named_parameters())
            # the member's gradient, taken out of the stack the same way its weights are
            got = stack.member_state_dict_of({k: v.grad for k, v in g.items()}, i)[name]
            assert torch.allclose(p.grad, got, rtol=1e-4, atol=1e-6), name
        for name, buf in model.named_buffers():
            assert torch.allclose(buf.float(), mine[name].float(), atol=1e-6), name


def test_dropout_draws_different_masks_for_each_model():
    layers = [{"type": "flatten"}, {"type": "dropout", "rate": 0.5}, {"type": "dense", "units": 8}]
    stack = StackedModel([build_model(layers) for _ in range(2)]).train()
    for i in range(2):
        stack.load_member(i, stack.member_state_dict(0))  # same weights, same input
    out = stack(torch.ones(2, 4, 1, 28, 28))
    assert not torch.allclose(out[0], out[1])


@pytest.mark.slow
def test_stacked_cnn_folds_are_as_good_as_one_by_one(sample):
    base = RunConfig.from_preset("cnn", dataset="mnist-sample", device="cpu", epochs=2)
    configs = kfold_configs(base, 3)
    stacked = train_group(configs, sample)
    for i, config in enumerate(configs):
        single = train(config, sample)
        # Adam divides each step by the gradient's size, so rounding-level differences in tiny
        # gradients grow into visible weight differences over many steps: equally good, not equal.
        assert abs(single.test["accuracy"] - stacked[i].test["accuracy"]) <= 0.015


def test_what_cannot_be_stacked_is_said_before_anything_trains(sample):
    base = RunConfig.from_preset("mlp", dataset="mnist-sample", device="cpu")
    assert "architectures differ" in vectorize_plan(capacity_configs(base, [8, 32]), sample)
    assert "batch_size differ" in vectorize_plan([base, base.replace(batch_size=64)], sample)
    assert "convolutional models train faster one by one on a CPU" in vectorize_plan(
        kfold_configs(RunConfig.from_preset("cnn", dataset="mnist-sample", device="cpu"), 3), sample)
    odd = [base.replace(val_split=0.2), base.replace(val_split=0.4)]
    assert "different numbers of batches" in vectorize_plan(odd, sample)


def test_gpu_slots_follow_memory_and_the_cpu_keeps_one(monkeypatch):
    from core.devices import DeviceInfo
    from core.executors import local

    monkeypatch.delenv("MNIST_LAB_JOBS_PER_DEVICE", raising=False)
    gpus = [DeviceInfo("cuda:0", "cuda", "NVIDIA H100 80GB HBM3", 79.2), DeviceInfo("cuda:1", "cuda", "small", 3.9),
            DeviceInfo("cpu", "cpu", "cpu", threads=2)]
    monkeypatch.setattr("core.devices.list_devices", lambda: gpus)
    assert local.slots_for("cuda:0") == 4 and local.slots_for("cuda:1") == 1 and local.slots_for("cpu") == 1
    monkeypatch.setenv("MNIST_LAB_JOBS_PER_DEVICE", "2")
    assert local.slots_for("cpu") == 2


@pytest.mark.slow
def test_kfold_command_prints_folds_mean_std_seconds_and_vectorized(tmp_path):
    from tests.test_cli import cli

    r = cli("kfold", "--dataset", "mnist-sample", "--model", "mlp", "--k", "4", "--epochs", "2", "--device", "cpu",
            "--runs-dir", str(tmp_path), "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["vectorized"] is True and len(out["folds"]) == 4
    scores = [f["val_accuracy"] for f in out["folds"]]
    assert out["mean"] == pytest.approx(np.mean(scores)) and out["std"] == pytest.approx(np.std(scores, ddof=1))
    assert 0 < out["seconds"] < 60 and all(0.8 < s < 1 for s in scores)
    from core.store import RunStore

    runs = RunStore(tmp_path).list()
    assert len(runs) == 4 and {r["grp"] for r in runs} == {out["group"]}
    assert all(r["status"] == "finished" and r["vectorized"]["group"] for r in runs)
    bad = cli("kfold", "--k", "11", "--runs-dir", str(tmp_path))
    assert bad.returncode == 2 and bad.stderr.startswith("error: argument --k")


@pytest.mark.slow
def test_a_vectorised_group_in_the_background_reports_progress_and_cancels_together(tmp_path):
    from core.executors.local import LocalExecutor
    from core.store import RunStore

    store = RunStore(tmp_path)
    base = RunConfig(model="custom", layers=MLP, dataset="mnist-sample", device="cpu", epochs=40, batch_size=16)
    ids = LocalExecutor(store).submit(kfold_configs(base, 3), group="kf", vectorize=True)
    assert all(store.get(i)["vectorized"] == {"group": ids} for i in ids)
    wait_until(lambda: all(store.get(i)["progress"] for i in ids), 120, "every fold to report progress")
    assert len({store.get(i)["pid"] for i in ids}) == 1  # one worker for the group
    for run_id in ids:
        store.request_cancel(run_id)
    assert [r["status"] for r in wait_for_runs(store, ids, timeout=120)] == ["cancelled"] * 3
    assert all(store.predictions(i)["probs"].shape[0] == 1000 for i in ids)
