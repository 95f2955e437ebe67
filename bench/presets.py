"""What the presets' names promise, measured on full MNIST.

    python bench/presets.py --data-dir ../shared/data/mnist [--seeds 0 1]

LeNet-5's test error for each seed and their mean, next to the figure published by LeCun et
al. (1998); the slides' MLP recipe (`mlp`): its test accuracy after 32 epochs and the epoch
where its validation loss turns up (the slides' overfitting). tests/test_accuracy.py checks
both.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.config import RunConfig  # noqa: E402
from core.data import load_dataset  # noqa: E402
from core.experiments import overfit_epoch  # noqa: E402
from core.models import PRESETS  # noqa: E402
from core.training import train  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--seeds", type=int, nargs="*", default=[0, 1])
    args = parser.parse_args()
    data = load_dataset("mnist", args.data_dir)
    published = PRESETS["lenet5"]["reference"]["test_error"]
    errors = []
    for seed in args.seeds:
        result = train(RunConfig.from_preset("lenet5", dataset="mnist", device="cpu", seed=seed), data)
        errors.append(1 - result.test["accuracy"])
        print(f"lenet5 seed {seed}: test accuracy {result.test['accuracy']:.2%}, error {errors[-1]:.2%}", flush=True)
    print(f"lenet5 mean test error {statistics.mean(errors):.2%} (published: {published:.2%})")
    result = train(RunConfig.from_preset("mlp", dataset="mnist", device="cpu", seed=0), data)
    h = result.history
    best = min(h, key=lambda e: e["val_loss"])
    print(f"mlp (slides' recipe), seed 0: test accuracy {result.test['accuracy']:.2%} after {len(h)} epochs; "
          f"lowest validation loss {best['val_loss']:.4f} at epoch {best['epoch']}, {h[-1]['val_loss']:.4f} at the "
          f"end; overfitting from epoch {overfit_epoch(h)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
