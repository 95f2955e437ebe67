"""`python -m core export RUN --format onnx [--quantize none|fp16|int8] [--out FILE] [--runs-dir R] --json`

Exports a stored run to one self-contained ONNX file (core.export), checks it in ONNX Runtime on
the run's whole test set against the run's own PyTorch predictions, and times it next to
PyTorch eager (core.ship). With --json the last stdout line is one JSON object: `path`,
`bytes`, `test_accuracy`, `agreement`, `latency_ms` (one digit, median), `throughput` (digits
per second at batch 256), and the same two timings of PyTorch (`pytorch_latency_ms`,
`pytorch_throughput`) measured in the same run.

An unknown or unfinished run, an unwritable path or an unknown option is one `error:` line and
exit status 2, and nothing is written: the file is built in a temporary folder beside its
destination and renamed into place only when it is complete.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from core.cli.common import emit, open_store, writable_file

FORMATS = ("onnx",)


def destination(out: str | None, run_id: str, quantize: str) -> Path:
    """Where the file goes (default: RUN.onnx, RUN.fp16.onnx or RUN.int8.onnx here), refused
    before any work when it cannot be written."""
    path = Path(out) if out else Path(f"{run_id}{'' if quantize == 'none' else '.' + quantize}.onnx")
    return writable_file(path, "--out", run_id + ".onnx")


def cmd_export(args) -> int:
    from core.ship import LABELS, check_shippable, prepare, ship

    store = open_store(args.runs_dir)
    check_shippable(store, args.run)  # unknown or unfinished: refused before anything is built
    path = destination(args.out, args.run, args.quantize)
    say = (lambda text: print(text, file=sys.stderr)) if sys.stderr.isatty() else None
    shipment = prepare(store, args.run, args.data_dir)
    rows = {r["variant"]: r for r in ship(shipment, variants=(args.quantize,), out_dir=path.parent.resolve(),
                                          progress=say)}
    made = Path(rows[args.quantize]["path"])
    if made.resolve() != path.resolve():
        os.replace(made, path)
    row, torch_row = rows[args.quantize], rows["pytorch"]
    out = {"run_id": args.run, "format": args.format, "quantize": args.quantize, "path": str(path.resolve()),
           "bytes": path.stat().st_size, "test_accuracy": row["test_accuracy"], "agreement": row["agreement"],
           "max_probability_difference": row["max_probability_difference"], "latency_ms": row["latency_ms"],
           "throughput": row["throughput"], "pytorch_latency_ms": torch_row["latency_ms"],
           "pytorch_throughput": torch_row["throughput"], "threads": row["threads"],
           "float_ops": row.get("float_ops", []), "int8_weights": row.get("int8_weights")}
    text = (f"exported {args.run} as {LABELS[args.quantize]} to {out['path']} ({out['bytes']:,} bytes)\n"
            f"test accuracy {out['test_accuracy']:.2%}, agreement with the run's PyTorch predictions "
            f"{out['agreement']:.2%}\none digit {out['latency_ms']:.3f} ms (PyTorch {out['pytorch_latency_ms']:.3f} ms), "
            f"batch 256: {out['throughput']:,.0f} digits/s (PyTorch {out['pytorch_throughput']:,.0f})")
    emit(out, args.json, text)
    return 0


def add_parsers(sub) -> None:
    e = sub.add_parser("export", help="export a finished run to ONNX (fp32, fp16 or int8), checked and timed")
    e.add_argument("run", help="the run id (python -m core runs list)")
    e.add_argument("--format", choices=FORMATS, default="onnx")
    e.add_argument("--quantize", choices=("none", "fp16", "int8"), default="none",
                   help="none: fp32; fp16: half-precision weights; int8: static quantization calibrated on "
                        "300 digits of the run's training split")
    e.add_argument("--out", help="the .onnx file to write (default RUN.onnx, RUN.fp16.onnx, RUN.int8.onnx here)")
    e.add_argument("--runs-dir")
    e.add_argument("--data-dir", help="the folder of the data the run was trained on (default: where it was)")
    e.add_argument("--json", action="store_true")
    e.set_defaults(handler=cmd_export)
