"""Experiments: every stored run in one table; overlay the curves of several, compare their
configs, plot a hyperparameter against test accuracy, manage runs (rename, tag, note, delete,
export, import) and time one config on each device of this machine.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import altair as alt
import pandas as pd
import streamlit as st

from core.config import ConfigError
from core.devices import DeviceError
from core.experiments import config_diff, curves_frame, distinct_labels, hyperparameter_frame, runs_table, smooth
from core.launch import launch_group
from core.handover import (WITH_RESULTS, HandoverError, bundle, handover_name, into_mlflow,
                           mlflow_installed)
from core.store import RunStoreError
from ui import access, charts
from ui.navigation import header
from ui.state import ACTIVE, dataset, devices, executor, store
from ui.widgets import run_label, show_error

header("Experiments", "All your runs: sort, filter, compare curves and configs, and manage them.")

runs = store().list()

# --- import first, so an imported run shows up in the table at once --------------------------
with st.expander("Import a run (a zip exported from this lab)"):
    up = st.file_uploader("Run zip", type=["zip"], key="x_import") if access.allowed("import runs") else None
    if up is not None and st.session_state.get("x_imported") != up.file_id:
        try:
            new_id = store().import_zip(up)
            st.session_state["x_imported"] = up.file_id
            st.success(f"Imported as run {new_id}.")
            runs = store().list()
        except RunStoreError as exc:
            show_error(exc)

if not runs:
    st.info("No runs yet. Start one on the train page (or with `python -m core train`).")
    st.page_link("pages/train.py", label="Go to the train page", icon=":material/model_training:")
    st.stop()

def export_bytes(run_id: str) -> bytes:
    """The run's export zip, built only when the button is pressed, in a temporary folder."""
    with tempfile.TemporaryDirectory() as folder:
        return store().export_zip(run_id, Path(folder) / "run.zip").read_bytes()


# --- the table -------------------------------------------------------------------------------
f1, f2, f3 = st.columns([2, 1, 1])
text = f1.text_input("Filter by name, model or note", key="x_text")
statuses = sorted({r["status"] for r in runs})
status = f2.multiselect("Status", statuses, key="x_status")
tags = sorted({t for r in runs for t in r["tags"]})
tag = f3.selectbox("Tag", ["any", *tags], key="x_tag")
shown = store().list(text=text or None, tag=None if tag == "any" else tag)
if status:
    shown = [r for r in shown if r["status"] in status]
table = runs_table(shown)
st.dataframe(table, hide_index=True, width="stretch", column_config={
    "lr": st.column_config.NumberColumn("lr", format="%.5f"),
    "seconds": st.column_config.NumberColumn("seconds", format="%.1f"),
    "best_val_accuracy": st.column_config.NumberColumn("best val acc", format="%.4f"),
    "last_val_accuracy": st.column_config.NumberColumn("last val acc", format="%.4f"),
    "test_accuracy": st.column_config.NumberColumn("test acc", format="%.4f"),
    "params": st.column_config.NumberColumn("parameters", format="%d"),
})
st.caption(f"{len(shown)} of {len(runs)} runs. Click a column header to sort.")
by_id = {r["id"]: r for r in runs}

# --- compare -------------------------------------------------------------------------------------
st.subheader("Compare runs")
with_history = [r["id"] for r in shown if r["epochs_done"]]
chosen = st.multiselect("Runs to compare", with_history, default=with_history[:3], key="x_compare",
                        format_func=lambda i: run_label(by_id[i]))
