"""Losses and optimizers: categorical and binary cross-entropy (and MSE for contrast) on a
prediction the user edits, and SGD, momentum and Adam racing down 2-D loss surfaces."""

from __future__ import annotations

import altair as alt
import numpy as np
import pandas as pd
import streamlit as st

from core.concepts import (SURFACES, binary_crossentropy, categorical_crossentropy, mean_squared_error, race,
                           softmax, surface_grid)
from ui.navigation import header

header("Losses and optimizers", "How wrong is a prediction (the loss), and how the optimizer walks downhill to make "
                                "it less wrong.")

# --- losses -------------------------------------------------------------------------------------------
st.subheader("Loss of one prediction")
c1, c2 = st.columns(2)
true_class = c1.selectbox("True class", list(range(10)), index=3, key="o_true")
confidence = c2.slider("Probability the model gives the true class", 0.01, 0.99, 0.7, 0.01, key="o_conf")
probs = np.full(10, (1 - confidence) / 9)
probs[true_class] = confidence
cce = categorical_crossentropy(true_class, probs)
bce = binary_crossentropy(1.0, confidence)
mse = mean_squared_error(true_class, probs)
m = st.columns(3)
m[0].metric("Categorical cross-entropy", f"{cce:.4f}")
m[1].metric("Binary cross-entropy (is it a " + str(true_class) + "?)", f"{bce:.4f}")
m[2].metric("Mean squared error", f"{mse:.4f}")
st.markdown(f"Categorical cross-entropy is −log(p of the true class) = −log({confidence:.2f}) = **{cce:.4f}**: 0 when "
            "the model is sure and right, growing without bound as it becomes sure and wrong. Binary cross-entropy is "
            "the same for one yes/no output. MSE punishes a confident mistake far less, which is why classifiers "
            "are trained with cross-entropy.")
true_sq = (1 - confidence) ** 2
other_sq = ((1 - confidence) / 9) ** 2
st.markdown(f"The mean squared error averages over all 10 outputs: the true class's squared error "
            f"(1 − {confidence:.2f})² = **{true_sq:.4f}** (the curve below) plus each of the 9 others' "
            f"({(1 - confidence) / 9:.4f})² = {other_sq:.6f}, divided by 10: ({true_sq:.4f} + 9 × {other_sq:.6f}) / 10 "
            f"= **{mse:.4f}**.")
curve = pd.DataFrame({"p": np.linspace(0.01, 0.99, 99)})
curve["cross-entropy"] = -np.log(curve.p)
curve["squared error of the true class"] = (1 - curve.p) ** 2
long = curve.melt("p", var_name="loss", value_name="value")
st.altair_chart((alt.Chart(long).mark_line().encode(
    x=alt.X("p:Q", title="probability given to the true class"), y=alt.Y("value:Q", title="loss"),
    color=alt.Color("loss:N", title=None, legend=alt.Legend(orient="top", labelLimit=0)), tooltip=["loss", alt.Tooltip("p:Q", format=".2f"),
                                                    alt.Tooltip("value:Q", format=".3f")])
    + alt.Chart(pd.DataFrame({"p": [confidence]})).mark_rule(strokeDash=[4, 4]).encode(x="p:Q")
).properties(height=220), width="stretch")

st.markdown("**From scores to loss:** the network outputs scores (logits); softmax makes them probabilities, and "
            "the loss reads the true class's probability.")
logits = np.array([2.0, 0.5, -1.0])
st.caption(f"Scores {logits.tolist()} → softmax {np.round(softmax(logits), 3).tolist()} → loss if class 0 is right: "
           f"{categorical_crossentropy(0, softmax(logits)):.3f}")

# --- the optimizer race ------------------------------------------------------------------------------
st.subheader("The fastest way to the lowest point: SGD, momentum and Adam")
c1, c2 = st.columns(2)
surface = c1.selectbox("Loss surface", list(SURFACES), key="o_surface")
steps = c2.slider("Steps", 10, 200, 60, 10, key="o_steps")
c1, c2, c3 = st.columns(3)
lrs = {"SGD": c1.slider("Learning rate (SGD)", 0.01, 1.2, 0.3, 0.01, key="o_lr_sgd"),
       "SGD + momentum": c2.slider("Learning rate (momentum 0.9)", 0.01, 1.2, 0.05, 0.01, key="o_lr_mom"),
       "Adam": c3.slider("Learning rate (Adam)", 0.01, 1.2, 0.3, 0.01, key="o_lr_adam")}
paths = race(surface, lrs, steps)
grid = surface_grid(surface)
(x0, x1), (y0, y1) = SURFACES[surface]["range"]
inside = paths[(paths.x.between(x0, x1)) & (paths.y.between(y0, y1))]
background = alt.Chart(grid).mark_rect().encode(
    x=alt.X("x:Q", bin=alt.Bin(maxbins=60), title="parameter w₁"), y=alt.Y("y:Q", bin=alt.Bin(maxbins=60), title="parameter w₂"),
    color=alt.Color("mean(loss):Q", scale=alt.Scale(scheme="viridis", type="symlog"), title="loss"))
lines = alt.Chart(inside).mark_line(point=alt.OverlayMarkDef(size=18)).encode(
    x="x:Q", y="y:Q", order="step:Q", color=alt.Color("optimizer:N", scale=alt.Scale(scheme="set1")),
    tooltip=["optimizer", "step", alt.Tooltip("loss:Q", format=".4f")])
st.altair_chart((background + lines).properties(height=420, title=f"{surface}: paths from the same start"),
                width="stretch")
summary = paths.groupby("optimizer").agg(steps=("step", "max"), final_loss=("loss", "last"),
                                         diverged=("diverged", "first")).reset_index()
st.dataframe(summary, hide_index=True)
for _, r in summary.iterrows():
    if r["diverged"]:
        st.warning(f"{r['optimizer']} diverged after {r['steps']} steps: its learning rate overshoots so far that "
                   "each step lands higher than the last.")
st.caption("On the valley, SGD's learning rate is limited by the steep direction (too large and it bounces and "
           "diverges), so it crawls along the flat one; momentum builds up speed along it; Adam scales each "
           "parameter's step by its own gradient history.")
