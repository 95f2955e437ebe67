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


def read_json(path: str | os.PathLike, default=None):
    """A JSON file's content, `default` when the file is missing; a broken file is a RunStoreError."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return default
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise RunStoreError(f"{path}: cannot be read ({type(exc).__name__}: {exc})") from exc


def load_state_dict(path: str | os.PathLike) -> dict:
    """Load a weights or checkpoint file without executing code from it.

    `weights_only=True` makes torch refuse any pickle that would construct objects other than
    tensors and plain containers, so a hostile model file is an error, never code that runs.
    """
    try:
        import torch  # here, not at the top: waiting workers import this module without torch

        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - every way a bad file fails is reported the same
        raise RunStoreError(f"{path}: not a valid weights file, refused ({type(exc).__name__}: "
                            f"{str(exc).splitlines()[0][:300] if str(exc) else ''})") from exc


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
