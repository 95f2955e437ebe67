"""The generated programs against the lab's own run: same recipe, data and epochs.

    python bench/codegen_match.py --data-dir ../shared/data/mnist [--epochs 2] [--train-subset 12000]
        [--presets mlp cnn ...]

For each preset: trains it in the lab, writes its PyTorch and Keras programs (core.codegen)
with DATA set to --data-dir, runs each in its own process (Keras 3 on its torch backend) and
prints the three test accuracies, and whether the weights the PyTorch program saved
(model.pt) are the lab's to the last bit. tests/test_codegen.py asserts the accuracies within
1.5 points on full MNIST, and the weights equal on the offline sample.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from core.codegen import keras_code, pytorch_code  # noqa: E402
from core.config import RunConfig  # noqa: E402
from core.data import load_dataset  # noqa: E402
from core.models import PRESETS  # noqa: E402
from core.training import train  # noqa: E402


def run(code: str, folder: Path, name: str) -> str:
    path = folder / f"{name}.py"
    path.write_text(code)
    out = subprocess.run([sys.executable, str(path)], capture_output=True, text=True, cwd=folder,
                         env={**os.environ, "KERAS_BACKEND": "torch", "PYTHONPATH": ""})
    match = re.search(r"test accuracy ([0-9.]+)", out.stdout)
    return f"{float(match.group(1)):.2%}" if match else "failed: " + out.stderr.strip().splitlines()[-1][:60]


def same_weights(model, saved: Path) -> str:
    """Whether the program's saved weights are the lab model's, tensor for tensor, bit for bit."""
    if not saved.exists():
        return "no model.pt"
    lab = list(model.state_dict().values())
    program = list(torch.load(saved, weights_only=True).values())
    if [t.shape for t in lab] != [t.shape for t in program]:
        return "other shapes"
    gap = max(float((a.float() - b.float()).abs().max()) for a, b in zip(lab, program))
    return "identical" if all(torch.equal(a, b) for a, b in zip(lab, program)) else f"max diff {gap:.1e}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--train-subset", type=int, default=0, help="train on this many digits (0: all)")
    parser.add_argument("--presets", nargs="*", default=list(PRESETS))
    args = parser.parse_args()
    args.data_dir = str(Path(args.data_dir).resolve())  # the programs run in a temporary folder
    data = load_dataset("mnist", args.data_dir)
    folder = Path(tempfile.mkdtemp(prefix="codegen-"))
    subset = f", {args.train_subset:,} training digits" if args.train_subset else ""
    print(f"full MNIST{subset}, {args.epochs} epochs each, {torch.get_num_threads()} CPU threads, test accuracy:")
    print(f"{'preset':<13} {'lab':>7} {'PyTorch program':>16} {'its weights':>12} {'Keras program':>14}")
    for name in args.presets:
        config = RunConfig.from_preset(name, dataset="mnist", epochs=args.epochs, train_subset=args.train_subset)
        result = train(config, data)
        (folder / "model.pt").unlink(missing_ok=True)
        torch_acc = run(pytorch_code(config, args.data_dir), folder, f"torch_{name}")
        weights = same_weights(result.model, folder / "model.pt")
        keras_acc = run(keras_code(config, args.data_dir), folder, f"keras_{name}")
        print(f"{name:<13} {result.test['accuracy']:>7.2%} {torch_acc:>16} {weights:>12} {keras_acc:>14}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
