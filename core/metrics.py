"""Classification metrics as tidy data, thin wrappers over scikit-learn.

Every function takes true labels and predictions (or probabilities) as arrays and returns a
pandas DataFrame or plain arrays, so the same numbers feed the pages, the CLI and the tests.
The only sums written here are the ones scikit-learn does not return (specificity and
negative predictive value), computed from its confusion matrix.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn import metrics as skm
from sklearn.preprocessing import label_binarize


def confusion_matrix(y_true, y_pred, num_classes: int = 10, normalize: str | None = None) -> np.ndarray:
    """Counts (rows: true class, columns: predicted), or normalized by row with normalize='true'."""
    labels = np.arange(num_classes)
    cm = skm.confusion_matrix(y_true, y_pred, labels=labels, normalize=normalize)
    return np.nan_to_num(cm) if normalize else cm


def confusion_table(y_true, y_pred, num_classes: int = 10, normalize: bool = False) -> pd.DataFrame:
    """The confusion matrix as long-form rows (true, predicted, count, rate) for a heatmap."""
    counts = confusion_matrix(y_true, y_pred, num_classes)
    rates = confusion_matrix(y_true, y_pred, num_classes, normalize="true")
    t, p = np.meshgrid(np.arange(num_classes), np.arange(num_classes), indexing="ij")
    return pd.DataFrame({"true": t.ravel(), "predicted": p.ravel(), "count": counts.ravel(),
                         "rate": rates.ravel(), "value": (rates if normalize else counts).ravel()})


def accuracy(y_true, y_pred) -> float:
    return float(skm.accuracy_score(y_true, y_pred))


def binary_counts(y_true, y_pred, positive: int) -> dict:
    """TP, FP, FN, TN for one class against the rest (from scikit-learn's confusion matrix)."""
    t = np.asarray(y_true) == positive
    p = np.asarray(y_pred) == positive
    tn, fp, fn, tp = skm.confusion_matrix(t, p, labels=[False, True]).ravel()
    return {"TP": int(tp), "FP": int(fp), "FN": int(fn), "TN": int(tn)}


def _ratio(a: float, b: float) -> float:
    return float(a / b) if b else float("nan")


def rates(counts: dict) -> dict:
    """The course's table of rates from TP, FP, FN, TN (nan where a denominator is 0)."""
    tp, fp, fn, tn = counts["TP"], counts["FP"], counts["FN"], counts["TN"]
    return {
        "sensitivity (recall, TPR)": _ratio(tp, tp + fn),
        "specificity (TNR)": _ratio(tn, tn + fp),
        "precision (PPV)": _ratio(tp, tp + fp),
        "negative predictive value (NPV)": _ratio(tn, tn + fn),
        "false positive rate (FPR)": _ratio(fp, fp + tn),
        "accuracy": _ratio(tp + tn, tp + tn + fp + fn),
        "F1": _ratio(2 * tp, 2 * tp + fp + fn),
    }


def threshold_counts(y_true, probs, positive: int, threshold: float) -> dict:
    """For one positive class and a probability threshold: TP, FP, FN, TN and the rates."""
    t = np.asarray(y_true) == positive
    p = np.asarray(probs)[:, positive] >= threshold
    tn, fp, fn, tp = skm.confusion_matrix(t, p, labels=[False, True]).ravel()
    counts = {"TP": int(tp), "FP": int(fp), "FN": int(fn), "TN": int(tn)}
    return {**counts, **rates(counts), "threshold": threshold}


def per_class_table(y_true, y_pred, num_classes: int = 10, class_names=None) -> pd.DataFrame:
    """Per class: precision, recall (sensitivity), specificity, F1, NPV, support; then the
    accuracy, macro average and weighted average rows (as scikit-learn's classification_report)."""
    labels = np.arange(num_classes)
    precision, recall, f1, support = skm.precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0)
    cm = confusion_matrix(y_true, y_pred, num_classes)
    total = cm.sum()
    tp = np.diag(cm)
    fp = cm.sum(axis=0) - tp
    fn = cm.sum(axis=1) - tp
    tn = total - tp - fp - fn
    with np.errstate(invalid="ignore", divide="ignore"):
        specificity = np.where(tn + fp > 0, tn / (tn + fp), 0.0)
        npv = np.where(tn + fn > 0, tn / (tn + fn), 0.0)
    names = list(class_names) if class_names is not None else [str(c) for c in labels]
    table = pd.DataFrame({
        "class": names, "precision": precision, "recall": recall, "specificity": specificity,
        "f1": f1, "npv": npv, "support": support.astype(int),
    })
    sup = support.sum()
    macro = {c: table[c].mean() for c in ["precision", "recall", "specificity", "f1", "npv"]}
    weighted = {c: float((table[c] * support).sum() / sup) if sup else 0.0
                for c in ["precision", "recall", "specificity", "f1", "npv"]}
    extra = pd.DataFrame([
        {"class": "macro avg", **macro, "support": int(sup)},
        {"class": "weighted avg", **weighted, "support": int(sup)},
    ])
    return pd.concat([table, extra], ignore_index=True)


