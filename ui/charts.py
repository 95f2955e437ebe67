"""Altair charts drawn from the data frames `core` computes (compute, then display).

Every chart uses the same train/validation colours, names its axes with units, and has
tooltips.
"""

from __future__ import annotations

import altair as alt
import numpy as np
import pandas as pd

from core.experiments import curves_frame

TRAIN_COLOR = "#1f77b4"   # one colour for train ...
VAL_COLOR = "#ff7f0e"     # ... and one for validation, on every page
SPLIT_SCALE = {"domain": ["train", "validation"], "range": [TRAIN_COLOR, VAL_COLOR]}


def epoch_x(epochs, title: str = "epoch") -> alt.X:
    """An epoch axis that reads the same after one epoch as after ten: whole-number ticks, and
    a domain from the first epoch to at least the one after it (a one-point domain made Vega
    print "1.000000" and spread its ticks over nothing)."""
    values = [float(e) for e in epochs] or [1.0]
    lo = int(np.floor(min(values)))
    hi = max(int(np.ceil(max(values))), lo + 1)
    return alt.X("epoch:Q", title=title, scale=alt.Scale(domain=[lo, hi], nice=False),
                 axis=alt.Axis(tickMinStep=1, format="d"))


def value_scale(values, log: bool = False) -> alt.Scale:
    """A value axis whose domain is the values' range with room at both ends (5%, or 5% of the
    value when they are all one number): points never sit on or past the plot's edge, and one
    epoch's pair of points still gets a readable axis."""
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=float)
    if log:
        v = v[v > 0]
    if not len(v):
        return alt.Scale(type="log") if log else alt.Scale(zero=False)
    lo, hi = float(v.min()), float(v.max())
    if log:
        ratio = max((hi / lo) ** 0.05, 1.05)
        return alt.Scale(type="log", domain=[lo / ratio, hi * ratio], nice=False)
    pad = 0.05 * (hi - lo) or 0.05 * abs(lo) or 0.05
    return alt.Scale(zero=False, domain=[lo - pad, hi + pad], nice=False)


def history_frame(history: list[dict]) -> pd.DataFrame:
    """One run's history as long rows (epoch, split, metric, value)."""
    return curves_frame({"run": history})[["epoch", "split", "metric", "value"]]


def curves(history: list[dict], metric: str, log_loss: bool = False, marks: list[dict] | None = None,
           height: int = 260) -> alt.Chart:
    """Train vs validation `metric` per epoch; optional vertical rules (`marks`: epoch, text)."""
    df = history_frame(history)
    df = df[df.metric == metric]
    y_scale = value_scale(df["value"], log=metric == "loss" and log_loss)
    title = "loss (cross-entropy)" if metric == "loss" else "accuracy"
    chart = alt.Chart(df).mark_line(point=True).encode(
        x=epoch_x(df["epoch"]),
        y=alt.Y("value:Q", title=title, scale=y_scale),
        color=alt.Color("split:N", scale=alt.Scale(**SPLIT_SCALE), title=None),
        tooltip=["epoch", "split", alt.Tooltip("value:Q", format=".4f", title=metric)],
    ).properties(height=height, title=f"{metric.capitalize()} per epoch")
    if marks:
        m = pd.DataFrame(marks)
        chart = chart + alt.Chart(m).mark_rule(strokeDash=[4, 4], color="gray").encode(
            x="epoch:Q", tooltip=["text:N"]) + alt.Chart(m).mark_text(align="left", dx=4, dy=-6, color="gray").encode(
            x="epoch:Q", y=alt.value(10), text="text:N")
    return chart


def confusion_heatmap(table: pd.DataFrame, normalized: bool, title: str = "Confusion matrix") -> alt.Chart:
    """A (true x predicted) table as a heatmap; a click selects one cell (true, predicted)."""
    df = table.reset_index(names="true").melt(id_vars="true", var_name="predicted", value_name="value")
    df["true"] = df["true"].astype(str)
    df["predicted"] = df["predicted"].astype(str)
    order = [str(c) for c in table.index]
    pick = alt.selection_point(name="cell", fields=["true", "predicted"], on="click")
    fmt = ".2f" if normalized else "d"
    base = alt.Chart(df).encode(
        x=alt.X("predicted:N", sort=order, title="predicted class", axis=alt.Axis(labelAngle=0)),
        y=alt.Y("true:N", sort=order, title="true class"),
    )
    rect = base.mark_rect().encode(
        color=alt.Color("value:Q", scale=alt.Scale(scheme="blues"), title="share of row" if normalized else "count"),
        opacity=alt.condition(pick, alt.value(1.0), alt.value(0.6)),
        tooltip=["true", "predicted", alt.Tooltip("value:Q", format=fmt, title="share" if normalized else "count")],
    ).add_params(pick)
    text = base.mark_text(fontSize=11).encode(
        text=alt.Text("value:Q", format=fmt),
        color=alt.condition(alt.datum.value > (0.5 if normalized else float(table.values.max()) / 2),
                            alt.value("white"), alt.value("black")),
    )
    return (rect + text).properties(height=380, title=title)


