"""Widgets several pages use: which data set is in use, picking a run, a clear error instead
of a traceback, starting a group of background runs, and a live view of a group."""

from __future__ import annotations

import streamlit as st

from core.config import ConfigError
from core.data import Dataset, DataError
from core.devices import DeviceError
from core.experiments import group_progress
from core.models import ArchitectureError
from core.store import RunStoreError
from ui.state import ACTIVE, finished_runs, group_runs, groups

USER_ERRORS = (ConfigError, DeviceError, DataError, ArchitectureError, RunStoreError, ValueError)


def dataset_banner(ds: Dataset) -> None:
    """Say which data set is in use; the offline sample always says it is a sample."""
    if ds.notice:
        st.warning(ds.notice, icon=":material/wifi_off:")
    elif ds.is_sample:
        st.info("Using the offline sample: 5,000 real MNIST digits (4,000 train / 1,000 test).")


def run_label(run: dict) -> str:
    acc = f", test {run['test_accuracy']:.2%}" if run.get("test_accuracy") is not None else ""
    return f"{run['name']} ({run['model']}, {run['status']}{acc})"


def link_warning(name: str, value: str, allowed: str, default) -> None:
    """The one warning every page gives for a bad address-bar parameter (the train page's words)."""
    st.warning(f"The shared link has a bad setting, so the default is shown instead: {name}: {allowed}, "
               f"got {value[:40]!r} (showing {default})", icon=":material/link_off:")


def query_int(name: str, default: int, low: int, high: int) -> int:
    """An integer address-bar parameter (`?k=5`), or `default` with a warning when it is not a
    whole number from `low` to `high`."""
    raw = st.query_params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        value = None
    if value is None or not low <= value <= high:
        link_warning(name, raw, f"must be a whole number from {low} to {high}", default)
        return default
    return value


def query_run(ids: list[str], fallback: str | None) -> str | None:
    """The run `?run=` names when it is one of `ids`; otherwise a warning (for a run not here)
    and `fallback`."""
    wanted = st.query_params.get("run")
    if wanted and wanted not in ids:
        link_warning("run", wanted, "no such finished run here", "the default run")
        return fallback
    return wanted or fallback


def pick_run(label: str, runs: list[dict], key: str, default: str | None = None) -> str | None:
    """A selectbox of runs that remembers its choice across pages (plain session_state key,
    since widget state is dropped when a page is left) and follows `?run=` in the URL."""
    if not runs:
        return None
    ids = [r["id"] for r in runs]
    by_id = {r["id"]: r for r in runs}
    wanted = query_run(ids, st.session_state.get("current_run") or default)
    index = ids.index(wanted) if wanted in ids else 0
    choice = st.selectbox(label, ids, index=index, format_func=lambda i: run_label(by_id[i]), key=key)
    st.session_state["current_run"] = choice
    st.query_params["run"] = choice
    return choice


def no_runs_hint(what: str) -> None:
    st.info(f"No finished run yet to {what}. Train one first.", icon=":material/model_training:")
    st.page_link("pages/train.py", label="Go to the train page", icon=":material/model_training:")


def finished_runs_or_stop(what: str) -> list[dict]:
    """The finished runs a page works on; without any, the starters' progress (while a fresh
    lab's starter runs train) or a hint to train first, and the page stops there."""
    runs = finished_runs()
    if not runs:
        if not waiting_for_starters(lambda: bool(finished_runs())):
            no_runs_hint(what)
        st.stop()
    return runs


def waiting_for_starters(ready) -> bool:
    """While the starter runs of a fresh lab train (core.starters), show their progress and
    refresh until `ready()` is true; returns False when no starter is training."""
    from ui.state import starters_running

    if not starters_running():
        return False

    @st.fragment(run_every=1.5)
    def progress():
        if ready():
            st.rerun()
        runs = starters_running()
        if not runs:
            st.rerun()
        st.info("A fresh lab: small starter runs are training on the offline sample so that every page has real "
                "results. This page fills in as soon as the first one is done.", icon=":material/hourglass_top:")
        for run in runs[-4:][::-1]:
            prog = run.get("progress")
            done = (prog["epoch"] - 1 + prog["batch"] / prog["batches"]) / prog["epochs"] if prog else 0.0
            st.progress(min(done, 1.0), text=f"{run['name']}: {run['status']}"
                        + (f", epoch {prog['epoch']} of {prog['epochs']}" if prog else ""))
        st.caption(f"{len(runs)} starter run(s) to go.")

    progress()
    return True


def show_error(exc: Exception) -> None:
    """A user error as one clear message (never a traceback)."""
    st.error(str(exc), icon=":material/error:")


def launch(start, show_in: str | None = None) -> bool:
    """Call `start()` (which starts background runs); a refused setting is shown and starts
    nothing. Reruns the page when something started. With `show_in` (the key of a
    `group_view` picker lower on the page) and a `(group, run_ids)` result, the picker moves to
    the group just started: the result shown is the one the person asked for, not an older one."""
    try:
        started = start()
    except USER_ERRORS as exc:
        show_error(exc)
        return False
    if show_in and isinstance(started, tuple) and started and isinstance(started[0], str):
        st.session_state[show_in] = started[0]
    st.rerun()
    return True


def vectorized_note(runs: list[dict]) -> None:
    """Say whether a group trains as one vectorised model, and why not when it could not."""
    info = next((r.get("vectorized") for r in runs if r.get("vectorized")), None)
    if not info:
        return
    if info.get("group"):
        st.caption(f":material/bolt: These {len(info['group'])} models train together as one vectorised model "
                   "(one stack of weights, one pass per batch).")
    elif info.get("reason"):
        st.caption(f"These models train one by one: {info['reason']}.")


def four_decimals(columns) -> dict:
    """A dataframe's column_config showing these number columns at four decimals, one format
    for the lab's accuracies, errors and losses (pandas' own display mixed 0.885 and 0.9238)."""
    return {c: st.column_config.NumberColumn(c, format="%.4f") for c in columns}


def group_view(kind: str, label: str, key: str, draw) -> None:
    """Pick one group of runs (newest first) and `draw(runs)` it; while any of its runs is
    queued or running the view refreshes itself every 1.5 s, and once more when they end."""
    names = groups(kind)
    if not names:
        return
    group = st.selectbox(label, names, key=key)
    active = any(r["status"] in ACTIVE for r in group_runs(group))

    @st.fragment(run_every=1.5 if active else None)
    def view():
        runs = group_runs(group)
        vectorized_note(runs)
        if any(r["status"] in ACTIVE for r in runs):
            done = group_progress(runs)
            st.progress(done["fraction"], text=f"{done['ended']} of {done['runs']} runs ended · "
                                               f"{done['fraction']:.0%} of their epochs done")
        draw(runs)
        if active and not any(r["status"] in ACTIVE for r in runs):
            st.rerun()

    view()


def picked_executor(key: str) -> str:
    """What the executor picker under `key` holds: readable above the picker (its value from the
    last rerun), e.g. for a warning that only concerns this machine; "local" where none is shown."""
    return st.session_state.get(key, "local")


def executor_picker(key: str) -> str:
    """Where jobs train: this machine, or the Ray cluster when MNIST_LAB_RAY_ADDRESS is set
    (no picker at all without it)."""
    from ui.state import executor_names

    names = executor_names()
    if len(names) == 1:
        return names[0]
    return st.radio("Run on", names, horizontal=True, key=key,
                    format_func={"local": "this machine", "ray": "the Ray cluster"}.get)
