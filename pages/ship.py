"""Ship: the lecture's last step ("Inference: model -> Ship") on the student's own runs. A run is
exported to ONNX (fp32, fp16, int8), each file is checked on the run's whole test set and timed
next to PyTorch (core.ship), and what it costs on a device class is estimated from its layers
(core.cost). Every stored run is placed on the accuracy-size trade-off, Pareto front marked.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import altair as alt
import pandas as pd
import streamlit as st

from core import cost, ship
from core.export import ExportError
from core.store import RunStoreError
from ui.navigation import header
from ui.state import classifier, data_dir, devices, store
from ui.widgets import finished_runs_or_stop, pick_run, show_error

KB = 1024


@st.cache_data(max_entries=8, show_spinner=False)
def shipped(run_id: str, version: float) -> dict:
    """Export, check and time every variant of a run (10-30 s); cached per weights file version.
    The files' bytes come along for the download buttons."""
    shipment = ship.prepare(store(), run_id, data_dir())
    with tempfile.TemporaryDirectory(prefix="mnist-lab-ship-") as tmp:
        rows = ship.ship(shipment, out_dir=Path(tmp))
        files = {v: Path(p).read_bytes() for v, p in shipment.files.items()}
    return {"rows": rows, "files": files, "costs": shipment.costs(), "tests": len(shipment.test_images)}


@st.cache_data(max_entries=256, show_spinner=False)
def latency_of(run_id: str, version: float) -> float:
    return ship.pytorch_latency_ms(classifier(run_id))


def platforms() -> dict[str, cost.Platform]:
    found = dict(cost.PLATFORMS)
    for d in devices():
        if d.kind == "cuda":
            found[d.id] = cost.gpu_platform(d.name, d.memory_gb)
    return found


def weights_version(run_id: str) -> float:
    return store().folder(run_id).version("weights")


header("Ship", "Inference: model → ship. Export a run to ONNX, make it smaller (fp16, int8), and see what it "
               "costs on the hardware it will run on.")

runs = finished_runs_or_stop("ship")

run_id = pick_run("Run", runs, key="s_run")
try:
    with st.spinner("Exporting to ONNX, quantizing and timing every variant on the whole test set "
                    "(10-30 s the first time)..."):
        report = shipped(run_id, weights_version(run_id))
except (RunStoreError, ExportError, OSError) as exc:
    show_error(exc)
    st.stop()

rows = pd.DataFrame(report["rows"])
fp32_bytes = int(rows.loc[rows.variant == "none", "bytes"].iloc[0])
threads = int(rows.threads.iloc[0])

st.subheader("The variants, measured on this machine")
table = pd.DataFrame({
    "model": rows.model,
    "file (KB)": rows.bytes / KB,
    "weights (KB)": rows.weight_bytes / KB,
    "smaller than fp32": fp32_bytes / rows.bytes,
    "test accuracy (%)": 100 * rows.test_accuracy,
    "agreement (%)": 100 * rows.agreement,
    "one digit (ms)": rows.latency_ms,
    "digits/s at batch 256": rows.throughput,
})
st.dataframe(table, hide_index=True, width="stretch", column_config={
    "file (KB)": st.column_config.NumberColumn(format="%.1f"),
    "weights (KB)": st.column_config.NumberColumn(format="%.1f", help="The weights inside the file, without its graph"),
    "smaller than fp32": st.column_config.NumberColumn(format="%.2fx"),
    "test accuracy (%)": st.column_config.NumberColumn(format="%.2f"),
    "agreement (%)": st.column_config.NumberColumn(format="%.2f", help="Test digits whose predicted class is the "
                                                                       "one the run's own PyTorch model predicted"),
    "one digit (ms)": st.column_config.NumberColumn(format="%.3f", help="Median time for one digit"),
    "digits/s at batch 256": st.column_config.NumberColumn(format="%.0f"),
})
int8 = rows[rows.variant == "int8"].iloc[0]
fp32 = rows[rows.variant == "none"].iloc[0]
st.markdown(
    f"Measured on this machine ({threads} thread(s), ONNX Runtime and PyTorch timed in turn) on the run's "
    f"{report['tests']:,} test digits. int8 is **{fp32.bytes / int8.bytes:.1f}x smaller** than fp32, its test "
    f"accuracy is **{ship.accuracy_change(int8.test_accuracy, fp32.test_accuracy)}**, and it predicts "
    f"the same class as the run's PyTorch model on **{int8.agreement:.2%}** of the digits.")

