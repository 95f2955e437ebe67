"""How well does the draw page read digits people draw? MNIST test digits are redrawn on a
280x280 canvas at random sizes (a quarter of the canvas to nearly all of it), positions and
stroke widths, sent through `canvas_to_mnist` and `predict_proba`, and the accuracy is
printed next to the same model's accuracy on the untouched test digits.

References measured in the same run: the same model trained without augmentation, and a
plain resize of the whole canvas to 28x28 instead of MNIST's preprocessing.

    python bench/drawn_digits.py --data-dir ../shared/data/mnist            # trains the default model
    python bench/drawn_digits.py --data-dir ../shared/data/mnist --run runs/RUN_ID
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.runner import train_run  # noqa: E402
from core.data import load_dataset  # noqa: E402
from core.inference import load_classifier  # noqa: E402
from core.preprocess import _resize, canvas_to_mnist, mnist_to_canvas, to_ink  # noqa: E402
from core.store import RunStore  # noqa: E402
from core.handwriting import default_config  # noqa: E402


def redraw(images: np.ndarray, seed: int) -> list[np.ndarray]:
    """Each digit on its own 280x280 RGBA canvas, at a random size, place and stroke width."""
    rng = np.random.default_rng(seed)
    canvases = []
    for img in images:
        size = int(rng.integers(70, 261))                     # a quarter of the canvas to nearly all
        stroke = int(rng.integers(-1, max(1, size // 40) + 1))  # thinner, as is, or up to size/40 px thicker
        top, left = (int(v) for v in rng.integers(0, 280 - size + 1, 2))
        canvases.append(mnist_to_canvas(img, size, stroke, top, left))
    return canvases


def accuracy(clf, images: np.ndarray, labels: np.ndarray) -> float:
    return float((clf.predict_proba(images).argmax(1) == labels).mean())


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", help="folder with the MNIST IDX files (else MNIST_LAB_DATA / the offline sample)")
    p.add_argument("--run", help="a stored run folder to measure instead of training the default model")
    p.add_argument("--n", type=int, default=2000, help="test digits to redraw")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-reference", action="store_true", help="skip training the no-augmentation reference")
    args = p.parse_args(argv)

    ds = load_dataset("mnist", args.data_dir)
    print(f"data: {ds.name} from {ds.source} ({len(ds.train_labels):,} train / {len(ds.test_labels):,} test)")
    idx = np.random.default_rng(args.seed).choice(len(ds.test_labels), min(args.n, len(ds.test_labels)), replace=False)
    images, labels = ds.test_images[idx], ds.test_labels[idx]
    t0 = time.perf_counter()
    canvases = redraw(images, args.seed)
    prepared = [canvas_to_mnist(c) for c in canvases]
    print(f"redrew and preprocessed {len(idx)} test digits in {time.perf_counter() - t0:.1f} s")
    assert all(x is not None for x in prepared)
    drawn = np.stack(prepared)
    naive = np.stack([_resize(to_ink(c), 28, 28) for c in canvases])

    store = RunStore(tempfile.mkdtemp(prefix="drawn-bench-"))
    models = {}
    if args.run:
        models["given run"] = Path(args.run)
    else:
        cfg = default_config(ds.name)
        t0 = time.perf_counter()
        out = train_run(store, cfg, ds)
        print(f"trained the default draw model ({cfg.model}, augment={cfg.augment}, {cfg.epochs} epochs) "
              f"in {time.perf_counter() - t0:.1f} s")
        models["default (augmented)"] = Path(out["run_dir"])
        if not args.no_reference:
            out = train_run(store, cfg.replace(augment=False), ds)
            models["reference: no augmentation"] = Path(out["run_dir"])

    print(f"\n{'model':32s} {'test digits':>12s} {'redrawn':>9s} {'gap':>7s} {'redrawn, plain resize':>22s}")
    for name, folder in models.items():
        clf = load_classifier(folder)
        untouched = accuracy(clf, images.astype(np.float32) / 255.0, labels)
        full = accuracy(clf, ds.test_images.astype(np.float32) / 255.0, ds.test_labels)
        redrawn = accuracy(clf, drawn, labels)
        plain = accuracy(clf, naive, labels)
        print(f"{name:32s} {untouched:12.2%} {redrawn:9.2%} {(redrawn - untouched) * 100:+6.2f}pt {plain:22.2%}"
              f"   (full test set: {full:.2%})")
    return 0


if __name__ == "__main__":
    torch.set_num_threads(max(1, torch.get_num_threads()))
    raise SystemExit(main())
