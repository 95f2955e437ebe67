"""Neurons and activation functions: f(x) and f'(x), softmax vs sigmoid, one neuron with its
weights and bias, and why a network needs a non-linearity (linear vs ReLU on toy data)."""

from __future__ import annotations

import altair as alt
import numpy as np
import pandas as pd
import streamlit as st

from core.concepts import (ACTIVATION_FACTS, activation_frame, boundary_line, fitted_line_accuracy, line_accuracy, neuron,
                           sigmoid, softmax, step_text, toy_data, train_toy)
from ui.navigation import header

header("Neurons and activation functions", "What a neuron computes, a = f(w·x + b), and how the choice of f "
                                           "changes what a network can learn.")

# --- f(x) and f'(x) ------------------------------------------------------------------------------
st.subheader("Activation functions and their derivatives")
c1, c2, c3 = st.columns(3)
name = c1.selectbox("Function", list(ACTIVATION_FACTS), index=3, key="a_fn")
lo, hi = c2.slider("x range", -10.0, 10.0, (-5.0, 5.0), 0.5, key="a_range")
param = 1.0
if name == "linear":
    param = c3.slider("slope a", -3.0, 3.0, 1.0, 0.1, key="a_slope")
elif name == "leaky_relu":
    param = c3.slider("slope α for x < 0", 0.0, 0.5, 0.1, 0.01, key="a_alpha")
df = activation_frame(name, lo, hi, a=param if name == "linear" else 1.0, alpha=param if name == "leaky_relu" else 0.01)
st.altair_chart(alt.Chart(df).mark_line().encode(
    x=alt.X("x:Q", title="x (the neuron's input w·x + b)"), y=alt.Y("value:Q", title="value"),
    color=alt.Color("curve:N", title=None), tooltip=["curve", alt.Tooltip("x:Q", format=".2f"),
                                                     alt.Tooltip("value:Q", format=".3f")],
).properties(height=280, title=ACTIVATION_FACTS[name]["formula"]), width="stretch")
facts = ACTIVATION_FACTS[name]
st.markdown(f"**Used for:** {facts['used for']}.  \n**Trade-off:** {facts['trade-off']}.")
deriv = df[df.curve == "f'(x)"].value
st.caption(f"{len(deriv)} points per curve; the largest |f'(x)| on this range is {deriv.abs().max():.3f}.")

# --- softmax vs sigmoid ---------------------------------------------------------------------------
st.subheader("Softmax turns scores into probabilities")
c1, c2 = st.columns(2)
text = c1.text_input("Logits (comma separated)", "2.0, 1.0, 0.1, -1.0", key="a_logits")
temperature = c2.slider("Temperature", 0.1, 5.0, 1.0, 0.1, key="a_temp",
                        help="Divides the logits: above 1 flattens the probabilities, below 1 sharpens them.")
try:
    logits = np.array([float(v) for v in text.replace(";", ",").split(",") if v.strip()])
    if len(logits) < 2:
        raise ValueError("give at least two numbers")
except ValueError as exc:
    st.error(f"Logits: {exc}. Example: 2.0, 1.0, 0.1")
    logits = np.array([2.0, 1.0, 0.1])
p = softmax(logits, temperature)
s = sigmoid(logits)
both = pd.DataFrame({"class": [f"class {i}" for i in range(len(logits))] * 2,
                     "value": np.r_[p, s], "function": ["softmax"] * len(p) + ["sigmoid"] * len(s)})
st.altair_chart(alt.Chart(both).mark_bar().encode(
    x=alt.X("class:N", title=None), y=alt.Y("value:Q", scale=alt.Scale(domain=[0, 1]), title="probability"),
    color="function:N", xOffset="function:N", tooltip=["function", "class", alt.Tooltip("value:Q", format=".4f")],
).properties(height=240), width="stretch")
st.markdown(f"Softmax probabilities sum to **{p.sum():.3f}** (one class wins); sigmoids of the same numbers sum to "
            f"**{s.sum():.3f}** (each class judged alone, as in a binary or multi-label output).")

