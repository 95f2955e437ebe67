"""Seconds per training epoch of the course's MLP at several batch sizes on one device: on a
GPU a small batch is bound by per-step overhead (Python and kernel launches), not by the maths.
The batch of 50 (the course's) is the reference, measured in the same run.

    python bench/batch_size.py --data-dir ../shared/data/mnist --device cuda
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from core.config import RunConfig  # noqa: E402
from core.data import load_dataset  # noqa: E402
from core.devices import device_name, resolve_device  # noqa: E402
from core.fit import Fit  # noqa: E402
from core.fit_models import OneModel  # noqa: E402


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", required=True)
    p.add_argument("--device", default="auto")
    p.add_argument("--batch-sizes", default="50,128,256,1024")
    args = p.parse_args()
    device = resolve_device(args.device)
    ds = load_dataset("mnist", args.data_dir)
    print(f"torch {torch.__version__}, device {device} ({device_name(device)}); course MLP, training epoch only "
          "(second epoch, after a warm-up one)")
    base = None
    for bs in (int(b) for b in args.batch_sizes.split(",")):
        cfg = RunConfig.from_preset("mlp", dataset="mnist", device=str(device), batch_size=bs, epochs=2)
        trainer = Fit(OneModel(cfg, ds, device), [cfg], device)
        trainer.train_epoch(0)
        sync(device)
        t = time.perf_counter()
        trainer.train_epoch(1)
        sync(device)
        sec = time.perf_counter() - t
        base = base or sec
        print(f"  batch {bs:5d}: {trainer.steps_per_epoch:5d} steps, {sec:6.3f} s/epoch, "
              f"{sec / trainer.steps_per_epoch * 1000:6.2f} ms/step, {base / sec:5.2f}x the batch-50 speed")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
