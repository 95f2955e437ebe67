"""The generated programs against the lab's own run: same recipe, data and epochs.

    python bench/codegen_match.py --data-dir ../shared/data/mnist [--epochs 2] [--presets mlp cnn ...]

For each preset: trains it in the lab, writes its PyTorch and Keras programs (core.codegen)
with DATA set to --data-dir, runs each in its own process (Keras 3 on its torch backend) and
prints the three test accuracies. tests/test_codegen.py asserts the same within 1.5 points.
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--presets", nargs="*", default=list(PRESETS))
    args = parser.parse_args()
    args.data_dir = str(Path(args.data_dir).resolve())  # the programs run in a temporary folder
    data = load_dataset("mnist", args.data_dir)
    folder = Path(tempfile.mkdtemp(prefix="codegen-"))
    print(f"full MNIST, {args.epochs} epochs each, test accuracy:")
    print(f"{'preset':<10} {'lab':>8} {'PyTorch program':>16} {'Keras program':>14}")
    for name in args.presets:
        config = RunConfig.from_preset(name, dataset="mnist", epochs=args.epochs)
        lab = train(config, data).test["accuracy"]
        torch_acc = run(pytorch_code(config, args.data_dir), folder, f"torch_{name}")
        keras_acc = run(keras_code(config, args.data_dir), folder, f"keras_{name}")
        print(f"{name:<10} {lab:>8.2%} {torch_acc:>16} {keras_acc:>14}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