if chosen:
    c1, c2, c3 = st.columns(3)
    metric = c1.radio("Metric", ["loss", "accuracy"], horizontal=True, key="x_metric")
    weight = c2.slider("Smoothing", 0.0, 0.95, 0.0, 0.05, key="x_smooth",
                       help="Exponential moving average; the raw values stay visible, faint.")
    log = c3.checkbox("Log scale", key="x_log", disabled=metric != "loss")
    df = curves_frame({i: store().history(i) for i in chosen}, distinct_labels({i: by_id[i]["name"] for i in chosen}))
    df = df[df.metric == metric].copy()
    df["smoothed"] = df.groupby(["run", "split"])["value"].transform(lambda v: smooth(v.to_numpy(), weight))
    scale = charts.value_scale(pd.concat([df["value"], df["smoothed"]]), log=log and metric == "loss")
    base = alt.Chart(df).encode(
        x=charts.epoch_x(df["epoch"]),
        # the whole name under the chart (on the right, Vega cuts labels at 160 px: long names
        # that share a start, as a group's do, read the same)
        color=alt.Color("label:N", title="run", legend=alt.Legend(orient="bottom", columns=1, labelLimit=0)),
        strokeDash=alt.StrokeDash("split:N", scale=alt.Scale(domain=["train", "validation"], range=[[1, 0], [5, 3]]),
                                  title="split"),
        tooltip=["label", "split", "epoch", alt.Tooltip("value:Q", format=".4f"),
                 alt.Tooltip("smoothed:Q", format=".4f")],
    )
    # points too: a run of one epoch (a sweep's pruned trial) is a point, not an invisible line
    raw = base.mark_line(opacity=0.25 if weight > 0 else 1.0, point=weight == 0).encode(
        y=alt.Y("value:Q", title=metric, scale=scale))
    chart = raw + base.mark_line(point=True).encode(y=alt.Y("smoothed:Q", scale=scale)) if weight > 0 else raw
    st.altair_chart(chart.properties(height=320 + 22 * len(chosen), title=f"{metric.capitalize()} per epoch (solid: train, dashed: "
                                                       "validation)"), width="stretch")

    configs = {}
    for i in chosen:
        try:
            configs[i] = store().config(i)
        except (RunStoreError, ConfigError):
            pass
    if len(configs) > 1:
        st.markdown("**Configs side by side** (differences highlighted)")
        diff = config_diff(configs)
        only = st.checkbox("Only the differences", key="x_only_diff")
        view = diff[diff.differs] if only else diff
        st.dataframe(view.drop(columns="differs").astype(str).style.apply(
            lambda row: ["background-color: #fff3cd" if diff.loc[row.name, "differs"] else "" for _ in row], axis=1),
            width="stretch")

# --- a hyperparameter against test accuracy ---------------------------------------------------
finished = [r for r in runs if r["status"] == "finished"]
if len(finished) > 1:
    st.subheader("Hyperparameter against test accuracy")
    name = st.selectbox("Hyperparameter", ["lr", "batch_size", "epochs", "optimizer", "params", "seed", "val_split",
                                           "seconds", "model"], key="x_hp")
    cfgs = {}
    for r in finished:
        try:
            cfgs[r["id"]] = store().config(r["id"])
        except (RunStoreError, ConfigError):
            pass
    hp = hyperparameter_frame(finished, cfgs, name)
    if not hp.empty:
        numeric = pd.api.types.is_numeric_dtype(hp[name])
        x = alt.X(f"{name}:{'Q' if numeric else 'N'}", title=name,
                  scale=alt.Scale(type="log") if name in ("lr", "params") else alt.Scale(zero=False))
        st.altair_chart(alt.Chart(hp).mark_circle(size=90).encode(
            x=x, y=alt.Y("test_accuracy:Q", title="test accuracy", scale=alt.Scale(zero=False)),
            tooltip=["name", name, alt.Tooltip("test_accuracy:Q", format=".4f")]).properties(height=280),
            width="stretch")

# --- manage one run ------------------------------------------------------------------------------
st.subheader("Manage a run")
run_id = st.selectbox("Run", [r["id"] for r in runs], key="x_manage", format_func=lambda i: run_label(by_id[i]))
run = by_id[run_id]
c1, c2 = st.columns(2)
new_name = c1.text_input("Name", run["name"], key=f"x_name_{run_id}", max_chars=120)
new_tags = c2.text_input("Tags (comma separated)", ", ".join(run["tags"]), key=f"x_tags_{run_id}")
note = st.text_area("Note", run["note"], key=f"x_note_{run_id}")
b1, b2, b3 = st.columns(3)
if b1.button("Save name, tags and note", key="x_save", disabled=not access.may_edit(run),
             help=None if access.may_edit(run) else "Classroom mode: a student edits only the runs they started."):
    try:
        access.check_may_edit(run, "rename, tag or annotate")
        store().rename(run_id, new_name)
        store().set_tags(run_id, [t.strip() for t in new_tags.split(",")])
        store().set_note(run_id, note)
        st.toast("Saved.")
        st.rerun()
    except RunStoreError as exc:
        show_error(exc)
try:
    if run["status"] not in ACTIVE and store().folder(run_id).has("weights"):
        b2.download_button("Export as zip", data=lambda: export_bytes(run_id),
                           file_name=f"mnist-lab-{run_id}.zip", mime="application/zip", key="x_export")
except RunStoreError as exc:
    show_error(exc)


if b3.button("Delete…", key="x_delete", disabled=run["status"] in ACTIVE or not access.is_teacher(),
             help=None if access.is_teacher() else "Classroom mode: only the teacher can delete runs."):
    st.session_state["x_confirm_delete"] = run_id
