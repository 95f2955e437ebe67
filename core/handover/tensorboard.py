"""A stored run as TensorBoard event files, written with PyTorch's own SummaryWriter.

Research groups keep their runs in TensorBoard; the lab hands over what it already computed,
read from the store (never recomputed from a new training): per-epoch scalars, the
hyperparameters with the final metrics (TensorBoard's HParams view then compares a sweep's
trials or a k-fold group's folds), the confusion matrix and the first layer's weights as
images, a precision-recall curve per class from the stored test probabilities, and the last
hidden layer's activations on test digits for the embedding projector, with the digits as
sprites. `train --tensorboard DIR` writes the same while it trains (TensorBoardLive, then
write_run for the rest). Each run is one folder named after its id under the output folder.
"""

from __future__ import annotations

import numbers
from pathlib import Path

import numpy as np

from core.callbacks import Callback

# History keys -> TensorBoard tags: training and validation of one quantity share a chart.
SCALAR_TAGS = {"train_loss": "loss/train", "val_loss": "loss/validation", "train_accuracy": "accuracy/train",
               "val_accuracy": "accuracy/validation", "lr": "learning_rate", "seconds": "time/epoch_seconds",
               "samples_per_second": "time/samples_per_second"}
FINAL_METRICS = ("test_accuracy", "test_loss", "best_val_accuracy", "epochs_run", "seconds")
EMBEDDED_DIGITS = 1000  # test digits in the projector (the sample's whole test set)


def _number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and np.isfinite(value)


def epoch_scalars(entry: dict) -> dict[str, float]:
    """One history entry (an epoch log) as {tag: value}: every number the lab stored for the
    epoch (a dict of numbers, the gradient norm per layer, becomes one tag per key)."""
    out = {}
    for key, value in entry.items():
        if key in ("epoch", "val_confusion"):
            continue
        if isinstance(value, dict):
            out.update({f"{key}/{k}": float(v) for k, v in value.items() if _number(v)})
        elif _number(value):
            out[SCALAR_TAGS.get(key, f"epoch/{key}")] = float(value)
    return out


def run_hparams(config: dict) -> dict:
    """The run's config as TensorBoard hyperparameters (numbers, text, booleans): the layers
    as the model's name (a custom stack as its layer types), a k-fold as k and the fold."""
    out = {}
    for key, value in config.items():
        if key in ("layers", "extra", "name"):
            continue
        if key == "kfold":
            if value:
                out["kfold_k"], out["kfold_fold"] = int(value[0]), int(value[1])
            continue
        if isinstance(value, (bool, int, float, str)):
            out[key] = value
    if config.get("layers"):
        out["layers"] = "-".join(layer.get("type", "?") for layer in config["layers"])
    return out


def final_metrics(metrics: dict) -> dict[str, float]:
    return {f"hparam/{k}": float(metrics[k]) for k in FINAL_METRICS if _number(metrics.get(k))}


def confusion_counts(predictions: dict) -> np.ndarray:
    from sklearn.metrics import confusion_matrix

    classes = predictions["probs"].shape[1] if predictions["probs"].shape[1] > 1 else 2
    return confusion_matrix(predictions["labels"], predictions["preds"], labels=list(range(classes)))


def counts_markdown(counts: np.ndarray) -> str:
    """The confusion matrix as a markdown table (rows: true digit, columns: predicted)."""
    n = len(counts)
    rows = ["| true \\ predicted | " + " | ".join(str(c) for c in range(n)) + " |",
            "|" + "---|" * (n + 1)]
    rows += [f"| {i} | " + " | ".join(str(int(v)) for v in row) + " |" for i, row in enumerate(counts)]
    return "\n".join(rows)


def _confusion_figure(counts: np.ndarray):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5))
    ax.imshow(counts, cmap="Blues")
    for (i, j), v in np.ndenumerate(counts):
        ax.text(j, i, int(v), ha="center", va="center", fontsize=7,
                color="white" if v > counts.max() / 2 else "black")
    ax.set(xlabel="predicted", ylabel="true", xticks=range(len(counts)), yticks=range(len(counts)))
    return fig


