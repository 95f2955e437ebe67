"""The run store: every training run, its files and its status, on disk, for every process.

Layout of a store folder (default `./runs`, or `--runs-dir`, or MNIST_LAB_RUNS):

    index.sqlite            one row per run (SQLite in WAL mode: many readers, one writer)
    <run id>/config.json    the full RunConfig, the data set's description and fingerprint
    <run id>/history.json   one entry per finished epoch, with the validation confusion matrix
    <run id>/metrics.json   final test loss and accuracy, stop reason, seconds
    <run id>/predictions.npz  test labels, predicted labels and the probability matrix
    <run id>/split.npz      the train and validation indices the run used
    <run id>/weights_last.pt, weights_best.pt  state dicts (loaded with weights_only=True)
    <run id>/checkpoint.pt  weights + optimizer + scheduler after the last finished epoch
    <run id>/environment.json  package versions, device name, git commit

Run ids are made here (date-time-random hex) and checked against a strict pattern before any
path is built from them, so a name or tag can never reach the file system. Every file is
written to a temporary name and renamed, so a crash never leaves half a file.
"""

from __future__ import annotations

import json
import os
import platform
import re
import secrets
import shutil
import sqlite3
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from core.callbacks import Callback, Cancel, Checkpoint
from core.config import RunConfig

STATUSES = ("queued", "running", "finished", "failed", "cancelled", "interrupted")
ACTIVE = ("queued", "running")
RUN_ID = re.compile(r"^\d{8}-\d{6}-[0-9a-f]{6}$")
MAX_NAME = 120
MAX_TAG = 40


class RunStoreError(ValueError):
    """A run store operation cannot be done; the message says which run and why."""


def default_root() -> Path:
    return Path(os.environ.get("MNIST_LAB_RUNS") or "runs")


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(3)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(2)}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def atomic_write_json(path: Path, obj) -> None:
    atomic_write_bytes(path, json.dumps(obj, indent=1, default=_json_default).encode())


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


def atomic_save_npz(path: Path, **arrays) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.npz")
    np.savez_compressed(tmp, **arrays)
    os.replace(tmp, path)


def clean_text(value: str, limit: int, what: str) -> str:
    """A name or tag: printable, no path separators or control characters, bounded length."""
    value = (value or "").strip()
    if len(value) > limit:
        raise RunStoreError(f"{what} is too long ({len(value)} characters, at most {limit})")
    if any(c in value for c in "/\\\0") or any(ord(c) < 32 for c in value) or value in (".", ".."):
        raise RunStoreError(f"{what} {value!r} may not contain '/', '\\', control characters or be '.'/'..'")
    return value


def process_start_time(pid: int) -> str | None:
    """An id of the process `pid` that changes if the pid is reused (Linux: start time in ticks)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def process_alive(pid: int | None, start: str | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    if start is not None and os.path.exists("/proc"):
        now = process_start_time(pid)
        if now is None:
            return False
        if now != start:
            return False
        try:  # a zombie (killed, not yet reaped by its parent) is dead for us
            with open(f"/proc/{pid}/stat") as f:
                return f.read().rsplit(")", 1)[1].split()[0] != "Z"
        except OSError:
            return False
    return True


def environment() -> dict:
    """What a run records about where it ran: versions, platform, the project's git commit."""
    import torchvision

    env = {"python": sys.version.split()[0], "torch": torch.__version__, "torchvision": torchvision.__version__,
           "numpy": np.__version__, "platform": platform.platform(), "host": platform.node()}
    try:
        root = Path(__file__).resolve().parent.parent
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                                text=True, timeout=5)
        if commit.returncode == 0:
            env["git_commit"] = commit.stdout.strip()
            dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain"], capture_output=True,
                                   text=True, timeout=5)
            env["git_dirty"] = bool(dirty.stdout.strip())
    except (OSError, subprocess.SubprocessError):
        pass
    return env


SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL DEFAULT '',
    status TEXT NOT NULL,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    model TEXT, dataset TEXT, device TEXT, optimizer TEXT, lr REAL, batch_size INTEGER,
    epochs INTEGER, epochs_done INTEGER NOT NULL DEFAULT 0,
    params INTEGER, seconds REAL,
    best_val_accuracy REAL, last_val_accuracy REAL, test_accuracy REAL, test_loss REAL,
    tags TEXT NOT NULL DEFAULT '[]', note TEXT NOT NULL DEFAULT '', error TEXT,
    pid INTEGER, pid_start TEXT, host TEXT,
    progress TEXT, config TEXT NOT NULL, grp TEXT
);
CREATE INDEX IF NOT EXISTS runs_status ON runs(status);
"""


class RunStore:
    """The run store at `root` (see the module docstring). Safe to use from several processes."""

    def __init__(self, root: str | os.PathLike | None = None):
        self.root = Path(root) if root else default_root()
        self.root.mkdir(parents=True, exist_ok=True)
        self.db_path = self.root / "index.sqlite"
        with self._db() as db:
            db.executescript(SCHEMA)

    # --- database -----------------------------------------------------------------------

    @contextmanager
    def _db(self):
        db = sqlite3.connect(self.db_path, timeout=30, isolation_level=None)
        db.row_factory = sqlite3.Row
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA busy_timeout=30000")
            yield db
        finally:
            db.close()

    def _update(self, run_id: str, **fields) -> None:
        fields["updated"] = time.time()
        cols = ", ".join(f"{k} = ?" for k in fields)
        with self._db() as db:
            db.execute(f"UPDATE runs SET {cols} WHERE id = ?", [*fields.values(), run_id])

    def run_dir(self, run_id: str) -> Path:
        if not isinstance(run_id, str) or not RUN_ID.match(run_id):
            raise RunStoreError(f"{run_id!r} is not a run id (expected YYYYMMDD-HHMMSS-xxxxxx)")
        return self.root / run_id

    # --- creating and finishing runs ------------------------------------------------------

    def create(self, config: RunConfig, status: str = "queued", group: str | None = None) -> str:
        name = clean_text(config.name, MAX_NAME, "run name")  # refuse before anything is written
        run_id = new_run_id()
        folder = self.run_dir(run_id)
        folder.mkdir(parents=True)
        from core.models import summary

        atomic_write_json(folder / "config.json", {"config": config.to_dict(),
                                                   "architecture": config.architecture(),
                                                   "summary": summary(config.architecture(), config.num_outputs)})
        now = time.time()
        with self._db() as db:
            db.execute(
                "INSERT INTO runs (id, name, status, created, updated, model, dataset, device, optimizer, lr,"
                " batch_size, epochs, config, grp) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (run_id, name or run_id, status, now, now, config.model,
                 config.dataset, config.device, config.optimizer, config.lr, config.batch_size, config.epochs,
                 config.to_json(), group),
            )
            db.execute("UPDATE runs SET host=? WHERE id=?", (platform.node(), run_id))
        return run_id

    def mark_running(self, run_id: str, device: str, device_label: str, dataset: dict, params: int) -> None:
        pid = os.getpid()
        folder = self.run_dir(run_id)
        saved = json.loads((folder / "config.json").read_text())
        saved.update({"dataset": dataset, "device": device, "device_name": device_label})
        atomic_write_json(folder / "config.json", saved)
        atomic_write_json(folder / "environment.json", {**environment(), "device": device, "device_name": device_label})
        self._update(run_id, status="running", pid=pid, pid_start=process_start_time(pid), host=platform.node(),
                     device=device, params=params, error=None)

    def callbacks(self, run_id: str) -> list[Callback]:
        """What a training run needs to write itself into the store as it goes."""
        folder = self.run_dir(run_id)
        return [
            Cancel(lambda: (folder / "cancel").exists()),
            Checkpoint(folder / "checkpoint.pt", best_path=folder / "weights_best.pt"),
            StoreWriter(self, run_id),
        ]

    def request_cancel(self, run_id: str) -> None:
        """Ask a running (or queued) run to stop; the worker stops within one batch."""
        run = self.get(run_id)
        if run["status"] == "queued":
            self._update(run_id, status="cancelled", error="cancelled before it started")
        (self.run_dir(run_id) / "cancel").touch()

    def save_result(self, run_id: str, result) -> None:
        """Store the results of a finished (or cancelled / early-stopped) training."""
        folder = self.run_dir(run_id)
        test = result.test
        atomic_save_npz(folder / "predictions.npz", labels=test["labels"].astype(np.int64),
                        preds=test["preds"].astype(np.int64), probs=test["probs"].astype(np.float32))
        atomic_save_npz(folder / "split.npz", train_index=result.train_index, val_index=result.val_index)
        from core.callbacks import atomic_torch_save

        atomic_torch_save(result.model.state_dict(), folder / "weights_last.pt")
        summary = result.summary()
        atomic_write_json(folder / "history.json", result.history)
        metrics = {k: summary[k] for k in ("test_accuracy", "test_loss", "best_val_accuracy", "stop_reason",
                                           "seconds", "epochs_run", "parameters")}
        atomic_write_json(folder / "metrics.json", metrics)
        cancelled = result.stop_reason == "cancelled"
        self._update(
            run_id, status="cancelled" if cancelled else "finished", epochs_done=result.epochs_run,
            test_accuracy=test["accuracy"], test_loss=test["loss"], seconds=result.seconds,
            best_val_accuracy=summary["best_val_accuracy"],
            last_val_accuracy=result.history[-1]["val_accuracy"] if result.history else None, progress=None,
        )

    def mark_failed(self, run_id: str, error: str, status: str = "failed") -> None:
        self._update(run_id, status=status, error=error[:2000], progress=None)

    def train_in_this_process(self, config: RunConfig, dataset=None, callbacks=(), run_id: str | None = None,
                              resume: bool = False) -> dict:
        """Train `config` here, writing the run into the store; returns the CLI's summary dict."""
        from core.data import load_dataset
        from core.training import check_against_data, train

        if dataset is None:
            dataset = load_dataset(config.dataset)
        check_against_data(config, dataset)  # refuse before a run folder exists
        run_id = run_id or self.create(config, status="running")
        folder = self.run_dir(run_id)
        state = self.load_checkpoint(run_id) if resume else None
        (folder / "cancel").unlink(missing_ok=True)
        self._update(run_id, status="running", pid=os.getpid(), pid_start=process_start_time(os.getpid()),
                     host=platform.node())
        starter = _MarkRunning(self, run_id)
        try:
            result = train(config, dataset, callbacks=[starter, *self.callbacks(run_id), *callbacks],
                           resume_state=state)
        except KeyboardInterrupt:
            self.mark_failed(run_id, "interrupted from the keyboard", status="interrupted")
            raise
        except BaseException as exc:
            self.mark_failed(run_id, f"{type(exc).__name__}: {exc}")
            raise
        self.save_result(run_id, result)
        return {"run_id": run_id, "run_dir": str(folder.resolve()), **result.summary(),
                "status": self.get(run_id)["status"]}

    # --- reading ------------------------------------------------------------------------

    def _reap(self, rows: list[sqlite3.Row]) -> list[dict]:
        """Mark runs whose worker died as interrupted (noticed by whoever reads next)."""
        out = []
        here = platform.node()
        for row in rows:
            run = dict(row)
            if run["status"] in ACTIVE and run["pid"] and run["host"] in (None, here) and not process_alive(run["pid"], run["pid_start"]):
                error = (f"the worker process {run['pid']} died; resume continues from epoch "
                         f"{run['epochs_done'] + 1}")
                with self._db() as db:
                    db.execute("UPDATE runs SET status='interrupted', error=?, progress=NULL, updated=? "
                               "WHERE id=? AND status='running'", (error, time.time(), run["id"]))
                run.update(status="interrupted", error=error, progress=None)
            run["tags"] = json.loads(run["tags"] or "[]")
            run["progress"] = json.loads(run["progress"]) if run["progress"] else None
            out.append(run)
        return out

    def list(self, status: str | None = None, tag: str | None = None, text: str | None = None) -> list[dict]:
        """All runs, newest first, optionally filtered by status, tag and a text in name/model/note."""
        with self._db() as db:
            rows = db.execute("SELECT * FROM runs ORDER BY created DESC").fetchall()
        runs = self._reap(rows)
        if status:
            runs = [r for r in runs if r["status"] == status]
        if tag:
            runs = [r for r in runs if tag in r["tags"]]
        if text:
            t = text.lower()
            runs = [r for r in runs if t in (r["name"] + " " + (r["model"] or "") + " " + r["note"]).lower()]
        return runs

    def get(self, run_id: str) -> dict:
        self.run_dir(run_id)
        with self._db() as db:
            rows = db.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchall()
        if not rows:
            raise RunStoreError(f"no run {run_id!r} in {self.root}")
        return self._reap(rows)[0]

    def config(self, run_id: str) -> RunConfig:
        saved = json.loads((self.run_dir(run_id) / "config.json").read_text())
        return RunConfig.from_dict(saved["config"])

    def history(self, run_id: str) -> list[dict]:
        path = self.run_dir(run_id) / "history.json"
        return json.loads(path.read_text()) if path.exists() else []

    def metrics(self, run_id: str) -> dict:
        path = self.run_dir(run_id) / "metrics.json"
        return json.loads(path.read_text()) if path.exists() else {}

    def predictions(self, run_id: str) -> dict[str, np.ndarray]:
        path = self.run_dir(run_id) / "predictions.npz"
        if not path.exists():
            raise RunStoreError(f"run {run_id} has no stored predictions (status {self.get(run_id)['status']})")
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}

    def load_weights(self, run_id: str, which: str = "best") -> dict:
        """A run's weights as a state dict, loaded without unpickling code (weights_only=True)."""
        folder = self.run_dir(run_id)
        path = folder / f"weights_{which}.pt"
        if not path.exists():
            path = folder / "weights_last.pt"
        return load_state_dict(path)

    def load_checkpoint(self, run_id: str) -> dict | None:
        path = self.run_dir(run_id) / "checkpoint.pt"
        return load_state_dict(path) if path.exists() else None

    def load_model(self, run_id: str, which: str = "best"):
        from core.models import build_model

        config = self.config(run_id)
        model = build_model(config.architecture(), config.num_outputs)
        model.load_state_dict(self.load_weights(run_id, which))
        return model.eval()

    # --- editing ------------------------------------------------------------------------

    def rename(self, run_id: str, name: str) -> None:
        self.get(run_id)
        self._update(run_id, name=clean_text(name, MAX_NAME, "run name") or run_id)

    def set_tags(self, run_id: str, tags: list[str]) -> None:
        self.get(run_id)
        clean = sorted({clean_text(t, MAX_TAG, "tag") for t in tags} - {""})
        self._update(run_id, tags=json.dumps(clean))

    def set_note(self, run_id: str, note: str) -> None:
        self.get(run_id)
        self._update(run_id, note=(note or "")[:10000])

    def delete(self, run_id: str) -> None:
        run = self.get(run_id)
        if run["status"] == "running":
            raise RunStoreError(f"run {run_id} is running; cancel it before deleting it")
        with self._db() as db:
            db.execute("DELETE FROM runs WHERE id = ?", (run_id,))
        shutil.rmtree(self.run_dir(run_id), ignore_errors=True)


