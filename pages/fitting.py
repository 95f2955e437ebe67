"""Under- and overfitting: a real experiment with models of growing capacity on a reduced
training set, their train and validation curves, and the final errors against capacity with
the course's regions (underfitting: high/high, overfitting: low/high, good: low/low)."""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from core.config import RunConfig
from core.experiments import (capacity_caption, capacity_frame, curve_verdict, overfit_epoch, regularization_base,
                              regularization_caption, regularization_frame)
from core.launch import launch_capacity, launch_regularization
from ui import charts
from ui.charts import SPLIT_SCALE
from ui.navigation import header
from ui.state import dataset, executor, finished_runs, store
from ui.widgets import four_decimals, group_view, launch, run_label

header("Under- and overfitting", "Too little capacity cannot learn the task; too much memorizes a small training "
                                 "set. See both on real runs.")

st.table(pd.DataFrame({"training error": ["high", "low", "low"], "validation error": ["high", "high", "low"],
                       "diagnosis": ["underfitting", "overfitting", "good fit"],
                       "what to do": ["more capacity, train longer", "more data, regularize (L2, dropout), stop early",
                                      "keep it"]}))

st.subheader("The capacity experiment")
c1, c2, c3, c4 = st.columns(4)
units = c1.multiselect("Hidden units (one dense layer)", [1, 2, 4, 8, 32, 128, 512, 2048], [2, 8, 128, 2048],
                       key="f_units")
subset = c2.number_input("Training digits", 100, 10_000, 500, 100, key="f_subset",
                         help="A small training set makes overfitting show within a few epochs.")
epochs = c3.number_input("Epochs", 2, 200, 40, key="f_epochs")
data_name = c4.selectbox("Data set", ["mnist-sample", "mnist"], key="f_data")
if st.button(f"Train {len(units)} models", type="primary", key="f_go", disabled=not units):
    launch(lambda: launch_capacity(executor(), RunConfig.from_preset("mlp", dataset=data_name, epochs=int(epochs),
                                                                     train_subset=int(subset), lr_schedule="constant",
                                                                     lr=1e-3, batch_size=32), sorted(units),
                                   dataset=dataset(data_name)), show_in="f_group")


# Two panels a row: a facet cannot stretch to its column, and two of this width fit the main column
# of a 1280-pixel projector next to the sidebar (the browser tour checks it).
FACET_WIDTH = 250


def results(runs: list[dict]) -> None:
    histories = {r["id"]: store().history(r["id"]) for r in runs}
    configs = {r["id"]: store().config(r["id"]) for r in runs}
    done = sum(r["status"] == "finished" for r in runs)
    st.caption(f"{done} of {len(runs)} models trained" + (" — the others are queued or running." if done < len(runs)
                                                         else "."))
    rows = []
    for r in runs:
        cap = configs[r["id"]].extra.get("capacity")
        for h in histories[r["id"]]:
            for split, key in (("train", "train_loss"), ("validation", "val_loss")):
                rows.append({"units": f"{cap} units", "cap": cap, "epoch": h["epoch"], "split": split,
                             "loss": h[key]})
    if rows:
        df = pd.DataFrame(rows)
        st.altair_chart(alt.Chart(df).mark_line(point=True).encode(
            x=charts.epoch_x(df["epoch"]), y=alt.Y("loss:Q", title="loss (cross-entropy)",
                                                   scale=charts.value_scale(df["loss"], log=True)),
            color=alt.Color("split:N", scale=alt.Scale(**SPLIT_SCALE), title=None),
            tooltip=["units", "epoch", "split", alt.Tooltip("loss:Q", format=".4f")],
        ).properties(height=170, width=FACET_WIDTH).facet(
            facet=alt.Facet("units:N", sort=alt.SortField("cap"), title=None), columns=2,
            title="Train and validation loss per epoch").configure_legend(orient="top"))
    frame = capacity_frame(runs, histories, configs)
    if not frame.empty:
        long = frame.melt(id_vars=["capacity", "regime"], value_vars=["train_error", "val_error"],
                          var_name="split", value_name="error")
        long["split"] = long["split"].map({"train_error": "train", "val_error": "validation"})
        line = alt.Chart(long).mark_line(point=True).encode(
            x=alt.X("capacity:Q", scale=alt.Scale(type="log"), title="capacity (hidden units, log scale)"),
            y=alt.Y("error:Q", title="error (1 - accuracy)"),
            color=alt.Color("split:N", scale=alt.Scale(**SPLIT_SCALE), title=None),
            tooltip=["capacity", "split", alt.Tooltip("error:Q", format=".3f"), "regime"])
        labels = alt.Chart(frame).mark_text(dy=-12, fontWeight="bold").encode(
            x="capacity:Q", y="val_error:Q", text="regime:N",
            color=alt.Color("regime:N", scale=alt.Scale(domain=["underfitting", "good fit", "overfitting"],
                                                        range=["#d62728", "#2ca02c", "#9467bd"]), legend=None))
        st.altair_chart((line + labels).properties(height=320, title="Final error against capacity"),
                        width="stretch")
        st.dataframe(frame[["capacity", "params", "train_error", "val_error", "regime"]], hide_index=True,
                     column_config=four_decimals(("train_error", "val_error")))
        st.caption(capacity_caption(frame))