cols = st.columns(3)
for col, variant, label in zip(cols, ("none", "fp16", "int8"), ("fp32", "fp16", "int8")):
    col.download_button(f"Download {label} .onnx", report["files"][variant], f"{run_id}.{label}.onnx",
                        mime="application/octet-stream", key=f"s_dl_{variant}", icon=":material/download:")
st.caption("Each file needs nothing from the lab: input `pixels`, float32 (N, 1, 28, 28) in [0, 1]; output "
           "`probabilities` (N, classes); the normalisation and the softmax are inside. "
           "`python -m core export RUN --quantize int8 --json` writes the same from the command line.")
with st.expander(f"How int8 was made: what it leaves in float ({len(int8.float_ops)} operations)"):
    st.markdown(f"Calibrated on 300 digits of the run's training split. Weights: {int8.int8_weights}.")
    if int8.float_ops:
        st.dataframe(pd.DataFrame(int8.float_ops), hide_index=True, width="stretch")

st.subheader("On the hardware it will run on")
names = list(platforms())
choice = st.selectbox("Platform", names, key="s_platform", format_func=lambda k: platforms()[k].name,
                      help="A device class stated with round numbers: the estimates below use them.")
platform = platforms()[choice]
st.caption(f"{platform.name}: {platform.about}.")
fits = pd.DataFrame(cost.platform_table(platform, report["rows"], report["costs"]))
st.dataframe(pd.DataFrame({
    "model": rows.model,
    "file (KB)": fits.model_bytes / KB,
    "peak activations (KB)": fits.peak_activation_bytes / KB,
    f"fits the {choice}": fits.why,
    "estimate (ms)": fits.estimated_latency_ms,
    "measured (ms)": rows.latency_ms,
}), hide_index=True, width="stretch", column_config={
    "model": st.column_config.TextColumn(width="small"),
    "file (KB)": st.column_config.NumberColumn(format="%.1f", width="small"),
    "peak activations (KB)": st.column_config.NumberColumn("activations (KB)", format="%.1f", width="small",
                                                           help="Peak: the largest input + output of a layer"),
    f"fits the {choice}": st.column_config.TextColumn(width="medium"),
    "estimate (ms)": st.column_config.NumberColumn(format="%.3f", width="small"),
    "measured (ms)": st.column_config.NumberColumn(format="%.3f", width="small"),
})
fitting = [m for m, ok in zip(rows.model, fits.fits) if ok]
st.markdown(f"On the {choice}, {len(fitting)} of {len(rows)} variants fit"
            + (f" ({', '.join(fitting)})." if fitting else ".")
            + f" The estimate is the model's {cost.totals(report['costs'])['macs']:,} multiply-accumulates at the "
              f"class's rate plus a fixed cost per layer: an *estimate*, next to what was *measured* on this machine.")

st.subheader("What each layer costs")
layers = pd.DataFrame(report["costs"])
layers["activations fp32 (KB)"] = layers.activations * 4 / KB
st.dataframe(layers.drop(columns=["inputs"]), hide_index=True, width="stretch", column_config={
    "layer": st.column_config.TextColumn(width="small"),
    "type": st.column_config.TextColumn(width="medium"),
    "output_shape": st.column_config.TextColumn("output shape", width="small"),
    "params": st.column_config.NumberColumn(format="%d", width="small"),
    "macs": st.column_config.NumberColumn("MACs", format="%d", width="small", help="Multiply-accumulates for one digit"),
    "activations": st.column_config.NumberColumn("values out", format="%d", width="small"),
    "activations fp32 (KB)": st.column_config.NumberColumn("fp32 KB", format="%.1f", width="small"),
})
heavy = layers.loc[layers.macs.idxmax()]
st.caption(f"{heavy.layer} does {heavy.macs / max(layers.macs.sum(), 1):.0%} of the multiply-accumulates; "
           f"{layers.loc[layers.params.idxmax()].layer} holds {layers.params.max() / max(layers.params.sum(), 1):.0%} "
           "of the parameters.")

# --- every run on the trade-off ---------------------------------------------------------------------
st.subheader("Fast, precise, small: every stored run")
runs_frame = pd.DataFrame([{"run": r["id"], "name": r["name"], "model": r["model"], "accuracy": r["test_accuracy"],
                            "size (KB)": 4 * (r["params"] or 0) / KB} for r in runs
                           if r.get("test_accuracy") is not None and r.get("params")])
