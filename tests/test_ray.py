"""The Ray executor on a real multi-node Ray cluster on this machine (Ray's own
ray.cluster_utils.Cluster, how Ray tests multi-node behaviour): a sweep whose trials run on
both nodes, and a node removed in the middle of the sweep with the sweep still finishing; a
vectorised group trained as one task, written as the same group trained here."""

from __future__ import annotations

import socket
import threading

import pytest

ray = pytest.importorskip("ray", reason="Ray is in requirements-cluster.txt")

from ray.cluster_utils import Cluster  # noqa: E402

from core.runner import resume  # noqa: E402
from core import sweeps  # noqa: E402
from core.config import RunConfig  # noqa: E402
from core.store import RunStore  # noqa: E402
from tests.waiting import wait_until  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture
def cluster():
    """A head and one worker node, one CPU each; always shut down, also on failure."""
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    worker = c.add_node(num_cpus=1)
    try:
        yield c, worker
    finally:
        ray.shutdown()
        c.shutdown()


def test_a_sweep_runs_on_both_nodes_and_survives_losing_one(cluster, tmp_path):
    from core.executors.ray import RayExecutor

    c, worker = cluster
    store = RunStore(tmp_path)
    executor = RayExecutor(store, address=c.address)
    base = RunConfig.from_preset("mlp", dataset="mnist-sample", epochs=20, device="cpu")
    spec = sweeps.new_sweep(store, base, {"lr": {"log": [5e-4, 5e-3]}}, "random", trials=6, executor="ray",
                            parallel=2, pruning=False)
    removed = {}

    def remove_worker_mid_trial():
        """Once a trial has finished an epoch on the worker node, take that node away."""
        run = wait_until(lambda: next((r for r in store.list(group=spec.sweep_id) if r["node"] == worker.node_id
                                       and r["status"] == "running" and r["epochs_done"] >= 1), None),
                         240, "a trial with a finished epoch on the worker node", every=0.1)
        removed["run"] = run["id"]
        c.remove_node(worker)

    thread = threading.Thread(target=remove_worker_mid_trial, daemon=True)
    thread.start()
    seen = set()  # every node a trial was seen training on
    result = sweeps.run_sweep(store, executor, spec,
                              on_update=lambda r: seen.update(t["node"] for t in r["trials"]
                                                                 if t["status"] != "queued" and t["node"] != socket.gethostname()))
    thread.join(5)
    assert removed, "no trial ran on the worker node"
    assert len(result["trials"]) == 6
    assert all(t["status"] == "finished" for t in result["trials"]), [(t["status"], t["node"]) for t in
                                                                     result["trials"]]
    assert worker.node_id in seen and len(seen) >= 2  # two distinct Ray node ids
    lost = store.get(removed["run"])  # interrupted with the node, retried once on the head node, finished
    assert "retried once" in lost["note"] and lost["node"] != worker.node_id and lost["status"] == "finished"
    assert len(store.history(removed["run"])) == 20


def test_the_ray_executor_streams_epochs_and_artefacts_back_to_the_driver(cluster, tmp_path, monkeypatch):
    """...trained through the runner, as every executor's runs are (core.runner.train_job, here
    with the Ray engine)."""
    from core import runner
    from core.executors.ray import RayExecutor
    from core.executors.ray_task import OnRay

    jobs = []
    train_job = runner.train_job
    monkeypatch.setattr(runner, "train_job", lambda store, run_ids, **kw: jobs.append((run_ids, kw["engine"]))
                        or train_job(store, run_ids, **kw))
    c, worker = cluster
    store = RunStore(tmp_path)
    executor = RayExecutor(store, address=c.address)
    ids = executor.submit([RunConfig.from_preset("mlp", dataset="mnist-sample", epochs=2, device="cpu", seed=s)
                           for s in range(2)])
    executor.wait(ids, timeout=300)
    assert sorted(r for run_ids, engine in jobs for r in run_ids) == sorted(ids)
    assert all(isinstance(engine, OnRay) for _, engine in jobs)
    nodes = set()
    for run_id in ids:
        run = store.get(run_id)
        assert run["status"] == "finished", run["error"]
        assert len(store.history(run_id)) == 2
        assert store.predictions(run_id)["probs"].shape == (1000, 10)
        assert store.load_model(run_id) is not None  # weights written on this machine
        nodes.add(executor.where(run_id))
    assert nodes <= {n["NodeID"] for n in ray.nodes()} and len(nodes) == 2  # both nodes trained