def load_state_dict(path: str | os.PathLike) -> dict:
    """Load a weights or checkpoint file without executing code from it.

    `weights_only=True` makes torch refuse any pickle that would construct objects other than
    tensors and plain containers, so a hostile model file is an error, never code that runs.
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - every way a bad file fails is reported the same
        raise RunStoreError(f"{path}: not a valid weights file, refused ({type(exc).__name__}: "
                            f"{str(exc).splitlines()[0][:300]})") from exc


class _MarkRunning(Callback):
    """Writes the device, data set and environment once the trainer has them."""

    def __init__(self, store: RunStore, run_id: str):
        self.store, self.run_id = store, run_id

    def on_train_begin(self, trainer):
        from core.devices import device_name
        from core.models import count_parameters

        self.store.mark_running(self.run_id, str(trainer.device), device_name(trainer.device),
                                trainer.dataset_info, count_parameters(trainer.model))


class StoreWriter(Callback):
    """Writes history after every epoch and live progress (at most twice a second) to the store."""

    def __init__(self, store: RunStore, run_id: str, min_interval: float = 0.5):
        self.store, self.run_id, self.min_interval = store, run_id, min_interval
        self.folder = store.run_dir(run_id)
        self._last = 0.0
        self._t0 = time.perf_counter()

    def on_epoch_begin(self, trainer, epoch):
        self._t0 = time.perf_counter()

    def on_batch_end(self, trainer, epoch, batch, num_batches):
        now = time.time()
        if now - self._last < self.min_interval:
            return
        self._last = now
        elapsed = max(time.perf_counter() - self._t0, 1e-9)
        progress = {"epoch": epoch + 1, "epochs": trainer.config.epochs, "batch": batch + 1,
                    "batches": num_batches, "loss": trainer.running_loss(),
                    "samples_per_second": trainer.samples_seen / elapsed}
        self.store._update(self.run_id, progress=json.dumps(progress))

    def on_epoch_end(self, trainer, epoch, log):
        atomic_write_json(self.folder / "history.json", trainer.history)
        self.store._update(self.run_id, epochs_done=len(trainer.history), last_val_accuracy=log["val_accuracy"],
                           best_val_accuracy=max(h["val_accuracy"] for h in trainer.history),
                           seconds=sum(h["seconds"] for h in trainer.history))


# --- export, import and resume (methods added to RunStore below) -------------------------

EXPORT_FILES = ("config.json", "history.json", "metrics.json", "predictions.npz", "split.npz",
                "weights_last.pt", "weights_best.pt", "environment.json")
REQUIRED_IN_ZIP = ("manifest.json", "config.json", "weights_last.pt")
MAX_ZIP_BYTES = 512 * 2**20
EXPORT_FORMAT = "mnist-lab-run"


def export_zip(self: RunStore, run_id: str, file) -> Path:
    """One zip with the run's config, history, metrics, predictions and weights."""
    import zipfile

    run = self.get(run_id)
    folder = self.run_dir(run_id)
    manifest = {"format": EXPORT_FORMAT, "version": 1, "id": run_id,
                **{k: run[k] for k in ("name", "status", "tags", "note", "created", "epochs_done", "test_accuracy")}}
    file = Path(file)
    tmp = file.with_name(f".{file.name}.{os.getpid()}.tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("manifest.json", json.dumps(manifest, indent=1))
        for name in EXPORT_FILES:
            if (folder / name).exists():
                z.write(folder / name, name)
    os.replace(tmp, file)
    return file


def import_zip(self: RunStore, file) -> str:
    """Import a run exported by `export_zip` (a path, or an open binary file such as an upload),
    after checking everything in it.

    Refused (with the store unchanged): not a zip, a member outside the allowed file names
    (`../x`, absolute paths, folders), a missing required file, bad JSON, an invalid config,
    weights that are not a plain state dict of tensors or do not fit the architecture, and
    archives whose content is larger than 512 MiB.
    """
    import zipfile

    from core.models import build_model

    is_path = isinstance(file, (str, os.PathLike))
    source = Path(file) if is_path else file
    file = source if is_path else getattr(file, "name", "the uploaded file")  # for the messages
    try:
        z = zipfile.ZipFile(source)
    except (OSError, zipfile.BadZipFile) as exc:
        raise RunStoreError(f"{file}: not a zip file ({exc})") from exc
    with z:
        names = z.namelist()
        allowed = set(EXPORT_FILES) | {"manifest.json"}
        for name in names:
            if name not in allowed:
                raise RunStoreError(f"{file}: unexpected member {name!r}; a run export holds only "
                                    f"{', '.join(sorted(allowed))}")
        missing = [n for n in REQUIRED_IN_ZIP if n not in names]
        if missing:
            raise RunStoreError(f"{file}: missing {', '.join(missing)}")
        if sum(i.file_size for i in z.infolist()) > MAX_ZIP_BYTES:
            raise RunStoreError(f"{file}: content larger than {MAX_ZIP_BYTES // 2**20} MiB")

        def read_json(name):
            try:
                return json.loads(z.read(name))
            except (ValueError, UnicodeDecodeError) as exc:
                raise RunStoreError(f"{file}: {name} is not valid JSON ({exc})") from exc

        manifest = read_json("manifest.json")
        if not isinstance(manifest, dict) or manifest.get("format") != EXPORT_FORMAT:
            raise RunStoreError(f"{file}: manifest.json is not an MNIST Lab run export")
        saved = read_json("config.json")
        try:
            config = RunConfig.from_dict(saved["config"])
        except (KeyError, TypeError, ValueError) as exc:
            raise RunStoreError(f"{file}: config.json does not hold a valid run config ({exc})") from exc
        for name in ("history.json", "metrics.json", "environment.json"):
            if name in names:
                read_json(name)
        run_id = new_run_id()
        staging = self.root / f".import-{run_id}"
        staging.mkdir()
        try:
            for name in names:
                (staging / name).write_bytes(z.read(name))
            model = build_model(config.architecture(), config.num_outputs)
            for weights in ("weights_last.pt", "weights_best.pt"):
                if (staging / weights).exists():
                    try:
                        model.load_state_dict(load_state_dict(staging / weights))
                    except RunStoreError:
                        raise
                    except Exception as exc:  # noqa: BLE001
                        raise RunStoreError(f"{file}: {weights} does not fit the run's architecture ({exc})") from exc
            if "predictions.npz" in names:
                try:
                    with np.load(staging / "predictions.npz", allow_pickle=False) as p:
                        if p["probs"].shape[0] != p["labels"].shape[0]:
                            raise RunStoreError(f"{file}: predictions.npz has mismatched arrays")
                except RunStoreError:
                    raise
                except Exception as exc:  # noqa: BLE001
                    raise RunStoreError(f"{file}: predictions.npz is not valid ({exc})") from exc
            (staging / "manifest.json").unlink()
            status = manifest.get("status") if manifest.get("status") in ("finished", "cancelled") else "interrupted"
            history = json.loads((staging / "history.json").read_text()) if "history.json" in names else []
            metrics = json.loads((staging / "metrics.json").read_text()) if "metrics.json" in names else {}
            tags = [t for t in manifest.get("tags", []) if isinstance(t, str)]
            name = clean_text(str(manifest.get("name") or run_id), MAX_NAME, "run name")
            tags = sorted({clean_text(t, MAX_TAG, "tag") for t in tags} - {""})
            os.replace(staging, self.run_dir(run_id))
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    now = time.time()
    with self._db() as db:
        db.execute(
            "INSERT INTO runs (id, name, status, created, updated, model, dataset, device, optimizer, lr, batch_size,"
            " epochs, epochs_done, params, seconds, best_val_accuracy, last_val_accuracy, test_accuracy, test_loss,"
            " tags, note, config) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (run_id, name, status, now, now, config.model, config.dataset, saved.get("device", config.device),
             config.optimizer, config.lr, config.batch_size, config.epochs, len(history), metrics.get("parameters"),
             metrics.get("seconds"), metrics.get("best_val_accuracy"),
             history[-1]["val_accuracy"] if history else None, metrics.get("test_accuracy"), metrics.get("test_loss"),
             json.dumps(tags), str(manifest.get("note", ""))[:10000], config.to_json()),
        )
    return run_id


def resume_in_this_process(self: RunStore, run_id: str, callbacks=(), data_dir=None) -> dict:
    """Continue an interrupted or cancelled run from its last checkpoint, to the same result."""
    from core.data import load_dataset

    run = self.get(run_id)
    if run["status"] not in ("interrupted", "cancelled", "failed"):
        raise RunStoreError(f"run {run_id} is {run['status']}; only interrupted, cancelled or failed runs resume")
    if self.load_checkpoint(run_id) is None:
        raise RunStoreError(f"run {run_id} has no checkpoint (it stopped before its first epoch ended)")
    config = self.config(run_id)
    return self.train_in_this_process(config, load_dataset(config.dataset, data_dir), callbacks=callbacks,
                                      run_id=run_id, resume=True)


RunStore.export_zip = export_zip
RunStore.import_zip = import_zip
RunStore.resume_in_this_process = resume_in_this_process