if st.session_state.get("x_confirm_delete") == run_id:
    # A confirmation step in the page (not st.dialog), so the click survives a full rerun.
    st.warning(f"Delete **{run['name']}** and all its files (weights, history, predictions)? "
               "This cannot be undone.")
    y, n, _ = st.columns([1, 1, 4])
    if y.button("Yes, delete", type="primary", key="x_delete_yes") and access.allowed("delete runs"):
        st.session_state.pop("x_confirm_delete")
        try:
            store().delete(run_id)
            if st.session_state.get("train_run") == run_id:
                st.session_state.pop("train_run")
            st.rerun()
        except RunStoreError as exc:
            show_error(exc)
    if n.button("Cancel", key="x_delete_no"):
        st.session_state.pop("x_confirm_delete")
        st.rerun()

# --- take runs elsewhere ------------------------------------------------------------------------
st.subheader("Take runs elsewhere")
st.caption("The chosen runs as a Jupyter notebook (the course's steps, one cell each), TensorBoard event files "
           "(curves, hyperparameters, confusion matrix, first layer, PR curves, embedding) or into an MLflow "
           "store. The same as `python -m core runs export RUN OUT --format notebook|tensorboard|mlflow`.")
with_results = [r["id"] for r in shown if r["status"] in WITH_RESULTS]
picked = st.multiselect("Runs to export", with_results, default=[i for i in chosen if i in with_results][:3],
                        key="x_handover_runs", format_func=lambda i: run_label(by_id[i]))
formats = {"Notebook (PyTorch)": ("notebook", "pytorch"), "Notebook (Keras)": ("notebook", "keras"),
           "TensorBoard": ("tensorboard", "pytorch"), "MLflow": ("mlflow", "pytorch"),
           "The lab's zip": ("zip", "pytorch")}
how = st.radio("Format", list(formats), horizontal=True, key="x_handover_format")
fmt, framework = formats[how]
if fmt == "mlflow":
    if not mlflow_installed():
        st.info("MLflow is not installed here (it is large, so it is optional): `pip install -r "
                "requirements-mlflow.txt`, then reload.")
    elif access.allowed("write into an MLflow store on the server (a notebook or TensorBoard download works)"):
        target = st.text_input("MLflow tracking URI, or a folder that becomes a store",
                               str(store().root.resolve().parent / "mlflow"), key="x_mlflow_uri")
        if st.button("Log into MLflow", key="x_mlflow_go", disabled=not picked):
            try:
                with st.spinner(f"Logging {len(picked)} run(s) into MLflow…"):
                    logged = into_mlflow(store(), picked, target)
                uri = logged[0]["uri"]
                st.success(f"Logged {len(picked)} run(s) into {uri}. Open it with `mlflow ui --backend-store-uri "
                           f"{uri}`.")
            except (HandoverError, RunStoreError, OSError) as exc:
                show_error(exc)
elif picked:
    try:
        file_name, mime = handover_name(picked, fmt, framework)
        st.download_button(f"Download ({how})", lambda: bundle(store(), picked, fmt, framework)[0], file_name,
                           mime=mime, key="x_handover_download", on_click="ignore")
    except (HandoverError, RunStoreError) as exc:
        show_error(exc)

# --- hardware comparison -------------------------------------------------------------------------
st.subheader("Hardware comparison")
st.caption("The same config timed for one epoch on each device of this machine: seconds per epoch and speed-up "
           "over the CPU.")
hw_runs = [r for r in runs if r.get("group_kind") == "hardware"]
base_id = st.selectbox("Config to time", [r["id"] for r in runs], key="x_hw_base",
                       format_func=lambda i: run_label(by_id[i]))
if st.button("Time it on every device", key="x_hw_go"):
    try:
        base = store().config(base_id)
        group, _ = launch_group(executor(), [base.replace(device=d.id, epochs=1, early_stopping=0,
                                                          name=f"{base.name or base.model} on {d.id}")
                                             for d in devices()], "hw-", dataset=dataset(base.dataset),
                                vectorize=False)
        st.session_state["x_hw_group"] = group
        st.rerun()
    except (ConfigError, DeviceError, RunStoreError) as exc:
        show_error(exc)
groups = sorted({r["grp"] for r in hw_runs}, reverse=True)
if groups:
    g = st.selectbox("Timing", groups, key="x_hw_group_pick")
    rows = []
    for r in [r for r in hw_runs if r["grp"] == g]:
        h = store().history(r["id"])
        rows.append({"device": r["device"], "status": r["status"],
                     "seconds per epoch": h[0]["seconds"] if h else None,
                     "samples per second": h[0]["samples_per_second"] if h else None})
    df = pd.DataFrame(rows)
    cpu = df.loc[df.device == "cpu", "seconds per epoch"]
    if len(cpu) and cpu.iloc[0]:
        df["speed-up over CPU"] = cpu.iloc[0] / df["seconds per epoch"]
    st.dataframe(df, hide_index=True)
    if any(r["status"] in ACTIVE for r in hw_runs if r["grp"] == g):
        st.caption("Still running: this table refreshes when you come back to the page or press R.")
