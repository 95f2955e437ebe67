"""What several pages share: cached data sets, devices and the run store (process-wide,
read-only), the page header, and the live view of background runs."""

from __future__ import annotations

import os

import streamlit as st

from core.data import Dataset, available_datasets, load_dataset
from core.devices import DeviceInfo, list_devices
from core.runs import RunStore, RunStoreError

# The lab's pages, by group: app.py builds the navigation from this and the home page its links.
PAGES = {
    "Start": [("pages/home.py", "Home", ":material/home:")],
    "Learn": [("pages/activations.py", "Activations and neurons", ":material/function:"),
              ("pages/layers.py", "Layers and CNNs", ":material/layers:"),
              ("pages/losses.py", "Losses and optimizers", ":material/trending_down:")],
    "Train": [("pages/train.py", "Train", ":material/model_training:"),
              ("pages/experiments.py", "Experiments", ":material/table_chart:"),
              ("pages/metrics.py", "Metrics", ":material/analytics:"),
              ("pages/kfold.py", "K-fold", ":material/view_week:"),
              ("pages/fitting.py", "Under- and overfitting", ":material/show_chart:")],
    "Play": [("pages/draw.py", "Draw a digit", ":material/draw:")],
}

TRAIN_COLOR = "#1f77b4"   # one colour for train ...
VAL_COLOR = "#ff7f0e"     # ... and one for validation, on every page
SPLIT_SCALE = {"domain": ["train", "validation"], "range": [TRAIN_COLOR, VAL_COLOR]}
ACTIVE = ("queued", "running")
_NAVIGATION_FIXED = False
DONE = ("finished", "cancelled")


def data_dir() -> str | None:
    return os.environ.get("MNIST_LAB_DATA") or None


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
    return _store(os.environ.get("MNIST_LAB_RUNS", "runs"))


def _ensure_navigation() -> None:
    """Make the app's navigation (app.py) run even when a fresh server is first opened on a
    page's URL.

    Streamlit decides per process whether the app uses the old `pages/` folder mode, and keeps
    that mode until some run of app.py calls st.navigation. When the first request of a fresh
    server is a page URL (a shared link to /train), Streamlit runs that page file directly in
    folder mode, app.py never runs, and the sidebar lists every file of pages/. Switching the
    mode off and rerunning lets app.py define the navigation and open the same page. Streamlit
    offers no option for this, hence the private flag.
    """
    global _NAVIGATION_FIXED
    from streamlit.runtime.pages_manager import PagesManager

    # Once per process: after it, app.py's st.navigation keeps the flag off in a real server.
    # (AppTest resets the flag before every run and runs pages directly; rerunning there each
    # time would drop the button click that caused the run.)
    if PagesManager.uses_pages_directory and not _NAVIGATION_FIXED:
        _NAVIGATION_FIXED = True
        PagesManager.uses_pages_directory = False
        st.rerun()


def header(title: str, purpose: str) -> None:
    """Every page starts the same way: a title and one line saying what it is for."""
    _ensure_navigation()
    st.title(title)
    st.caption(purpose)


def dataset_banner(ds: Dataset) -> None:
    """Say which data set is in use; the offline sample always says it is a sample."""
    if ds.notice:
        st.warning(ds.notice, icon=":material/wifi_off:")
    elif ds.is_sample:
        st.info("Using the offline sample: 5,000 real MNIST digits (4,000 train / 1,000 test).")


def run_label(run: dict) -> str:
    acc = f", test {run['test_accuracy']:.2%}" if run.get("test_accuracy") is not None else ""
    return f"{run['name']} ({run['model']}, {run['status']}{acc})"


def pick_run(label: str, runs: list[dict], key: str, default: str | None = None) -> str | None:
    """A selectbox of runs that remembers its choice across pages (plain session_state key,
    since widget state is dropped when a page is left) and follows `?run=` in the URL."""
    if not runs:
        return None
    ids = [r["id"] for r in runs]
    by_id = {r["id"]: r for r in runs}
    wanted = st.query_params.get("run") or st.session_state.get("current_run") or default
    index = ids.index(wanted) if wanted in ids else 0
    choice = st.selectbox(label, ids, index=index, format_func=lambda i: run_label(by_id[i]), key=key)
    st.session_state["current_run"] = choice
    st.query_params["run"] = choice
    return choice