group_view("capacity", "Experiment", "f_group", results)

st.subheader("Regularize: the same over-large model with and without L2 and dropout")
st.markdown("The course's remedy for overfitting, on real runs: one hidden layer far too wide for a small training "
            "set, trained four times: without regularization, with L2 on its weights (Keras' "
            "`kernel_regularizer=l2(λ)`: λ·Σw² added to the loss), with dropout, and with both.")
c1, c2, c3, c4 = st.columns(4)
r_units = c1.number_input("Hidden units", 64, 4096, 2048, 64, key="r_units")
r_l2 = c2.number_input("L2 λ", 0.0, 0.1, 1e-3, 1e-4, format="%.4f", key="r_l2",
                       help="The slides use 0.0001; 0.001 shows the effect more clearly on 1,000 digits.")
r_dropout = c3.slider("Dropout rate", 0.1, 0.8, 0.5, 0.05, key="r_dropout")
r_epochs = c4.number_input("Epochs", 5, 200, 60, key="r_epochs")
r_subset = st.number_input("Training digits", 200, 10_000, 1000, 100, key="r_subset")
if st.button("Train the four models", type="primary", key="r_go"):
    launch(lambda: launch_regularization(executor(), regularization_base("mnist-sample", int(r_epochs), int(r_subset)),
                                         int(r_units), float(r_l2), float(r_dropout),
                                         dataset=dataset("mnist-sample")), show_in="r_group")


def regularization_results(runs: list[dict]) -> None:
    histories = {r["id"]: store().history(r["id"]) for r in runs}
    arms = {r["id"]: store().config(r["id"]).extra.get("regularization", r["name"]) for r in runs}
    frame = regularization_frame(runs, histories, arms)
    if frame.empty:
        st.info("Waiting for the first epochs...")
        return
    curves = pd.DataFrame([{"arm": arms[rid], "epoch": h["epoch"], "validation loss": h["val_loss"]}
                           for rid, hs in histories.items() for h in hs])
    st.altair_chart(alt.Chart(curves).mark_line(point=True).encode(
        x=charts.epoch_x(curves["epoch"]), y=alt.Y("validation loss:Q", scale=charts.value_scale(curves["validation loss"])),
        color=alt.Color("arm:N", sort=["none", "L2", "dropout", "L2 + dropout"], title=None),
        tooltip=["arm", "epoch", alt.Tooltip("validation loss:Q", format=".4f")],
    ).properties(height=280, title="Validation loss per epoch, one line per arm"), width="stretch")
    st.markdown(regularization_caption(frame))
    st.dataframe(frame, hide_index=True, width="stretch", column_config={
        **four_decimals(c for c in frame.columns
                        if c not in ("arm", "status", "lowest at epoch", "validation loss turned up", "above its lowest")),
        "above its lowest": st.column_config.NumberColumn("above its lowest", format="percent")})
    st.caption("Training error is measured during training (with dropout on), as Keras reports it.")


group_view("regularization", "Regularization study", "r_group", regularization_results)

st.subheader("Any run's curves, annotated")
runs = finished_runs()
if runs:
    by_id = {r["id"]: r for r in runs}
    rid = st.selectbox("Run", list(by_id), key="f_run", format_func=lambda i: run_label(by_id[i]))
    history = store().history(rid)
    turn = overfit_epoch(history)
    marks = [{"epoch": turn, "text": "validation loss turns up here"}] if turn else None
    st.altair_chart(charts.curves(history, "loss", marks=marks), width="stretch")
    if history:
        st.markdown(curve_verdict(history))
else:
    st.caption("No finished runs yet to annotate.")
