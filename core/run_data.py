"""A run's data: its training/validation split (seeded, stratified, or a k-fold fold), its
labels for the task, its tensors on the training device, and its shuffle each epoch, all
seeded from the config, so a run, its resume and a vectorised group see the same rows
(core.training, core.group_training)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from core.config import ConfigError, RunConfig
from core.data import DataError, Dataset, kfold_assignments, to_tensor, validation_split


def epoch_seed(seed: int, epoch: int) -> int:
    return seed * 1_000_003 + epoch + 1


def shuffle_order(seed: int, n: int, device: torch.device) -> torch.Tensor:
    """An epoch's shuffle of n rows, seeded from (seed, epoch): drawn on the GPU for a CUDA run
    (no host-to-device copy), on the CPU otherwise (the same order on every CPU)."""
    if device.type == "cuda":
        return torch.randperm(n, generator=torch.Generator(device=device).manual_seed(seed), device=device)
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed)).to(device)


# --- data on the device -----------------------------------------------------------------

@dataclass
class TensorData:
    """The splits of one run as tensors on the training device, plus the indices used."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    train_index: np.ndarray
    val_index: np.ndarray
    mean: float
    std: float


def task_labels(labels: np.ndarray, config: RunConfig) -> np.ndarray:
    """Labels for the task: the digit, or 1/0 for "is it the positive class?" (binary loss)."""
    if config.loss == "binary_crossentropy":
        return (labels == config.positive_class).astype(np.int64)
    return labels


def split_indices(config: RunConfig, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Train/validation indices: a seeded stratified split, or fold `fold` of a k-fold run;
    `train_subset` then keeps a stratified subset of the training part."""
    if config.kfold:
        k, fold = config.kfold[0], config.kfold[1]
        stratified = bool(config.kfold[2]) if len(config.kfold) > 2 else True
        folds = kfold_assignments(labels, k, seed=config.seed, stratified=stratified)
        train_idx, val_idx = np.flatnonzero(folds != fold), np.flatnonzero(folds == fold)
    else:
        train_idx, val_idx = validation_split(labels, config.val_split, seed=config.seed)
    if config.train_subset and config.train_subset < len(train_idx):
        from sklearn.model_selection import train_test_split

        stratify = labels[train_idx] if config.train_subset >= 10 else None
        train_idx, _ = train_test_split(train_idx, train_size=config.train_subset,
                                        random_state=config.seed, stratify=stratify)
        train_idx = np.sort(train_idx)
    return train_idx, val_idx


def check_against_data(config: RunConfig, dataset: Dataset) -> None:
    """The checks that need the data (a split that leaves every class on both sides, a batch
    larger than the training set, a data set with no test digits), before any run starts."""
    if len(dataset.test_labels) == 0:  # found now, not after a whole epoch of training
        raise DataError(f"{dataset.name} from {dataset.source}: it has no test digits (t10k files of 0 images); "
                        "a run is evaluated on them")
    try:
        train_idx, _ = split_indices(config, dataset.train_labels)
    except ValueError as exc:  # scikit-learn's words for a split this data cannot make
        field = "kfold" if config.kfold else "val_split"
        raise ConfigError(field, f"{field} {config.kfold or config.val_split} cannot split the "
                                 f"{len(dataset.train_labels):,} training digits so that every class is on both sides "
                                 f"({exc})") from exc
    config.check_data_size(len(train_idx))


def prepare_data(config: RunConfig, dataset: Dataset, device: torch.device) -> TensorData:
    train_idx, val_idx = split_indices(config, dataset.train_labels)
    config.check_data_size(len(train_idx))
    mean, std = dataset.mean, dataset.std
    labels = task_labels(dataset.train_labels, config)
    test_labels = task_labels(dataset.test_labels, config)

    def y(a):
        return torch.from_numpy(a).to(device)

    return TensorData(
        train_x=to_tensor(dataset.train_images[train_idx], mean, std, device), train_y=y(labels[train_idx]),
        val_x=to_tensor(dataset.train_images[val_idx], mean, std, device), val_y=y(labels[val_idx]),
        test_x=to_tensor(dataset.test_images, mean, std, device), test_y=y(test_labels),
        train_index=train_idx, val_index=val_idx, mean=mean, std=std,
    )
