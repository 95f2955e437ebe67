"""What an export of a run must hold (tests/test_handover.py): every value in its TensorBoard
event and projector files, and in its MLflow run, equal to the store's."""

from __future__ import annotations

import io
import json

import numpy as np

from core.runner import dataset_of


def read_events(folder):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    events.Reload()
    return events


def check_tensorboard(folder, store, run_id):
    """Every value in the run's event files and projector files equals the store's."""
    from PIL import Image
    from sklearn.metrics import confusion_matrix
    from tensorboard.plugins.hparams import plugin_data_pb2

    from core.handover.tensorboard import (EMBEDDED_DIGITS, epoch_scalars, final_metrics, run_hparams)
    from core.learned import activations, hidden_layers, weight_tiles
    from core.models import first_layer_weights

    events = read_events(folder)
    history, metrics, predictions = store.history(run_id), store.metrics(run_id), store.predictions(run_id)
    # per-epoch scalars: every number of every epoch, at its epoch
    expected = {}
    for entry in history:
        for tag, value in epoch_scalars(entry).items():
            expected.setdefault(tag, []).append((entry["epoch"], np.float32(value)))
    assert {"loss/train", "loss/validation", "accuracy/train", "accuracy/validation", "learning_rate"} <= set(expected)
    for tag, points in expected.items():
        assert [(e.step, np.float32(e.value)) for e in events.Scalars(tag)] == points, tag
    # hyperparameters and the final metrics (TensorBoard's HParams view)
    content = events.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    stored = run_hparams(store.saved_config(run_id)["config"])
    got = {k: (v.number_value if v.HasField("number_value") else v.string_value if v.HasField("string_value")
               else v.bool_value) for k, v in start.session_start_info.hparams.items()}
    assert got == {k: (float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v)
                   for k, v in stored.items()}
    assert stored["lr"] == store.config(run_id).lr
    for tag, value in final_metrics(metrics).items():
        assert [np.float32(e.value) for e in events.Scalars(tag)] == [np.float32(value)], tag
    assert np.float32(events.Scalars("hparam/test_accuracy")[0].value) == np.float32(metrics["test_accuracy"])
    # the confusion matrix: its counts as a table, and as an image
    text = events.Tensors("confusion_matrix/counts/text_summary")[0].tensor_proto.string_val[0].decode()
    counts = [[int(v) for v in line.split("|")[2:-1]] for line in text.splitlines()[2:]]
    assert counts == confusion_matrix(predictions["labels"], predictions["preds"]).tolist()
    assert events.Images("confusion_matrix")
    # the first layer's weights, pixel for pixel
    image = Image.open(io.BytesIO(events.Images("first_layer_weights")[0].encoded_image_string))
    model = store.load_model(run_id, "last")
    assert np.array_equal(np.asarray(image.convert("RGB")), weight_tiles(first_layer_weights(model), upscale=4))
    # a precision-recall curve per class: true/false positives at each threshold from the stored probabilities
    probs, labels = predictions["probs"], predictions["labels"]
    for c in range(probs.shape[1]):
        curve = np.array(events.Tensors(f"pr_curve/{c}")[0].tensor_proto.float_val).reshape(6, -1)
        n = curve.shape[1]
        bucket = np.floor(probs[:, c].astype(np.float64) * (n - 1)).astype(int)
        tp = [np.sum((labels == c) & (bucket >= i)) for i in range(n)]
        fp = [np.sum((labels != c) & (bucket >= i)) for i in range(n)]
        assert curve[0].tolist() == tp and curve[1].tolist() == fp, c
    # the embedding: the last hidden layer's activations on the first test digits, with labels
    from core.inference import load_classifier

    classifier = load_classifier(store.run_dir(run_id), "last")
    layer = hidden_layers(classifier.model)[-1]
    dataset = dataset_of(store, run_id)[0]
    images = dataset.test_images[:EMBEDDED_DIGITS].astype(np.float32) / 255
    step = f"{int(metrics['epochs_run']):05d}"
    tensors = np.loadtxt(folder / step / layer / "tensors.tsv", dtype=np.float64, delimiter="\t", ndmin=2)
    assert np.array_equal(tensors.astype(np.float32), activations(classifier, images, layer))
    rows = (folder / step / layer / "metadata.tsv").read_text().splitlines()
    assert rows[0] == "label\tpredicted" and rows[1:] == [f"{t}\t{p}" for t, p in zip(
        labels[:len(images)], predictions["preds"][:len(images)])]
    assert Image.open(folder / step / layer / "sprite.png").size == (28 * 32, 28 * 32)
    assert f"{step}/{layer}/tensors.tsv" in (folder / "projector_config.pbtxt").read_text()


def check_mlflow(client, mlflow_run_id: str, store, run_id: str, tmp_path):
    """Params, per-epoch metrics at their step, tags, artifacts and the model's signature equal the store's."""
    from mlflow.models import Model

    from core.handover.mlflow import run_params
    from core.handover.tensorboard import confusion_counts, epoch_scalars

    run = client.get_run(mlflow_run_id)
    assert run.data.params == run_params(store.saved_config(run_id)["config"])
    assert run.data.tags["mnist_lab.run_id"] == run_id and run.data.tags["mnist_lab.status"] == "finished"
    history = store.history(run_id)
    for tag in epoch_scalars(history[0]):
        got = [(m.step, m.value) for m in client.get_metric_history(mlflow_run_id, tag)]
        assert got == [(h["epoch"], epoch_scalars(h)[tag]) for h in history], tag
    metrics = store.metrics(run_id)
    for key in ("test_accuracy", "test_loss", "best_val_accuracy"):
        assert run.data.metrics[key] == metrics[key]
    folder = tmp_path / mlflow_run_id
    client.download_artifacts(mlflow_run_id, "", str(folder.mkdir(parents=True) or folder))
    assert json.loads((folder / "config.json").read_text()) == store.saved_config(run_id)
    assert json.loads((folder / "history.json").read_text()) == history
    assert json.loads((folder / "confusion_matrix.json").read_text())["counts"] == confusion_counts(
        store.predictions(run_id)).tolist()
    signature = Model.load(str(folder / "model")).signature
    spec = signature.inputs.to_dict()[0]["tensor-spec"]
    assert spec["dtype"] == "float32" and list(spec["shape"]) == [-1, 1, 28, 28]
    assert list(signature.outputs.to_dict()[0]["tensor-spec"]["shape"]) == [-1, store.config(run_id).num_outputs]
