"""Draw a digit: the canvas goes through MNIST's own preprocessing (core.preprocess) and a
stored model classifies it as you draw; the steps, the probabilities, the feature maps or
activations and a saliency map show what the model sees. Drawings can be labelled and kept
as a personal test set ("my handwriting") to evaluate any run on.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st
from matplotlib import colormaps

from core.handwriting import HandwritingSet, default_config
from core.preprocess import canvas_to_mnist_steps
from core.launch import launch_run
from core.store import RunStoreError
from ui import access, charts
from ui.navigation import header
from ui.state import ACTIVE, classifier, dataset, datasets_here, executor, safe_get, store
from ui.widgets import query_run, run_label, show_error

CANVAS = 280

header("Draw a digit", "Draw a digit with the mouse (or a finger); the model classifies it as you draw and shows "
                       "what it sees.")


def digit_runs() -> list[dict]:
    out = []
    for r in store().list(status="finished"):
        if store().folder(r["id"]).has("weights") and r.get("task") != "binary":
            out.append(r)
    return sorted(out, key=lambda r: -(r["test_accuracy"] or 0))


def tile(maps: np.ndarray, cols: int = 8, limit: int = 16) -> np.ndarray:
    """Feature maps (C, H, W) side by side in one image, each scaled to [0, 1] on its own,
    with a 1-pixel gap (one st.image instead of C small ones)."""
    maps = maps[:limit]
    c, h, w = maps.shape
    rows = -(-c // cols)
    out = np.ones((rows * (h + 1) - 1, min(c, cols) * (w + 1) - 1), np.float32)
    for i, m in enumerate(maps):
        lo, hi = float(m.min()), float(m.max())
        r, k = divmod(i, cols)
        out[r * (h + 1):r * (h + 1) + h, k * (w + 1):k * (w + 1) + w] = (m - lo) / (hi - lo) if hi > lo else 0.0
    return out


def upscale(img: np.ndarray, factor: int) -> np.ndarray:
    return np.kron(img, np.ones((factor, factor), np.float32))


def in_square(img: np.ndarray) -> np.ndarray:
    """`img` centred on a black square: the steps' row shows four squares of one height (a
    tall "1" cropped to its strokes, stretched to its column's width, ran far below the row)."""
    h, w = img.shape
    side = max(h, w)
    out = np.zeros((side, side), np.float32)
    out[(side - h) // 2:(side - h) // 2 + h, (side - w) // 2:(side - w) // 2 + w] = img
    return out


# --- the model ------------------------------------------------------------------------------------
runs = digit_runs()
training = [r for r in store().list() if r["status"] in ACTIVE and (r["name"] or "").startswith("draw model")]
if not runs:
    if training:
        st.info("The draw model (the small CNN with augmentation) is training; the canvas opens as soon as it is "
                "done, within about a minute on a laptop CPU.", icon=":material/hourglass_top:")
    else:
        st.info("No trained model yet. Train the draw model (the small CNN with augmentation) in one click: it "
                "takes about half a minute on the full MNIST with a laptop CPU, a few seconds on the offline sample.")
    if not training and st.button("Train the draw model", type="primary", key="d_quick"):
        try:
            name = "mnist" if "mnist" in datasets_here() else "mnist-sample"
            launch_run(executor(), default_config(name), dataset=dataset(name), group="draw")
            st.rerun()
        except Exception as exc:  # noqa: BLE001 - any refusal is shown, nothing started
            show_error(exc)
    if training:
        @st.fragment(run_every=1.0)
        def quick_progress():
            run = safe_get(training[0]["id"])
            if run is None or run["status"] not in ACTIVE:
                st.rerun()
            prog = run.get("progress")
            if prog:
                done = (prog["epoch"] - 1 + prog["batch"] / prog["batches"]) / prog["epochs"]
                st.progress(min(done, 1.0), text=f"Training the draw model: epoch {prog['epoch']} of {prog['epochs']}")
            else:
                st.progress(0.0, text="Training the draw model: starting...")
        quick_progress()
    st.stop()

by_id = {r["id"]: r for r in runs}
wanted = query_run(list(by_id), None)
run_id = st.selectbox("Model", list(by_id), index=list(by_id).index(wanted) if wanted in by_id else 0, key="d_run",
                      format_func=lambda i: run_label(by_id[i]), help="Finished runs, best test accuracy first.")
try:
    clf = classifier(run_id)
except (RunStoreError, OSError) as exc:
    show_error(exc)
    st.stop()
chosen = by_id[run_id]
best = runs[0]  # digit_runs() sorts by test accuracy
data_name = {"mnist-sample": "the offline sample (4,000 training digits)", "mnist": "full MNIST (60,000 digits)"}.get(
    chosen["dataset"], chosen["dataset"])
st.caption(f"{'The most accurate finished model here' if run_id == best['id'] else 'Your pick'}: "
           f"**{chosen['name']}**, trained on {data_name}, {chosen['test_accuracy']:.2%} on its test digits."
           + ("" if clf.config.augment else " It was trained without augmentation; an augmented model (the draw "
                                               "model) reads drawings better."))




@st.cache_resource(max_entries=4, show_spinner="Exporting and quantizing the model to int8 (a few seconds)...")
def shipped_int8(model_run: str, version: float):
    """The draw model as the Ship page ships it: an int8 ONNX file of the same weights, in an
    ONNX Runtime session (one per weights version, shared)."""
    import tempfile
    from pathlib import Path

    from core.ship import int8_for_classifier, session

    model = classifier(model_run)
    with tempfile.TemporaryDirectory(prefix="mnist-lab-draw-int8-") as tmp:
        path = int8_for_classifier(model, dataset(model.config.dataset), Path(tmp) / "int8.onnx")
        return session(path, 1)


use_int8 = st.toggle("Also classify with the shipped int8 model", key="d_int8",
                     help="The same weights exported to ONNX and quantized to int8 (the Ship page), run in ONNX "
                          "Runtime: both predictions side by side.")


# --- canvas and prediction ----------------------------------------------------------------------------
def show_prediction(steps: dict) -> None:
    x = steps["centred"]
    probs = clf.predict_proba(x[None])[0]
    top = int(probs.argmax())
    if use_int8:
        from core.ship import onnx_predict

        weights = store().folder(run_id).weights_path("best")
        sess = shipped_int8(run_id, weights.stat().st_mtime if weights.exists() else 0.0)
        q = onnx_predict(sess, x[None, None].astype(np.float32))[0]
        c1, c2, c3 = st.columns([1, 1, 2])
        c1.metric("PyTorch fp32", str(top), f"{probs[top]:.1%} sure", delta_color="off")
        q_top = int(q.argmax())
        c2.metric("int8 ONNX", str(q_top), f"{q[q_top]:.1%} sure", delta_color="off")
        c3.altair_chart(charts.probability_bars(probs), width="stretch")
        st.caption("The two agree." if q_top == top else
                   f"They disagree: int8 reads a {q_top}, the float model a {top}.")
    else:
        c1, c2 = st.columns([1, 2])
        c1.metric("Prediction", str(top), f"{probs[top]:.1%} sure", delta_color="off")
        c2.altair_chart(charts.probability_bars(probs), width="stretch")
    st.markdown("**What the model sees** — the steps MNIST's digits went through")
    cols = st.columns(4)
    cols[0].image(steps["ink"], caption="your drawing", clamp=True, width="stretch")
    cols[1].image(in_square(steps["cropped"]), caption="cropped to the strokes", clamp=True, width="stretch")
    padded = np.zeros((20, 20), np.float32)  # shown in its 20x20 box
    sh, sw = steps["scaled"].shape
    padded[(20 - sh) // 2:(20 - sh) // 2 + sh, (20 - sw) // 2:(20 - sw) // 2 + sw] = steps["scaled"]
    cols[2].image(upscale(padded, 8), caption=f"scaled to {sw}x{sh} (20x20 box)", clamp=True, width="stretch")
    cols[3].image(upscale(x, 8), caption="centred by mass in 28x28", clamp=True, width="stretch")
    st.session_state["d_last"] = x


def look_inside(x: np.ndarray) -> None:
    st.markdown("**A look inside**")
    cls, sal = clf.saliency(x)
    # An image, not a chart of 784 cells: the browser redraws it on every stroke (interleaved with the
    # chart in one run, on a busy machine: 0.81 s against 0.85 s median from mouse-up to prediction).
    rgb = colormaps["inferno"](sal / sal.max() if sal.max() > 0 else sal, bytes=True)[..., :3]
    st.image(np.repeat(np.repeat(rgb, 10, axis=0), 10, axis=1), width=280,
             caption=f"Saliency: the pixels that move the score of {cls} most (bright: most; |∂score/∂pixel|)")
    for name, kind, value in clf.features(x):
        if kind == "conv" and value.ndim == 3:
            st.image(upscale(tile(value), 3), caption=f"{name}: {value.shape[0]} feature maps "
                     f"{value.shape[1]}x{value.shape[2]} (first {min(16, value.shape[0])})", clamp=True)
        elif kind == "dense" and value.ndim == 1:
            n = len(value)
            width = 32 if n >= 32 else n
            grid = np.zeros(-(-n // width) * width, np.float32)
            grid[:n] = value / value.max() if value.max() > 0 else value
            st.image(upscale(grid.reshape(-1, width), 8), clamp=True,
                     caption=f"{name}: activations of its {n} units ({int((value > 0).sum())} active)")


@st.fragment
def drawing_area() -> None:
    from streamlit_drawable_canvas import st_canvas

    left, right = st.columns([1, 1.4])
    with left:
        c1, c2 = st.columns(2)
        stroke = c1.slider("Stroke width", 4, 40, 18, key="d_stroke")
        eraser = c2.toggle("Eraser", key="d_eraser")
        result = st_canvas(stroke_width=stroke, stroke_color="#000000" if eraser else "#FFFFFF",
                           background_color="#000000", height=CANVAS, width=CANVAS, drawing_mode="freedraw",
                           return_image_data=True, key=f"d_canvas_{st.session_state.get('d_clear', 0)}")
        if st.button("Clear", key="d_clear_btn", icon=":material/delete:"):
            st.session_state["d_clear"] = st.session_state.get("d_clear", 0) + 1
            st.session_state.pop("d_last", None)
            st.rerun(scope="fragment")
        ds = dataset("mnist")
        sample = st.number_input("…or show the model a test digit (its number)", 0, len(ds.test_images) - 1, None,
                                 key="d_sample", placeholder=f"0 to {len(ds.test_images) - 1:,}",
                                 help="Feeds an MNIST test digit instead of the canvas.")
    with right:
        image = None
        if sample is not None:
            image = ds.test_images[int(sample)]
            st.caption(f"Test digit {int(sample)} (label {ds.test_labels[int(sample)]})")
        elif result.image_data is not None:
            image = result.image_data
        steps = canvas_to_mnist_steps(image) if image is not None else None
        if steps is None:
            st.session_state.pop("d_last", None)
            st.info("Draw a digit on the black canvas: large or small, anywhere. The prediction appears here.",
                    icon=":material/draw:")
            return
        show_prediction(steps)
    look_inside(steps["centred"])


drawing_area()

# --- my handwriting ---------------------------------------------------------------------------------
st.subheader("My handwriting")
st.caption("Label what you drew and keep it: a personal test set, stored with the runs, to evaluate any model on.")
# classroom mode: one set per student (and the teacher's); a student with no name yet has none
nameless = access.classroom() and access.owner() is None
hw = HandwritingSet(store().root, access.owner())
c1, c2, c3 = st.columns([1, 1, 2])
# No default: a drawing saved without a choice would be filed as a 0 (a wrong label in the test set).
label = c1.selectbox("What you drew", list(range(10)), index=None, placeholder="pick the digit", key="d_label")
if c2.button("Save drawing", key="d_save"):
    if nameless:
        st.warning("Type your name under the page's title first: your drawings are kept under it.")
    elif st.session_state.get("d_last") is None:
        st.warning("Draw a digit first: the canvas is empty.")
    elif label is None:
        st.warning("Say which digit you drew first (\"What you drew\"), so it is kept with the right label.")
    else:
        n = hw.add(st.session_state["d_last"], int(label))
        st.toast(f"Saved as a {label}; your set has {n} drawings.")
images, labels = (np.zeros((0, 28, 28), np.float32), np.zeros(0, np.int64)) if nameless else hw.load()
c3.metric("Drawings in your set", len(labels))
if len(labels):
    ev = hw.evaluate(clf)
    st.markdown(f"**{by_id[run_id]['name']}** reads **{ev['accuracy']:.1%}** of your {ev['count']} drawings right.")
    cm = pd.DataFrame(ev["confusion"], index=[str(i) for i in range(10)], columns=[str(i) for i in range(10)])
    st.altair_chart(charts.confusion_heatmap(cm, normalized=False, title="Your drawings: true vs predicted"),
                    width="stretch")
    e1, e2 = st.columns(2)
    e1.download_button("Export my handwriting (.npz)", hw.export, "my-handwriting.npz",  # built on click
                       mime="application/octet-stream", key="d_export")
    if e2.button("Clear my handwriting…", key="d_clear_set"):
        st.session_state["d_confirm_clear"] = True
    if st.session_state.get("d_confirm_clear"):
        st.warning(f"Delete all {len(labels)} saved drawings? This cannot be undone.")
        y, n, _ = st.columns([1, 1, 4])
        if y.button("Yes, clear", key="d_clear_yes", type="primary"):  # this person's own set only
            hw.clear()
            st.session_state.pop("d_confirm_clear")
            st.rerun()
        if n.button("Cancel", key="d_clear_no"):
            st.session_state.pop("d_confirm_clear")
            st.rerun()
