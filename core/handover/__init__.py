"""Runs out of the lab, into the tools people use next: the lab's own zip, a Jupyter notebook,
TensorBoard event files, an MLflow tracking store (`python -m core runs export RUN OUT
--format zip|notebook|tensorboard|mlflow`, and the experiments page).

RUN is a run id, or (tensorboard, mlflow) a group's id: a k-fold run's or a sweep's, whose
members with results are exported together. Everything is read from the store; a failed
export leaves nothing half-written (files and folders are built aside and renamed into place;
MLflow runs logged by a failed call are deleted again, a store folder it created is removed).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from core.store import RunStoreError
from core.store.records import WITH_RESULTS

FORMATS = ("zip", "notebook", "tensorboard", "mlflow")
FRAMEWORKS = ("pytorch", "keras")


class HandoverError(RuntimeError):
    """An export that cannot be done: says what and why."""


def runs_to_export(store, ref: str) -> tuple[str | None, list[str]]:
    """(group, run ids): a run id is that run; a group's id is its members with results,
    oldest first. A run without results (queued, running, failed before an epoch, damaged) is
    refused, naming its status."""
    members = store.list(group=ref) if ref else []
    if members:
        done = sorted((r for r in members if r["status"] in WITH_RESULTS), key=lambda r: r["created"])
        if not done:
            raise HandoverError(f"group {ref} has no run with results yet ("
                                + ", ".join(sorted({r['status'] for r in members})) + ")")
        return ref, [r["id"] for r in done]
    try:
        row = store.get(ref)
    except RunStoreError as exc:
        raise HandoverError(f"no run or group {ref!r} in {store.root}") from exc
    if row["status"] not in WITH_RESULTS:
        raise HandoverError(f"run {ref} is {row['status']}: only finished, cancelled or pruned runs have results "
                            "to export" + (f" ({row['error']})" if row.get("error") else ""))
    problem = store.check_files(ref)
    if problem:
        raise HandoverError(f"run {ref} is damaged: {problem}")
    return None, [ref]


def _writable_parent(out: Path) -> None:
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise HandoverError(f"{out}: the folder {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK) or (out.exists() and not os.access(out, os.W_OK)):
        raise HandoverError(f"{out}: cannot write there (permission denied)")


def notebook_for(store, run_id: str, framework: str, data_dir=None) -> str:
    """The run's notebook text: DATA is `data_dir`, else the folder the run read MNIST from."""
    from core.handover.notebook import notebook_text

    saved, metrics = store.saved_config(run_id), store.metrics(run_id)
    config = store.config(run_id)
    folder = data_dir or (saved.get("data_dir") if config.dataset != "mnist-sample" else None)
    facts = (f"The lab's run `{run_id}` ({saved['config'].get('name') or config.model}, "
             f"{config.dataset}) reached a test accuracy of {metrics['test_accuracy']:.4f} after "
             f"{metrics['epochs_run']} epoch(s).")
    if config.dataset == "mnist-sample":
        facts += (" It trained on the offline sample: the train page downloads it as the four MNIST files "
                  "(\"The offline sample as MNIST files\"); put them in `DATA`.")
    return notebook_text(config, framework, folder, title=saved["config"].get("name") or run_id, facts=facts)


def page_run(store, run_id: str | None, config) -> str | None:
    """`run_id` when the train page shows that stored run's own config (the device aside: a run
    records the device `auto` chose) and the run has results; else None."""
    from core.config import ConfigError

    if not run_id:
        return None
    try:
        same = store.get(run_id)["status"] in WITH_RESULTS and \
            store.config(run_id).replace(device=config.device) == config
    except (RunStoreError, ConfigError):
        return None  # a run that cannot be read: the config's own notebook
    return run_id if same else None


def page_notebook(store, run: str | None, config, framework: str, data_dir=None) -> tuple[str, str]:
    """The train page's notebook download, (text, file name): for `run` (page_run) the same file
    as `runs export RUN FILE --format notebook`; without one, the notebook of the page's config."""
    from core.handover.notebook import notebook_text

    if run:
        return notebook_for(store, run, framework, data_dir), f"{run}-{framework}.ipynb"
    return notebook_text(config, framework, data_dir), f"{config.name or config.model}-{framework}.ipynb"


def _tensorboard(store, run_ids: list[str], out: Path, data_dir) -> dict:
    """One folder per run under `out`, each built in a staging folder next to it and renamed."""
    from core.handover.tensorboard import write_run

    out.mkdir(exist_ok=True)
    staging = out / f".staging-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        results = [write_run(staging / run_id, store, run_id, data_dir) for run_id in run_ids]
        for run_id in run_ids:
            target = out / run_id
            if target.exists():
                shutil.rmtree(target)
            (staging / run_id).rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    for r in results:
        r["folder"] = str(out / r["run_id"])
    return {"written": results}