def roc_curves(y_true, probs, num_classes: int = 10) -> tuple[pd.DataFrame, dict]:
    """One-vs-rest ROC curve per class plus micro and macro averages.

    Returns long-form points (curve, fpr, tpr, threshold) and {curve: AUC}. Micro pools every
    (sample, class) decision; macro averages the per-class TPR on a common FPR grid, as in
    scikit-learn's multiclass ROC example.
    """
    y = label_binarize(y_true, classes=np.arange(num_classes))
    if num_classes == 2:
        y = np.hstack([1 - y, y])
    probs = np.asarray(probs)
    frames, aucs = [], {}
    grid = np.linspace(0, 1, 201)
    tprs = []
    for c in range(num_classes):
        if y[:, c].min() == y[:, c].max():
            continue  # a class absent from y_true has no ROC curve
        fpr, tpr, thr = skm.roc_curve(y[:, c], probs[:, c])
        aucs[str(c)] = float(skm.auc(fpr, tpr))
        frames.append(pd.DataFrame({"curve": str(c), "fpr": fpr, "tpr": tpr, "threshold": thr}))
        tprs.append(np.interp(grid, fpr, tpr))
    fpr, tpr, thr = skm.roc_curve(y.ravel(), probs.ravel())
    aucs["micro"] = float(skm.auc(fpr, tpr))
    frames.append(pd.DataFrame({"curve": "micro", "fpr": fpr, "tpr": tpr, "threshold": thr}))
    if tprs:
        mean_tpr = np.mean(tprs, axis=0)
        mean_tpr[0] = 0.0
        aucs["macro"] = float(skm.auc(grid, mean_tpr))
        frames.append(pd.DataFrame({"curve": "macro", "fpr": grid, "tpr": mean_tpr, "threshold": np.nan}))
    return pd.concat(frames, ignore_index=True), aucs


def pr_curves(y_true, probs, num_classes: int = 10) -> tuple[pd.DataFrame, dict]:
    """One-vs-rest precision-recall curve per class plus the micro average; {curve: average precision}."""
    y = label_binarize(y_true, classes=np.arange(num_classes))
    if num_classes == 2:
        y = np.hstack([1 - y, y])
    probs = np.asarray(probs)
    frames, ap = [], {}
    for c in range(num_classes):
        if y[:, c].max() == 0:
            continue
        precision, recall, thr = skm.precision_recall_curve(y[:, c], probs[:, c])
        ap[str(c)] = float(skm.average_precision_score(y[:, c], probs[:, c]))
        frames.append(pd.DataFrame({"curve": str(c), "recall": recall, "precision": precision,
                                    "threshold": np.append(thr, np.nan)}))
    precision, recall, thr = skm.precision_recall_curve(y.ravel(), probs.ravel())
    ap["micro"] = float(skm.average_precision_score(y, probs, average="micro"))
    ap["macro"] = float(skm.average_precision_score(y, probs, average="macro"))
    frames.append(pd.DataFrame({"curve": "micro", "recall": recall, "precision": precision,
                                "threshold": np.append(thr, np.nan)}))
    return pd.concat(frames, ignore_index=True), ap


def top_k(probs, k: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """The k most probable classes of each sample and their probabilities, best first."""
    probs = np.asarray(probs)
    idx = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    return idx, np.take_along_axis(probs, idx, axis=1)


def select_samples(y_true, y_pred, true: int | None = None, pred: int | None = None,
                   correct: bool | None = None) -> np.ndarray:
    """Indices of the samples with this true class, this predicted class and/or right or wrong
    (None = any): the confusion-matrix cell and gallery filters."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    keep = np.ones(len(y_true), dtype=bool)
    if true is not None:
        keep &= y_true == true
    if pred is not None:
        keep &= y_pred == pred
    if correct is not None:
        keep &= (y_true == y_pred) == correct
    return np.flatnonzero(keep)


def threshold_point(y_true, probs, positive: int, threshold: float) -> dict:
    """Where a threshold puts one class on its ROC curve (fpr, tpr) and PR curve (recall, precision)."""
    c = threshold_counts(y_true, probs, positive, threshold)
    return {"threshold": threshold, "fpr": c["false positive rate (FPR)"], "tpr": c["sensitivity (recall, TPR)"],
            "recall": c["sensitivity (recall, TPR)"], "precision": c["precision (PPV)"]}