def test_cancel_stops_a_ray_trial(cluster, tmp_path):
    from core.executors.ray import RayExecutor

    c, _ = cluster
    store = RunStore(tmp_path)
    executor = RayExecutor(store, address=c.address)
    run_id = executor.submit([RunConfig.from_preset("mlp", dataset="mnist-sample", epochs=200, device="cpu")])[0]
    wait_until(lambda: executor.poll() or store.history(run_id), 120, "the run's first epoch on Ray")
    executor.cancel(run_id)
    assert store.get(run_id)["status"] == "cancelled" and not executor.active([run_id])
    # the task is stopped: the driver's thread for it (core.runner on the OnRay engine) ends
    wait_until(lambda: not [t for t in threading.enumerate() if t.name.startswith("ray driver")], 60,
               "the cancelled job's driver thread to end")
    assert store.get(run_id)["status"] == "cancelled"


def test_a_run_stopped_on_ray_resumes_here_exactly_where_it_was(cluster, tmp_path):
    """Every epoch's checkpoint comes back to the store: a Ray run stopped after a few epochs
    and resumed on this machine ends bit for bit where a straight Ray run ends (one thread on
    both sides, as Ray gives a one-CPU task)."""
    import torch

    from core.executors.ray import RayExecutor

    c, _ = cluster
    store = RunStore(tmp_path)
    executor = RayExecutor(store, address=c.address)
    config = RunConfig.from_preset("mlp", dataset="mnist-sample", epochs=6, device="cpu", lr_schedule="onecycle",
                                   lr=0.002, seed=3)
    straight, stopped = executor.submit([config, config.replace(name="stopped")])
    wait_until(lambda: executor.poll() or len(store.history(stopped)) >= 2, 300, "two epochs of the run on Ray")
    executor.cancel(stopped)
    executor.wait([straight], timeout=300)
    assert store.get(stopped)["status"] == "cancelled" and store.load_checkpoint(stopped) is not None
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        resume(store, stopped)
    finally:
        torch.set_num_threads(threads)
    a, b = store.history(straight), store.history(stopped)
    assert [h["val_loss"] for h in a] == [h["val_loss"] for h in b] and [h["lr"] for h in a] == [h["lr"] for h in b]
    wa, wb = store.load_weights(straight, "last"), store.load_weights(stopped, "last")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_a_vectorised_group_trains_as_one_ray_task_written_as_a_group_trained_here(cluster, tmp_path):
    """vectorize on Ray as on the other executors: the plan's group is one task training one
    stack; the driver writes each member through the store writer's callbacks, so the runs are
    what the inline executor's group gives (history, weights; bit for bit with one thread on both
    sides) and every member's folder holds the group's checkpoint."""
    import torch

    from core.executors.inline import InlineExecutor
    from core.executors.ray import RayExecutor
    from core.runner import GROUP_CHECKPOINT

    c, _ = cluster
    store = RunStore(tmp_path)
    configs = [RunConfig.from_preset("mlp", dataset="mnist-sample", device="cpu", epochs=2, train_subset=400,
                                     batch_size=50, seed=s) for s in range(3)]
    executor = RayExecutor(store, address=c.address)
    ids = executor.submit(configs, group="seeds", vectorize=True)
    executor.wait(ids, timeout=300)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        here = InlineExecutor(store).submit(configs, group="here", vectorize=True)
    finally:
        torch.set_num_threads(threads)
    for ray_run, local_run in zip(ids, here):
        run = store.get(ray_run)
        assert run["status"] == "finished", run["error"]
        assert run["vectorized"] == {"group": ids}
        assert store.environment(ray_run)["training_loop"] == "vectorised: 3 models in one stack"
        assert (store.run_dir(ray_run) / GROUP_CHECKPOINT).exists() and store.load_checkpoint(ray_run)["group"] == ids
        assert [h["val_loss"] for h in store.history(ray_run)] == [h["val_loss"] for h in store.history(local_run)]
        wa, wb = store.load_weights(ray_run, "last"), store.load_weights(local_run, "last")
        assert all(torch.equal(wa[k], wb[k]) for k in wa)
        assert store.get(ray_run)["params"] == store.get(local_run)["params"] > 0
