"""How long `python -m core runs list` takes, against the same command paying torch's imports.

    python bench/cli_start.py [--reps 7] [--runs 20]

A store of `--runs` queued runs in a temporary folder; then, interleaved, `--reps` times each:
  - `python -m core runs list --json` (builds only the `runs` parser: no torch);
  - the reference: the same listing after `import core.config` (which imports torch), what every
    command paid before only the asked command's parser was built (each command module, and
    the user errors' modules, imported torch).
Prints the medians and their ratio. Wall-clock seconds of whole processes, on whatever else the
machine is doing: compare the two rows of one run.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core.config import RunConfig  # noqa: E402
from core.store import RunStore  # noqa: E402

REFERENCE = ("import sys, core.config\nfrom core.cli import main\n"
             "sys.exit(main(['runs', 'list', '--json', '--runs-dir', sys.argv[1]]))")


def timed(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="cli-start-")) / "runs"
    store = RunStore(folder)
    for i in range(args.runs):
        store.create(RunConfig.from_preset("mlp", dataset="mnist-sample", seed=i))
    plain = [sys.executable, "-m", "core", "runs", "list", "--json", "--runs-dir", str(folder)]
    reference = [sys.executable, "-c", REFERENCE, str(folder)]
    timed(plain), timed(reference)  # the file cache warm for both
    times: dict[str, list[float]] = {"runs list": [], "reference (torch imported)": []}
    for _ in range(args.reps):
        times["runs list"].append(timed(plain))
        times["reference (torch imported)"].append(timed(reference))
    print(f"`python -m core runs list` on a store of {args.runs} runs, {args.reps} interleaved reps (median, min-max):")
    for name, values in times.items():
        print(f"  {name:<28} {statistics.median(values):6.2f} s  ({min(values):.2f}-{max(values):.2f})")
    ratio = statistics.median(times["reference (torch imported)"]) / statistics.median(times["runs list"])
    print(f"reference / runs list = {ratio:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
