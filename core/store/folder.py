"""One run's folder: the files that make a run, and nothing else needed to know it.

    run.json              who the run is: name, status, tags, note, group, error, where it ran
    config.json           the full RunConfig, its architecture and summary, the data set's
                          description and fingerprint, the data folder it was read from
    history.json          one entry per finished epoch (with the validation confusion matrix)
    metrics.json          final test loss and accuracy, stop reason, seconds
    predictions.npz       test labels, predicted labels and the probability matrix
    split.npz             the train and validation indices the run used
    weights_last.pt, weights_best.pt   state dicts (loaded with weights_only=True)
    checkpoint.pt         what resuming needs after the last finished epoch
    environment.json      package versions, device name, git commit
    cancel                present when someone asked the run to stop (holds the reason)

The folder is the truth; the store's SQLite index is a cache of it (core.store.index) that
can always be rebuilt from the folders, so `index_row()` reads everything the index holds
from these files alone. Runs written before run.json existed are read too: their status
comes from which result files are there.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import numpy as np

from core.store.files import (FileDamaged, RunStoreError, atomic_write_bytes, atomic_write_json, load_state_dict,
                              read_json)
from core.store.records import STATUSES, group_kind_of, task_of  # STATUSES re-exported for callers
from core.store.schema import SchemaError, check_history, check_metrics, check_predictions

RUN_ID = re.compile(r"^\d{8}-\d{6}-[0-9a-f]{6}$")
# What run.json holds; the rest of an index row is derived from the other files.
META_FIELDS = ("id", "name", "status", "created", "grp", "tags", "note", "error", "host", "node", "device",
               "executor", "pid", "pid_start", "vectorized", "owner")


def check_run_id(run_id) -> str:
    """Run ids are made by the store; anything else is refused before a path is built from it."""
    if not isinstance(run_id, str) or not RUN_ID.match(run_id):
        raise RunStoreError(f"{run_id!r} is not a run id (expected YYYYMMDD-HHMMSS-xxxxxx)")
    return run_id


def trained_on(saved: dict) -> str | None:
    """The data set a run's numbers come from: the one its trainer recorded ("mnist" asked
    for offline trains on the sample, and says so), else the one its config asked for."""
    recorded = saved.get("dataset")
    if isinstance(recorded, dict) and isinstance(recorded.get("name"), str):
        return recorded["name"]
    return (saved.get("config") or {}).get("dataset")


def created_from_id(run_id: str) -> float:
    """A run id starts with its creation time (local time, to the second)."""
    try:
        return time.mktime(time.strptime(run_id[:15], "%Y%m%d-%H%M%S"))
    except ValueError:
        return 0.0


class RunFolder:
    """The files of the run `run_id` under the store folder `root`."""

    def __init__(self, root: str | Path, run_id: str):
        self.id = check_run_id(run_id)
        self.path = Path(root) / run_id

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    def exists(self) -> bool:
        return self.path.is_dir()

    # --- the files pages ask about, by what they hold (pages never build a run's paths) --------

    FILES = {"weights": "weights_last.pt", "best_weights": "weights_best.pt", "predictions": "predictions.npz",
             "metrics": "metrics.json", "config": "config.json", "first_layer": "first_layer.npz"}

    def _file(self, what: str) -> Path:
        if what not in self.FILES:
            raise ValueError(f"unknown run file {what!r}; known: {', '.join(self.FILES)}")
        return self / self.FILES[what]

    def has(self, what: str) -> bool:
        """Whether the run has written `what` (weights, best_weights, predictions, metrics, ...)."""
        return self._file(what).exists()

    def version(self, what: str) -> float:
        """When `what` was last written (0.0 if it was not): a cache key that changes with the file."""
        try:
            return self._file(what).stat().st_mtime
        except OSError:
            return 0.0

    def read_bytes(self, what: str) -> bytes:
        """The file's bytes, for a download (`weights` is the best weights when the run kept them)."""
        if what == "weights" and self.has("best_weights"):
            what = "best_weights"
        return self._file(what).read_bytes()

    def first_layer(self) -> tuple[np.ndarray, float] | None:
        """The first layer's weights (N, H, W) as the worker last saved them while training, and
        the epoch (fractional) they are from; None when there are none or they cannot be read
        (damaged, or being replaced this moment)."""
        try:
            with np.load(self._file("first_layer"), allow_pickle=False) as z:
                weights, epoch = z["weights"], float(z["epoch"])
            if weights.ndim != 3:
                return None
        except Exception:  # noqa: BLE001 - unreadable: the picture is left out, the page goes on
            return None
        return weights, epoch

    # --- who the run is ------------------------------------------------------------------

    def read_meta(self) -> dict:
        meta = read_json(self / "run.json", {})
        return meta if isinstance(meta, dict) else {}

    def write_meta(self, start: dict | None = None, **changes) -> dict:
        """Merge `changes` into run.json (or into `start`, when run.json is damaged and is
        written again whole), atomically; returns the whole of it."""
        meta = dict(start) if start is not None else self.read_meta()
        meta.update({k: v for k, v in changes.items() if k in META_FIELDS})
        meta["id"] = self.id
        atomic_write_json(self / "run.json", meta)
        return meta

    # --- what it is and what it did ------------------------------------------------------------

    def saved_config(self) -> dict:
        saved = read_json(self / "config.json")
        if not isinstance(saved, dict) or not isinstance(saved.get("config"), dict):
            raise FileDamaged(f"run {self.id}: config.json is missing or does not hold a config")
        return saved

    def config(self):
        from core.config import ConfigError, RunConfig

        try:
            return RunConfig.from_dict(self.saved_config()["config"])
        except (ConfigError, TypeError) as exc:
            raise FileDamaged(f"run {self.id}: config.json holds an invalid config ({exc})") from exc

    def _checked(self, name: str, check, value):
        try:
            return check(value)
        except SchemaError as exc:
            raise FileDamaged(f"{self / name}: {exc}") from exc

    def history(self) -> list[dict]:
        """The finished epochs ([] before the first); a FileDamaged error when the file is not
        what the lab writes (core.store.schema)."""
        return self._checked("history.json", check_history, read_json(self / "history.json", []))

    def metrics(self) -> dict:
        return self._checked("metrics.json", check_metrics, read_json(self / "metrics.json", {}))

    def predictions(self) -> dict[str, np.ndarray]:
        path = self / "predictions.npz"
        if not path.exists():
            raise RunStoreError(f"run {self.id} has no stored predictions")
        return self._checked_arrays("predictions.npz", check_predictions)

    def weights_path(self, which: str = "best") -> Path:
        path = self / f"weights_{which}.pt"
        return path if path.exists() else self / "weights_last.pt"

    def load_weights(self, which: str = "best") -> dict:
        path = self.weights_path(which)
        if not path.exists():
            raise RunStoreError(f"run {self.id} has no weights yet (it has not finished an epoch)")
        return load_state_dict(path)

    def load_checkpoint(self) -> dict | None:
        path = self / "checkpoint.pt"
        return load_state_dict(path) if path.exists() else None

    # --- stopping ------------------------------------------------------------------------------

    def request_cancel(self, reason: str = "cancelled") -> None:
        atomic_write_bytes(self / "cancel", reason.encode())

    def cancel_reason(self) -> str | None:
        """Why someone asked this run to stop ("cancelled", "pruned"), or None. Cheap: one stat."""
        path = self / "cancel"
        if not path.exists():
            return None
        try:
            return path.read_text().strip() or "cancelled"
        except OSError:
            return "cancelled"

    def clear_cancel(self) -> None:
        (self / "cancel").unlink(missing_ok=True)

    # --- the index row, from the files alone ----------------------------------------------------

    def derived_status(self, metrics: dict) -> str:
        """For a run without run.json (written by an older version): what its files say."""
        if metrics:
            reason = metrics.get("stop_reason") or ""
            return "cancelled" if reason == "cancelled" else "pruned" if reason.startswith("pruned") else "finished"
        return "interrupted"

    # Files checked on every listing (cheap: JSON), and with the full check (arrays, weights).
    LISTED_FILES = ("config.json", "run.json", "history.json", "metrics.json")

    def signature(self) -> tuple:
        """What changes when one of LISTED_FILES is written, truncated or removed (stats only)."""
        out = []
        for name in self.LISTED_FILES:
            try:
                st = (self / name).stat()
                out.append((st.st_mtime_ns, st.st_size))
            except OSError:
                out.append(None)
        return tuple(out)

    # What a finished run always has (the trainer writes them all before it says finished).
    FINISHED_FILES = ("history.json", "metrics.json", "predictions.npz", "weights_last.pt")

    def problem(self, row: dict, full: bool = False) -> str | None:
        """Why this run's files are not what the lab writes, or None: every JSON file checked
        against core.store.schema, and a finished run missing a file it always has; `full`
        loads the arrays and weights too (`runs show`, export)."""
        from core.store.schema import check_split

        try:
            self.config()
            meta = self.read_meta()
            if (meta.get("status") or row.get("status")) == "finished":
                missing = [n for n in self.FINISHED_FILES if not (self / n).exists()]
                if missing:
                    return f"{self / missing[0]}: missing, while the run finished"
            self.history()
            self.metrics()
            if full:
                if (self / "predictions.npz").exists():
                    self.predictions()
                for name in ("weights_last.pt", "weights_best.pt", "checkpoint.pt"):
                    if (self / name).exists():
                        load_state_dict(self / name)
                for name, check in (("split.npz", check_split), ("first_layer.npz", _check_first_layer)):
                    if (self / name).exists():
                        self._checked_arrays(name, check)
                if not isinstance(read_json(self / "environment.json", {}), dict):
                    return f"{self / 'environment.json'}: not an object"
        except FileDamaged as exc:
            return str(exc)
        return None

    def _checked_arrays(self, name: str, check) -> dict:
        """An .npz file's arrays (never unpickled), checked; FileDamaged when it is not sound."""
        try:
            with np.load(self / name, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except Exception as exc:  # noqa: BLE001 - a truncated zip raises any of several kinds
            raise FileDamaged(f"{self / name}: cannot be read ({type(exc).__name__}: {exc})") from exc
        return self._checked(name, check, arrays)

    def damaged_row(self, reason: str) -> dict:
        """The index row of a run whose files cannot be read: listed as damaged, with why."""
        meta = {}
        try:
            meta = self.read_meta()
        except RunStoreError:
            pass
        return {"id": self.id, "name": meta.get("name") if isinstance(meta.get("name"), str) else self.id,
                "status": "damaged", "created": created_from_id(self.id), "updated": time.time(),
                "error": reason[:2000], "config": "{}", "tags": "[]", "note": "",
                "owner": meta.get("owner") if isinstance(meta.get("owner"), str) else None}

    def index_row(self) -> dict:
        """Everything the index holds about this run, read from its files (for a rebuild)."""
        import json

        saved = self.saved_config()
        config = saved["config"]
        self.config()  # a config the lab could not have written makes the run damaged, not listed as fine
        meta = self.read_meta()
        history = self.history()
        metrics = self.metrics()
        status = meta.get("status") if meta.get("status") in STATUSES else self.derived_status(metrics)
        vals = [h.get("val_accuracy") for h in history if isinstance(h, dict) and h.get("val_accuracy") is not None]
        return {
            "id": self.id,
            "name": meta.get("name") or config.get("name") or self.id,
            "status": status,
            "created": meta.get("created") or created_from_id(self.id),
            "updated": time.time(),
            "model": config.get("model"), "dataset": trained_on(saved),
            "device": meta.get("device") or saved.get("device") or config.get("device"),
            "optimizer": config.get("optimizer"), "lr": config.get("lr"), "batch_size": config.get("batch_size"),
            "epochs": config.get("epochs"), "epochs_done": len(history),
            "params": metrics.get("parameters"), "seconds": metrics.get("seconds"),
            "best_val_accuracy": max(vals) if vals else None, "last_val_accuracy": vals[-1] if vals else None,
            "test_accuracy": metrics.get("test_accuracy"), "test_loss": metrics.get("test_loss"),
            "tags": json.dumps(meta.get("tags") or []), "note": meta.get("note") or "",
            "error": meta.get("error"), "pid": meta.get("pid"), "pid_start": meta.get("pid_start"),
            "host": meta.get("host"), "node": meta.get("node"), "executor": meta.get("executor"),
            "progress": None, "config": json.dumps(config, indent=2, sort_keys=True), "grp": meta.get("grp"),
            "vectorized": json.dumps(meta["vectorized"]) if meta.get("vectorized") else None,
            "owner": meta.get("owner"),
            "starter": 1 if isinstance(config.get("extra"), dict) and config["extra"].get("starter") is True else 0,
            "task": task_of(config), "group_kind": group_kind_of(meta.get("grp")),
        }


def _check_first_layer(arrays: dict) -> dict:
    from core.store.schema import SchemaError

    weights = arrays.get("weights")
    if weights is None or not np.issubdtype(weights.dtype, np.floating) or not np.all(np.isfinite(weights)):
        raise SchemaError("weights are missing or not finite numbers")
    return arrays
