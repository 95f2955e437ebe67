"""How a trained model holds up when its test digits are changed: Gaussian noise, rotation,
and the fast gradient sign method (FGSM, Goodfellow et al. 2015), which moves every pixel by
±ε in the direction that raises the model's loss the most. A standard MNIST classifier is
reported to fall from about 98% to about 41% at ε = 0.2 (pixels in [0, 1]).

All functions take images in [0, 1] (N, 28, 28) and a classifier from core.inference.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

KINDS = ("noise", "rotation", "fgsm")


def add_noise(images: np.ndarray, sigma: float, seed: int = 0) -> np.ndarray:
    """Gaussian noise of standard deviation `sigma` on every pixel, clipped to [0, 1]."""
    rng = np.random.default_rng(seed)
    return np.clip(images + rng.normal(0.0, sigma, images.shape), 0, 1).astype(np.float32)


def rotate(images: np.ndarray, degrees: float) -> np.ndarray:
    """Every image rotated by `degrees` about its centre (torchvision, bilinear)."""
    from torchvision.transforms.v2 import InterpolationMode
    from torchvision.transforms.v2 import functional as TF

    x = torch.from_numpy(np.asarray(images, np.float32))[:, None]
    return TF.rotate(x, float(degrees), interpolation=InterpolationMode.BILINEAR)[:, 0].numpy()


def fgsm_direction(classifier, images: np.ndarray, labels: np.ndarray, batch_size: int = 1000) -> np.ndarray:
    """sign(∇ₓ loss(model(x), label)) for every image: the direction FGSM moves each pixel.
    It is taken at the clean digits, so it does not depend on ε: a curve over several ε
    needs it once (one backward pass) instead of once for each ε."""
    from core.training import loss_function

    loss_fn = loss_function(classifier.config)
    out = []
    for i in range(0, len(images), batch_size):
        x = torch.from_numpy(np.asarray(images[i:i + batch_size], np.float32)).requires_grad_(True)
        y = torch.from_numpy(np.asarray(labels[i:i + batch_size], np.int64))
        loss = loss_fn(classifier.model(classifier.normalize(x[:, None])), y)
        (grad,) = torch.autograd.grad(loss, x)
        out.append(grad.sign().numpy())
    return np.concatenate(out) if out else np.zeros_like(images, dtype=np.float32)


def fgsm(classifier, images: np.ndarray, labels: np.ndarray, epsilon: float, batch_size: int = 1000,
         direction: np.ndarray | None = None) -> np.ndarray:
    """x + ε·sign(∇ₓ loss(model(x), label)), clipped to [0, 1]: the one-step attack
    (`direction`, from fgsm_direction, where it was computed already)."""
    if direction is None:
        direction = fgsm_direction(classifier, images, labels, batch_size)
    return np.clip(np.asarray(images, np.float32) + np.float32(epsilon) * direction, 0, 1)


def perturb(classifier, images: np.ndarray, labels: np.ndarray, kind: str, amount: float,
            direction: np.ndarray | None = None) -> np.ndarray:
    """The images changed by `amount` of `kind` (`direction`: FGSM's, where computed already)."""
    if kind == "noise":
        return add_noise(images, amount)
    if kind == "rotation":
        return rotate(images, amount)
    if kind == "fgsm":
        return fgsm(classifier, images, labels, amount, direction=direction)
    raise ValueError(f"unknown perturbation {kind!r}; allowed: {', '.join(KINDS)}")


def accuracy(classifier, images: np.ndarray, labels: np.ndarray) -> float:
    return float((classifier.predict_proba(images).argmax(1) == labels).mean())


def accuracy_curve(classifier, images: np.ndarray, labels: np.ndarray, kind: str, amounts) -> pd.DataFrame:
    """Test accuracy for each amount of one perturbation (amount 0 = the clean digits)."""
    direction = fgsm_direction(classifier, images, labels) if kind == "fgsm" else None
    rows = [{"kind": kind, "amount": float(a),
             "accuracy": accuracy(classifier, perturb(classifier, images, labels, kind, a, direction) if a else images,
                                  labels)}
            for a in amounts]
    return pd.DataFrame(rows)


AMOUNTS = {"noise": np.round(np.linspace(0, 0.6, 7), 2), "rotation": np.arange(0, 91, 15),
           "fgsm": np.round(np.linspace(0, 0.3, 7), 2)}
LABELS = {"noise": "noise σ (pixels in [0, 1])", "rotation": "rotation (degrees)", "fgsm": "FGSM ε"}
