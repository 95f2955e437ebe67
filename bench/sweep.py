"""Sweeps: what more slots and more machines buy.

    python bench/sweep.py [--trials 16] [--epochs 2]

A random sweep of the course MLP (the default MLP space: learning rate, batch, depth, width,
dropout, L2) on the offline sample, `--trials` trials of `--epochs` epochs, run three ways in
this one process: the local executor with 1 slot and workers started as fresh Pythons
(MNIST_LAB_PRELOAD=0), with 1 slot and with 2 slots forked from the preloaded zygote (the
default: core/executors/zygote.py; started and awaited first), and the Ray executor on a
2-node Ray cluster started on this machine (ray.cluster_utils.Cluster, one CPU per node).
Prints each wall time, the ratios to the fresh-Python 1-slot run, and the overhead per trial
(wall time times parallel trials divided by trials, minus the mean training time a trial
recorded):
process start and data loading for local workers, task scheduling and shipping data and
results for Ray.
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

from core import sweeps  # noqa: E402
from core.config import RunConfig  # noqa: E402
from core.data import load_dataset  # noqa: E402
from core.executors import zygote  # noqa: E402
from core.executors.local import LocalExecutor  # noqa: E402
from core.store import RunStore  # noqa: E402


def one(name: str, make_executor, parallel: int, trials: int, epochs: int, dataset) -> dict:
    store = RunStore(tempfile.mkdtemp(prefix=f"bench-sweep-{name}-"))
    executor = make_executor(store)
    base = RunConfig.from_preset("mlp", dataset="mnist-sample", epochs=epochs, device="cpu")
    spec = sweeps.new_sweep(store, base, None, "random", trials=trials, seed=0, parallel=parallel, pruning=False)
    t0 = time.perf_counter()
    result = sweeps.run_sweep(store, executor, spec, dataset=dataset, poll_s=0.1)
    wall = time.perf_counter() - t0
    train = statistics.mean(store.metrics(t["run_id"]).get("seconds") or 0.0 for t in result["trials"])
    finished = sum(t["status"] == "finished" for t in result["trials"])
    nodes = len({t["node"] for t in result["trials"]})
    return {"name": name, "wall": wall, "parallel": parallel, "train": train, "finished": finished, "nodes": nodes,
            "overhead": wall * parallel / trials - train, "best": result["best"]["value"] if result["best"] else None}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    dataset = load_dataset("mnist-sample")
    os.environ["MNIST_LAB_PRELOAD"] = "0"
    rows = [one("local, fresh", lambda s: LocalExecutor(s, slots=1), 1, args.trials, args.epochs, dataset)]
    os.environ["MNIST_LAB_PRELOAD"] = "1"
    zygote.ready()
    rows += [one("local, 1 slot", lambda s: LocalExecutor(s, slots=1), 1, args.trials, args.epochs, dataset),
             one("local, 2 slots", lambda s: LocalExecutor(s, slots=2), 2, args.trials, args.epochs, dataset)]
    try:
        import ray
        from ray.cluster_utils import Cluster

        from core.executors.ray import RayExecutor
    except ImportError:
        print("Ray is not installed (pip install -r requirements-cluster.txt): its row is left out")
    else:
        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
        cluster.add_node(num_cpus=1)
        try:
            rows.append(one("Ray, 2 nodes", lambda s: RayExecutor(s, address=cluster.address), 2, args.trials,
                            args.epochs, dataset))
        finally:
            ray.shutdown()
            cluster.shutdown()
    zygote.stop()
    ref = rows[0]["wall"]
    print(f"random sweep, course MLP, {args.trials} trials of {args.epochs} epochs, offline sample, this machine:")
    print(f"{'':<16}{'wall s':>8}{'vs fresh':>10}{'train s/trial':>15}{'overhead s/trial':>18}{'nodes':>7}"
          f"{'finished':>10}{'best val':>10}")
    for r in rows:
        print(f"{r['name']:<16}{r['wall']:8.1f}{r['wall'] / ref:9.2f}x{r['train']:15.2f}{r['overhead']:18.2f}"
              f"{r['nodes']:7d}{r['finished']:10d}{r['best']:10.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
