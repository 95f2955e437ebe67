"""`python -m core runs list|show|cancel|delete|export|import|resume|reindex`, each with --runs-dir and --json."""

from __future__ import annotations

from pathlib import Path

from core.cli.common import TerminalProgress, emit, open_store, writable_file
from core.handover import FORMATS, FRAMEWORKS
from core.store import RunStoreError
from core.store.folder import STATUSES

LIST_FIELDS = ("id", "name", "status", "epochs_done", "epochs", "model", "dataset", "device",
               "test_accuracy", "best_val_accuracy", "seconds", "tags", "grp")


def cmd_list(args) -> int:
    runs = open_store(args.runs_dir).list(status=args.status, tag=args.tag)
    rows = [{k: r.get(k) for k in LIST_FIELDS} for r in runs]
    if args.json:
        emit(rows, True, "")
        return 0
    if not rows:
        print("no runs")
    for r in rows:
        acc = f"{r['test_accuracy']:.4f}" if isinstance(r["test_accuracy"], (int, float)) else "-"
        print(f"{r['id']}  {r['status']:<11} {r['epochs_done'] or 0}/{r['epochs'] or '?'} epochs  "
              f"{r['model'] or '-':<8} test acc {acc}  {r['name']}")
    for r in runs:
        if r["status"] == "damaged":
            print(f"{r['id']} is damaged: {r['error']}")
    return 0


def cmd_show(args) -> int:
    store = open_store(args.runs_dir)
    run = store.get(args.run)
    if run["status"] == "missing":
        raise RunStoreError(f"run {args.run}: {run['error']}")
    problem = store.check_files(args.run)
    if problem or run["status"] == "damaged":
        run = store.get(args.run)
        emit(run, args.json, "\n".join(f"{k}: {v}" for k, v in run.items() if k not in ("config", "progress")))
        return 0
    out = {**run, "config": store.config(args.run).to_dict(), "metrics": store.metrics(args.run),
           "history": [{k: v for k, v in h.items() if k != "val_confusion"} for h in store.history(args.run)]}
    text = "\n".join(f"{k}: {v}" for k, v in out.items() if k not in ("config", "history", "progress")) + \
        "\nhistory:\n" + "\n".join(
            f"  epoch {h['epoch']}: loss {h['train_loss']:.4f} acc {h['train_accuracy']:.4f} "
            f"val_loss {h['val_loss']:.4f} val_acc {h['val_accuracy']:.4f} ({h['seconds']:.1f} s)"
            for h in out["history"])
    emit(out, args.json, text)
    return 0


def cmd_cancel(args) -> int:
    """Cancel queued or running runs: a queued one is cancelled at once (its worker, waiting for
    a slot, exits), a running one stops within one batch and keeps its finished epochs. Every
    run is checked first: one that is not queued or running refuses the whole command."""
    store = open_store(args.runs_dir)
    runs = [store.get(r) for r in args.runs]  # an unknown run id is refused before anything changes
    done = [r for r in runs if r["status"] not in ("queued", "running")]
    if done:
        raise RunStoreError("nothing was cancelled: " + "; ".join(f"run {r['id']} is {r['status']}, not queued or "
                                                                  "running" for r in done))
    for r in runs:
        store.request_cancel(r["id"])
    out = [{"run_id": r["id"], "was": r["status"], "status": store.get(r["id"])["status"]} for r in runs]
    emit(out, args.json, "\n".join(f"cancelled {o['run_id']} (was {o['was']})" if o["was"] == "queued" else
                                   f"asked {o['run_id']} to stop (it stops within one batch)" for o in out))
    return 0


def cmd_delete(args) -> int:
    open_store(args.runs_dir).delete(args.run)
    emit({"deleted": args.run}, args.json, f"deleted {args.run}")
    return 0


