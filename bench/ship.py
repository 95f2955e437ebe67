"""Shipping every preset, measured: ONNX fp32, fp16 and int8 against PyTorch eager.

    python bench/ship.py --data-dir ../shared/data/mnist [--epochs 2] [--presets mlp cnn ...]

Trains each preset for `--epochs` epochs on full MNIST (the shipping figures depend on the
network, not on how long it trained; a preset with fewer epochs of its own keeps its own), then
exports it (core.export), checks every variant on the 10,000 test digits against the run's own
PyTorch predictions and times it next to PyTorch eager in the same run, interleaved, with the
same thread count (core.ship). Prints one table per preset and the issue's targets, met or not.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.runner import train_run  # noqa: E402
from core.config import RunConfig  # noqa: E402
from core.data import load_dataset  # noqa: E402
from core.models import PRESETS  # noqa: E402
from core.ship import prepare, ship  # noqa: E402
from core.store import RunStore  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--presets", nargs="*", default=list(PRESETS), choices=list(PRESETS))
    args = parser.parse_args()
    import torch

    data = load_dataset("mnist", args.data_dir)
    checks = []
    with tempfile.TemporaryDirectory(prefix="bench-ship-") as tmp:
        store = RunStore(Path(tmp) / "runs")
        for preset in args.presets:
            epochs = min(args.epochs, PRESETS[preset]["train"].get("epochs", args.epochs))
            run_id = train_run(store, RunConfig.from_preset(preset, dataset="mnist", epochs=epochs,
                                                                       device="cpu"), data,
                                                 data_dir=args.data_dir)["run_id"]
            rows = {r["variant"]: r for r in ship(prepare(store, run_id, args.data_dir), out_dir=Path(tmp))}
            print(f"\n{preset} ({epochs} epoch(s), {torch.get_num_threads()} threads):")
            print(f"  {'model':<22}{'bytes':>10}{'smaller':>9}{'test acc':>10}{'agree':>9}{'max |dp|':>10}"
                  f"{'1 digit ms':>12}{'digits/s @256':>15}")
            for r in rows.values():
                print(f"  {r['model']:<22}{r['bytes']:>10,}{rows['none']['bytes'] / r['bytes']:>8.2f}x"
                      f"{r['test_accuracy']:>10.2%}{r['agreement']:>9.2%}{r['max_probability_difference']:>10.1e}"
                      f"{r['latency_ms']:>12.3f}{r['throughput']:>15,.0f}", flush=True)
            fp32, int8, eager = rows["none"], rows["int8"], rows["pytorch"]
            checks.append((f"{preset}: fp32 ONNX agreement >= 99.9%", fp32["agreement"] >= 0.999))
            checks.append((f"{preset}: ONNX one-digit latency <= PyTorch eager's "
                           f"({fp32['latency_ms']:.3f} vs {eager['latency_ms']:.3f} ms)",
                           fp32["latency_ms"] <= eager["latency_ms"]))
            if preset in ("mlp", "cnn"):
                ratio = fp32["bytes"] / int8["bytes"]
                drop = (fp32["test_accuracy"] - int8["test_accuracy"]) * 100
                checks.append((f"{preset}: int8 {ratio:.2f}x smaller (>= 3.5x)", ratio >= 3.5))
                checks.append((f"{preset}: int8 accuracy within 0.3 points ({drop:+.2f})", abs(drop) <= 0.3))
                checks.append((f"{preset}: int8 agreement >= 99% ({int8['agreement']:.2%})", int8["agreement"] >= 0.99))
            if preset == "cnn":
                checks.append((f"cnn: int8 throughput at batch 256 above fp32's ({int8['throughput']:,.0f} vs "
                               f"{fp32['throughput']:,.0f})", int8["throughput"] > fp32["throughput"]))
    print("\ntargets:")
    for text, ok in checks:
        print(f"  {'met    ' if ok else 'NOT met'}  {text}")
    return 0 if all(ok for _, ok in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
