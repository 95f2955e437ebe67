"""What a trained network learned, as data for the pages: its first layer's weights as
images, and a 2-D map (PCA or t-SNE, scikit-learn's) of a hidden layer's activations on test
digits, where digits the network finds alike sit together."""

from __future__ import annotations

import base64
import io

import numpy as np
import torch


def weight_tiles(weights: np.ndarray, columns: int = 16, limit: int = 64, gap: int = 1,
                 upscale: int = 1) -> np.ndarray:
    """First-layer weights (N, H, W) as one RGB image of tiles: blue where a weight is
    positive (the unit likes ink there), red where negative, white at zero; each tile scaled
    to its own largest |weight| (one unit's pattern, not its size, is what shows)."""
    w = np.asarray(weights, np.float32)[:limit]
    n, h, wd = w.shape
    rows = -(-n // columns)
    cols = min(n, columns)
    out = np.ones((rows * (h + gap) - gap, cols * (wd + gap) - gap, 3), np.float32)
    for i, tile in enumerate(w):
        scale = float(np.abs(tile).max()) or 1.0
        t = tile / scale
        rgb = np.stack([1 - np.clip(t, 0, 1), 1 - np.abs(t), 1 - np.clip(-t, 0, 1)], axis=-1)
        r, c = divmod(i, columns)
        out[r * (h + gap):r * (h + gap) + h, c * (wd + gap):c * (wd + gap) + wd] = rgb
    if upscale > 1:
        out = out.repeat(upscale, 0).repeat(upscale, 1)
    return (out * 255).round().astype(np.uint8)


def hidden_layers(model) -> list[str]:
    """The blocks whose output can be mapped: every block but the output layer and dropout."""
    return [name for (name, _), spec in zip(model.blocks.items(), model.layer_specs) if spec["type"] != "dropout"]


@torch.inference_mode()
def activations(classifier, images: np.ndarray, layer: str, batch_size: int = 1000) -> np.ndarray:
    """The output of block `layer` for (N, 28, 28) images in [0, 1], flattened to (N, features)."""
    parts = []
    for i in range(0, len(images), batch_size):
        x = classifier.input_tensor(images[i:i + batch_size])
        for name, value in classifier.model.forward_features(x):
            if name == layer:
                parts.append(value.float().reshape(len(value), -1).numpy())
                break
        else:
            raise ValueError(f"no layer {layer!r}; layers: {', '.join(n for n in classifier.model.blocks)}")
    return np.concatenate(parts)


def embedding(features: np.ndarray, method: str = "pca", seed: int = 0) -> np.ndarray:
    """A 2-D map of (N, features): PCA (linear, instant) or t-SNE (keeps neighbours together)."""
    if method == "pca":
        from sklearn.decomposition import PCA

        return PCA(n_components=2, random_state=seed).fit_transform(features)
    if method == "tsne":
        from sklearn.manifold import TSNE

        perplexity = min(30.0, max(5.0, (len(features) - 1) / 3))
        return TSNE(n_components=2, init="pca", random_state=seed, perplexity=perplexity).fit_transform(features)
    raise ValueError(f"unknown method {method!r}; allowed: pca, tsne")


def digit_data_url(image: np.ndarray, scale: int = 2) -> str:
    """A 28x28 image in [0, 1] as a small PNG data URL (for an image in a chart's tooltip)."""
    from PIL import Image

    a = (np.clip(np.asarray(image, np.float32), 0, 1) * 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(a).resize((a.shape[1] * scale, a.shape[0] * scale), Image.NEAREST).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