def export(store, ref: str, out, fmt: str = "zip", framework: str = "pytorch", data_dir=None) -> dict:
    """Export run or group `ref` to `out` in `fmt`; returns what was written (the CLI's JSON)."""
    from core.atomic import atomic_write_bytes

    if fmt not in FORMATS:
        raise HandoverError(f"unknown format {fmt!r}; allowed: {', '.join(FORMATS)}")
    if framework not in FRAMEWORKS:
        raise HandoverError(f"unknown framework {framework!r}; allowed: {', '.join(FRAMEWORKS)}")
    group, run_ids = runs_to_export(store, ref)
    result = {"exported": ref, "format": fmt, "runs": run_ids, "group": group}
    if fmt in ("zip", "notebook") and group:
        raise HandoverError(f"{ref} is a group of {len(run_ids)} runs; a {fmt} holds one run: "
                            f"export one of {', '.join(run_ids)} (or use --format tensorboard or mlflow)")
    if fmt == "mlflow":
        from core.handover.mlflow import MlflowMissing, export_mlflow

        new_folder = "://" not in str(out) and not Path(out).exists()
        if "://" not in str(out):
            _writable_parent(Path(out).resolve())
        try:
            return {**result, **export_mlflow(store, run_ids, str(out), group)}
        except MlflowMissing as exc:
            raise HandoverError(str(exc)) from exc
        except BaseException:
            if new_folder:
                shutil.rmtree(out, ignore_errors=True)
            raise
    out = Path(out)
    _writable_parent(out)
    if fmt == "zip":
        if out.is_dir():
            raise HandoverError(f"{out}: is a folder; name a file, e.g. {out / f'mnist-lab-{ref}.zip'}")
        return {**result, "file": str(store.export_zip(ref, out))}
    if fmt == "notebook":
        if out.is_dir():
            raise HandoverError(f"{out}: is a folder; name a file, e.g. {out / f'{ref}-{framework}.ipynb'}")
        atomic_write_bytes(out, notebook_for(store, ref, framework, data_dir).encode())
        return {**result, "framework": framework, "file": str(out)}
    if out.exists() and not out.is_dir():
        raise HandoverError(f"{out}: is a file; TensorBoard's output is a folder")
    return {**result, "folder": str(out), **_tensorboard(store, run_ids, out, data_dir)}


def bundle(store, run_ids: list[str], fmt: str, framework: str = "pytorch", data_dir=None) -> tuple[bytes, str, str]:
    """Runs chosen on the experiments page as one download: (bytes, file name, MIME type). A
    notebook of one run is the .ipynb itself; everything else is a zip: the lab's archives,
    notebooks, or the TensorBoard folder (one subfolder per run). (An MLflow store is not a
    download: its database records where the artifacts are, so it is written where it stays,
    by into_mlflow.)"""
    import tempfile
    import zipfile

    if not run_ids:
        raise HandoverError("choose at least one run to export")
    name, mime = handover_name(run_ids, fmt, framework)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "export"
        if fmt == "notebook" and len(run_ids) == 1:
            return notebook_for(store, run_ids[0], framework, data_dir).encode(), name, mime
        if fmt in ("zip", "notebook"):
            root.mkdir()
            for run_id in run_ids:
                name = f"mnist-lab-{run_id}.zip" if fmt == "zip" else f"{run_id}-{framework}.ipynb"
                export(store, run_id, root / name, fmt, framework, data_dir)
        elif fmt == "tensorboard":
            for run_id in run_ids:
                export(store, run_id, root, fmt, data_dir=data_dir)
        else:
            raise HandoverError(f"unknown format {fmt!r}; allowed: {', '.join(FORMATS)}")
        buf = Path(tmp) / "bundle.zip"
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
            for path in sorted(root.rglob("*")):
                if path.is_file():
                    zf.write(path, path.relative_to(root))
        return buf.read_bytes(), name, mime


def handover_name(run_ids: list[str], fmt: str, framework: str = "pytorch") -> tuple[str, str]:
    """The file name and MIME type of bundle's download (known before it is built)."""
    if fmt == "notebook" and len(run_ids) == 1:
        return f"{run_ids[0]}-{framework}.ipynb", "application/x-ipynb+json"
    names = {"zip": "runs", "notebook": f"notebooks-{framework}", "tensorboard": "tensorboard"}
    if fmt not in names:
        raise HandoverError(f"{fmt} is not a download; allowed: {', '.join(names)}")
    return f"mnist-lab-{names[fmt]}.zip", "application/zip"


def into_mlflow(store, run_ids: list[str], uri: str) -> list[dict]:
    """Runs chosen on the experiments page into the MLflow store at `uri` (a tracking URI, or a
    folder that becomes one): the chosen runs of one group under a parent run, the others alone."""
    from collections import defaultdict

    if not run_ids:
        raise HandoverError("choose at least one run to export")
    groups = defaultdict(list)
    for run_id in run_ids:
        groups[store.get(run_id).get("grp") or run_id].append(run_id)
    out = []
    for grp, members in groups.items():
        if len(members) > 1:
            from core.handover.mlflow import MlflowMissing, export_mlflow

            try:
                out.append(export_mlflow(store, members, uri, group=grp))
            except MlflowMissing as exc:
                raise HandoverError(str(exc)) from exc
        else:
            out.append(export(store, members[0], uri, "mlflow"))
    return out


def mlflow_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("mlflow") is not None
