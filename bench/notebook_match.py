"""The exported notebooks against the lab's own run: same config, same data, executed.

    python bench/notebook_match.py [--epochs 1] [--data-dir DIR]

For every preset: trains it in the lab (on the offline sample, or on the MNIST folder given),
builds its PyTorch notebook (core.handover.notebook) with DATA pointing at the same digits,
executes it in a fresh Jupyter kernel (nbclient) and prints both test accuracies and the
seconds the notebook took; then the same for the Keras notebook of the `mlp` preset (Keras 3
on its torch backend). tests/test_handover.py asserts the PyTorch ones equal to the lab's.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("KERAS_BACKEND", "torch")

import nbclient  # noqa: E402

from core.config import RunConfig  # noqa: E402
from core.data import load_dataset  # noqa: E402
from core.handover.notebook import notebook  # noqa: E402
from core.idx import write_idx  # noqa: E402
from core.models import PRESETS  # noqa: E402
from core.training import train  # noqa: E402


def executed_accuracy(nb, folder: Path) -> tuple[float, float]:
    t0 = time.perf_counter()
    nbclient.NotebookClient(nb, timeout=3600, kernel_name="python3", resources={"metadata": {"path": str(folder)}}
                            ).execute()
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    return float(re.search(r"test accuracy ([0-9.]+)", text).group(1)), time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--data-dir", help="an MNIST folder (default: the offline sample, written as IDX files)")
    args = parser.parse_args()
    name = "mnist" if args.data_dir else "mnist-sample"
    data = load_dataset(name, args.data_dir)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.data_dir).resolve() if args.data_dir else Path(tmp)
        if not args.data_dir:
            for file, array in (("train-images-idx3-ubyte.gz", data.train_images),
                                ("train-labels-idx1-ubyte.gz", data.train_labels),
                                ("t10k-images-idx3-ubyte.gz", data.test_images),
                                ("t10k-labels-idx1-ubyte.gz", data.test_labels)):
                write_idx(Path(tmp) / file, array)
        print(f"{name}, {args.epochs} epoch(s), test accuracy:")
        print(f"{'notebook':<24}{'lab':>8}{'notebook':>10}{'difference':>12}{'notebook s':>12}")
        for framework, preset in [*(("pytorch", p) for p in PRESETS), ("keras", "mlp")]:
            config = RunConfig.from_preset(preset, dataset=name, epochs=args.epochs)
            lab = train(config, data).summary()["test_accuracy"]
            accuracy, seconds = executed_accuracy(notebook(config, framework, folder), Path(tmp))
            print(f"{framework + ' ' + preset:<24}{lab:>8.2%}{accuracy:>10.2%}{(accuracy - lab) * 100:>+11.1f}p"
                  f"{seconds:>12.1f}", flush=True)


if __name__ == "__main__":
    main()
