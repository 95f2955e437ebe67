"""Ship a stored run: export it (core.export), check every variant in ONNX Runtime on the run's
whole test set against the run's own PyTorch predictions, and time it next to PyTorch eager.

The weights shipped are the ones the run's stored test predictions came from (weights_last.pt:
the model the run ended with, best epoch restored when early stopping did so), so "agreement"
compares a file with the very predictions the lab shows for the run.

Timing is interleaved: every round times each variant in turn (one digit, `SINGLE` times, and
one batch of 256), and the figures are medians over the rounds, so that a machine whose speed
drifts slows every variant alike. ONNX Runtime gets the same thread count as PyTorch.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from core.cost import layer_costs, peak_activation_bytes
from core.export import VARIANTS, ExportError, ExportInfo, ShippedModel, quantization_notes, write_variant
from core.store import RunStoreError

PRECISION = {"none": "fp32", "fp16": "fp16", "int8": "int8"}
LABELS = {"pytorch": "PyTorch fp32 (eager)", "none": "ONNX fp32", "fp16": "ONNX fp16", "int8": "ONNX int8"}
BATCH, ROUNDS, SINGLE = 256, 12, 20
SHIPPABLE = ("finished", "cancelled", "pruned")


def check_shippable(store, run_id: str) -> dict:
    """The run's index row when it can be shipped (it ended, with test predictions and final
    weights), else a RunStoreError saying why."""
    run = store.get(run_id)  # an unknown run is a RunStoreError naming it
    if run["status"] not in SHIPPABLE:
        raise RunStoreError(f"run {run_id} is {run['status']}; only a run that has ended (finished, cancelled or "
                            "pruned after an epoch) can be exported")
    folder = store.folder(run_id)
    for name in ("predictions.npz", "weights_last.pt", "config.json"):
        if not (folder / name).exists():
            raise RunStoreError(f"run {run_id} has no {name}; it cannot be exported")
    return run


def session(path: Path, threads: int):
    """An ONNX Runtime CPU session with `threads` intra-op threads (PyTorch's count)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # its warnings about layout choices are not the user's business
    # Idle threads sleep instead of spinning: spinning threads fight PyTorch's own pool (and the app's
    # server) for the cores; on this project's 2-core machine they slowed both ONNX Runtime variants
    # whenever PyTorch was timed in the same run.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def onnx_predict(sess, images: np.ndarray, batch: int = 1000) -> np.ndarray:
    """(N, 1, 28, 28) float32 pixels in [0, 1] -> (N, classes) probabilities."""
    out = [sess.run(None, {"pixels": images[i:i + batch]})[0] for i in range(0, len(images), batch)]
    return np.concatenate(out) if out else np.zeros((0, 10), np.float32)


def time_models(models: dict, images: np.ndarray, rounds: int = ROUNDS, single: int = SINGLE) -> dict:
    """Median latency of one digit (ms) and throughput at batch 256 (digits/s) of each callable
    in `models` (name -> f(pixels) -> probabilities), timed interleaved (module docstring)."""
    one = images[:1]
    batch = np.resize(images, (BATCH, *images.shape[1:])) if len(images) < BATCH else images[:BATCH]
    singles = {name: [] for name in models}
    batches = {name: [] for name in models}
    for f in models.values():  # warm up: first calls allocate and pick kernels
        for _ in range(3):
            f(one)
        f(batch)
    for _ in range(rounds):
        for name, f in models.items():
            for _ in range(single):
                t = time.perf_counter()
                f(one)
                singles[name].append(time.perf_counter() - t)
            t = time.perf_counter()
            f(batch)
            batches[name].append(time.perf_counter() - t)
    return {name: {"latency_ms": 1000 * statistics.median(singles[name]),
                   "throughput": BATCH / statistics.median(batches[name])} for name in models}


def torch_callable(shipped: ShippedModel):
    def run(pixels: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return shipped(torch.from_numpy(pixels)).numpy()
    return run


@dataclass
class Shipment:
    """A run made ready to ship: the model, its test digits and calibration digits, and what the
    run itself predicted (the reference every variant is checked against)."""

    run_id: str
    config: object
    shipped: ShippedModel
    info: ExportInfo
    test_images: np.ndarray        # (N, 1, 28, 28) float32 in [0, 1]
    labels: np.ndarray
    stored_preds: np.ndarray
    stored_probs: np.ndarray
    calibration: np.ndarray        # training-split digits int8 calibrates on
    selection: np.ndarray          # validation-split digits that choose per-tensor or per-channel int8
    weights_bytes: int
    files: dict = field(default_factory=dict)

    def costs(self) -> list[dict]:
        return layer_costs(self.config.architecture(), self.config.num_outputs)


def prepare(store, run_id: str, data_dir=None, calibration_count: int = 300) -> Shipment:
    """Load what shipping a run needs: its final weights as the inference model, its test set
    (refused when this machine has other data than the run saw), its stored predictions, and
    `calibration_count` digits of its training split (seeded)."""
    from core.inference import load_classifier

    check_shippable(store, run_id)
    folder = store.folder(run_id)
    clf = load_classifier(folder.path, which="last")
    from core.runner import dataset_of

    dataset, _ = dataset_of(store, run_id, data_dir)
    stored = store.predictions(run_id)
    test = (dataset.test_images.astype(np.float32) / 255.0)[:, None]
    if len(stored["preds"]) != len(test):
        raise RunStoreError(f"run {run_id} stored {len(stored['preds'])} test predictions but its data set has "
                            f"{len(test)} test digits here; pass --data-dir with the data it was trained on")
    calibration, selection = split_digits(clf.config, dataset, calibration_count)
    info = ExportInfo(run_id, clf.mean, clf.std, clf.classes)
    return Shipment(run_id, clf.config, ShippedModel(clf.model, clf.mean, clf.std), info, test, stored["labels"],
                    stored["preds"], stored["probs"], calibration, selection, (folder / "weights_last.pt").stat().st_size)


def check_variant(shipment: Shipment, probs: np.ndarray) -> dict:
    """Accuracy on the test set, agreement of the predicted class with the run's own stored
    predictions, and the largest probability difference from them."""
    preds = probs.argmax(1)
    return {"test_accuracy": float((preds == shipment.labels).mean()),
            "agreement": float((preds == shipment.stored_preds).mean()),
            "max_probability_difference": float(np.abs(probs - shipment.stored_probs).max())}


def weight_bytes(path: Path) -> int:
    """Bytes of the weights inside an ONNX file (its initializers), without the graph."""
    import onnx
    from onnx import numpy_helper

    return int(sum(numpy_helper.to_array(t).nbytes for t in onnx.load(str(path)).graph.initializer))


def ship(shipment: Shipment, variants=VARIANTS, out_dir: Path | None = None, threads: int | None = None,
         progress=None) -> list[dict]:
    """Export each variant into `out_dir`, check it on the whole test set and time it against
    PyTorch eager (interleaved). One row per model: PyTorch first, then each variant.
    `progress(text)` is told each step (the page's status box, the CLI's stderr)."""
    threads = threads or torch.get_num_threads()
    torch.set_num_threads(threads)
    out_dir = Path(out_dir or tempfile.mkdtemp(prefix="mnist-lab-ship-"))
    say = progress or (lambda text: None)
    costs = shipment.costs()
    rows = {"pytorch": {"variant": "pytorch", "model": LABELS["pytorch"], "precision": "fp32", "path": None,
                        "bytes": shipment.weights_bytes, "weight_bytes": 4 * sum(r["params"] for r in costs),
                        **check_variant(shipment, torch_callable(shipment.shipped)(shipment.test_images))}}
    models = {"pytorch": torch_callable(shipment.shipped)}
    for variant in variants:
        say(f"Exporting {LABELS[variant]} and checking it on {len(shipment.test_images):,} test digits...")
        path = write_variant(shipment.shipped, shipment.info, variant,
                             out_dir / f"{shipment.run_id}{'' if variant == 'none' else '.' + variant}.onnx",
                             shipment.calibration, shipment.selection)
        shipment.files[variant] = path
        sess = session(path, threads)
        rows[variant] = {"variant": variant, "model": LABELS[variant], "precision": PRECISION[variant],
                         "path": str(path), "bytes": path.stat().st_size, "weight_bytes": weight_bytes(path),
                         **check_variant(shipment, onnx_predict(sess, shipment.test_images))}
        if variant == "int8":
            rows[variant]["float_ops"] = quantization_notes(path)
            rows[variant]["int8_weights"] = file_metadata(path).get("mnist_lab.int8_weights", "")
        models[variant] = (lambda s: lambda x: s.run(None, {"pixels": x})[0])(sess)
    say(f"Timing {len(models)} models, interleaved ({ROUNDS} rounds, {threads} thread(s))...")
    for name, figures in time_models(models, shipment.test_images).items():
        rows[name].update(figures)
    for row in rows.values():
        row["peak_activation_bytes"] = peak_activation_bytes(costs, row["precision"])
        row["threads"] = threads
    return list(rows.values())


def pareto_front(points: list[tuple[float, float]]) -> list[bool]:
    """For (cost, accuracy) points: True where no other point is at most as costly and at least
    as accurate, and strictly better in one of the two (the slides' "fast, precise" trade-off)."""
    return [not any(c2 <= c and a2 >= a and (c2 < c or a2 > a) for c2, a2 in points) for c, a in points]


def accuracy_change(variant: float, reference: float, what: str = "fp32's") -> str:
    """A variant's test accuracy against the reference's, in points, in words ("-0.10 points
    from fp32's" read as a typo on a projector); rounded first, so "the same" means the two
    digits shown agree."""
    points = round((variant - reference) * 100, 2)
    if points == 0:
        return f"the same as {what}"
    return f"{abs(points):.2f} points {'below' if points < 0 else 'above'} {what}"


__all__ = ["ExportError", "LABELS", "Shipment", "accuracy_change", "check_shippable", "check_variant", "onnx_predict",
           "pareto_front", "prepare", "session", "ship", "time_models"]


def pytorch_latency_ms(clf, calls: int = 30) -> float:
    """Median time PyTorch eager takes for one digit with a stored run's model (normalisation
    and softmax included): the cheap figure the Ship page's scatter measures for every run."""
    run = torch_callable(ShippedModel(clf.model, clf.mean, clf.std))
    one = np.zeros((1, 1, 28, 28), np.float32)
    for _ in range(3):
        run(one)
    times = []
    for _ in range(calls):
        t = time.perf_counter()
        run(one)
        times.append(time.perf_counter() - t)
    return 1000 * statistics.median(times)


def split_digits(config, dataset, count: int = 300, selection: int = 1000) -> tuple[np.ndarray, np.ndarray]:
    """`count` digits of a run's training split, what int8 calibrates on, and up to `selection`
    digits of its validation split, what chooses between per-tensor and per-channel weights
    (both seeded, as (N, 1, 28, 28) float32 in [0, 1]); never the test set the variants are
    checked on."""
    from core.training import split_indices

    train_idx, val_idx = split_indices(config, dataset.train_labels)
    rng = np.random.default_rng(0)

    def pick(idx, n):
        return (dataset.train_images[np.sort(rng.permutation(idx)[:n])].astype(np.float32) / 255.0)[:, None]

    return pick(train_idx, count), pick(val_idx, selection)


def file_metadata(path: Path) -> dict[str, str]:
    import onnx

    return {p.key: p.value for p in onnx.load(str(path)).metadata_props}


def int8_for_classifier(clf, dataset, out: Path) -> Path:
    """The int8 ONNX file of a loaded classifier (the draw page's model, with its own weights),
    calibrated on its training split of `dataset`."""
    info = ExportInfo(clf.run_dir.name, clf.mean, clf.std, clf.classes)
    return write_variant(ShippedModel(clf.model, clf.mean, clf.std), info, "int8", Path(out),
                         *split_digits(clf.config, dataset))
