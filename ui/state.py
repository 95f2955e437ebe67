"""Process-wide state the pages share, behind Streamlit's caches: data sets, devices, the run
store and its executor, stored predictions and loaded models. Everything here is read-only
for the pages or safe to share between sessions (a finished model is never trained further).
"""

from __future__ import annotations

import gc
import importlib
import sys
import threading

import streamlit as st

from core.data import Dataset, available_datasets, load_dataset
from core.devices import DeviceInfo, list_devices
from core.settings import settings
from core.store.records import ACTIVE as STATUS_ACTIVE
from core.store.records import WITH_RESULTS
from core.store import RunStore, RunStoreError

ACTIVE = STATUS_ACTIVE
DONE = WITH_RESULTS


def data_dir() -> str | None:
    return settings().data


@st.cache_resource(show_spinner="Loading the data set...")
def _dataset(name: str, folder: str | None) -> Dataset:
    return load_dataset(name, folder)


def dataset(name: str = "mnist") -> Dataset:
    """A data set, loaded once per process and shared by every session (never mutated)."""
    return _dataset(name, data_dir())


@st.cache_data(ttl=60, show_spinner=False)
def datasets_here() -> dict[str, str]:
    return available_datasets(data_dir())


@st.cache_resource
def devices() -> list[DeviceInfo]:
    return list_devices()


@st.cache_resource
def _store(root: str) -> RunStore:
    return RunStore(root)


def store() -> RunStore:
    """The run store (MNIST_LAB_RUNS, else ./runs); one object per folder, shared."""
    return _store(str(settings().runs))


def store_notice() -> str | None:
    """What the store had to repair when it opened (a rebuilt index), for the page header."""
    return store().notice


def executor(name: str = "local"):
    """Where the pages' jobs train: worker processes here, or the Ray cluster named by
    MNIST_LAB_RAY_ADDRESS (its driver runs in a background process of this machine); with
    classroom mode's per-session quota checked before each start (ui.access)."""
    from ui.access import SessionExecutor

    return SessionExecutor(_raw_executor(name))


def _raw_executor(name: str = "local"):
    from core.executors import get_executor

    if name == "ray":
        return _ray_executor(str(store().root))
    return get_executor(name, store(), data_dir(), detached=True)


@st.cache_resource(show_spinner="Connecting to the Ray cluster...")
def _ray_executor(root: str):
    """One Ray executor per store for the whole server: its relay thread writes the store
    while the cluster trains (core.executors.ray)."""
    from core.executors import get_executor

    return get_executor("ray", store(), data_dir(), detached=True)


def executor_names() -> list[str]:
    """The executors a launcher offers: local, and ray when MNIST_LAB_RAY_ADDRESS is set."""
    from core.executors import ray_address

    return ["local", "ray"] if ray_address() else ["local"]


def safe_get(run_id: str) -> dict | None:
    try:
        return store().get(run_id)
    except RunStoreError:
        return None


def finished_runs() -> list[dict]:
    """Runs that have stored test predictions (finished, or stopped after at least one epoch)."""
    return [r for r in store().list() if r["status"] in DONE
            and store().folder(r["id"]).has("predictions")]


@st.cache_data(max_entries=32, show_spinner=False)
def _predictions(root: str, run_id: str, mtime: float) -> dict:
    return store().predictions(run_id)


def predictions(run_id: str) -> dict:
    """A run's stored test labels, predictions and probabilities (cached per file version)."""
    return _predictions(str(store().root), run_id, store().folder(run_id).version("predictions"))


def run_dataset_info(run_id: str) -> dict:
    saved = store().saved_config(run_id)
    return saved.get("dataset") if isinstance(saved.get("dataset"), dict) else {}


def test_images_for(run_id: str):
    """The test images a run was evaluated on, or (None, why) when this machine has other data."""
    info = run_dataset_info(run_id)
    name = info.get("name") or store().config(run_id).dataset
    try:
        ds = dataset(name)
    except Exception as exc:  # noqa: BLE001 - shown to the user as the reason
        return None, f"its data set {name!r} cannot be loaded here: {exc}"
    if info.get("fingerprint") and ds.fingerprint and info["fingerprint"] != ds.fingerprint:
        return None, (f"this run was trained on a different copy of {name!r} (fingerprint {info['fingerprint']}, "
                      f"here {ds.fingerprint})")
    return ds.test_images, None


