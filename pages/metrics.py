"""Metrics: every metric slide of the course on a run the user made, from its stored test
predictions (no retraining): curves, confusion matrix (and how it changed per epoch), a
prediction gallery, per-class precision/recall/specificity/F1/NPV, ROC and PR curves with
AUC, and a threshold slider with the 2x2 matrix and the table of rates.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from core import learned
from core import metrics as M
from core import robustness as R
from core.models import first_layer_weights
from ui import charts
from ui.navigation import header
from ui.state import classifier, predictions, store, test_images_for
from ui.widgets import finished_runs_or_stop, four_decimals, link_warning, pick_run

SUBSET = 1000  # test digits the embedding and the robustness views use (a fixed, seeded subset)
# Every view here uses the run's final weights (weights_last.pt), the ones its stored test predictions
# came from, so the header's accuracy and the robustness view's clean accuracy are of one model.


def subset_index(n: int) -> np.ndarray:
    return np.sort(np.random.default_rng(0).permutation(n)[:SUBSET])


@st.cache_data(max_entries=8, show_spinner="Mapping the hidden layer...")
def embedding_for(run_id: str, version: float, layer: str, method: str) -> pd.DataFrame:
    """2-D map of a hidden layer's activations on the subset of test digits, with what the
    pages show on hover (the digit, true and predicted class)."""
    images, _ = test_images_for(run_id)
    p = predictions(run_id)
    idx = subset_index(len(p["labels"]))
    x = images[idx].astype(np.float32) / 255.0
    xy = learned.embedding(learned.activations(classifier(run_id, "last"), x, layer), method)
    return pd.DataFrame({"x": xy[:, 0], "y": xy[:, 1], "true": p["labels"][idx].astype(str),
                         "predicted": p["preds"][idx].astype(str),
                         "result": np.where(p["labels"][idx] == p["preds"][idx], "right", "wrong"),
                         "index": idx, "image": [learned.digit_data_url(im) for im in x]})


@st.cache_data(max_entries=16, show_spinner="Perturbing the test digits...")
def robustness_for(run_id: str, version: float, kind: str) -> pd.DataFrame:
    images, _ = test_images_for(run_id)
    p = predictions(run_id)
    idx = subset_index(len(p["labels"]))
    return R.accuracy_curve(classifier(run_id, "last"), images[idx] / 255.0, p["labels"][idx], kind, R.AMOUNTS[kind])


@st.cache_data(max_entries=8, show_spinner=False)
def fgsm_direction_for(run_id: str, version: float) -> np.ndarray:
    """FGSM's direction on the subset (one backward pass; it does not depend on ε): once per
    run, not on every move of the ε slider."""
    images, _ = test_images_for(run_id)
    labels = predictions(run_id)["labels"]
    idx = subset_index(len(labels))
    return R.fgsm_direction(classifier(run_id, "last"), images[idx] / 255.0, labels[idx])


@st.cache_data(max_entries=16, show_spinner=False)
def curves_for(run_id: str, version: float, n_classes: int):
    """ROC and PR curves (thinned for drawing) and their areas, computed once per stored file."""
    p = predictions(run_id)
    roc, aucs = M.roc_curves(p["labels"], p["probs"], n_classes)
    pr, aps = M.pr_curves(p["labels"], p["probs"], n_classes)
    return charts.thin(roc, "curve"), aucs, charts.thin(pr, "curve"), aps


header("Metrics", "How good is a trained model, and where does it go wrong? All numbers come from the run's "
                  "stored test predictions.")

runs = finished_runs_or_stop("evaluate")

run_id = pick_run("Run", runs, key="m_run")
pred = predictions(run_id)
labels, preds, probs = pred["labels"], pred["preds"], pred["probs"]
n_classes = probs.shape[1]
classes = [str(c) for c in range(n_classes)]
config = store().config(run_id)
version = store().folder(run_id).version("predictions")  # cache key: the stored file's version
history = store().history(run_id)
if n_classes == 2:
    st.info(f"A binary run: class 1 means \"is a {config.positive_class}\", class 0 means any other digit.")

m = st.columns(4)
m[0].metric("Test accuracy", f"{M.accuracy(labels, preds):.2%}")
m[1].metric("Test samples", f"{len(labels):,}")
m[2].metric("Mistakes", f"{int((labels != preds).sum()):,}")
m[3].metric("Epochs", len(history))



def image_grid(indices, limit: int) -> None:
    """Test images (the first `limit` of `indices`), each captioned with its true class, a mark
    for right or wrong, and its top-3 predicted probabilities."""
    images, why = test_images_for(run_id)
    if images is None:
        st.warning(f"Images cannot be shown: {why}.")
        return
    if not len(indices):
        return
    top_c, top_p = M.top_k(probs[indices[:limit]], min(3, n_classes))
    cols = st.columns(8)
    for i, j in enumerate(indices[:limit]):
        mark = "✓" if labels[j] == preds[j] else "✗"
        cols[i % 8].image(images[j], width=64, caption=f"{mark} true {labels[j]} · " +
                          ", ".join(f"{c} {q:.0%}" for c, q in zip(top_c[i], top_p[i])))


# Only the open tab runs and draws (lazy tabs, bound to ?view= so a link opens a given view):
# drawing every tab's charts and images at once made a first visit slow in the browser.
VIEWS = ["Training curves", "Confusion matrix", "Prediction gallery", "Per-class table", "ROC and PR curves",
         "Threshold", "What it learned", "Robustness"]
if st.query_params.get("view") is not None and st.query_params["view"] not in VIEWS:
    link_warning("view", st.query_params["view"], f"one of {', '.join(VIEWS)}", VIEWS[0])
    del st.query_params["view"]
tabs = st.tabs(VIEWS, key="view", bind="query-params")

if tabs[0].open:
    with tabs[0]:
        if history:
            log = st.checkbox("Log scale for the loss", key="m_log")
            left, right = st.columns(2)
            left.altair_chart(charts.curves(history, "loss", log_loss=log), width="stretch")
            right.altair_chart(charts.curves(history, "accuracy"), width="stretch")
        else:
            st.info("This run has no per-epoch history.")

if tabs[1].open:
    with tabs[1]:
        normalized = st.toggle("Normalize by row (share of each true class)", key="m_norm")
        cm = M.confusion_matrix(labels, preds, n_classes, normalize="true" if normalized else None)
        event = st.altair_chart(charts.confusion_heatmap(pd.DataFrame(cm, index=classes, columns=classes), normalized,
                                                         title="Test set confusion matrix (click a cell)"),
                                width="stretch", on_select="rerun", key="m_cm")
        cells = (event.selection.get("cell") if event and hasattr(event, "selection") else None) or []
        if cells and st.session_state.get("m_last_cell") != cells[0]:
            st.session_state["m_last_cell"] = cells[0]
            st.session_state["m_cell_true"] = int(cells[0]["true"])
            st.session_state["m_cell_pred"] = int(cells[0]["predicted"])
        c1, c2 = st.columns(2)
        counts = M.confusion_matrix(labels, preds, n_classes)
        np.fill_diagonal(counts, -1)
        worst_t, worst_p = np.unravel_index(int(counts.argmax()), counts.shape)  # the most common mistake
        t = c1.selectbox("True class", range(n_classes), index=int(worst_t), key="m_cell_true")
        p = c2.selectbox("Predicted class", range(n_classes), index=int(worst_p), key="m_cell_pred")
        idx = M.select_samples(labels, preds, t, p)
        st.caption(f"{len(idx)} test images with true class {t} predicted as {p}.")
        image_grid(idx, 24)
        if history and "val_confusion" in history[0]:
            st.markdown("**How the mistakes change while the model learns** (validation set, per epoch)")
            epoch = st.slider("Epoch", 1, len(history), len(history), key="m_epoch") if len(history) > 1 else 1
            vcm = np.array(history[epoch - 1]["val_confusion"])
            if normalized:
                vcm = vcm / np.maximum(vcm.sum(axis=1, keepdims=True), 1)
            st.altair_chart(charts.confusion_heatmap(pd.DataFrame(vcm, index=classes, columns=classes), normalized,
                                                     title=f"Validation confusion matrix after epoch {epoch}"),
                            width="stretch")

if tabs[2].open:
    with tabs[2]:
        c1, c2, c3 = st.columns(3)
        any_class = ["any", *range(n_classes)]
        gt = c1.selectbox("True class", any_class, key="m_g_true")
        gp = c2.selectbox("Predicted class", any_class, key="m_g_pred")
        which = c3.radio("Show", ["wrong ones", "right ones", "all"], horizontal=True, key="m_g_which")
        sel = M.select_samples(labels, preds, None if gt == "any" else gt, None if gp == "any" else gp,
                               {"wrong ones": False, "right ones": True, "all": None}[which])
        st.caption(f"{len(sel):,} test images match; the first 32 are shown with their top-3 probabilities.")
        image_grid(sel, 32)

if tabs[3].open:
    with tabs[3]:
        table = M.per_class_table(labels, preds, n_classes)
        st.dataframe(table.style.format({c: "{:.4f}" for c in ["precision", "recall", "specificity", "f1", "npv"]}),
                     hide_index=True, width="stretch",
                     column_config={"recall": st.column_config.NumberColumn("recall (sensitivity)"),
                                    "npv": st.column_config.NumberColumn("negative predictive value")})
        st.caption(f"Overall accuracy {M.accuracy(labels, preds):.4f}. Macro average: every class counts the same; "
                   "weighted average: classes count by their support.")

if tabs[4].open:
    with tabs[4]:
        roc, aucs, pr, aps = curves_for(run_id, version, n_classes)
        shown = st.multiselect("Curves", list(aucs), default=list(aucs), key="m_curves")
        left, right = st.columns(2)
        left.altair_chart(charts.roc_chart(roc[roc.curve.isin(shown)]), width="stretch")
        right.altair_chart(charts.pr_chart(pr[pr.curve.isin(shown)]), width="stretch")
        st.dataframe(pd.DataFrame({"curve": list(aucs), "ROC AUC": list(aucs.values()),
                                   "average precision": [aps.get(k, np.nan) for k in aucs]}),
                     hide_index=True, width="content", column_config=four_decimals(("ROC AUC", "average precision")))

if tabs[5].open:
    with tabs[5]:
        c1, c2 = st.columns(2)
        positive = c1.selectbox("Positive class", range(n_classes), index=n_classes - 1 if n_classes == 2 else 0,
                                key="m_pos")
        threshold = c2.slider("Threshold on its probability", 0.0, 1.0, 0.5, 0.01, key="m_thr")
        counts = M.threshold_counts(labels, probs, positive, threshold)
        point = M.threshold_point(labels, probs, positive, threshold)
        roc, _, pr, _ = curves_for(run_id, version, n_classes)
        left, right = st.columns(2)
        left.altair_chart(charts.roc_chart(roc[roc.curve == str(positive)], point), width="stretch")
        right.altair_chart(charts.pr_chart(pr[pr.curve == str(positive)], point), width="stretch")
        left, right = st.columns(2)
        with left:
            st.markdown(f"**2x2 matrix for class {positive} against the rest**")
            st.table(pd.DataFrame({"predicted positive": [counts["TP"], counts["FP"]],
                                   "predicted negative": [counts["FN"], counts["TN"]]},
                                  index=["actually positive", "actually negative"]))
        with right:
            st.markdown("**The course's table of rates**")
            st.table(pd.DataFrame({"rate": list(M.rates(counts)), "value": [f"{v:.4f}" for v in M.rates(counts).values()]}))

if tabs[6].open:
    with tabs[6]:
        clf = classifier(run_id, "last")
        weights = first_layer_weights(clf.model)
        if weights is not None:
            kind = "unit" if weights.shape[1] == 28 else "filter"
            st.markdown(f"**The first layer's weights**, one image per {kind} (blue: positive, red: negative). An MLP's "
                        "units look for strokes in parts of the digit; a CNN's filters are small edge and blob "
                        "detectors. The train page shows them changing while a run trains.")
            st.image(learned.weight_tiles(weights, upscale=3 if kind == "unit" else 12), clamp=True)
        images, why = test_images_for(run_id)
        if images is None:
            st.warning(f"The map of a hidden layer needs the test images: {why}.")
        else:
            layers = learned.hidden_layers(clf.model)
            c1, c2 = st.columns(2)
            layer = c1.selectbox("Hidden layer", layers, index=len(layers) - 1, key="m_emb_layer")
            method = c2.radio("Map", ["pca", "tsne"], horizontal=True, key="m_emb_method",
                              format_func=lambda m: {"pca": "PCA (linear)", "tsne": "t-SNE (keeps neighbours)"}[m])
            frame = embedding_for(run_id, version, layer, method)
            st.altair_chart(charts.embedding_chart(frame, f"{layer}: {SUBSET:,} test digits, {method.upper()}"),
                            width="stretch")
            wrong = int((frame.result == "wrong").sum())
            st.caption(f"Each dot is a test digit placed by what layer {layer} computes for it, coloured by its true "
                       f"class; the {wrong} crosses are digits the model got wrong. Hover a dot to see the digit.")

if tabs[7].open:
    with tabs[7]:
        images, why = test_images_for(run_id)
        if images is None:
            st.warning(f"Robustness needs the test images: {why}.")
        else:
            c1, c2 = st.columns(2)
            kind = c1.radio("Change the test digits by", list(R.KINDS), horizontal=True, key="m_rob_kind",
                            format_func=lambda k: {"noise": "Gaussian noise", "rotation": "rotation",
                                                   "fgsm": "FGSM adversarial"}[k])
            top = float(R.AMOUNTS[kind][-1])
            # Steps the slider can show exactly (0.01, or 1 degree), so its label and the caption agree.
            step = 1.0 if kind == "rotation" else 0.01
            amount = c2.slider(R.LABELS[kind], 0.0, top, round(top / 3, 2), step, key=f"m_rob_{kind}",
                               format="%d" if kind == "rotation" else "%.2f")
            clf = classifier(run_id, "last")
            idx = subset_index(len(labels))
            clean = images[idx] / 255.0
            direction = fgsm_direction_for(run_id, version) if kind == "fgsm" else None
            changed = R.perturb(clf, clean, labels[idx], kind, amount, direction) if amount else clean
            acc = R.accuracy(clf, changed, labels[idx])
            m = st.columns(2)
            m[0].metric("Accuracy on the clean digits", f"{R.accuracy(clf, clean, labels[idx]):.2%}")
            m[1].metric(f"Accuracy at {R.LABELS[kind]} = {amount:.0f}" if kind == "rotation" else
                        f"Accuracy at {R.LABELS[kind]} = {amount:.2f}", f"{acc:.2%}")
            curve = robustness_for(run_id, version, kind)
            st.altair_chart(charts.robustness_chart(curve, R.LABELS[kind], amount, acc), width="stretch")
            probs8 = clf.predict_proba(changed[:8]).argmax(1)
            cols = st.columns(8)
            for i in range(8):
                cols[i].image(clean[i], width=64, caption=f"clean: {labels[idx][i]}", clamp=True)
                cols[i].image(changed[i], width=64, caption=f"→ predicted {probs8[i]}", clamp=True)
            if kind == "fgsm":
                st.caption("FGSM (Goodfellow et al. 2015) moves every pixel by ±ε in the direction that raises the "
                           "model's loss most, using the model's own gradient. A standard MNIST classifier is "
                           "reported to fall from about 98% to about 41% at ε = 0.2.")
            st.caption(f"Measured on {SUBSET:,} test digits (the same ones for every setting).")
