"""The training step as a CUDA graph: one launch per step instead of dozens.

Why: a course-sized model's step (forward, loss, backward, optimizer) is 40-100 kernels of a
few microseconds each. Launched one by one from Python, each costs more CPU time than the GPU
needs to run it, so the GPU idles: on an H100 the course MLP at batch 50 trained slower than on
a 2-core CPU (1.74 s against 0.6-0.8 s an epoch). A CUDA graph records the step's kernels once
and replays them with one call. NVIDIA's guide: graphs pay where a step is many kernels under
~50 us each, and can cost where a step is already GPU-bound; bench/gpu_speed.py measures it.

What the trainers (core.training, core.group_training) do so that their step can be recorded:
  - every tensor the step reads or writes stays at one address: the batch is read from a
    persistent shuffled buffer through a step counter on the device, and the step's results
    (loss, correct predictions, gradient norms) go into buffers allocated before the capture;
  - what changes between steps (the learning rate, Adam's beta1 under one-cycle) lives in
    1-element device tensors updated in place (`fill_`) by the schedule on the host;
  - nothing in the step waits for the GPU (no `.item()`, no `bool(tensor)`).
The ragged last batch of an epoch has another shape, so it gets its own graph: warmed up
eagerly in the first epoch, captured in the second, replayed from then on, never recaptured.

torch.compile(mode="reduce-overhead") makes graphs too, automatically; bench/gpu_speed.py
measures both on the course MLP (H100: 0.166 s an epoch here, 1.09 s compiled after 5.7 s of
compiling, 1.34 s eager). The hand-made capture is kept: it graphs the backward pass, the
optimizer and the batch gather too, and has no compile time.

Where a step cannot be captured (`graph_blocker` says why, or a capture fails), training runs
eagerly, and the reason is recorded in the run's environment.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Hashable

import torch

from core.settings import settings

WARMUP_STEPS = 3   # eager steps before the first capture (cuBLAS handles, optimizer state)
IMPLEMENTATION_FLAGS = ("capturable", "foreach", "fused", "differentiable")


def graph_blocker(config, device: torch.device) -> str | None:
    """None when `config`'s training step can be captured as a CUDA graph on `device`, else why not."""
    if device.type != "cuda":
        return f"CUDA graphs need a CUDA device; this run trains on {device.type}"
    if not settings().cuda_graphs:
        return "CUDA graphs turned off (MNIST_LAB_CUDA_GRAPHS=0)"
    if config.precision == "fp16":
        return "fp16 loss scaling checks every step on the host whether the gradients overflowed"
    if config.optimizer == "sgd" and config.lr_schedule == "onecycle":
        return "one-cycle changes SGD's momentum every step, a number a captured step cannot see change"
    return None


def graphable_optimizer(config, params) -> torch.optim.Optimizer:
    """The optimizer of `config` in a form whose step can be captured (state on the device), with
    device tensors for what a schedule changes: the learning rate, and Adam's betas (one-cycle
    cycles beta1). The schedule keeps working on the group's floats, on the host, with no device
    read; `keep_tensor_hyperparameters` copies them into the tensors, which the captured step
    reads (`tensor_hyperparameters` puts them in the groups while a step is captured)."""
    params = list(params)
    device = params[0].device
    cycled = config.lr_schedule == "onecycle"
    if config.optimizer == "adam" and cycled:
        # One-cycle cycles beta1 too. Of Adam's implementations only the single-tensor one reads a
        # tensor beta1 without a sync (the foreach and fused ones turn it into a Python number);
        # beta2 stays a float (a tensor beta2 is read with a sync there, in PyTorch 2.11).
        optimizer = torch.optim.Adam(params, lr=config.lr, capturable=True, foreach=False)
    elif config.optimizer == "adam":
        # Constant betas: the fused kernel (one launch for all parameters) with a tensor rate.
        optimizer = torch.optim.Adam(params, lr=config.lr, fused=True, capturable=True)
    else:
        optimizer = torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, fused=True)
    for group in optimizer.param_groups:
        group["_graph_tensors"] = {
            "lr": torch.tensor(float(group["lr"]), device=device),
            "beta1": torch.tensor(float(group["betas"][0]), device=device) if "betas" in group and cycled else None,
            "values": {}}
    return optimizer


def keep_tensor_hyperparameters(optimizer: torch.optim.Optimizer) -> None:
    """After a schedule's step: copy the numbers it wrote into the groups into the device tensors a
    captured step reads (a `fill_`, no sync; only numbers that changed)."""
    for group in optimizer.param_groups:
        tensors = group.get("_graph_tensors")
        if tensors is None:
            continue
        pairs = [("lr", tensors["lr"], group["lr"])]
        if tensors["beta1"] is not None:
            pairs.append(("beta1", tensors["beta1"], group["betas"][0]))
        for name, tensor, value in pairs:
            value = float(value)
            if tensors["values"].get(name) != value:
                tensor.fill_(value)
                tensors["values"][name] = value