def group_runs(group: str) -> list[dict]:
    return sorted(store().list(group=group), key=lambda r: r["created"])


def groups(kind: str) -> list[str]:
    """The groups of one kind (core.store.records.GROUP_KINDS), newest first."""
    return sorted({r["grp"] for r in store().list() if r.get("group_kind") == kind}, reverse=True)


@st.cache_resource(max_entries=8, show_spinner="Loading the model...")
def _classifier(run_dir: str, version: float, which: str = "best"):
    from core.inference import load_classifier

    return load_classifier(run_dir, which)


def classifier(run_id: str, which: str = "best"):
    """A stored run's model for inference, loaded once per weights file version and shared
    (finished models are never trained further, so sharing them is safe). `which="last"` is
    the model the run's stored test predictions came from (the metrics page's, so that every
    number on it is of one model); "best" the best validation epoch's (the draw page's)."""
    folder = store().folder(run_id)
    weights = folder.weights_path(which)
    return _classifier(str(folder.path), weights.stat().st_mtime if weights.exists() else 0.0, which)


@st.cache_resource(show_spinner=False)
def _starters(root: str) -> list[str]:
    from core.starters import ensure_started

    try:
        return ensure_started(store(), _raw_executor(), dataset("mnist-sample"))  # nobody's quota
    except Exception:  # noqa: BLE001 - a lab that cannot start its starters still opens
        return []


def ensure_starters() -> list[str]:
    """Start the starter runs the first time this store is opened (core.starters); once per process."""
    return _starters(str(store().root))


def starters_running() -> list[dict]:
    from core.starters import active_starters

    return active_starters(store())


# What the pages import, loaded before the first freeze (see below).
PAGE_MODULES = ("torch", "pandas", "altair", "sklearn.metrics", "optuna", "core.inference", "core.training",
                 "core.metrics", "core.experiments", "core.codegen", "core.learned", "core.backprop",
                 "core.robustness", "core.handwriting", "ui.charts")
_freeze_lock = threading.Lock()
_modules_at_freeze = 0
_frozen_count = 0


def import_page_modules() -> None:
    """Import what the pages use (an optional extra that is not installed is skipped: the page
    that needs it says so)."""
    for name in PAGE_MODULES:
        try:
            importlib.import_module(name)
        except ImportError:
            pass


def freeze_long_lived_objects() -> int:
    """Keep the libraries' objects out of the garbage collector's way (cheap after the first call).

    Streamlit runs a full `gc.collect()` after every script and fragment run (its hidden
    `runner.postScriptGC` option, on by default, to keep memory in check). With torch, pandas,
    Altair and scikit-learn loaded that walks ~330,000 objects, 0.15-0.17 s of CPU with the GIL held
    after *every* rerun of every session (bench/gc_freeze.py): with a class of 20 on one laptop it was the largest
    part of the server's work (py-spy under bench/load.py). Modules live as long as the process,
    so `gc.freeze()` moves them to the permanent generation, where collections skip them; the
    collection after each run then walks only what the runs made, and still frees it. torch
    imports more modules lazily (its first optimizer step pulls in torch._dynamo and sympy), so
    this freezes again whenever the process has imported new modules since the last time: a
    handful of times per process. Returns how many objects are frozen, as counted when they were
    frozen: `gc.get_freeze_count()` walks the whole permanent generation (33 ms for ~320,000
    objects), which the fast path, taken on every rerun, must not pay.
    """
    global _modules_at_freeze, _frozen_count
    if len(sys.modules) == _modules_at_freeze:
        return _frozen_count
    with _freeze_lock:
        if _modules_at_freeze == 0:
            import_page_modules()
        if len(sys.modules) != _modules_at_freeze:
            gc.collect()
            gc.freeze()
            _modules_at_freeze = len(sys.modules)
            _frozen_count = gc.get_freeze_count()
    return _frozen_count
