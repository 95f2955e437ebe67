"""Layers and CNNs: the layer equation on the course's MLP, convolution on a real digit (kernels,
valid vs same padding) and on a 1-D signal, max and average pooling on the course's 4x4
example, flatten, dropout, batch norm, reshape, and the feature maps of a trained CNN."""

from __future__ import annotations

import altair as alt
import numpy as np
import pandas as pd
import streamlit as st

from core.concepts import (COURSE_POOL_GRID, KERNELS, batchnorm_demo, conv_output_size, convolve1d, convolve2d,
                           dropout_demo, image_frame, pool2d)
from core.cost import feature_maps_text, receptive_fields
from core.models import course_mlp, summary
from ui.navigation import header
from ui.state import classifier, dataset, finished_runs, store
from ui.widgets import no_runs_hint

header("Layers and CNNs", "What each layer does to its input, shown on real digits and on the course's examples.")


def heat(img: np.ndarray, title: str, size: int = 220, scheme: str = "greys", text: bool = False) -> alt.Chart:
    df = image_frame(img)
    base = alt.Chart(df).encode(x=alt.X("col:O", axis=None), y=alt.Y("row:O", axis=None))
    chart = base.mark_rect().encode(color=alt.Color("value:Q", scale=alt.Scale(scheme=scheme), legend=None),
                                    tooltip=["row", "col", alt.Tooltip("value:Q", format=".2f")])
    if text:
        chart = chart + base.mark_text(fontSize=16).encode(text=alt.Text("value:Q", format=".4g"))
    return chart.properties(width=size, height=size, title=title)


# --- the layer equation ---------------------------------------------------------------------------
st.subheader("The layer equation: a⁽ˡ⁾ = f(W⁽ˡ⁾ a⁽ˡ⁻¹⁾ + b⁽ˡ⁾)")
summ = summary(course_mlp())
rows = []
n_in = 784
for r in summ["rows"][1:]:
    units = int(r["output_shape"].strip("()").split(", ")[1])
    rows.append({"layer": r["layer"], "W shape": f"{units} x {n_in}", "b shape": f"{units}",
                 "parameters = units·inputs + units": f"{units}·{n_in} + {units} = {r['params']:,}"})
    n_in = units
st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
st.caption(f"The course's MLP: Flatten 28x28 → 784, then Dense 256, 64, 32 (ReLU) and 10 (softmax): "
           f"{summ['total_params']:,} parameters in total.")

# --- convolution on a digit -----------------------------------------------------------------------
st.subheader("Convolution on a real digit")
ds = dataset("mnist")
c1, c2, c3 = st.columns(3)
index = c1.number_input("Test digit", 0, len(ds.test_labels) - 1, 0, key="l_digit")
kernel_name = c2.selectbox("Kernel", [*KERNELS, "custom"], key="l_kernel")
padding = c3.radio("Padding", ["valid", "same"], horizontal=True, key="l_padding")
if kernel_name == "custom":
    raw = st.text_input("Custom 3x3 kernel (9 numbers, row by row)", "0 1 0 1 -4 1 0 1 0", key="l_custom")
    try:
        values = [float(v) for v in raw.replace(",", " ").split()]
        if len(values) != 9:
            raise ValueError(f"need 9 numbers, got {len(values)}")
        kernel = np.array(values).reshape(3, 3)
    except ValueError as exc:
        st.error(f"Custom kernel: {exc}.")
        kernel = np.array(KERNELS["identity"], float)
else:
    kernel = np.array(KERNELS[kernel_name], float)
digit = ds.test_images[int(index)] / 255.0
out = convolve2d(digit, kernel, padding)
n = conv_output_size(28, 3, padding)
c1, c2, c3 = st.columns([2, 1.2, 2])
c1.altair_chart(heat(digit, f"input 28x28 (label {ds.test_labels[int(index)]})"), width="content")
c2.altair_chart(heat(kernel, "kernel 3x3", 140, "redblue", text=True), width="content")
c3.altair_chart(heat(out, f"output {out.shape[0]}x{out.shape[1]}", scheme="redblue"), width="content")
st.markdown(f"**{padding}** padding: output size = "
            + (f"(28 − 3) / 1 + 1 = **{n}**: the kernel only visits positions where it fits, so the border is lost."
               if padding == "valid" else f"28 / 1 = **{n}**: one ring of zeros around the input keeps the size."))

st.markdown("**1-D convolution** on a signal (a noisy step), with a moving-average kernel")
k1 = st.slider("Kernel length", 1, 15, 5, 2, key="l_k1")
rng = np.random.default_rng(0)
signal = np.r_[np.zeros(30), np.ones(30)] + rng.normal(0, 0.2, 60)
smooth = convolve1d(signal, np.ones(k1) / k1, "same")
st.altair_chart(alt.Chart(pd.DataFrame({"t": np.r_[np.arange(60), np.arange(60)], "value": np.r_[signal, smooth],
                                        "curve": ["signal"] * 60 + [f"convolved (kernel {k1})"] * 60})).mark_line().encode(
    x=alt.X("t:Q", title="position"), y=alt.Y("value:Q", title="value"), color=alt.Color("curve:N", title=None),
    tooltip=["curve", "t", alt.Tooltip("value:Q", format=".3f")]).properties(height=200), width="stretch")

# --- pooling --------------------------------------------------------------------------------------
st.subheader("Max and average pooling")
st.caption("The course's 4x4 example (edit it: four rows of four numbers). A 2x2 window moves by 2: each output is "
           "the maximum, or the average, of one window.")
