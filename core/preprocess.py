"""From a drawing on a canvas to a 28x28 image prepared the way MNIST digits were.

MNIST's digits were not simply resized: each was cropped to its strokes, scaled so its
longer side is 20 pixels (keeping the aspect ratio, anti-aliased to grey levels) and placed
in a 28x28 field so that its centre of mass is at the centre (LeCun et al.). A model trained
on those images reads a drawing well only if the drawing goes through the same steps; a
plain resize of the whole canvas makes a small or off-centre digit unreadable.

`canvas_to_mnist(image)` returns the model input; `canvas_to_mnist_steps(image)` also returns
the intermediate images, which the draw page shows side by side.
"""

from __future__ import annotations

import numpy as np
import torch
from torchvision.transforms.v2 import functional as TF

BOX = 20          # MNIST's size-normalization box
FIELD = 28        # MNIST's image size
INK = 0.1         # a pixel darker/brighter than this share of full ink counts as a stroke
MIN_EXTENT = 0.1  # strokes spanning less than this share of the canvas side are a dot, not a digit


def to_ink(image: np.ndarray) -> np.ndarray:
    """Canvas pixels to ink in [0, 1] (1 = stroke), whatever the format.

    Accepts (H, W) grayscale, (H, W, 3) RGB and (H, W, 4) RGBA, uint8 or float. Transparent
    pixels are background. Dark strokes on a light background are detected (the border of a
    drawing is background) and inverted.
    """
    a = np.asarray(image)
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (1, 3, 4)) or min(a.shape[:2]) < 2:
        raise ValueError(f"expected an (H, W), (H, W, 3) or (H, W, 4) image, got shape {a.shape}")
    if not (np.issubdtype(a.dtype, np.number) or a.dtype == bool):
        raise ValueError(f"expected image pixels as numbers, got {a.dtype}")
    a = a.astype(np.float32)
    if not np.isfinite(a).all():
        raise ValueError("the image has pixels that are not numbers (NaN or infinite)")
    if a.max() > 1.0:
        a = a / 255.0
    if a.ndim == 2 or a.shape[2] == 1:
        gray, alpha = a.reshape(a.shape[:2]), np.ones(a.shape[:2], np.float32)
    else:
        rgb = a[..., :3]
        gray = rgb @ np.array([0.299, 0.587, 0.114], np.float32)
        alpha = a[..., 3] if a.shape[2] == 4 else np.ones(a.shape[:2], np.float32)
    if alpha.min() < 1.0 and alpha.max() > 0:
        # Strokes on a transparent background: the ink is where the paint is (alpha).
        drawn = alpha > 0.5
        if drawn.mean() < 0.5:
            return alpha.astype(np.float32)
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    if np.median(border) > 0.5:        # light background: dark strokes
        gray = 1.0 - gray
    return np.clip(gray * alpha, 0, 1).astype(np.float32)


def _resize(img: np.ndarray, h: int, w: int) -> np.ndarray:
    t = torch.from_numpy(np.ascontiguousarray(img))[None]
    return TF.resize(t, [h, w], antialias=True)[0].clamp(0, 1).numpy()


def canvas_to_mnist_steps(image: np.ndarray) -> dict | None:
    """The preprocessing with its steps: ink, cropped, scaled (longer side 20), centred (28x28).
    None for an empty or nearly empty canvas (nothing, or a dot)."""
    ink = to_ink(image)
    ys, xs = np.nonzero(ink > INK)
    if len(ys) == 0:
        return None
    top, bottom, left, right = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    if max(bottom - top, right - left) < MIN_EXTENT * max(ink.shape):
        return None
    cropped = ink[top:bottom, left:right]
    h, w = cropped.shape
    scale = BOX / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    scaled = _resize(cropped, nh, nw)
    if scaled.max() > 0:
        scaled = scaled / scaled.max()  # full ink after anti-aliasing, as in MNIST
    # Place by centre of mass: MNIST's digits have theirs at the centre of the 28x28 field.
    total = scaled.sum()
    cy = (scaled.sum(axis=1) * np.arange(nh)).sum() / total
    cx = (scaled.sum(axis=0) * np.arange(nw)).sum() / total
    oy = int(np.clip(round(FIELD / 2 - 0.5 - cy), 0, FIELD - nh))
    ox = int(np.clip(round(FIELD / 2 - 0.5 - cx), 0, FIELD - nw))
    centred = np.zeros((FIELD, FIELD), np.float32)
    centred[oy:oy + nh, ox:ox + nw] = scaled
    return {"ink": ink, "cropped": cropped, "scaled": scaled, "centred": centred}


def canvas_to_mnist(image: np.ndarray) -> np.ndarray | None:
    """Canvas pixels ((H, W, 4) RGBA from streamlit-drawable-canvas, or RGB, or grayscale;
    light-on-dark or dark-on-light) to a (28, 28) float32 image in [0, 1] prepared like MNIST,
    or None when the canvas is empty or holds only a dot."""
    steps = canvas_to_mnist_steps(image)
    return None if steps is None else steps["centred"]


def mnist_to_canvas(digit: np.ndarray, size: int, stroke: int, top: int, left: int, canvas: int = 280) -> np.ndarray:
    """Redraw a 28x28 MNIST digit on an RGBA canvas the way a user would draw it: scaled so its
    strokes span `size` pixels, thickened (stroke > 0) or thinned (stroke < 0) by `abs(stroke)`
    pixels, white on black at (`top`, `left`). Used to measure the draw page's accuracy."""
    d = digit.astype(np.float32) / (255.0 if digit.max() > 1 else 1.0)
    ys, xs = np.nonzero(d > INK)
    d = d[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
    h, w = d.shape
    s = size / max(h, w)
    big = _resize(d, max(1, round(h * s)), max(1, round(w * s)))
    t = torch.from_numpy(big)[None, None]
    if stroke > 0:
        t = torch.nn.functional.max_pool2d(t, 2 * stroke + 1, 1, stroke)
    elif stroke < 0:
        t = -torch.nn.functional.max_pool2d(-t, 2 * -stroke + 1, 1, -stroke)
    big = t[0, 0].numpy()
    out = np.zeros((canvas, canvas, 4), np.uint8)
    bh, bw = big.shape
    top, left = min(top, canvas - bh), min(left, canvas - bw)
    v = (big * 255).astype(np.uint8)
    out[top:top + bh, left:left + bw, :3] = v[..., None]
    out[..., 3] = 255
    return out
