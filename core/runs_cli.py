"""`python -m core runs list|show|delete|export|import|resume`, each with --runs-dir and --json."""

from __future__ import annotations

import json
import sys

from core.runs import RunStore

LIST_FIELDS = ("id", "name", "status", "epochs_done", "epochs", "model", "dataset", "device",
               "test_accuracy", "best_val_accuracy", "seconds", "tags")


def _store(args) -> RunStore:
    return RunStore(args.runs_dir)


def _print(obj, as_json: bool, text: str) -> None:
    print(json.dumps(obj, default=str) if as_json else text)


def cmd_list(args) -> int:
    runs = _store(args).list(status=args.status, tag=args.tag)
    rows = [{k: r[k] for k in LIST_FIELDS} for r in runs]
    if args.json:
        print(json.dumps(rows))
        return 0
    if not rows:
        print("no runs")
    for r in rows:
        acc = f"{r['test_accuracy']:.4f}" if r["test_accuracy"] is not None else "-"
        print(f"{r['id']}  {r['status']:<11} {r['epochs_done']}/{r['epochs']} epochs  {r['model']:<7} "
              f"test acc {acc}  {r['name']}")
    return 0


def cmd_show(args) -> int:
    store = _store(args)
    run = store.get(args.run)
    out = {**run, "config": store.config(args.run).to_dict(), "metrics": store.metrics(args.run),
           "history": [{k: v for k, v in h.items() if k != "val_confusion"} for h in store.history(args.run)]}
    text = "\n".join(f"{k}: {v}" for k, v in out.items() if k not in ("config", "history", "progress")) + \
        "\nhistory:\n" + "\n".join(
            f"  epoch {h['epoch']}: loss {h['train_loss']:.4f} acc {h['train_accuracy']:.4f} "
            f"val_loss {h['val_loss']:.4f} val_acc {h['val_accuracy']:.4f} ({h['seconds']:.1f} s)"
            for h in out["history"])
    _print(out, args.json, text)
    return 0


def cmd_delete(args) -> int:
    _store(args).delete(args.run)
    _print({"deleted": args.run}, args.json, f"deleted {args.run}")
    return 0


def cmd_export(args) -> int:
    path = _store(args).export_zip(args.run, args.file)
    _print({"exported": args.run, "file": str(path)}, args.json, f"exported {args.run} to {path}")
    return 0


def cmd_import(args) -> int:
    run_id = _store(args).import_zip(args.file)
    _print({"imported": run_id}, args.json, f"imported as {run_id}")
    return 0


def cmd_resume(args) -> int:
    from core.callbacks import Progress
    from core.cli import TerminalProgress

    store = _store(args)
    out = store.resume_in_this_process(args.run, callbacks=[Progress(TerminalProgress(), every=10)],
                                       data_dir=args.data_dir)
    _print(out, args.json, f"run {args.run} {out['status']}: test accuracy {out['test_accuracy']:.4f} "
                           f"after {out['epochs_run']} epochs")
    return 0


def add_runs_parser(sub) -> None:
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
    lst.add_argument("--status")
    lst.add_argument("--tag")
    verb("show", cmd_show, "one run: status, config, metrics, history", "run")
    verb("delete", cmd_delete, "delete a run and its files", "run")
    verb("export", cmd_export, "export a run as one zip", "run", "file")
    verb("import", cmd_import, "import a run from an exported zip", "file")
    resume = verb("resume", cmd_resume, "resume an interrupted or cancelled run from its last checkpoint", "run")
    resume.add_argument("--data-dir")


if __name__ == "__main__":
    sys.exit("use: python -m core runs ...")
