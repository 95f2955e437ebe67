"""Data: IDX files read with validation, the sources of each data set, and seeded splits."""

from __future__ import annotations

import gzip

import numpy as np
import pytest

from core.data import (DataError, find_idx_files, kfold_assignments, load_dataset, load_sample,
                       to_tensor, validation_split)
from core.idx import IdxError, read_images, read_labels, write_idx
from tests.conftest import write_mnist_folder


def test_reads_gzipped_and_plain_idx_the_same(tmp_path):
    images = np.random.default_rng(1).integers(0, 256, (5, 28, 28)).astype(np.uint8)
    write_idx(tmp_path / "a-idx3-ubyte.gz", images)
    write_idx(tmp_path / "a-idx3-ubyte", images)
    assert np.array_equal(read_images(tmp_path / "a-idx3-ubyte.gz"), images)
    assert np.array_equal(read_images(tmp_path / "a-idx3-ubyte"), images)


def test_wrong_magic_number_names_file_and_problem(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(b"\x12\x34\x08\x03" + b"\x00" * 20)
    with pytest.raises(IdxError, match=r"train-images-idx3-ubyte: wrong magic number"):
        read_images(path)


def test_wrong_dimensions_is_refused(tmp_path):
    path = tmp_path / "labels-as-images"
    write_idx(path, np.zeros(10, dtype=np.uint8))
    with pytest.raises(IdxError, match="labels-as-images: wrong dimensions: the header says 1, expected 3"):
        read_images(path)
    write_idx(path, np.zeros((3, 20, 20), dtype=np.uint8))
    with pytest.raises(IdxError, match=r"wrong dimensions: images are \(20, 20\), expected \(28, 28\)"):
        read_images(path)


def test_truncated_file_is_refused_not_partially_loaded(tmp_path):
    path = tmp_path / "t10k-images-idx3-ubyte"
    write_idx(path, np.zeros((10, 28, 28), dtype=np.uint8))
    data = path.read_bytes()
    path.write_bytes(data[:-100])
    with pytest.raises(IdxError, match="t10k-images-idx3-ubyte: file is truncated"):
        read_images(path)
    gz = tmp_path / "t10k-images-idx3-ubyte.gz"
    gz.write_bytes(gzip.compress(data)[:-30])
    with pytest.raises(IdxError, match="t10k-images-idx3-ubyte.gz: cannot read the file"):
        read_images(gz)


def test_label_out_of_range_is_refused(tmp_path):
    path = tmp_path / "train-labels-idx1-ubyte"
    write_idx(path, np.array([0, 1, 12, 3], dtype=np.uint8))
    with pytest.raises(IdxError, match="label out of range: label 12 at index 2"):
        read_labels(path)


def test_label_count_must_equal_image_count(tmp_path):
    folder = write_mnist_folder(tmp_path / "d", n_train=60)
    write_idx(folder / "train-labels-idx1-ubyte.gz", np.zeros(59, dtype=np.uint8))
    with pytest.raises(IdxError, match="label count 59 does not equal the image count 60"):
        load_dataset("mnist", folder)


@pytest.mark.parametrize("layout,gz", [("", True), ("", False), ("MNIST/raw", False), ("raw", True)])
def test_data_folder_flat_or_torchvision_layout(tmp_path, layout, gz):
    folder = write_mnist_folder(tmp_path / "d", gz=gz, layout=layout)
    assert find_idx_files(folder) is not None
    ds = load_dataset("mnist", folder)
    assert ds.train_images.shape == (60, 28, 28) and ds.test_labels.shape == (20,)
    assert ds.train_images.dtype == np.uint8
    assert ds.notice is None and str(folder) in ds.source


def test_data_folder_from_environment_variable(tmp_path, monkeypatch):
    folder = write_mnist_folder(tmp_path / "env")
    monkeypatch.setenv("MNIST_LAB_DATA", str(folder))
    assert load_dataset("mnist").source == f"folder {folder}"


def test_missing_data_folder_is_an_error_not_a_fallback(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_dataset("mnist", tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no mnist IDX files in"):
        load_dataset("mnist", tmp_path / "empty")


def test_unknown_dataset_lists_the_allowed_ones():
    with pytest.raises(DataError, match="unknown dataset 'cifar'; allowed: mnist, fashion-mnist, mnist-sample"):
        load_dataset("cifar")


def test_cache_folder_is_used_before_any_download(tmp_path, monkeypatch):
    monkeypatch.setenv("MNIST_LAB_CACHE", str(tmp_path))
    write_mnist_folder(tmp_path / "mnist", layout="MNIST/raw", gz=False)
    assert load_dataset("mnist").source.startswith("cache ")


def test_no_data_and_no_network_falls_back_to_the_sample_with_a_notice():
    ds = load_dataset("mnist")
    assert ds.name == "mnist-sample" and ds.is_sample
    assert "offline sample" in ds.notice and "--data-dir" in ds.notice and "MNIST_LAB_DATA" in ds.notice


def test_fashion_mnist_offline_says_how_to_get_it(monkeypatch):
    monkeypatch.setattr("core.data.SYSTEM_FOLDERS", {"fashion-mnist": [], "mnist": []})
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist"):
        load_dataset("fashion-mnist")


def test_offline_sample_is_real_mnist_split_4000_1000(sample):
    assert sample.train_images.shape == (4000, 28, 28) and sample.test_images.shape == (1000, 28, 28)
    assert np.bincount(sample.test_labels).tolist() == [100] * 10
    assert 0.12 < sample.mean < 0.14 and 0.29 < sample.std < 0.32  # MNIST's 0.1307 / 0.3081
    assert load_sample().fingerprint == sample.fingerprint


def test_validation_split_is_seeded_and_stratified():
    labels = np.repeat(np.arange(10), 100)  # sorted, like the trap Keras falls into
    train, val = validation_split(labels, 0.2, seed=3)
    assert len(val) == 200 and np.bincount(labels[val]).tolist() == [20] * 10
    assert not set(train) & set(val)
    assert np.array_equal(val, validation_split(labels, 0.2, seed=3)[1])
    assert not np.array_equal(val, validation_split(labels, 0.2, seed=4)[1])


def test_kfold_assignments_cover_every_sample_once():
    labels = np.repeat(np.arange(10), 30)
    folds = kfold_assignments(labels, k=5, seed=0)
    assert np.bincount(folds).tolist() == [60] * 5
    for f in range(5):  # stratified: every fold has 6 of each class
        assert np.bincount(labels[folds == f], minlength=10).tolist() == [6] * 10
    plain = kfold_assignments(labels, k=5, seed=0, stratified=False)
    assert np.bincount(plain).tolist() == [60] * 5
    assert np.array_equal(folds, kfold_assignments(labels, k=5, seed=0))


def test_tensors_are_normalized_floats_with_a_channel():
    x = to_tensor(np.full((2, 28, 28), 255, np.uint8), mean=0.5, std=0.5)
    assert tuple(x.shape) == (2, 1, 28, 28) and str(x.dtype) == "torch.float32"
    assert float(x.max()) == pytest.approx(1.0)