def no_runs_hint(what: str) -> None:
    st.info(f"No finished run yet to {what}. Train one first.", icon=":material/model_training:")
    st.page_link("pages/train.py", label="Go to the train page", icon=":material/model_training:")


def show_error(exc: Exception) -> None:
    """A user error as one clear message (never a traceback)."""
    st.error(str(exc), icon=":material/error:")


def safe_get(run_id: str) -> dict | None:
    try:
        return store().get(run_id)
    except RunStoreError:
        return None


def finished_runs() -> list[dict]:
    """Runs that have stored test predictions (finished, or stopped after at least one epoch)."""
    return [r for r in store().list() if r["status"] in DONE
            and (store().run_dir(r["id"]) / "predictions.npz").exists()]


@st.cache_data(max_entries=32, show_spinner=False)
def _predictions(root: str, run_id: str, mtime: float) -> dict:
    return RunStore(root).predictions(run_id)


def predictions(run_id: str) -> dict:
    """A run's stored test labels, predictions and probabilities (cached per file version)."""
    path = store().run_dir(run_id) / "predictions.npz"
    return _predictions(str(store().root), run_id, path.stat().st_mtime)


def run_dataset_info(run_id: str) -> dict:
    import json

    saved = json.loads((store().run_dir(run_id) / "config.json").read_text())
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


def start_group(configs, group: str) -> list[str]:
    """Start one background job per config, all in one group (k-fold, capacity study)."""
    from core.jobs import start_job

    ds = dataset(configs[0].dataset)
    return [start_job(store(), c, data_dir=data_dir(), dataset=ds, group=group) for c in configs]


def group_runs(group: str) -> list[dict]:
    return sorted([r for r in store().list() if r.get("grp") == group], key=lambda r: r["created"])


def groups(prefix: str) -> list[str]:
    return sorted({r["grp"] for r in store().list() if (r.get("grp") or "").startswith(prefix)}, reverse=True)


def launch_group(make_configs, prefix: str) -> None:
    """Start a group of background runs (`make_configs()` builds their configs) named
    `prefix` + a timestamp; a refused setting is shown and starts nothing."""
    import time

    from core.config import ConfigError
    from core.data import DataError
    from core.devices import DeviceError

    try:
        start_group(make_configs(), f"{prefix}{time.strftime('%Y%m%d-%H%M%S')}")
    except (ConfigError, DeviceError, DataError, RunStoreError) as exc:
        show_error(exc)
        return
    st.rerun()


def group_view(prefix: str, label: str, key: str, draw) -> None:
    """Pick one group of runs (newest first) and `draw(runs)` it; while any of its runs is
    queued or running the view refreshes itself every 1.5 s, and once more when they end."""
    names = groups(prefix)
    if not names:
        return
    group = st.selectbox(label, names, key=key)
    active = any(r["status"] in ACTIVE for r in group_runs(group))

    @st.fragment(run_every=1.5 if active else None)
    def view():
        runs = group_runs(group)
        draw(runs)
        if active and not any(r["status"] in ACTIVE for r in runs):
            st.rerun()

    view()


@st.cache_resource(max_entries=8, show_spinner="Loading the model...")
def _classifier(run_dir: str, version: float):
    from core.inference import load_classifier

    return load_classifier(run_dir)


def classifier(run_id: str):
    """A stored run's model for inference, loaded once per weights file version and shared
    (finished models are never trained further, so sharing them is safe)."""
    folder = store().run_dir(run_id)
    weights = folder / "weights_best.pt" if (folder / "weights_best.pt").exists() else folder / "weights_last.pt"
    return _classifier(str(folder), weights.stat().st_mtime if weights.exists() else 0.0)