# --- one neuron ------------------------------------------------------------------------------------
st.subheader("One neuron: weights and bias")
c1, c2, c3 = st.columns(3)
w1 = c1.slider("weight w₁", -5.0, 5.0, 1.0, 0.1, key="a_w1")
w2 = c2.slider("weight w₂", -5.0, 5.0, 1.0, 0.1, key="a_w2")
b = c3.slider("bias b", -5.0, 5.0, 0.0, 0.1, key="a_b")
x = np.linspace(-6, 6, 121)
one = pd.DataFrame({"x": x, "a": neuron(x[:, None], [w1], b, "sigmoid")})
left, right = st.columns(2)
left.altair_chart(alt.Chart(one).mark_line().encode(
    x=alt.X("x:Q", title="input x₁"), y=alt.Y("a:Q", title="a = sigmoid(w₁x₁ + b)"), tooltip=["x", "a"],
).properties(height=260, title=f"The bias moves the curve: {step_text(w1, b)}"),
    width="stretch")
X, y = toy_data("moons", 200, seed=0)
pts = pd.DataFrame({"x1": X[:, 0], "x2": X[:, 1], "class": y.astype(str)})
pts["side"] = np.where(X @ np.array([w1, w2]) + b > 0, "positive", "negative")
line = boundary_line([w1, w2], b, (X[:, 0].min() - 0.5, X[:, 0].max() + 0.5), (X[:, 1].min() - 1, X[:, 1].max() + 1))
right.altair_chart((alt.Chart(pts).mark_circle(size=40).encode(
    x=alt.X("x1:Q", title="x₁"), y=alt.Y("x2:Q", title="x₂"), color=alt.Color("class:N"),
    tooltip=["x1", "x2", "class", "side"]) + alt.Chart(line).mark_line(color="black").encode(x="x1:Q", y="x2:Q")
).properties(height=260, title="Decision boundary w₁x₁ + w₂x₂ + b = 0"), width="stretch")
fitted = st.cache_data(fitted_line_accuracy, show_spinner=False)  # the same points on every slider move
correct = line_accuracy(X, y, [w1, w2], b)
st.caption(f"Your line puts {correct:.0%} of these points on their class's side. The line a logistic regression "
           f"fits to them gets {fitted(X, y):.0%}: one neuron draws one straight line, and the moons "
           "curl around each other.")

# --- why non-linearity --------------------------------------------------------------------------
st.subheader("Why a non-linearity matters")
kind = st.radio("Toy data", ["moons", "circles"], horizontal=True, key="a_toy")


@st.cache_data(show_spinner="Training two tiny networks...")
def both_networks(kind: str) -> dict:
    X, y = toy_data(kind, 300, seed=0)
    return {"X": X, "y": y, "linear": train_toy(X, y, "linear"), "relu": train_toy(X, y, "relu")}


res = both_networks(kind)
cols = st.columns(2)
for col, act in zip(cols, ("linear", "relu")):
    r = res[act]
    data = pd.DataFrame({"x1": res["X"][:, 0], "x2": res["X"][:, 1], "class": res["y"].astype(str)})
    regions = alt.Chart(r["grid"]).mark_rect(opacity=0.5).encode(
        x=alt.X("x1:Q", bin=alt.Bin(maxbins=60), title="x₁"), y=alt.Y("x2:Q", bin=alt.Bin(maxbins=60), title="x₂"),
        color=alt.Color("mean(p):Q", scale=alt.Scale(scheme="redblue", domain=[0, 1]), title="P(class 1)"))
    col.altair_chart((regions + alt.Chart(data).mark_circle(size=25, stroke="black", strokeWidth=0.3).encode(
        x="x1:Q", y="x2:Q", color=alt.Color("class:N", legend=None))).properties(
        height=280, title=f"{'Linear' if act == 'linear' else 'ReLU'} activations: {r['accuracy']:.0%} right"),
        width="stretch")
    col.metric(f"Accuracy with {act}", f"{r['accuracy']:.1%}")
st.caption("Both networks are 2-16-16-1 and trained the same way (Adam, 400 steps). Without a non-linearity the "
           "layers collapse into one linear map, so the boundary is a straight line.")
