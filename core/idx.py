"""Reading IDX files (the format MNIST and Fashion-MNIST ship in), with validation.

Why by hand: torchvision's reader (`read_image_file`/`read_label_file`) only asserts on the
magic number and silently accepts truncated or mismatched files; the lab must name the file
and the problem instead of training on a partial data set. The format is 20 lines to read.

IDX layout: 2 zero bytes, a type code (0x08 = unsigned byte), the number of dimensions,
then one big-endian int32 per dimension, then the data.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np


class IdxError(ValueError):
    """A data file is not a valid IDX file of the expected kind; the message names the file."""


def _read_bytes(path: Path) -> bytes:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise IdxError(f"{path}: cannot read the file ({exc}); is it a complete IDX file?") from exc


def read_idx(path: str | os.PathLike, expected_ndim: int) -> np.ndarray:
    """Read one IDX file of unsigned bytes with `expected_ndim` dimensions, checking everything."""
    path = Path(path)
    raw = _read_bytes(path)
    if len(raw) < 4:
        raise IdxError(f"{path}: file is truncated ({len(raw)} bytes, not even a header)")
    zero, dtype_code, ndim = int.from_bytes(raw[0:2], "big"), raw[2], raw[3]
    if zero != 0 or dtype_code != 0x08:
        magic = int.from_bytes(raw[0:4], "big")
        raise IdxError(
            f"{path}: wrong magic number 0x{magic:08x}; an IDX file of unsigned bytes with "
            f"{expected_ndim} dimensions starts with 0x{0x0800 + expected_ndim:08x}"
        )
    if ndim != expected_ndim:
        raise IdxError(
            f"{path}: wrong dimensions: the header says {ndim}, expected {expected_ndim} "
            f"({'labels' if expected_ndim == 1 else 'images'})"
        )
    header_len = 4 + 4 * ndim
    if len(raw) < header_len:
        raise IdxError(f"{path}: file is truncated inside its header")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(shape)) if shape else 0
    body = len(raw) - header_len
    if body < expected:
        raise IdxError(
            f"{path}: file is truncated: the header promises {expected:,} bytes of data "
            f"(shape {shape}) but only {body:,} are there"
        )
    if body > expected:
        raise IdxError(f"{path}: {body - expected:,} unexpected bytes after the data (shape {shape})")
    return np.frombuffer(raw, dtype=np.uint8, offset=header_len).reshape(shape).copy()


def read_images(path: str | os.PathLike, size: tuple[int, int] = (28, 28)) -> np.ndarray:
    """Images as an (N, H, W) uint8 array; the image size must be `size`."""
    images = read_idx(path, expected_ndim=3)
    if images.shape[1:] != size:
        raise IdxError(f"{path}: wrong dimensions: images are {images.shape[1:]}, expected {size}")
    return images


def read_labels(path: str | os.PathLike, num_classes: int = 10) -> np.ndarray:
    """Labels as an (N,) int64 array; every label must be in [0, num_classes)."""
    labels = read_idx(path, expected_ndim=1)
    if labels.size and int(labels.max()) >= num_classes:
        bad = int(np.argmax(labels >= num_classes))
        raise IdxError(
            f"{path}: label out of range: label {int(labels[bad])} at index {bad}; "
            f"labels must be 0..{num_classes - 1}"
        )
    return labels.astype(np.int64)


def read_pair(images_path: Path, labels_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One split: images and labels, which must be as many."""
    images, labels = read_images(images_path), read_labels(labels_path)
    if len(images) != len(labels):
        raise IdxError(
            f"{labels_path}: label count {len(labels):,} does not equal the image count "
            f"{len(images):,} in {images_path}"
        )
    return images, labels


def write_idx(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write a uint8 array as IDX (gzipped if the name ends in .gz). Used by tests and exports."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    data = header + array.tobytes()
    path = Path(path)
    if path.suffix == ".gz":
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)


def idx_zip(train_images, train_labels, test_images, test_labels) -> bytes:
    """The four MNIST files (gzipped IDX, the standard names) in one zip, in memory: a data set
    the generated programs (core.codegen) can read, e.g. the offline sample for a student
    without network."""
    import io
    import tempfile
    import zipfile

    buf = io.BytesIO()
    with tempfile.TemporaryDirectory() as tmp, zipfile.ZipFile(buf, "w") as zf:
        for name, array in (("train-images-idx3-ubyte.gz", train_images), ("train-labels-idx1-ubyte.gz", train_labels),
                            ("t10k-images-idx3-ubyte.gz", test_images), ("t10k-labels-idx1-ubyte.gz", test_labels)):
            write_idx(Path(tmp) / name, array)
            zf.write(Path(tmp) / name, name)
    return buf.getvalue()