@contextlib.contextmanager
def tensor_hyperparameters(optimizer: torch.optim.Optimizer):
    """While a step is captured, the groups hold the device tensors, so that the recorded kernels
    read them (and later fills reach the replays); the floats come back afterwards."""
    keep_tensor_hyperparameters(optimizer)
    saved = []
    for group in optimizer.param_groups:
        tensors = group.get("_graph_tensors")
        saved.append((group["lr"], group.get("betas")))
        if tensors is not None:
            group["lr"] = tensors["lr"]
            if tensors["beta1"] is not None:
                group["betas"] = (tensors["beta1"], float(group["betas"][1]))
    try:
        yield
    finally:
        for group, (lr, betas) in zip(optimizer.param_groups, saved):
            group["lr"] = lr
            if betas is not None:
                group["betas"] = betas


def plain_optimizer_state(state: dict) -> dict:
    """An optimizer state dict without the graph's device tensors, so that a checkpoint of a
    graphed run resumes on any device and with any optimizer form."""
    return {**state, "param_groups": [{k: v for k, v in g.items() if k != "_graph_tensors"}
                                      for g in state["param_groups"]]}


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: dict) -> None:
    """`optimizer.load_state_dict(state)`, keeping this optimizer's implementation (a checkpoint
    of a CPU run resumed on a GPU must not bring the CPU's fused kernel along, nor the other way
    round) and a graphable optimizer's device tensors (the saved numbers go into them)."""
    kept = [g.get("_graph_tensors") for g in optimizer.param_groups]
    flags = [{k: g[k] for k in IMPLEMENTATION_FLAGS if k in g} for g in optimizer.param_groups]
    # The flags go into the saved groups before loading: they also decide where the loaded state
    # tensors go (a capturable optimizer's step counts live on the GPU).
    state = {**state, "param_groups": [{**saved, **own} for saved, own in zip(state["param_groups"], flags)]}
    optimizer.load_state_dict(state)
    for group, tensors in zip(optimizer.param_groups, kept):
        if tensors is not None:
            tensors["values"] = {}
            group["_graph_tensors"] = tensors
    keep_tensor_hyperparameters(optimizer)


class StepGraphs:
    """Runs a training step, captured as one CUDA graph per batch shape (`key`).

    `step(key)` does one whole step reading its batch from the trainer's static buffers; it
    must not zero the gradients (a captured backward writes them, an eager one here is given
    None gradients first). The first WARMUP_STEPS steps (one for a later shape) run eagerly on a
    side stream, as PyTorch's capture recipe asks; then the step is captured and replayed.
    A capture that fails leaves training eager from then on, with `failed` saying why.
    """

    def __init__(self, step: Callable[[Hashable], None], optimizer: torch.optim.Optimizer,
                 warmup: int = WARMUP_STEPS):
        self.step, self.optimizer, self.warmup = step, optimizer, warmup
        self.graphs: dict[Hashable, torch.cuda.CUDAGraph] = {}
        self.warmed: dict[Hashable, int] = {}
        self.failed: str | None = None
        self.captures = 0
        self._stream = torch.cuda.Stream()

    def describe(self) -> dict:
        """For the run's environment: how the steps ran."""
        if self.failed:
            return {"training_loop": "eager", "eager_reason": self.failed}
        return {"training_loop": "cuda-graph", "graphs_captured": self.captures}

    def _eager(self, key: Hashable) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        self.step(key)

    def __call__(self, key: Hashable) -> None:
        graph = self.graphs.get(key)
        if graph is not None:
            graph.replay()
            return
        if self.failed:
            self._eager(key)
            return
        if self.warmed.get(key, 0) < (self.warmup if not self.graphs else 1):
            side = self._stream
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                self._eager(key)
            torch.cuda.current_stream().wait_stream(side)
            self.warmed[key] = self.warmed.get(key, 0) + 1
            return
        graph = torch.cuda.CUDAGraph()
        self.optimizer.zero_grad(set_to_none=True)  # the captured backward allocates them in the graph's pool
        try:
            with tensor_hyperparameters(self.optimizer), torch.cuda.graph(graph, capture_error_mode="thread_local"):
                self.step(key)
        except Exception as exc:  # noqa: BLE001 - any op that cannot be captured: train eagerly, say why
            root = exc
            while root.__context__ is not None:   # the first error, not the capture's end complaining about it
                root = root.__context__
            first = str(root).strip().splitlines()[0] if str(root).strip() else ""
            self.failed = f"the step could not be captured as a CUDA graph ({type(root).__name__}: {first[:300]})"
            torch.cuda.synchronize()
            _end_rng_capture()
            self._eager(key)  # the step the failed capture did not run
            return
        self.graphs[key] = graph
        self.captures += 1
        graph.replay()


def _end_rng_capture() -> None:
    """Leave the default CUDA generator usable after a failed capture.

    Why by hand: a capture that fails never reaches PyTorch's capture epilogue, so the default
    generator stays marked as capturing and every later random op on the GPU (dropout,
    augmentation, shuffling) fails with "Offset increment outside graph capture". A capture that
    succeeds runs the epilogue, so one trivial capture clears the mark.
    """
    graph = torch.cuda.CUDAGraph()
    scratch = torch.zeros(1, device="cuda")
    with torch.cuda.graph(graph, capture_error_mode="thread_local"):
        scratch.add_(1)
    del graph