def cmd_export(args) -> int:
    """A run (or a group's runs) in another format: the lab's zip (the default), a notebook,
    TensorBoard event files, an MLflow store (core.handover)."""
    from core.handover import export

    store = open_store(args.runs_dir)
    out = args.out
    if args.format in ("zip", "notebook"):  # one file: refused before any work when it cannot be written
        out = writable_file(Path(out), "export to", f"mnist-lab-{args.run}.zip" if args.format == "zip" else
                            f"{args.run}-{args.framework}.ipynb")
    result = export(store, args.run, out, args.format, args.framework, args.data_dir)
    where = result.get("file") or result.get("folder") or result.get("uri")
    emit(result, args.json, f"exported {args.run} ({len(result['runs'])} run(s)) as {args.format} to {where}" + "".join(
        f"\nnote: {r['run_id']}: no {what}: {why}" for r in result.get("written", []) for what, why in
        r.get("skipped", {}).items()))
    return 0


def cmd_import(args) -> int:
    run_id = open_store(args.runs_dir).import_zip(args.file)
    emit({"imported": run_id}, args.json, f"imported as {run_id}")
    return 0


def cmd_reindex(args) -> int:
    count = open_store(args.runs_dir).rebuild_index()
    emit({"runs": count}, args.json, f"index rebuilt from {count} run folder(s)")
    return 0


def cmd_resume(args) -> int:
    """Resume a run, or the vectorised group it was trained in (all of the group's stopped runs)."""
    from core.callbacks import Progress
    from core.runner import resume

    out = resume(open_store(args.runs_dir), args.run, callbacks=[Progress(TerminalProgress(), every=10)],
                 data_dir=args.data_dir)
    emit(out, args.json, f"run {args.run} {out['status']}: test accuracy {out['test_accuracy']:.4f} "
                         f"after {out.get('epochs_run', out.get('epochs_done'))} epochs")
    return 0


def add_parsers(sub) -> None:
    runs = sub.add_parser("runs", help="list, show, delete, export, import and resume stored runs")
    verbs = runs.add_subparsers(dest="verb", parser_class=type(runs))
    verbs.required = True

    def verb(name, handler, help_text, *positionals):
        p = verbs.add_parser(name, help=help_text)
        for pos in positionals:
            p.add_argument(pos)
        p.add_argument("--runs-dir", help="run store folder (or MNIST_LAB_RUNS; default ./runs)")
        p.add_argument("--json", action="store_true")
        p.set_defaults(handler=handler)
        return p

    lst = verb("list", cmd_list, "list runs, newest first")
    lst.add_argument("--status", choices=STATUSES)
    lst.add_argument("--tag")
    verb("show", cmd_show, "one run: status, config, metrics, history", "run")
    verb("delete", cmd_delete, "delete a run and its files", "run")
    cancel = verb("cancel", cmd_cancel, "cancel queued runs, or stop running ones within one batch")
    cancel.add_argument("runs", nargs="+", metavar="RUN")
    export = verb("export", cmd_export, "export a run (or a k-fold's or sweep's runs) as a zip, a notebook, "
                                        "TensorBoard event files or into MLflow", "run", "out")
    export.add_argument("--format", choices=FORMATS, default="zip",
                        help="zip (the lab's archive; OUT a file), notebook (OUT.ipynb), tensorboard (OUT a folder), "
                             "mlflow (OUT a tracking URI, or a folder that becomes a store)")
    export.add_argument("--framework", choices=FRAMEWORKS, default="pytorch", help="the notebook's framework")
    export.add_argument("--data-dir", help="the MNIST folder: the notebook's DATA, or the data for the embedding")
    verb("import", cmd_import, "import a run from an exported zip", "file")
    verb("reindex", cmd_reindex, "rebuild the index from the run folders")
    resume = verb("resume", cmd_resume, "resume an interrupted or cancelled run (or its vectorised group) from its "
                                        "last checkpoint, on the data it was trained on", "run")
    resume.add_argument("--data-dir", help="the data folder, when the run's own folder is not on this machine")
