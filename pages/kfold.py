"""K-fold cross-validation: how the folds are drawn (KFold vs StratifiedKFold, k = 2..10),
the class balance of each fold, and a real k-fold run of a chosen config as background jobs
with per-fold curves, mean and standard deviation."""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from core.config import RunConfig
from core.data import kfold_assignments
from core.devices import bf16_warning
from core.experiments import fold_balance, fold_grid, kfold_summary
from core.models import PRESETS
from core.launch import launch_kfold
from ui import charts
from ui.charts import SPLIT_SCALE
from ui.navigation import header
from ui.state import dataset, devices, executor, store
from ui.widgets import executor_picker, four_decimals, group_view, launch, picked_executor, query_int

header("K-fold cross-validation", "Every sample is validated exactly once: k models, each trained on k-1 folds and "
                                  "validated on the remaining one.")

c1, c2, c3, c4 = st.columns(4)
k = c1.slider("k (number of folds)", 2, 10, query_int("k", 5, 2, 10), key="k_k")
stratified = c2.toggle("Stratified folds", True, key="k_strat",
                       help="StratifiedKFold: the same class balance in every fold. Off: KFold.")
seed = c3.number_input("Seed", 0, 10_000, 0, key="k_seed")
show = c4.slider("Samples drawn in the grid", 20, 100, 60, 10, key="k_show")
st.query_params["k"] = str(k)

# The chart's height includes its title, axis title and legend (Streamlit fits the whole chart to it):
# a fixed frame plus a row per fold, so k = 2 still draws two rows of cells.
GRID_ROW, GRID_FRAME = 30, 110

ds = dataset("mnist-sample")
folds = kfold_assignments(ds.train_labels, k, seed=seed, stratified=stratified)
grid = fold_grid(folds, show)
st.altair_chart(alt.Chart(grid).mark_rect(stroke="white", strokeWidth=0.5).encode(
    x=alt.X("sample:O", title=f"training sample (the first {show} of {len(folds):,})", axis=alt.Axis(labels=False)),
    # no axis title: a rotated title longer than two rows of cells pushed the chart's title out of its box
    y=alt.Y("iteration:N", title=None, sort=None),
    color=alt.Color("role:N", scale=alt.Scale(**SPLIT_SCALE), title=None),
    tooltip=["iteration", "sample", "role"],
).properties(height=GRID_ROW * k + GRID_FRAME,
                 title=f"{'StratifiedKFold' if stratified else 'KFold'} with k = {k}: each row holds one fold out"),
    width="stretch")

balance = fold_balance(ds.train_labels, folds)
spread = balance.std(axis=0).mean()
st.markdown(f"**Class balance of each fold's validation part** (share of each digit). Average spread between folds: "
            f"**{spread:.4f}** — stratified folds keep it near 0.")
long = balance.reset_index().melt(id_vars="fold", var_name="class", value_name="share")
st.altair_chart(alt.Chart(long).mark_bar().encode(
    x=alt.X("fold:O", title="fold", axis=alt.Axis(labelAngle=0)), y=alt.Y("share:Q", title="share of the fold", stack="normalize"),
    color=alt.Color("class:N", title="digit"), tooltip=["fold", "class", alt.Tooltip("share:Q", format=".3f")],
).properties(height=240), width="stretch")

# --- a real k-fold cross-validation ------------------------------------------------------------
st.subheader("Run a k-fold cross-validation")
c1, c2, c3, c4 = st.columns(4)
preset = c1.selectbox("Model", list(PRESETS), index=list(PRESETS).index("mlp-fast"), key="k_model",
                      format_func=lambda p: PRESETS[p]["title"])
epochs = c2.number_input("Epochs per fold", 1, 50, 2, key="k_epochs")
data_name = c3.selectbox("Data set", ["mnist-sample", "mnist"], key="k_data",
                         help="The offline sample trains each fold in seconds.")
precision = c4.selectbox("Precision", ["fp32", "bf16"], key="k_precision",
                         help="The folds of an MLP train together as one vectorised model. On a CPU with bf16 matrix "
                              "units that is about 1.4x faster in bf16, at the same accuracy (bench/kfold_speed.py).")
# the folds train on the best device ("auto") of this machine; a Ray node's hardware is not known here
if picked_executor("k_executor") == "local" and (warning := bf16_warning(precision, devices()[0])):
    st.warning(warning, icon=":material/speed:")
st.caption("Folds of one architecture train together as one vectorised model: one stack of weights, one pass per "
           "batch for all folds. Convolutional models on a CPU train fold by fold (faster there).")
where = executor_picker("k_executor")
if st.button(f"Train {k} folds", type="primary", key="k_go"):
    launch(lambda: launch_kfold(executor(where), RunConfig.from_preset(preset, dataset=data_name, epochs=int(epochs),
                                                                  seed=int(seed), precision=precision,
                                                                  name=f"{preset} {k}-fold"),
                                k, stratified, dataset=dataset(data_name)), show_in="k_group")


def results(runs: list[dict]) -> None:
    summ = kfold_summary(runs)
    m = st.columns(3)
    m[0].metric("Folds done", f"{summ['folds_done']} of {summ['folds']}")
    m[1].metric("Mean validation accuracy", f"{summ['mean']:.2%}" if summ["mean"] is not None else "—")
    m[2].metric("Standard deviation", f"{summ['std']:.2%}" if summ["std"] is not None else "—")
    rows = []
    for r in runs:
        fold = store().config(r["id"]).kfold[1] + 1
        for h in store().history(r["id"]):
            rows.append({"fold": f"fold {fold}", "epoch": h["epoch"], "validation accuracy": h["val_accuracy"],
                         "validation loss": h["val_loss"]})
    if rows:
        frame = pd.DataFrame(rows)
        st.altair_chart(alt.Chart(frame).mark_line(point=True).encode(
            x=charts.epoch_x(frame["epoch"]),
            y=alt.Y("validation accuracy:Q", scale=charts.value_scale(frame["validation accuracy"])),
            color=alt.Color("fold:N"), tooltip=["fold", "epoch", alt.Tooltip("validation accuracy:Q", format=".4f")],
        ).properties(height=280, title="Validation accuracy per epoch, one line per fold"), width="stretch")
    st.dataframe(pd.DataFrame([{"fold": store().config(r["id"]).kfold[1] + 1, "status": r["status"],
                                "validation accuracy": r["last_val_accuracy"],
                                "test accuracy": r["test_accuracy"]} for r in runs]),
                 hide_index=True, column_config=four_decimals(("validation accuracy", "test accuracy")))


group_view("kfold", "Cross-validation", "k_group", results)