def embedding_inputs(store, run_id: str, data_dir=None):
    """(images (N, 28, 28) in [0, 1], the layer name, its activations (N, features)) for the
    first test digits of the data the run trained on, from the run's final weights."""
    from core.inference import load_classifier
    from core.learned import activations, hidden_layers
    from core.runner import dataset_of

    dataset, _ = dataset_of(store, run_id, data_dir)
    classifier = load_classifier(store.run_dir(run_id), "last")
    layers = hidden_layers(classifier.model)
    if not layers:
        return None
    images = dataset.test_images[:EMBEDDED_DIGITS].astype(np.float32) / 255
    return images, layers[-1], activations(classifier, images, layers[-1])


def write_run(folder: Path, store, run_id: str, data_dir=None, scalars: bool = True) -> dict:
    """Write run `run_id` of the store into `folder` (created); returns what was written and
    what was left out, and why (the embedding needs the run's data set on this machine)."""
    import torch
    from torch.utils.tensorboard import SummaryWriter
    from torch.utils.tensorboard.summary import hparams

    from core.learned import weight_tiles
    from core.models import first_layer_weights
    from core.store import RunStoreError

    saved, history, metrics = store.saved_config(run_id), store.history(run_id), store.metrics(run_id)
    predictions = store.predictions(run_id)
    step = int(metrics.get("epochs_run") or len(history))
    written, skipped = [], {}
    with SummaryWriter(log_dir=str(folder)) as writer:
        if scalars:
            for entry in history:
                for tag, value in epoch_scalars(entry).items():
                    writer.add_scalar(tag, value, entry["epoch"])
            written.append("scalars")
        for summary in hparams(run_hparams(saved["config"]), final_metrics(metrics)):
            writer.file_writer.add_summary(summary)
        for tag, value in final_metrics(metrics).items():
            writer.add_scalar(tag, value, step)
        written.append("hparams")
        counts = confusion_counts(predictions)
        writer.add_figure("confusion_matrix", _confusion_figure(counts), step)
        writer.add_text("confusion_matrix/counts", counts_markdown(counts), step)
        written.append("confusion_matrix")
        weights = first_layer_weights(store.load_model(run_id, "last"))
        if weights is not None:
            writer.add_image("first_layer_weights", weight_tiles(weights, upscale=4), step, dataformats="HWC")
            written.append("first_layer_weights")
        else:
            skipped["first_layer_weights"] = "the first layer does not read the image"
        probs, labels = predictions["probs"], predictions["labels"]
        for c in range(probs.shape[1]):
            writer.add_pr_curve(f"pr_curve/{c}", labels == c, probs[:, c], step)
        written.append("pr_curves")
        try:
            inputs = embedding_inputs(store, run_id, data_dir)
        except (RunStoreError, OSError, ValueError) as exc:  # the data set is not on this machine
            inputs, skipped["embedding"] = None, str(exc)
        if inputs is not None:
            images, layer, features = inputs
            shown = labels[:len(images)]
            writer.add_embedding(torch.from_numpy(features), metadata=[[str(int(t)), str(int(p))] for t, p in zip(
                shown, predictions["preds"][:len(images)])], metadata_header=["label", "predicted"],
                label_img=torch.from_numpy(images[:, None]), global_step=step, tag=layer)
            written.append("embedding")
        elif "embedding" not in skipped:
            skipped["embedding"] = "the model has no hidden layer"
    return {"run_id": run_id, "folder": str(folder), "written": written, "skipped": skipped}


class TensorBoardLive(Callback):
    """`train --tensorboard DIR`: each epoch's scalars as the epoch ends, into DIR/RUN_ID (the
    same tags as an export), so TensorBoard follows the run; the rest is written by write_run
    when the run is stored."""

    def __init__(self, folder: Path):
        self.folder, self.writer = Path(folder), None

    def on_epoch_end(self, trainer, epoch, log):
        from torch.utils.tensorboard import SummaryWriter

        if self.writer is None:
            self.writer = SummaryWriter(log_dir=str(self.folder))
        for tag, value in epoch_scalars(log).items():
            self.writer.add_scalar(tag, value, log["epoch"])
        self.writer.flush()

    def on_train_end(self, trainer):
        if self.writer is not None:
            self.writer.close()
