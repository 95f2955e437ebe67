"""Training speed on the CPU (or a GPU with --device): this project's trainer against the usual tutorial way, in one run.

For the course's MLP (batch 50, validation split 0.2) and the small fast CNN, on full MNIST,
prints seconds per epoch (training plus the validation pass), samples per second, and the
wall time from the start of training to the first epoch whose test accuracy reaches the
target (98.2% for the MLP, 99.0% for the CNN; the test pass after each epoch is counted in
the wall time too). The reference is written the way tutorials do it: torchvision's MNIST
dataset with ToTensor + Normalize transforms, a DataLoader, random_split, the same model,
Adam at a constant 1e-3.

    python bench/train_speed.py --data-dir ../shared/data/mnist [--quick]
"""

from __future__ import annotations

import argparse
import gzip
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from core.callbacks import Callback  # noqa: E402
from core.config import RunConfig  # noqa: E402
from core.data import find_idx_files, load_dataset  # noqa: E402
from core.models import build_model  # noqa: E402
from core.training import evaluate, train  # noqa: E402


class TestEveryEpoch(Callback):
    """Evaluates the test set after each epoch and records when the target is first reached."""

    def __init__(self, target: float, t0: list[float]):
        self.target, self.t0 = target, t0
        self.reached_at: float | None = None
        self.reached_epoch: int | None = None
        self.accuracies: list[float] = []

    def on_train_begin(self, trainer):
        self.t0[0] = time.perf_counter()

    def on_epoch_end(self, trainer, epoch, log):
        acc = evaluate(trainer.model, trainer.fit.models.test_x, trainer.fit.models.test_y, trainer.config)["accuracy"]
        self.accuracies.append(acc)
        if self.reached_at is None and acc >= self.target:
            self.reached_at = time.perf_counter() - self.t0[0]
            self.reached_epoch = epoch + 1


def run_ours(config: RunConfig, dataset, target: float) -> dict:
    t0 = [0.0]
    probe = TestEveryEpoch(target, t0)
    result = train(config, dataset, callbacks=[probe])
    epochs = result.history
    return {
        "sec_per_epoch": sum(h["seconds"] for h in epochs) / len(epochs),
        "samples_per_sec": sum(h["samples_per_second"] for h in epochs) / len(epochs),
        "accuracies": probe.accuracies, "time_to_target": probe.reached_at, "epoch_to_target": probe.reached_epoch,
    }


def torchvision_root(data_dir: Path, tmp: Path) -> Path:
    """torchvision 0.29's MNIST reads only uncompressed files in ROOT/MNIST/raw/: make that."""
    raw = tmp / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for path in find_idx_files(data_dir).values():
        name = path.name[:-3] if path.suffix == ".gz" else path.name
        with (gzip.open(path) if path.suffix == ".gz" else open(path, "rb")) as src, open(raw / name, "wb") as dst:
            shutil.copyfileobj(src, dst)
    return tmp


def run_reference(layers, root: Path, batch_size: int, epochs: int, target: float, device: str = "cpu") -> dict:
    """The tutorial way: Dataset + transforms + DataLoader, per-sample PIL work in the loop,
    each batch moved to the device."""
    from torch.utils.data import DataLoader, random_split
    from torchvision import datasets, transforms

    tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))])
    full = datasets.MNIST(str(root), train=True, download=False, transform=tf)
    test = datasets.MNIST(str(root), train=False, download=False, transform=tf)
    train_set, val_set = random_split(full, [0.8, 0.2], generator=torch.Generator().manual_seed(0))
    train_loader = DataLoader(train_set, batch_size=batch_size, shuffle=True)
    val_loader = DataLoader(val_set, batch_size=1000)
    test_loader = DataLoader(test, batch_size=1000)
    torch.manual_seed(0)
    model = build_model(layers).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def accuracy(loader):
        model.eval()
        correct = n = 0
        with torch.no_grad():
            for x, y in loader:
                x, y = x.to(device), y.to(device)
                correct += int((model(x).argmax(1) == y).sum())
                n += len(y)
        model.train()
        return correct / n

    t_start = time.perf_counter()
    epoch_times, accs, reached_at, reached_epoch = [], [], None, None
    for epoch in range(epochs):
        t0 = time.perf_counter()
        for x, y in train_loader:
            x, y = x.to(device), y.to(device)
            opt.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
        accuracy(val_loader)
        epoch_times.append(time.perf_counter() - t0)
        accs.append(accuracy(test_loader))
        if reached_at is None and accs[-1] >= target:
            reached_at, reached_epoch = time.perf_counter() - t_start, epoch + 1
    sec = sum(epoch_times) / len(epoch_times)
    return {"sec_per_epoch": sec, "samples_per_sec": len(train_set) / sec, "accuracies": accs,
            "time_to_target": reached_at, "epoch_to_target": reached_epoch}


def show(label: str, r: dict, target: float) -> None:
    reached = (f"{r['time_to_target']:.1f} s (epoch {r['epoch_to_target']})" if r["time_to_target"] is not None
               else f"not reached in {len(r['accuracies'])} epochs")
    print(f"  {label:<34} {r['sec_per_epoch']:7.2f} s/epoch {r['samples_per_sec']:9.0f} samples/s  "
          f"best test acc {max(r['accuracies']):.4f}  to {target:.1%}: {reached}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", required=True, help="folder with the four MNIST IDX files")
    p.add_argument("--quick", action="store_true", help="fewer reference epochs (a smoke run)")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N or mps; both sides use it")
    args = p.parse_args()
    from core.devices import device_name, resolve_device

    device = str(resolve_device(args.device))
    torch.set_num_threads(torch.get_num_threads())
    dataset = load_dataset("mnist", args.data_dir)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {device} "
          f"({device_name(torch.device(device))}), full MNIST from {args.data_dir}")
    ref_epochs_mlp, ref_epochs_cnn = (2, 1) if args.quick else (10, 4)
    with tempfile.TemporaryDirectory() as tmp:
        root = torchvision_root(Path(args.data_dir), Path(tmp))

        mlp = RunConfig.from_preset("mlp-fast", dataset="mnist", device=device, seed=0, epochs=2 if args.quick else 10)
        print(f"\nCourse MLP (219,818 parameters), batch {mlp.batch_size}, validation split {mlp.val_split}, "
              f"target 98.2% within 10 epochs, at most 0.6 s/epoch:")
        show("this code (tensors on device)", run_ours(mlp, dataset, 0.982), 0.982)
        show("reference (Dataset+DataLoader)", run_reference(mlp.architecture(), root, 50, ref_epochs_mlp, 0.982, device), 0.982)

        cnn = RunConfig.from_preset("cnn", dataset="mnist", device=device, seed=0)
        print(f"\nSmall fast CNN, batch {cnn.batch_size}, {cnn.epochs} epochs, {cnn.lr_schedule} lr {cnn.lr}, "
              "target 99.0% within 30 s of training:")
        show("this code (tensors on device)", run_ours(cnn, dataset, 0.99), 0.99)
        show("reference (Dataset+DataLoader)", run_reference(cnn.architecture(), root, 128, ref_epochs_cnn, 0.99, device), 0.99)
    return 0


if __name__ == "__main__":
    sys.exit(main())
