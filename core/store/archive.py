"""A run as one zip file, to share it or keep it: export, and an import that trusts nothing.

An import is checked completely in a staging folder inside the store before it becomes a
run; anything wrong leaves the store exactly as it was: not a zip, members other than the
known file names (`../x`, absolute paths, folders, symlinks), a missing required file, sizes
over the limit (the real bytes are counted while reading, so a zip bomb whose headers lie is
caught too), bad JSON, an invalid config, weights that are not a plain state dict of
tensors or do not fit the architecture, predictions of mismatched shapes.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import zipfile
from pathlib import Path

import numpy as np

from core.config import RunConfig
from core.store.files import MAX_NAME, MAX_TAG, RunStoreError, clean_text, load_state_dict
from core.store.schema import SchemaError, check_history, check_metrics, check_predictions, check_split

EXPORT_FILES = ("config.json", "history.json", "metrics.json", "predictions.npz", "split.npz",
                "weights_last.pt", "weights_best.pt", "environment.json")
REQUIRED_IN_ZIP = ("manifest.json", "config.json", "weights_last.pt")
MAX_ZIP_BYTES = 512 * 2**20
MAX_MEMBER_BYTES = 256 * 2**20
EXPORT_FORMAT = "mnist-lab-run"


def export_zip(store, run_id: str, file) -> Path:
    """One zip with the run's config, history, metrics, predictions and weights; a run whose
    files are damaged is refused (an archive of it would be refused by every import)."""
    run = store.get(run_id)
    folder = store.existing_folder(run_id)
    if run["status"] == "damaged":
        raise RunStoreError(f"run {run_id} is damaged ({run['error']}); it cannot be exported")
    store.config(run_id), store.history(run_id), store.metrics(run_id)  # FileDamaged: refused, listed as damaged
    if (folder / "predictions.npz").exists():
        store.predictions(run_id)
    for which in ("last", "best"):
        if (folder / f"weights_{which}.pt").exists():
            store.load_weights(run_id, which)
    manifest = {"format": EXPORT_FORMAT, "version": 1, "id": run_id,
                **{k: run[k] for k in ("name", "status", "tags", "note", "created", "epochs_done", "test_accuracy")}}
    file = Path(file)
    tmp = file.with_name(f".{file.name}.{os.getpid()}.tmp")
    try:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as z:
            z.writestr("manifest.json", json.dumps(manifest, indent=1))
            for name in EXPORT_FILES:
                if (folder / name).exists():
                    z.write(folder / name, name)
        os.replace(tmp, file)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return file


def _read_member(z: zipfile.ZipFile, info: zipfile.ZipInfo, label) -> bytes:
    """A member's bytes, counting what is really decompressed (headers can lie about sizes)."""
    out, total = [], 0
    with z.open(info) as f:
        while True:
            chunk = f.read(1 << 20)
            if not chunk:
                break
            total += len(chunk)
            if total > MAX_MEMBER_BYTES:
                raise RunStoreError(f"{label}: {info.filename} is larger than {MAX_MEMBER_BYTES // 2**20} MiB "
                                    "once decompressed (its header said otherwise); refused")
            out.append(chunk)
    return b"".join(out)


