"""Batched data augmentation on the training device: small random shifts, rotations, scale
changes and stroke-width changes, so a model trained on MNIST also reads digits people draw.

Why by hand: torchvision.transforms.v2.RandomAffine draws one transform per call, so on a
batch tensor every image gets the same one; per-sample transforms through it would mean a
Python loop over samples in the training loop. One `affine_grid` + `grid_sample` call does
a different transform for each image of the batch, on any device.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

MAX_ROTATION_DEG = 12.0
SCALE_RANGE = (0.85, 1.15)
MAX_SHIFT_PX = 2.5
STROKE_CHANGE_P = 0.3  # fraction of images made thicker, and the same fraction thinner


def augment_batch(x: torch.Tensor, background: float) -> torch.Tensor:
    """Randomly transform each image of a normalized (N, 1, 28, 28) batch.

    `background` is the normalized value of a blank pixel (-mean/std): the transforms are done
    on x - background so that what moves in from the border is blank, not grey.
    """
    n = x.shape[0]
    dev = x.device
    angle = (torch.rand(n, device=dev) * 2 - 1) * math.radians(MAX_ROTATION_DEG)
    scale = torch.empty(n, device=dev).uniform_(*SCALE_RANGE)
    shift = (torch.rand(n, 2, device=dev) * 2 - 1) * (MAX_SHIFT_PX / 14.0)  # grid units: 14 px = 1
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1),
                         torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    out = F.grid_sample(x - background, grid, align_corners=False, padding_mode="zeros")
    # Stroke width: a 3x3 grey dilation (max) thickens, an erosion (min) thins.
    r = torch.rand(n, 1, 1, 1, device=dev)
    thick = F.max_pool2d(out, 3, 1, 1)
    thin = -F.max_pool2d(-out, 3, 1, 1)
    out = torch.where(r < STROKE_CHANGE_P, thick, torch.where(r > 1 - STROKE_CHANGE_P * 0.5, thin, out))
    return out + background