runs_frame["Pareto front"] = ship.pareto_front(list(zip(runs_frame["size (KB)"], runs_frame.accuracy)))
runs_frame["where"] = runs_frame["Pareto front"].map({True: "Pareto front", False: "behind it"})
runs_frame["selected"] = runs_frame.run == run_id


def padded(values: pd.Series, pad: float, low: float, high: float) -> list[float]:
    """An axis domain around the values with room at both ends: one point, or points at one
    value, still get a readable axis (Vega would otherwise squeeze it to a single tick), and
    the top and bottom points a whole circle (`pad` alone left half of one cut off when the
    values spanned 50 points)."""
    lo, hi = float(values.min()), float(values.max())
    pad = max(pad, 0.06 * (hi - lo))
    return [max(low, lo - pad), min(high, hi + pad)]


def tradeoff(frame: pd.DataFrame, x: str, title: str) -> alt.Chart:
    xs = frame[x].clip(lower=1e-6)
    base = alt.Chart(frame).encode(
        # labelFlush: a tick at an end of the (measured, so arbitrary) domain is labelled inside the
        # chart, not half outside it (the browser tour caught "0.34" over the edge)
        x=alt.X(f"{x}:Q", title=x, axis=alt.Axis(labelFlush=True),
                scale=alt.Scale(type="log", domain=[float(xs.min()) / 1.5, float(xs.max()) * 1.5], nice=False)),
        y=alt.Y("accuracy:Q", title="test accuracy", axis=alt.Axis(format=".1%", labelFlush=True),
                scale=alt.Scale(domain=padded(frame.accuracy, 0.01, 0.0, 1.0), nice=False)),
        tooltip=["name", "model", alt.Tooltip("accuracy:Q", format=".2%"), alt.Tooltip(f"{x}:Q", format=".3g")])
    points = base.mark_circle(size=70, clip=True).encode(
        color=alt.Color("where:N", title=None, scale=alt.Scale(domain=["Pareto front", "behind it"],
                                                                range=["#d62728", "#9ecae1"]),
                        legend=alt.Legend(orient="bottom")))
    front = base.transform_filter(alt.datum.where == "Pareto front").mark_line(color="#d62728", strokeDash=[4, 3])
    chosen = base.transform_filter(alt.datum.selected).mark_point(size=260, color="black", strokeWidth=2)
    return (front + points + chosen).properties(title=title, height=300)


on_front = int(runs_frame["Pareto front"].sum())
left, right = st.columns(2)
left.altair_chart(tradeoff(runs_frame, "size (KB)", "Accuracy against fp32 model size"), width="stretch")
selected_on = bool(runs_frame.loc[runs_frame.selected, "Pareto front"].any())
left.caption(f"{on_front} of {len(runs_frame)} runs are on the Pareto front (red): no other run is both smaller "
             f"and more accurate. The selected run (circled) is {'on' if selected_on else 'not on'} it.")
measured = st.session_state.setdefault("s_latency", {})
measured[run_id] = float(rows.loc[rows.variant == "pytorch", "latency_ms"].iloc[0])  # timed above
if right.button(f"Measure every run's latency ({len(runs_frame)} runs)", key="s_measure"):
    bar = right.progress(0.0, text="Timing PyTorch on one digit, run by run...")
    for i, rid in enumerate(runs_frame.run):
        try:
            measured[rid] = latency_of(rid, weights_version(rid))
        except (RunStoreError, OSError):
            pass
        bar.progress((i + 1) / len(runs_frame), text=f"Timed {i + 1} of {len(runs_frame)} runs")
timed = runs_frame[runs_frame.run.isin(list(measured))].copy()
timed["latency (ms)"] = timed.run.map(measured)
timed["Pareto front"] = ship.pareto_front(list(zip(timed["latency (ms)"], timed.accuracy)))
timed["where"] = timed["Pareto front"].map({True: "Pareto front", False: "behind it"})
right.altair_chart(tradeoff(timed, "latency (ms)", "Accuracy against latency (one digit)"),
                   width="stretch")
right.caption(f"Latency: PyTorch on one digit. {len(timed)} of {len(runs_frame)} runs timed on this machine; "
              f"{int(timed['Pareto front'].sum())} on the front.")
