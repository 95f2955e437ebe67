"""How long a CPU job waits from its submission to its first batch, with the worker forked from
the preloaded zygote (core.executors.zygote) and with a fresh Python, interleaved in one run.

    python bench/worker_start.py [--reps 5]

Each rep submits one small MLP job (the offline sample, 2,000 digits, one epoch) through the
local executor, once each way, alternating, on an idle store, and records the seconds from the
submit until the run holds its slot ("running") and until its first batch is reported. Also
prints the private memory of a worker waiting for its slot, each way (a Linux /proc figure).
Prints the medians and the ratio fresh / forked.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.config import RunConfig  # noqa: E402
from core.executors import zygote  # noqa: E402
from core.executors.local import LocalExecutor  # noqa: E402
from core.store import RunStore  # noqa: E402

CONFIG = dict(dataset="mnist-sample", device="cpu", epochs=1, train_subset=2000)


def one_job(store: RunStore, preload: bool) -> tuple[float, float]:
    os.environ["MNIST_LAB_PRELOAD"] = "1" if preload else "0"
    start = time.monotonic()
    [run_id] = LocalExecutor(store).submit([RunConfig.from_preset("mlp", **CONFIG)])
    running = first = None
    while first is None:
        run = store.get(run_id)
        if running is None and run["status"] != "queued":
            running = time.monotonic() - start
        if run.get("progress") or run["status"] == "finished":
            first = time.monotonic() - start
        if run["status"] in ("failed", "cancelled", "interrupted"):
            raise SystemExit(f"the job ended {run['status']}: {run['error']}")
        time.sleep(0.02)
    while store.get(run_id)["status"] not in ("finished", "failed"):
        time.sleep(0.05)
    return running, first


def waiting_private_mb(store: RunStore, preload: bool) -> float:
    """Private memory of a worker queued behind a slot this process holds."""
    os.environ["MNIST_LAB_PRELOAD"] = "1" if preload else "0"
    holder = store.create(RunConfig.from_preset("mlp", **CONFIG), status="queued")
    store.record_worker(holder, os.getpid())
    store.claim_slot([holder], "cpu", 1)
    [waiting] = LocalExecutor(store).submit([RunConfig.from_preset("mlp", **CONFIG)])
    pid = store.get(waiting)["pid"]
    deadline = time.monotonic() + 60
    while "nanosleep" not in Path(f"/proc/{pid}/wchan").read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:])
    mb = (int(fields["Private_Clean"].split()[0]) + int(fields["Private_Dirty"].split()[0])) / 1024
    store.request_cancel(waiting)
    while store.get(waiting)["status"] == "queued":
        time.sleep(0.05)
    store.mark_failed(holder, "bench over", status="cancelled")
    return mb


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    if not zygote.supported():
        raise SystemExit("the zygote serves Linux only (and not with MNIST_LAB_PRELOAD=0)")
    store = RunStore(Path(tempfile.mkdtemp(prefix="worker-start-")) / "runs")
    print(f"zygote {zygote.ready()}")
    one_job(store, True)  # the data set's first read, each way, outside the figures
    one_job(store, False)
    times = {True: [], False: []}
    for rep in range(args.reps):
        for preload in (True, False):
            times[preload].append(one_job(store, preload))
            running, first = times[preload][-1]
            print(f"rep {rep + 1} {'forked' if preload else 'fresh '}: running after {running:5.2f} s, "
                  f"first batch after {first:5.2f} s", flush=True)
    for preload in (True, False):
        name = "forked from the zygote" if preload else "a fresh Python"
        running = statistics.median(t[0] for t in times[preload])
        first = statistics.median(t[1] for t in times[preload])
        print(f"{name:24s} median: running after {running:.2f} s, first batch after {first:.2f} s")
    fresh = statistics.median(t[1] for t in times[False])
    forked = statistics.median(t[1] for t in times[True])
    print(f"submit -> first batch: fresh / forked = {fresh / forked:.1f}x")
    for preload in (True, False):
        print(f"private memory of a worker waiting for its slot, {'forked' if preload else 'fresh '}: "
              f"{waiting_private_mb(store, preload):.0f} MB")
    zygote.stop()


if __name__ == "__main__":
    main()
