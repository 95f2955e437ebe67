"""Sweeps: search the course's hyperparameters (learning rate, batch, topology, dropout, L2,
optimizer, epochs) with Optuna instead of one run at a time. Build the space, launch, watch
the trials (pruned ones stop early), then read which setting mattered."""

from __future__ import annotations

import math

import altair as alt
import pandas as pd
import streamlit as st

from core import sweeps
from core.config import RunConfig
from core.experiments import readable
from core.launch import launch_run, launch_sweep, resume_sweep
from core.models import PRESETS
from ui import access
from ui.navigation import header
from ui.state import dataset, data_dir, executor, store
from ui.widgets import executor_picker, show_error

header("Sweeps", "Let Optuna search the hyperparameters: grid, random or TPE, with poor trials pruned early. "
                 "Every trial is a normal run on the experiments and metrics pages.")

# --- 1. the space ------------------------------------------------------------------------------------
# The form keeps what the person set while they look at a sweep or visit another page.
KEEP = "session"
c1, c2, c3 = st.columns(3)
model = c1.selectbox("Model", list(PRESETS), key="s_model", persist_state=KEEP)
data_name = c2.selectbox("Data set", ["mnist-sample", "mnist"], key="s_data", persist_state=KEEP)
epochs = c3.number_input("Epochs per trial", 1, 50, 3, key="s_epochs", persist_state=KEEP)
mlp = model.startswith("mlp")

st.markdown("**Search space**")
space: dict = {}
a, b = st.columns(2)
if a.checkbox("Learning rate (log-uniform)", True, key="s_lr_on", persist_state=KEEP):
    lo, hi = a.select_slider("range", [1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0],
                             value=(1e-4, 1e-2), key="s_lr", persist_state=KEEP, format_func=lambda v: f"{v:g}")
    if lo < hi:
        space["lr"] = {"log": [lo, hi]}
sizes = b.multiselect("Batch sizes", [16, 32, 50, 64, 128, 256], [32, 64, 128], key="s_batch", persist_state=KEEP)
if sizes:
    space["batch_size"] = {"choice": sizes}
if mlp:
    a, b = st.columns(2)
    depth = a.slider("Hidden layers (depth)", 1, 4, (1, 3), key="s_depth", persist_state=KEEP)
    space["depth"] = {"int": list(depth)} if depth[0] < depth[1] else {"choice": [depth[0]]}
    widths = b.multiselect("Units per hidden layer (width)", [32, 64, 128, 256, 512], [64, 128, 256], key="s_width", persist_state=KEEP)
    if widths:
        space["width"] = {"choice": widths}
    a, b = st.columns(2)
    dropout = a.slider("Dropout", 0.0, 0.8, (0.0, 0.5), 0.05, key="s_dropout", persist_state=KEEP)
    if dropout[0] < dropout[1]:
        space["dropout"] = {"float": list(dropout)}
    l2 = b.multiselect("L2 λ", [0.0, 1e-5, 1e-4, 1e-3, 1e-2], [0.0, 1e-4, 1e-3], key="s_l2", persist_state=KEEP)
    if l2:
        space["l2"] = {"choice": l2}
opts = st.multiselect("Optimizers", ["adam", "sgd"], ["adam"], key="s_opt", persist_state=KEEP)
if len(opts) > 1:
    space["optimizer"] = {"choice": opts}

c1, c2, c3, c4 = st.columns(4)
strategy = c1.radio("Strategy", sweeps.STRATEGIES, index=2, key="s_strategy", persist_state=KEEP,
                    format_func={"grid": "grid", "random": "random", "tpe": "TPE (learns from trials)"}.get)
trials = c2.number_input("Trials", 1, 500, 16, key="s_trials", persist_state=KEEP)
minutes = c3.number_input("Minutes (0 = no limit)", 0.0, 600.0, 0.0, key="s_minutes", persist_state=KEEP)
pruning = c4.toggle("Prune poor trials", True, key="s_prune", persist_state=KEEP,
                    help="Optuna's median pruner: a trial whose validation accuracy after an epoch is below the "
                         "median of earlier trials at that epoch is stopped.")
try:
    sweeps.check_space(space)
    size = sweeps.space_size(space, strategy)
    st.caption(f"Space: {len(space)} parameter(s), "
               + ("a continuous space (any number of configs)" if math.isinf(size) else f"{size:,} config(s)")
               + (f"; the grid tries {min(size, trials):,}" if strategy == "grid" else "") + ".")
    ok = True
except sweeps.SweepError as exc:
    st.warning(str(exc))
    ok = False
where = executor_picker("s_executor")
if st.button("Launch the sweep", type="primary", key="s_go", disabled=not ok or not space):
    try:
        base = RunConfig.from_preset(model, dataset=data_name, epochs=int(epochs))
        access.check_launch(store(), executor(where).capacity(base.device))  # the trials it trains at once
        dataset(data_name)  # the data is there (a clear message otherwise)
        from core.executors import ray_address

        st.session_state["s_sweep"] = launch_sweep(
            store(), base, space, strategy, int(trials), minutes or None, where, data_dir(),
            ray_address() if where == "ray" else None, pruning,
            parallel=executor(where).capacity(base.device), owner=access.owner())
        st.rerun()
    except Exception as exc:  # noqa: BLE001 - any refusal is one message, nothing started
        show_error(exc)

