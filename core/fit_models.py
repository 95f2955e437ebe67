"""The models one training loop (core.fit) trains: one model, or N models of one architecture
stacked into one (core.stacked). The loop is written over "the models being trained"; what
differs between one and a stack is only here: how their weights are built and held, their
forward pass and loss on a batch of rows, the L2 penalty, the gradient norms, the validation
pass, and each model taken back out.

Every batch is given as rows of `pool_x` (N, m): the rows of one model's training set for one
model, the rows of each member's fold of the whole training set for a stack.

Why one model is not simply a stack of one: a stacked dense layer is a batched matrix product,
which sums in another order than a plain one, so a single run would stop being bit for bit what
the generated PyTorch program (core.codegen) and the runs trained before compute.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from core.compiling import autocast, evaluate, evaluation_result, loss_function, predictions
from core.config import RunConfig
from core.data import Dataset, to_tensor
from core.models import LabModel, build_model, count_parameters, kernel_parameters
from core.run_data import prepare_data, split_indices, task_labels
from core.stacked import StackedModel

VAL_ROWS_PER_PASS = 10_000  # validation rows of all members in one stacked forward pass


def to_device(model: LabModel, device: torch.device) -> LabModel:
    """The model on `device`; a model with convolutions in channels-last memory layout, which
    oneDNN (CPU) and cuDNN (GPU) convolve faster: the course CNN's training step took 12.3 ms
    instead of 15.7 ms on this project's 2-core CPU (bench/kfold_speed.py measures the epoch)."""
    model = model.to(device)
    if any(s["type"] == "conv" for s in model.layer_specs):
        model = model.to(memory_format=torch.channels_last)
    return model


def l2_penalty(kernels: list[torch.Tensor], l2: float) -> torch.Tensor:
    """Keras' kernel_regularizer=l2(λ) summed over the layers: λ·Σ w² of every kernel."""
    return l2 * sum(torch.sum(w * w) for w in kernels)


class OneModel:
    """One LabModel and its run's data: the training split is the pool, a batch its rows."""

    stacked = False
    weights_key = "model"   # the checkpoint's key for the weights

    def __init__(self, config: RunConfig, dataset: Dataset, device: torch.device):
        data = prepare_data(config, dataset, device)
        torch.manual_seed(config.seed)
        self.model = to_device(build_model(config.architecture(), config.num_outputs), device)
        self.module, self.n, self.config = self.model, 1, config
        self.pool_x, self.pool_y = data.train_x, data.train_y
        self.test_x, self.test_y = data.test_x, data.test_y
        self.splits = [(data.train_index, data.val_index)]
        self.rows = [torch.arange(len(data.train_x), device=device)]
        self.mean, self.std = data.mean, data.std
        self.params_per_model = count_parameters(self.model)
        self._val = (data.val_x, data.val_y)
        self._loss = loss_function(config)
        named = kernel_parameters(self.model)
        self.kernel_names = [name for name, _ in named]
        self.kernels = [p for _, p in named]

    def forward_loss(self, xb: torch.Tensor, yb: torch.Tensor, mask) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits (1, m, outputs), loss (1,)) of the batch (1, m, ...)."""
        logits = self.model(xb[0])
        return logits.unsqueeze(0), self._loss(logits, yb[0]).view(1)

    def penalty(self, l2: torch.Tensor) -> torch.Tensor:
        return l2_penalty(self.kernels, self.config.l2)

    def l2_value(self, i: int) -> float:
        with torch.no_grad():
            return float(l2_penalty(self.kernels, self.config.l2))

    def grad_norms(self) -> torch.Tensor | None:
        """Each kernel's gradient norm, (1, kernels); None before the first backward."""
        grads = [p.grad for p in self.kernels]
        if not grads or any(g is None for g in grads):
            return None
        # torch._foreach_norm: one fused kernel for every layer's norm (what clip_grad_norm_ uses
        # inside; no public equivalent takes a list), instead of one kernel per layer each sample.
        return torch.stack(torch._foreach_norm(grads)).float()[None]

    def validate(self, active: list[int]) -> dict[int, dict]:
        return {0: evaluate(self.model, *self._val, self.config)} if active else {}

    def member_model(self, i: int) -> LabModel:
        return self.model

    def result_model(self, i: int, model: LabModel) -> LabModel:
        return model


