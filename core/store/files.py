"""Reading the store's files safely (a broken file is a clear error, weights are read with
`weights_only=True` so a model file never runs code) and checking the text a user gives a
run. Writing is all or nothing, through core.atomic."""

from __future__ import annotations

import json
import os
from pathlib import Path


from core.atomic import (atomic_save_npz, atomic_torch_save, atomic_write_bytes,  # noqa: F401 - re-exported
                         atomic_write_json, json_default)


class RunStoreError(ValueError):
    """A run store operation cannot be done; the message says which run and why."""


class FileDamaged(RunStoreError):
    """A run's file exists but cannot be read or does not hold what the lab writes (truncated,
    edited, from a broken disk). The store lists such a run as damaged, with this message."""


def read_json(path: str | os.PathLike, default=None):
    """A JSON file's content, `default` when the file is missing; a broken file is a RunStoreError."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return default
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise FileDamaged(f"{path}: cannot be read ({type(exc).__name__}: {exc})") from exc


def load_state_dict(path: str | os.PathLike) -> dict:
    """Load a weights or checkpoint file without executing code from it.

    `weights_only=True` makes torch refuse any pickle that would construct objects other than
    tensors and plain containers, so a hostile model file is an error, never code that runs.
    """
    try:
        import torch  # here, not at the top: waiting workers import this module without torch

        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - every way a bad file fails is reported the same
        raise FileDamaged(f"{path}: not a valid weights file, refused ({type(exc).__name__}: "
                            f"{str(exc).splitlines()[0][:300] if str(exc) else ''})") from exc


def disk_text(exc: OSError) -> str:
    """An OSError as a person reads it: a full disk says so."""
    import errno

    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"{exc.strerror or exc}: the disk is full; free some space and try again"
    return exc.strerror or str(exc)


def failure_text(exc: BaseException) -> str:
    """Why a run or a command failed, for a run's error field and the CLI's `error:` line."""
    import sqlite3

    if isinstance(exc, OSError) and exc.errno is not None:
        where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
        return f"could not write the run's files{where}: {disk_text(exc)}"
    if isinstance(exc, sqlite3.OperationalError) and ("disk" in str(exc) or "full" in str(exc)):
        return f"could not write the run index: {exc} (is the disk full?)"
    return f"{type(exc).__name__}: {exc}"


MAX_NAME = 120
MAX_TAG = 40


def clean_text(value: str, limit: int, what: str) -> str:
    """A name or tag: printable, no path separators or control characters, bounded length."""
    if not isinstance(value, str):
        raise RunStoreError(f"{what} must be text, got {type(value).__name__}")
    value = value.strip()
    if len(value) > limit:
        raise RunStoreError(f"{what} is too long ({len(value)} characters, at most {limit})")
    if any(c in value for c in "/\\\0") or any(ord(c) < 32 for c in value) or value in (".", ".."):
        raise RunStoreError(f"{what} {value!r} may not contain '/', '\\', control characters or be '.'/'..'")
    return value