def _arrays(content: bytes, label, name: str) -> dict:
    """The arrays of an .npz member (never unpickled)."""
    import io

    try:
        with np.load(io.BytesIO(content), allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except Exception as exc:  # noqa: BLE001 - a broken npz fails in several ways
        raise RunStoreError(f"{label}: {name} is not valid ({type(exc).__name__}: {exc})") from exc


def import_zip(store, file) -> str:
    """Import a run exported by `export_zip` (a path, or an open binary file such as an upload),
    after checking everything in it; returns the new run's id."""
    from core.models import build_model

    is_path = isinstance(file, (str, os.PathLike))
    source = Path(file) if is_path else file
    label = source if is_path else getattr(file, "name", "the uploaded file")  # for the messages
    try:
        z = zipfile.ZipFile(source)
    except (OSError, zipfile.BadZipFile, ValueError) as exc:
        raise RunStoreError(f"{label}: not a zip file ({exc})") from exc
    with z:
        infos = z.infolist()
        allowed = set(EXPORT_FILES) | {"manifest.json"}
        names = [i.filename for i in infos]
        for info in infos:
            if info.filename not in allowed:
                raise RunStoreError(f"{label}: unexpected member {info.filename!r}; a run export holds only "
                                    f"{', '.join(sorted(allowed))}")
            if stat.S_ISLNK(info.external_attr >> 16):
                raise RunStoreError(f"{label}: member {info.filename!r} is a symbolic link; refused")
        if len(set(names)) != len(names):
            raise RunStoreError(f"{label}: a member name appears twice")
        missing = [n for n in REQUIRED_IN_ZIP if n not in names]
        if missing:
            raise RunStoreError(f"{label}: missing {', '.join(missing)}")
        if sum(i.file_size for i in infos) > MAX_ZIP_BYTES:
            raise RunStoreError(f"{label}: content larger than {MAX_ZIP_BYTES // 2**20} MiB")
        try:
            data = {i.filename: _read_member(z, i, label) for i in infos}
        except (zipfile.BadZipFile, OSError, EOFError, ValueError, RuntimeError) as exc:
            raise RunStoreError(f"{label}: a member cannot be read ({type(exc).__name__}: {exc})") from exc

    def read_json(name):
        try:
            return json.loads(data[name])
        except (ValueError, UnicodeDecodeError) as exc:
            raise RunStoreError(f"{label}: {name} is not valid JSON ({exc})") from exc

    manifest = read_json("manifest.json")
    if not isinstance(manifest, dict) or manifest.get("format") != EXPORT_FORMAT:
        raise RunStoreError(f"{label}: manifest.json is not an MNIST Lab run export")
    saved = read_json("config.json")
    try:
        config = RunConfig.from_dict(saved["config"])
    except (KeyError, TypeError, ValueError) as exc:
        raise RunStoreError(f"{label}: config.json does not hold a valid run config ({exc})") from exc
    def checked(name, check, value):  # the same schema the lab's own runs are read with
        try:
            return check(value)
        except SchemaError as exc:
            raise RunStoreError(f"{label}: {name}: {exc}") from exc

    if "history.json" in data:
        checked("history.json", check_history, read_json("history.json"))
    if "metrics.json" in data:
        checked("metrics.json", check_metrics, read_json("metrics.json"))
    if "environment.json" in data and not isinstance(read_json("environment.json"), dict):
        raise RunStoreError(f"{label}: environment.json is not an object")
    for name, check in (("predictions.npz", check_predictions), ("split.npz", check_split)):
        if name in data:
            checked(name, check, _arrays(data[name], label, name))
    if "predictions.npz" in data and _arrays(data["predictions.npz"], label, "predictions.npz")["probs"].shape[1] \
            != max(config.num_outputs, 2):
        raise RunStoreError(f"{label}: predictions.npz has probabilities for another number of classes than "
                            "the run's model")
    if manifest.get("status") == "finished":
        missing = [n for n in ("history.json", "metrics.json", "predictions.npz") if n not in data]
        if missing:
            raise RunStoreError(f"{label}: a finished run's archive lacks {', '.join(missing)}")
    name = manifest.get("name")
    tags = manifest.get("tags", [])
    if not isinstance(tags, list):
        raise RunStoreError(f"{label}: the manifest's tags are not a list")
    name = clean_text(str(name) if name else "", MAX_NAME, "run name")
    tags = sorted({clean_text(t, MAX_TAG, "tag") for t in tags if isinstance(t, str)} - {""})

    staging = store.root / f".import-{os.getpid()}-{os.urandom(3).hex()}"
    staging.mkdir()
    try:
        for member, content in data.items():
            if member != "manifest.json":
                (staging / member).write_bytes(content)
        model = build_model(config.architecture(), config.num_outputs)
        for weights in ("weights_last.pt", "weights_best.pt"):
            if (staging / weights).exists():
                try:
                    state = load_state_dict(staging / weights)
                except RunStoreError as exc:  # it names the staging file: name the archive
                    raise RunStoreError(f"{label}: {weights}: {str(exc).split(': ', 1)[-1]}") from exc
                try:
                    model.load_state_dict(state)
                except Exception as exc:  # noqa: BLE001
                    raise RunStoreError(f"{label}: {weights} does not fit the run's architecture ({exc})") from exc
        status = manifest.get("status") if manifest.get("status") in ("finished", "cancelled") else "interrupted"
        return store.add_imported(staging, {"name": name, "status": status, "tags": tags,
                                            "note": str(manifest.get("note", ""))[:10000], "grp": None,
                                            "executor": "import"})
    finally:
        shutil.rmtree(staging, ignore_errors=True)
