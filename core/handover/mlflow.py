"""Stored runs logged into an MLflow tracking store: params, per-epoch metrics with their
step, tags, the model with its input signature, and config, history and confusion matrix
as artifacts. A k-fold group or a sweep becomes a parent run with its members as children.

MLflow is large and optional (requirements-mlflow.txt): it is imported here only, and its
absence is one clear error. The client API (MlflowClient) is used rather than the fluent
mlflow.start_run, whose active run is process-global state (unsafe in Streamlit's threads).
A plain folder as the target becomes a self-contained store: FOLDER/mlflow.db (SQLite; MLflow
3 no longer writes its file store) and FOLDER/artifacts.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from core.handover.tensorboard import confusion_counts, epoch_scalars, run_hparams

EXPERIMENT = "mnist-lab"
RUN_STATUS = {"finished": "FINISHED", "cancelled": "KILLED", "pruned": "KILLED"}


class MlflowMissing(RuntimeError):
    pass


def tracking_target(uri: str) -> tuple[str, str | None]:
    """(tracking URI, artifact location for a new experiment): a URI with a scheme as it is;
    a folder as FOLDER/mlflow.db with FOLDER/artifacts."""
    if "://" in uri:
        return uri, None
    folder = Path(uri).resolve()
    return f"sqlite:///{folder / 'mlflow.db'}", (folder / "artifacts").as_uri()


def client_for(uri: str):
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # offline: no usage pings
    try:
        from mlflow import MlflowClient
    except ImportError as exc:
        raise MlflowMissing("MLflow is not installed: pip install -r requirements-mlflow.txt") from exc
    tracking, artifacts = tracking_target(uri)
    if artifacts:
        Path(uri).mkdir(parents=True, exist_ok=True)
    client = MlflowClient(tracking)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    experiment_id = experiment.experiment_id if experiment else client.create_experiment(
        EXPERIMENT, artifact_location=artifacts)
    return client, experiment_id


def run_params(config: dict) -> dict[str, str]:
    return {k: str(v) for k, v in run_hparams(config).items()}


def _millis(seconds: float) -> int:
    return int(seconds * 1000)


def _log_model(client, mlflow_run_id: str, store, run_id: str) -> None:
    """The final model (PyTorch flavour) with its input signature: (N, 1, 28, 28) float32
    normalised pixels in, one score per class out."""
    import mlflow.pytorch
    import torch
    from mlflow.models import infer_signature

    model = store.load_model(run_id, "last")
    example = np.zeros((2, 1, 28, 28), np.float32)
    with torch.no_grad():
        output = model(torch.from_numpy(example)).float().numpy()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model"
        mlflow.pytorch.save_model(model, str(path), signature=infer_signature(example, output),
                                  input_example=example, pip_requirements=["torch"])
        client.log_artifacts(mlflow_run_id, str(path), "model")


def log_run(client, experiment_id: str, store, run_id: str, parent: str | None = None) -> str:
    from mlflow.entities import Metric, Param, RunTag

    row, saved = store.get(run_id), store.saved_config(run_id)
    history, metrics = store.history(run_id), store.metrics(run_id)
    tags = {"mnist_lab.run_id": run_id, "mnist_lab.status": row["status"], "mnist_lab.model": str(row.get("model")),
            "mnist_lab.dataset": str(saved["config"].get("dataset")), "mnist_lab.device": str(row.get("device"))}
    if row.get("grp"):
        tags["mnist_lab.group"] = row["grp"]
    tags.update({f"mnist_lab.tag.{t}": "true" for t in row.get("tags") or []})
    if parent:
        tags["mlflow.parentRunId"] = parent
    start = _millis(row.get("created") or time.time())
    run = client.create_run(experiment_id, start_time=start, run_name=row.get("name") or run_id,
                            tags=tags)
    mid = run.info.run_id
    points, clock = [], start
    for entry in history:
        clock += _millis(entry.get("seconds") or 0)
        points += [Metric(tag, value, clock, int(entry["epoch"])) for tag, value in epoch_scalars(entry).items()]
    final = int(metrics.get("epochs_run") or len(history))
    points += [Metric(k, float(v), clock, final) for k, v in metrics.items()
               if isinstance(v, (int, float)) and not isinstance(v, bool)]
    params = [Param(k, v) for k, v in run_params(saved["config"]).items()]
    for i in range(0, max(len(points), len(params), 1), 900):  # MLflow takes at most 1,000 metrics a call
        client.log_batch(mid, metrics=points[i:i + 900], params=params if i == 0 else [],
                         tags=[RunTag("mnist_lab.note", row["note"])] if i == 0 and row.get("note") else [])
    client.log_dict(mid, saved, "config.json")
    client.log_dict(mid, history, "history.json")
    client.log_dict(mid, metrics, "metrics.json")
    counts = confusion_counts(store.predictions(run_id))
    client.log_dict(mid, {"rows": "true digit", "columns": "predicted digit", "counts": counts.tolist()},
                    "confusion_matrix.json")
    _log_model(client, mid, store, run_id)
    client.set_terminated(mid, RUN_STATUS.get(row["status"], "FINISHED"), end_time=clock)
    return mid


def export_mlflow(store, run_ids: list[str], uri: str, group: str | None = None) -> dict:
    """Log the runs into the store at `uri`; a group becomes a parent run with the members
    as children. On any failure the runs logged by this call are deleted again."""
    client, experiment_id = client_for(uri)
    created = []
    try:
        parent = None
        if group:
            first = store.get(run_ids[0])
            parent = client.create_run(experiment_id, start_time=_millis(first.get("created") or time.time()),
                                       run_name=group, tags={"mnist_lab.group": group,
                                                             "mnist_lab.members": json.dumps(run_ids)}).info.run_id
            created.append(parent)
        children = {}
        for run_id in run_ids:
            children[run_id] = log_run(client, experiment_id, store, run_id, parent)
            created.append(children[run_id])
        if parent:
            client.set_terminated(parent, "FINISHED")
    except BaseException:
        for mid in created:
            try:
                client.delete_run(mid)
            except Exception:  # noqa: BLE001 - the original error is the one to report
                pass
        raise
    return {"uri": tracking_target(uri)[0], "experiment_id": experiment_id, "parent": parent, "runs": children}