class Stack:
    """N models in one StackedModel; the whole training set is the pool, each member's rows its
    own fold of it (see core.group_training for what each member gets)."""

    stacked = True
    weights_key = "stacked"

    def __init__(self, configs: list[RunConfig], dataset: Dataset, device: torch.device):
        self.configs, self.n, self.device = configs, len(configs), device
        base = configs[0]
        models = []
        for config in configs:
            torch.manual_seed(config.seed)  # each model starts exactly where it would alone
            models.append(build_model(config.architecture(), config.num_outputs))
        self.params_per_model = count_parameters(models[0])
        self.model = StackedModel(models).to(device)
        if any(sp["type"] == "conv" for sp in self.model.layer_specs):
            self.model = self.model.to(memory_format=torch.channels_last)
        self.module = self.model
        self.mean, self.std = dataset.mean, dataset.std
        self.pool_x = to_tensor(dataset.train_images, self.mean, self.std, device)
        self.pool_y = torch.from_numpy(task_labels(dataset.train_labels, base)).to(device)
        self.test_x = to_tensor(dataset.test_images, self.mean, self.std, device)
        self.test_y = torch.from_numpy(task_labels(dataset.test_labels, base)).to(device)
        self.splits = [split_indices(c, dataset.train_labels) for c in configs]
        self.rows = [torch.from_numpy(train_idx).to(device) for train_idx, _ in self.splits]
        self.binary = base.loss == "binary_crossentropy"
        self.kernels = self.model.kernel_groups()
        self.kernel_names = [name for name, _ in self.kernels]
        self._val_rows: torch.Tensor | None = None
        self._val_y = [self.pool_y[torch.from_numpy(val_idx).to(device)] for _, val_idx in self.splits]

    def forward_loss(self, xb: torch.Tensor, yb: torch.Tensor, mask) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits (N, m, outputs), each member's mean loss over its real rows (N,))."""
        n, m = yb.shape
        logits = self.model(xb, mask)
        if self.binary:
            per_sample = F.binary_cross_entropy_with_logits(logits.squeeze(-1).float(), yb.float(), reduction="none")
        else:
            per_sample = F.cross_entropy(logits.float().reshape(n * m, -1), yb.reshape(-1),
                                         reduction="none").view(n, m)
        loss = (per_sample * mask).sum(1) / mask.sum(1) if mask is not None else per_sample.mean(1)
        return logits, loss

    def penalty(self, l2: torch.Tensor) -> torch.Tensor:
        squares = sum(self.model.per_member(w).square().sum(1) for _, w in self.kernels)
        return (l2 * squares).sum()

    def l2_value(self, i: int) -> float:
        with torch.no_grad():
            return float(self.configs[i].l2 * sum(self.model.per_member(w)[i].float().square().sum()
                                                  for _, w in self.kernels))

    def grad_norms(self) -> torch.Tensor | None:
        grads = [w.grad for _, w in self.kernels]
        if any(g is None for g in grads):
            return None
        return torch.stack([self.model.per_member(g).float().norm(dim=1) for g in grads], 1)

    @torch.inference_mode()
    def validate(self, active: list[int]) -> dict[int, dict]:
        """The validation pass of the members in `active`, as stacked forward passes over all
        members' validation rows at once (`evaluate`'s results for each). N separate passes were
        about half of a 5-fold epoch on a GPU (bench/gpu_speed.py)."""
        n, d = self.n, self.device
        if self._val_rows is None:
            lengths = [len(val_idx) for _, val_idx in self.splits]
            rows = torch.zeros(n, max(lengths), dtype=torch.long)
            for i, (_, val_idx) in enumerate(self.splits):
                rows[i, :len(val_idx)] = torch.from_numpy(val_idx)
            self._val_rows, self._val_lengths = rows.to(d), lengths
        was_training = self.model.training
        self.model.eval()
        chunk = max(100, VAL_ROWS_PER_PASS // n)
        parts = []
        with autocast(self.configs[0], d):
            for start in range(0, self._val_rows.shape[1], chunk):
                rows = self._val_rows[:, start:start + chunk]
                xb = self.pool_x.index_select(0, rows.reshape(-1)).view(n, rows.shape[1], *self.pool_x.shape[1:])
                parts.append(self.model(xb).float())   # eval mode: batch norm uses each model's running statistics
        self.model.train(was_training)
        logits = torch.cat(parts, 1)
        out = {}
        for i in active:
            config = self.configs[i]
            yi = self._val_y[i]
            li = logits[i, :self._val_lengths[i]]
            loss = float(loss_function(config)(li, yi)) if len(yi) else 0.0
            out[i] = evaluation_result(predictions(li, self.binary)[0], yi, loss)
        return out

    def member_model(self, i: int) -> LabModel:
        return to_device(self.model.member(i), self.device)

    def result_model(self, i: int, model: LabModel) -> LabModel:
        return model.cpu()
