"""A stored run's model, ready to classify images in [0, 1]: the draw page, the "my
handwriting" set and the measurement script all go through `load_classifier`.

It applies the normalization the run was trained with (the mean and standard deviation of
its training pixels, saved in the run's config.json), so a caller never has to know it, and
loads the weights with `weights_only=True`: a model file never runs code.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from core.config import RunConfig
from core.models import LabModel, build_model
from core.store import RunStoreError, load_state_dict


@dataclass
class Classifier:
    model: LabModel
    mean: float
    std: float
    config: RunConfig
    run_dir: Path

    @property
    def classes(self) -> int:
        return 2 if self.config.num_outputs == 1 else 10

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Pixels in [0, 1] to the values the model was trained on (its training set's mean and std)."""
        return (x - self.mean) / self.std

    def input_tensor(self, images) -> torch.Tensor:
        """(N, 28, 28) images in [0, 1] (or one 28x28 image) as the model's normalized input."""
        x = np.asarray(images, dtype=np.float32)
        if x.ndim == 2:
            x = x[None]
        if x.ndim != 3 or x.shape[1:] != (28, 28):
            raise ValueError(f"expected (N, 28, 28) images, got shape {x.shape}")
        if not np.isfinite(x).all():
            raise ValueError("the image has pixels that are not numbers (NaN or infinite)")
        return self.normalize(torch.from_numpy(x)[:, None])


    @torch.inference_mode()
    def predict_proba(self, images, batch_size: int = 2000) -> np.ndarray:
        """(N, 28, 28) float images in [0, 1] -> (N, 10) class probabilities ((N, 2) for a binary run)."""
        x = self.input_tensor(images)
        out = []
        for i in range(0, len(x), batch_size):
            logits = self.model(x[i:i + batch_size]).float()
            if self.config.num_outputs == 1:
                p = torch.sigmoid(logits[:, 0])
                out.append(torch.stack([1 - p, p], 1))
            else:
                out.append(torch.softmax(logits, 1))
        return torch.cat(out).numpy() if out else np.zeros((0, self.classes), np.float32)

    @torch.inference_mode()
    def features(self, image) -> list[tuple[str, str, np.ndarray]]:
        """Each layer's output for one image: (name, layer type, array (C, H, W) or (units,))."""
        out = []
        for (name, value), spec in zip(self.model.forward_features(self.input_tensor(image)),
                                       self.model.layer_specs + [{"type": "output"}]):
            out.append((name, spec["type"], value[0].float().numpy()))
        return out

    def saliency(self, image) -> tuple[int, np.ndarray]:
        """The predicted class and |d score / d pixel| over the 28x28 input (scaled to [0, 1]):
        which pixels would change the decision most."""
        x = self.input_tensor(image).requires_grad_(True)
        logits = self.model(x)
        cls = int(logits[0].argmax()) if logits.shape[1] > 1 else int(logits[0, 0] > 0)
        logits[0, cls if logits.shape[1] > 1 else 0].backward()
        g = x.grad[0, 0].abs().numpy()
        return cls, g / g.max() if g.max() > 0 else g


def load_classifier(run_dir: str | Path, which: str = "best") -> Classifier:
    """Load a stored run (its folder) for inference; a bad or missing file is a RunStoreError."""
    run_dir = Path(run_dir)
    try:
        saved = json.loads((run_dir / "config.json").read_text())
        config = RunConfig.from_dict(saved["config"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise RunStoreError(f"{run_dir}: not a readable run ({type(exc).__name__}: {exc})") from exc
    data = saved.get("dataset") if isinstance(saved.get("dataset"), dict) else {}
    mean, std = float(data.get("mean", 0.1307)), float(data.get("std", 0.3081))
    path = run_dir / f"weights_{which}.pt"
    if not path.exists():
        path = run_dir / "weights_last.pt"
    if not path.exists():
        raise RunStoreError(f"{run_dir}: no weights file (the run has not finished an epoch)")
    model = build_model(config.architecture(), config.num_outputs)
    try:
        model.load_state_dict(load_state_dict(path))
    except RuntimeError as exc:
        raise RunStoreError(f"{path}: the weights do not fit the run's architecture ({exc})") from exc
    return Classifier(model.eval(), mean, std, config, run_dir)