def roc_chart(curve: pd.DataFrame, point: dict | None = None) -> alt.Chart:
    chart = alt.Chart(curve).mark_line().encode(
        x=alt.X("fpr:Q", title="false positive rate (1 - specificity)"),
        y=alt.Y("tpr:Q", title="true positive rate (recall)"),
        color=alt.Color("curve:N", title=None),
        tooltip=["curve", alt.Tooltip("fpr:Q", format=".3f"), alt.Tooltip("tpr:Q", format=".3f")],
    )
    diag = alt.Chart(pd.DataFrame({"fpr": [0, 1], "tpr": [0, 1]})).mark_line(strokeDash=[3, 3], color="gray").encode(
        x="fpr:Q", y="tpr:Q")
    out = chart + diag
    if point:
        out = out + alt.Chart(pd.DataFrame([point])).mark_point(size=140, filled=True, color="red").encode(
            x="fpr:Q", y="tpr:Q", tooltip=[alt.Tooltip("threshold:Q", format=".2f"), "fpr:Q", "tpr:Q"])
    return out.properties(height=320, title="ROC curves (one vs rest)")


def pr_chart(curve: pd.DataFrame, point: dict | None = None) -> alt.Chart:
    chart = alt.Chart(curve).mark_line().encode(
        x=alt.X("recall:Q", title="recall"),
        y=alt.Y("precision:Q", title="precision", scale=alt.Scale(zero=False)),
        color=alt.Color("curve:N", title=None),
        tooltip=["curve", alt.Tooltip("recall:Q", format=".3f"), alt.Tooltip("precision:Q", format=".3f")],
    )
    if point:
        chart = chart + alt.Chart(pd.DataFrame([point])).mark_point(size=140, filled=True, color="red").encode(
            x="recall:Q", y="precision:Q", tooltip=[alt.Tooltip("threshold:Q", format=".2f"), "recall:Q", "precision:Q"])
    return chart.properties(height=320, title="Precision-recall curves")


def probability_bars(probs: np.ndarray, classes=None) -> alt.Chart:
    classes = classes or [str(i) for i in range(len(probs))]
    df = pd.DataFrame({"class": [str(c) for c in classes], "probability": probs.astype(float)})
    top = int(np.argmax(probs))
    df["top"] = ["prediction" if i == top else "other" for i in range(len(probs))]
    return alt.Chart(df).mark_bar().encode(
        x=alt.X("class:N", sort=None, title="class"),
        y=alt.Y("probability:Q", scale=alt.Scale(domain=[0, 1]), title="probability"),
        color=alt.Color("top:N", scale=alt.Scale(domain=["prediction", "other"], range=["#2ca02c", "#9e9e9e"]),
                        legend=None),
        tooltip=["class", alt.Tooltip("probability:Q", format=".3f")],
    ).properties(height=220)


def thin(df: pd.DataFrame, by: str, max_points: int = 400) -> pd.DataFrame:
    """At most `max_points` evenly spaced points per curve (endpoints kept): a PR curve of
    10,000 predictions has 10,000 points, which the browser would draw slowly for no gain."""
    parts = []
    for _, part in df.groupby(by, sort=False):
        if len(part) > max_points:
            part = part.iloc[np.unique(np.linspace(0, len(part) - 1, max_points).round().astype(int))]
        parts.append(part)
    return pd.concat(parts) if parts else df


def embedding_chart(frame: pd.DataFrame, title: str) -> alt.Chart:
    """A 2-D map of digits: colour = true class, a cross = misclassified, the digit on hover."""
    return alt.Chart(frame).mark_point(filled=True, size=40, opacity=0.75).encode(
        x=alt.X("x:Q", axis=None), y=alt.Y("y:Q", axis=None),
        color=alt.Color("true:N", title="true class", scale=alt.Scale(scheme="category10")),
        shape=alt.Shape("result:N", scale=alt.Scale(domain=["right", "wrong"], range=["circle", "cross"]),
                        title=None),
        size=alt.condition(alt.datum.result == "wrong", alt.value(120), alt.value(30)),
        tooltip=["image", "true", "predicted", "index"],  # vega-tooltip draws the "image" field as the picture
    ).properties(height=480, title=title)


def robustness_chart(curve: pd.DataFrame, label: str, amount: float, accuracy: float) -> alt.Chart:
    line = alt.Chart(curve).mark_line(point=True).encode(
        x=alt.X("amount:Q", title=label), y=alt.Y("accuracy:Q", title="test accuracy", scale=alt.Scale(domain=[0, 1])),
        tooltip=[alt.Tooltip("amount:Q", title=label), alt.Tooltip("accuracy:Q", format=".2%")])
    here = alt.Chart(pd.DataFrame([{"amount": amount, "accuracy": accuracy}])).mark_point(
        size=140, filled=True, color="red").encode(x="amount:Q", y="accuracy:Q")
    return (line + here).properties(height=260, title="Accuracy as the digits are changed more")
