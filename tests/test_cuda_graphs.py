"""The host side of the CUDA-graph step (core.cuda_graphs), testable without a GPU: which configs
can be captured and why not, the schedule's numbers reaching the device tensors a captured step
reads, and checkpoints that move between the graphed and the eager optimizer. The capture itself
is tested in tests/test_gpu.py (skipped without CUDA)."""

from __future__ import annotations

import torch

from core.config import RunConfig
from core.cuda_graphs import (graph_blocker, graphable_optimizer, keep_tensor_hyperparameters,
                              load_optimizer_state, plain_optimizer_state, tensor_hyperparameters)
from core.models import build_model
from core.training import make_optimizer, make_scheduler, train


def test_what_blocks_a_capture_is_said_in_words(monkeypatch):
    cuda = torch.device("cuda")
    assert graph_blocker(RunConfig.from_preset("mlp"), cuda) is None
    assert "CUDA device" in graph_blocker(RunConfig.from_preset("mlp"), torch.device("cpu"))
    assert "fp16" in graph_blocker(RunConfig.from_preset("mlp", precision="fp16"), cuda)
    assert "momentum" in graph_blocker(RunConfig.from_preset("cnn", optimizer="sgd"), cuda)
    assert graph_blocker(RunConfig.from_preset("mlp", optimizer="sgd"), cuda) is None   # constant rate: fine
    monkeypatch.setenv("MNIST_LAB_CUDA_GRAPHS", "0")
    assert "turned off" in graph_blocker(RunConfig.from_preset("mlp"), cuda)


def test_one_cycle_reaches_the_tensors_a_captured_step_reads():
    config = RunConfig.from_preset("cnn", epochs=1)   # Adam, one-cycle: the rate and beta1 change every step
    opt = graphable_optimizer(config, build_model(config.architecture()).parameters())
    sched = make_scheduler(config, opt, steps_per_epoch=20)
    tensors = opt.param_groups[0]["_graph_tensors"]
    for _ in range(7):
        opt.step()   # no gradients: changes nothing, keeps the scheduler's order check quiet
        sched.step()
        keep_tensor_hyperparameters(opt)
        group = opt.param_groups[0]
        assert isinstance(group["lr"], float) and float(tensors["lr"]) == torch.tensor(group["lr"]).item()
        assert float(tensors["beta1"]) == torch.tensor(group["betas"][0]).item()
    lr = opt.param_groups[0]["lr"]
    with tensor_hyperparameters(opt):   # what a capture sees
        assert opt.param_groups[0]["lr"] is tensors["lr"] and opt.param_groups[0]["betas"][0] is tensors["beta1"]
        assert isinstance(opt.param_groups[0]["betas"][1], float)
    assert opt.param_groups[0]["lr"] == lr and isinstance(opt.param_groups[0]["betas"][0], float)


def test_a_graphed_checkpoint_resumes_in_an_eager_optimizer_and_back():
    config = RunConfig.from_preset("mlp-fast", epochs=1)
    model = build_model(config.architecture())
    graphed = graphable_optimizer(config, model.parameters())
    graphed.param_groups[0]["lr"] = 0.0123
    state = plain_optimizer_state(graphed.state_dict())
    assert "_graph_tensors" not in state["param_groups"][0]
    eager = make_optimizer(config, model)
    load_optimizer_state(eager, state)
    group = eager.param_groups[0]
    assert group["lr"] == 0.0123 and group["fused"] and not group["capturable"]   # its own kernel kept
    back = graphable_optimizer(config, model.parameters())
    load_optimizer_state(back, plain_optimizer_state(eager.state_dict()))
    assert back.param_groups[0]["capturable"] and float(back.param_groups[0]["_graph_tensors"]["lr"]) == \
        torch.tensor(0.0123).item()


def test_a_cpu_run_is_eager_and_its_environment_says_so(small):
    result = train(RunConfig.from_preset("mlp-fast", dataset="mnist-sample", epochs=1, device="cpu"), small)
    assert result.extra["environment"] == {"training_loop": "eager"}