@st.cache_data(max_entries=16, show_spinner="Computing parameter importances...")
def importances(sweep_id: str, trials: int) -> dict:
    """Optuna's importances of a finished sweep, once per sweep and trial count (fANOVA fits a
    forest: not something to redo on every rerun of the page)."""
    return sweeps.importances(store(), sweep_id)


# --- 2. a sweep ----------------------------------------------------------------------------------------
all_sweeps = sweeps.list_sweeps(store())
if not all_sweeps:
    st.info("No sweep yet: build a space above and launch one (or `python -m core sweep`).")
    st.stop()
ids = [s["sweep_id"] for s in all_sweeps]
wanted = st.session_state.get("s_sweep")
sweep_id = st.selectbox("Sweep", ids, index=ids.index(wanted) if wanted in ids else 0, key="s_pick")
running = sweeps.driver_running(store(), sweep_id)


@st.fragment(run_every=1.5 if running else None)
def view():
    result = sweeps.sweep_result(store(), sweep_id)
    live = sweeps.driver_running(store(), sweep_id)
    spec = next(s for s in all_sweeps if s["sweep_id"] == sweep_id)
    m = st.columns(4)
    m[0].metric("Trials", f"{len(result['trials'])} of {spec['trials']}")
    m[1].metric("Pruned", sum(t["status"] == "pruned" for t in result["trials"]))
    m[2].metric("Best validation accuracy", f"{result['best']['value']:.2%}" if result["best"] else "-")
    m[3].metric("Status", "running" if live else "done")
    mine = access.is_teacher() or (spec.get("owner") is not None and spec.get("owner") == access.student())
    if live and st.button("Cancel the whole sweep", key="s_cancel", disabled=not mine,
                          help=None if mine else "Classroom mode: only the teacher and the student who launched it."):
        sweeps.request_cancel(store(), sweep_id)
    finished_once = (sweeps.sweep_folder(store(), sweep_id) / "result.json").exists()
    if not live and not finished_once:
        st.warning("This sweep's driver stopped before the sweep was done (the app or the machine restarted?). "
                   "Its trials so far are kept.", icon=":material/pause_circle:")
        if st.button("Resume the sweep", key="s_resume", type="primary", disabled=not mine,
                     help=None if mine else "Classroom mode: only the teacher and the student who launched it."):
            from core.executors import ray_address

            try:
                access.check_sweep_resume(store(), spec)  # classroom mode: a launch like any other
            except access.AccessError as exc:
                show_error(exc)
            else:
                resume_sweep(store(), sweep_id, data_dir(), ray_address() if spec["executor"] == "ray" else None)
                st.rerun()
    if not result["trials"]:
        st.info("Waiting for the first trial...")
        return
    table = pd.DataFrame([{"trial": t["trial"], "status": t["status"], "val accuracy": t["value"],
                           "epochs": t["epochs"], "node": t["node"],
                           **{k: readable(v) for k, v in t["params"].items()}, "run": t["run_id"]}
                          for t in result["trials"]])
    st.dataframe(table, hide_index=True, width="stretch")
    curve = sweeps.best_so_far(result)
    st.altair_chart(alt.Chart(curve).mark_line(point=True).encode(
        x=alt.X("trial:Q", axis=alt.Axis(tickMinStep=1)), y=alt.Y("best so far:Q", scale=alt.Scale(zero=False)),
        tooltip=["trial", "best so far", "value", "status"]).properties(height=220, title="Best so far"),
        width="stretch")
    par = sweeps.parallel_frame(result)
    if not par.empty:
        st.altair_chart(alt.Chart(par).mark_line(opacity=0.7).encode(
            x=alt.X("parameter:N", title=None), y=alt.Y("scaled:Q", axis=None),
            detail="trial:N", color=alt.Color("accuracy:Q", scale=alt.Scale(scheme="viridis"),
                                              title="val accuracy"),
            tooltip=["trial", "parameter", "value", "accuracy", "status"]).properties(
            height=280, title="Parallel coordinates: each line a trial (each axis scaled to its range)"),
            width="stretch")
    if not live:
        imp = importances(sweep_id, len(result["trials"]))
        if imp:
            st.altair_chart(alt.Chart(pd.DataFrame({"parameter": list(imp), "importance": list(imp.values())}))
                            .mark_bar().encode(x="importance:Q", y=alt.Y("parameter:N", sort="-x",
                                                                         axis=alt.Axis(labelOverlap=False)))
                            .properties(height=30 * len(imp) + 90, title="Parameter importance (Optuna, fANOVA)"),
                            width="stretch")
    if result["best"] and not live:
        best = result["best"]
        if st.button(f"Train the best config longer ({3 * int(spec['base']['epochs'])} epochs)", key="s_longer"):
            try:
                base = RunConfig.from_dict(spec["base"])
                config = sweeps.apply_params(base, best["params"])
                config = config.replace(epochs=3 * base.epochs, name=f"best of {sweep_id}")
                run_id = launch_run(executor(), config, dataset=dataset(config.dataset))
                st.success(f"Started run {run_id}: watch it on the train page.")
            except Exception as exc:  # noqa: BLE001 - shown, nothing started
                show_error(exc)
    if running and not live:
        st.rerun()


view()
