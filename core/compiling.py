"""compile() and evaluate() of the Keras workflow, in PyTorch: the optimizer, the learning-rate
schedule, the loss, the precision (autocast), and the batched, autograd-free evaluation that
gives loss, accuracy and every probability. One single run (core.training) and a vectorised
group (core.group_training) use the same pieces."""

from __future__ import annotations

import contextlib

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from core.config import ConfigError, RunConfig


# --- the pieces of compile() --------------------------------------------------------------

def make_optimizer(config: RunConfig, model: nn.Module) -> torch.optim.Optimizer:
    """Adam or SGD with momentum, fused (one kernel for all parameters) where PyTorch has it:
    on this project's 2-core CPU that is about 20% of the course MLP's epoch (bench/)."""
    cls, kwargs = (torch.optim.Adam, {}) if config.optimizer == "adam" else \
        (torch.optim.SGD, {"momentum": config.momentum})
    try:
        return cls(model.parameters(), lr=config.lr, fused=True, **kwargs)
    except (RuntimeError, TypeError, ValueError):  # a device without a fused kernel
        return cls(model.parameters(), lr=config.lr, **kwargs)


def make_scheduler(config: RunConfig, optimizer, steps_per_epoch: int):
    """Per-batch learning-rate schedule (None for a constant rate)."""
    total = config.epochs * steps_per_epoch
    if config.lr_schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config.lr, total_steps=total)
    if config.lr_schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total)
    return None


def loss_function(config: RunConfig):
    """Categorical cross-entropy on logits (log-softmax inside), or binary cross-entropy on
    one logit (sigmoid inside); both the course's losses, in their numerically safe form."""
    if config.loss == "binary_crossentropy":
        return lambda logits, y: F.binary_cross_entropy_with_logits(logits.squeeze(1), y.to(logits.dtype))
    return F.cross_entropy


def check_precision(config: RunConfig, device: torch.device) -> None:
    """Refuse a precision the device cannot train in (checked before a job starts, too)."""
    if config.precision == "fp16" and device.type != "cuda":
        raise ConfigError("precision", f"fp16 mixed precision needs a CUDA GPU, the device is {device}; use bf16 or fp32")


def autocast(config: RunConfig, device: torch.device):
    if config.precision == "fp32":
        return contextlib.nullcontext()
    check_precision(config, device)
    dtype = torch.bfloat16 if config.precision == "bf16" else torch.float16
    # No weight-cast cache: a CUDA graph capture needs it off, and one forward per region never hits it.
    return torch.autocast(device.type, dtype=dtype, cache_enabled=False)


def predictions(logits: torch.Tensor, binary: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(probabilities (N, C), predicted class (N,)) from logits; binary gives C = 2."""
    logits = logits.float()
    if binary:
        p = torch.sigmoid(logits.squeeze(1))
        probs = torch.stack([1 - p, p], dim=1)
    else:
        probs = torch.softmax(logits, dim=1)
    return probs, probs.argmax(dim=1)


# --- evaluation -------------------------------------------------------------------------

@torch.inference_mode()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, config: RunConfig,
             batch_size: int = 2000) -> dict:
    """Loss, accuracy, predicted labels and the full probability matrix, batched, no autograd."""
    was_training = model.training
    model.eval()
    binary = config.loss == "binary_crossentropy"
    loss_fn = loss_function(config)
    device = x.device
    total_loss, probs_parts = torch.zeros((), device=device), []
    with autocast(config, device):
        for start in range(0, len(x), batch_size):
            logits = model(x[start:start + batch_size]).float()
            yb = y[start:start + batch_size]
            total_loss += loss_fn(logits, yb) * len(yb)   # summed on the device: one sync at the end
            probs_parts.append(predictions(logits, binary)[0])
    model.train(was_training)
    return evaluation_result(torch.cat(probs_parts), y, float(total_loss) / max(len(x), 1))


def evaluation_result(probs: torch.Tensor, y: torch.Tensor, loss: float) -> dict:
    """What `evaluate` returns, from the probability matrix and the labels (on any device)."""
    probs = probs.cpu().numpy().astype(np.float32)
    preds, labels = probs.argmax(axis=1), y.cpu().numpy()
    return {"loss": loss, "accuracy": float((preds == labels).mean()) if len(labels) else 0.0,
            "preds": preds, "probs": probs, "labels": labels}
