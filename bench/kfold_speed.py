"""Many models at once, and the CPU not slower: the targets of the hardware issue on this machine.

    python bench/kfold_speed.py --data-dir ../shared/data/mnist [--reps 3] [--device cpu]

Prints, for the course MLP (batch 50, 2 epochs, full MNIST), medians over `--reps`
interleaved repetitions (this VM's small-op speed drifts by up to 2x from hour to hour, so only
ratios within one run mean something):
  1. the lab's epoch against a lean reference loop (the same model, the data as one tensor on
     the device, randperm slices, plain Adam, a validation pass): target lab <= reference;
  2. a 5-fold cross-validation trained as one vectorised model (core.group_training), in fp32
     and in bf16, against one ordinary 2-epoch run: target at most 3x;
  3. the small CNN to 99.0% test accuracy, against 20 epochs of the lean MLP loop.
Training time only: no process start, no data loading.

The header says whether this CPU has bf16 instructions (PyTorch's own test, core.devices.cpu_has_bf16)
and times one batch-50 layer product in bf16 against fp32: without them bf16 takes a slow generic
path and the bf16 line says nothing about the engine (this VM moves between hosts with and without).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.callbacks import Callback  # noqa: E402
from core.config import RunConfig  # noqa: E402
from core.data import load_dataset, to_tensor, validation_split  # noqa: E402
from core.devices import cpu_has_bf16, resolve_device, set_threads  # noqa: E402
from core.experiments import kfold_configs  # noqa: E402
from core.group_training import train_group  # noqa: E402
from core.models import build_model  # noqa: E402
from core.training import evaluate, train  # noqa: E402


def lean_epochs(ds, device, epochs: int, batch: int = 50, seed: int = 0) -> list[float]:
    """The reference: the shortest correct loop a careful PyTorch user writes (seconds per epoch)."""
    train_idx, val_idx = validation_split(ds.train_labels, 0.2, seed=seed)
    x = to_tensor(ds.train_images[train_idx], ds.mean, ds.std, device)
    y = torch.from_numpy(ds.train_labels[train_idx]).to(device)
    xv = to_tensor(ds.train_images[val_idx], ds.mean, ds.std, device)
    yv = torch.from_numpy(ds.train_labels[val_idx]).to(device)
    torch.manual_seed(seed)
    model = build_model(RunConfig.from_preset("mlp").architecture()).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    out = []
    for _ in range(epochs):
        t0 = time.perf_counter()
        model.train()
        perm = torch.randperm(len(x), device=device)
        for i in range(0, len(x), batch):
            idx = perm[i:i + batch]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            correct = sum(int((model(xv[i:i + 2000]).argmax(1) == yv[i:i + 2000]).sum()) for i in range(0, len(xv), 2000))
        if device.type == "cuda":
            torch.cuda.synchronize()
        out.append(time.perf_counter() - t0)
        assert correct > 0
    return out


class TestAccuracyEachEpoch(Callback):
    """Test accuracy after every epoch, and the training time at that point (test time excluded)."""

    def __init__(self):
        self.points = []
        self._t = 0.0

    def on_epoch_begin(self, trainer, epoch):
        self._start = time.perf_counter()

    def on_epoch_end(self, trainer, epoch, log):
        self._t += time.perf_counter() - self._start
        acc = evaluate(trainer.model, trainer.fit.models.test_x, trainer.fit.models.test_y, trainer.config)["accuracy"]
        self.points.append((self._t, acc))


def layer_product_ms(dtype: torch.dtype, device, reps: int = 20) -> float:
    """One batch-50 product through the course MLP's first layer (50x784 @ 784x256), in ms."""
    a = torch.randn(50, 784, device=device, dtype=dtype)
    w = torch.randn(784, 256, device=device, dtype=dtype)
    a @ w
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ w
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / reps * 1e3


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--skip-cnn", action="store_true")
    args = ap.parse_args()
    set_threads()
    device = resolve_device(args.device)
    ds = load_dataset("mnist", args.data_dir)
    base = RunConfig.from_preset("mlp", dataset="mnist", device=str(device), epochs=args.epochs, seed=0)
    folds = kfold_configs(base, args.k)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {device}; course MLP, batch 50, "
          f"{args.epochs} epochs; medians of {args.reps} interleaved repetitions")
    if device.type == "cpu":
        fp32, bf16 = layer_product_ms(torch.float32, device), layer_product_ms(torch.bfloat16, device)
        native = {True: "yes", False: "NO (a slow generic path)", None: "not known"}[cpu_has_bf16()]
        print(f"CPU bf16 instructions: {native}; one batch-50 layer product: fp32 {fp32:.3f} ms, bf16 {bf16:.3f} ms "
              f"({bf16 / fp32:.1f}x)")
    lean, lab, one, vec32, vec16, acc32, acc16, acc_one = [], [], [], [], [], [], [], []
    for rep in range(args.reps):
        lean += lean_epochs(ds, device, args.epochs)
        r = train(base, ds)
        lab += [h["seconds"] for h in r.history]
        one.append(r.seconds)
        acc_one.append(r.history[-1]["val_accuracy"])
        g = train_group(folds, ds)
        vec32.append(g[0].seconds)
        acc32.append(statistics.mean(x.history[-1]["val_accuracy"] for x in g.values()))
        g = train_group([c.replace(precision="bf16") for c in folds], ds)
        vec16.append(g[0].seconds)
        acc16.append(statistics.mean(x.history[-1]["val_accuracy"] for x in g.values()))
        print(f"  repetition {rep + 1}: lean epoch {statistics.median(lean[-args.epochs:]):.3f} s, lab epoch "
              f"{statistics.median(lab[-args.epochs:]):.3f} s, one run {one[-1]:.2f} s, {args.k} folds fp32 "
              f"{vec32[-1]:.2f} s, bf16 {vec16[-1]:.2f} s", flush=True)
    med = statistics.median
    print(f"1. lab epoch {med(lab):.3f} s vs lean reference epoch {med(lean):.3f} s: ratio {med(lab) / med(lean):.2f} "
          f"(target <= 1.00)")
    print(f"2. one ordinary {args.epochs}-epoch run {med(one):.2f} s (val acc {med(acc_one):.4f})")
    print(f"   {args.k}-fold, vectorised, fp32: {med(vec32):.2f} s = {med(vec32) / med(one):.2f}x one run "
          f"(mean val acc {med(acc32):.4f}; target <= 3x)")
    print(f"   {args.k}-fold, vectorised, bf16: {med(vec16):.2f} s = {med(vec16) / med(one):.2f}x one run "
          f"(mean val acc {med(acc16):.4f})")
    if not args.skip_cnn:
        budget = 20 * med(lean)
        for epochs in (2, 3):
            cb = TestAccuracyEachEpoch()
            train(RunConfig.from_preset("cnn", dataset="mnist", device=str(device), seed=0, epochs=epochs), ds,
                  callbacks=[cb])
            reached = next((t for t, a in cb.points if a >= 0.99), None)
            text = f"{reached:.1f} s" if reached is not None else "not reached"
            print(f"3. small CNN, {epochs}-epoch schedule: test accuracy per epoch "
                  f"{', '.join(f'{a:.4f}@{t:.1f}s' for t, a in cb.points)}; to 99.0%: {text}; 20 lean MLP epochs: "
                  f"{budget:.1f} s ({'inside' if reached is not None and reached <= budget else 'outside'} the target)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