grid_text = st.text_area("4x4 grid", "\n".join(" ".join(str(v) for v in row) for row in COURSE_POOL_GRID),
                         key="l_grid", height=120)
try:
    grid = np.array([[float(v) for v in line.split()] for line in grid_text.strip().splitlines()])
    if grid.ndim != 2 or grid.shape[0] < 2 or grid.shape[1] < 2:
        raise ValueError("need at least 2 rows and 2 columns of numbers, all rows the same length")
except ValueError as exc:
    st.error(f"Grid: {exc}.")
    grid = np.array(COURSE_POOL_GRID, float)
mx, av = pool2d(grid, 2, "max"), pool2d(grid, 2, "avg")
c1, c2, c3 = st.columns(3)
c1.altair_chart(heat(grid, f"input {grid.shape[0]}x{grid.shape[1]}", 200, "blues", text=True), width="content")
c2.altair_chart(heat(mx, "max pooling 2x2", 140, "blues", text=True), width="content")
c3.altair_chart(heat(av, "average pooling 2x2", 140, "blues", text=True), width="content")
st.markdown(f"Max: `{mx.tolist()}` · average: `{av.tolist()}`")
pool_kind = st.radio("Pooling on the digit's feature map", ["max", "avg"], horizontal=True, key="l_pool_kind")
pooled = pool2d(np.maximum(out, 0), 2, pool_kind)
c1, c2 = st.columns(2)
c1.altair_chart(heat(np.maximum(out, 0), f"feature map after ReLU {out.shape[0]}x{out.shape[1]}"), width="content")
c2.altair_chart(heat(pooled, f"after {pool_kind} pooling {pooled.shape[0]}x{pooled.shape[1]}"), width="content")

# --- flatten, dropout, batch norm, reshape --------------------------------------------------------------
st.subheader("Flatten, dropout, batch normalization, reshape")
tabs = st.tabs(["Flatten", "Dropout", "Batch normalization", "Reshape"])
small = np.arange(1, 13).reshape(3, 4)
with tabs[0]:
    st.markdown(f"A 3x4 grid `{small.tolist()}` becomes a vector of 12: `{small.ravel().tolist()}` — "
                "what Flatten does before the dense layers (28x28 → 784).")
with tabs[1]:
    rate = st.slider("Dropout rate p", 0.0, 0.9, 0.5, 0.1, key="l_rate")
    values = np.ones(20)
    kept, scaled = dropout_demo(values, rate, seed=1)
    st.altair_chart(alt.Chart(pd.DataFrame({"unit": np.arange(20), "output": scaled,
                                            "kept": np.where(kept, "kept", "dropped")})).mark_bar().encode(
        x=alt.X("unit:O"), y=alt.Y("output:Q", title="output (input was 1)"),
        color=alt.Color("kept:N", scale=alt.Scale(domain=["kept", "dropped"], range=["#2ca02c", "#d62728"])),
        tooltip=["unit", "output", "kept"]).properties(height=200), width="stretch")
    st.caption(f"At training time each unit is dropped with probability p = {rate:.1f} and the kept ones are scaled by "
               f"1/(1 − p) = {1 / (1 - rate):.2f}, so the expected output is unchanged; at test time nothing is dropped.")
with tabs[2]:
    batch = np.random.default_rng(2).normal([5.0, -3.0, 0.5], [2.0, 0.5, 4.0], size=(64, 3))
    normed = batchnorm_demo(batch)
    st.dataframe(pd.DataFrame({"feature": ["1", "2", "3"], "mean before": batch.mean(0), "std before": batch.std(0),
                               "mean after": normed.mean(0), "std after": normed.std(0)}), hide_index=True)
    st.caption("Each feature is normalized over the batch to mean 0 and standard deviation 1, then scaled and shifted "
               "by two learned parameters (γ = 1, β = 0 before training).")
with tabs[3]:
    st.markdown(f"A vector of 12 reshaped to 2x6: `{np.arange(1, 13).reshape(2, 6).tolist()}`, or to 3x2x2: "
                f"`{np.arange(1, 13).reshape(3, 2, 2).tolist()}`. The numbers and their order stay; only the shape changes.")

# --- feature maps of a trained CNN -------------------------------------------------------------
st.subheader("Feature maps of a trained CNN")
cnn_runs = [r for r in finished_runs()
            if any(layer["type"] == "conv" for layer in store().config(r["id"]).architecture())]
if not cnn_runs:
    no_runs_hint("show feature maps from (train the small CNN or LeNet-5)")
else:
    by_id = {r["id"]: r for r in cnn_runs}
    rid = st.selectbox("Trained CNN", list(by_id), key="l_run", format_func=lambda i: f"{by_id[i]['name']} "
                       f"({by_id[i]['model']}, test {by_id[i]['test_accuracy']:.2%})")
    clf = classifier(rid)
    maps = clf.features(digit.astype(np.float32))
    fields = receptive_fields(clf.model.layer_specs) + [None]  # + the output layer
    first_field = next((f for (_, kind, _), f in zip(maps, fields) if kind == "conv"), None)
    for (name, kind, value), field in zip(maps, fields):
        if kind == "conv" and value.ndim == 3:
            k = min(8, value.shape[0])
            cols = st.columns(k)
            for i in range(k):
                m = value[i]
                cols[i].image((m - m.min()) / (m.max() - m.min() + 1e-9), clamp=True, width="stretch",
                              caption=f"{name} #{i + 1}")
            st.caption(feature_maps_text(name, value.shape, field, first_field))
