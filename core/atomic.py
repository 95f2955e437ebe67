"""Files written all or nothing: every write goes to a temporary name in the same folder, is
flushed to disk and then renamed over the target, so a crash or a full disk never leaves half
a file under the real name (a rename within one folder is atomic), and the temporary file is
removed when the write fails. Used by the run store, the training checkpoints and "my
handwriting"."""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

import numpy as np


def _tmp_name(path: Path, suffix: str = ".tmp") -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(3)}{suffix}")


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` all or nothing (the temporary file is removed on any failure)."""
    path = Path(path)
    tmp = _tmp_name(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_link(src: str | os.PathLike, path: str | os.PathLike) -> None:
    """Make `path` the same file as `src`, all or nothing: a hard link (no copy, no extra disk)
    under a temporary name, renamed over `path`; a copy where the file system has no hard links."""
    path = Path(path)
    tmp = _tmp_name(path)
    try:
        try:
            os.link(src, tmp)
        except OSError:
            import shutil

            shutil.copyfile(src, tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def json_default(o):
    """numpy scalars and arrays as plain JSON values."""
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


def atomic_write_json(path: str | os.PathLike, obj) -> None:
    atomic_write_bytes(path, json.dumps(obj, indent=1, default=json_default).encode())


def atomic_save_npz(path: str | os.PathLike, compress: bool = True, **arrays) -> None:
    """np.savez_compressed (np.savez with `compress=False`), all or nothing."""
    path = Path(path)
    tmp = _tmp_name(path, ".tmp.npz")  # numpy appends .npz to names without it
    try:
        (np.savez_compressed if compress else np.savez)(tmp, **arrays)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_torch_save(obj, path: str | os.PathLike) -> None:
    """torch.save, all or nothing. Serialized in memory first: torch's own file writer reports
    a full disk as "RuntimeError: unexpected pos", where a plain write says ENOSPC."""
    import io

    import torch  # here, not at the top: a worker waiting in the queue must not pay torch's memory

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getbuffer())
