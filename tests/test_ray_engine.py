"""The runner's Ray engine (core.executors.ray_task.OnRay) without a cluster: the node's own task
body (train_task) runs here as a plain generator, and a "remote" hands its events to the engine
as Ray would, or loses them part-way, as a lost node does. What a stored run goes through on
Ray (written by the runner, retried once when its node is lost, interrupted when lost again,
failed saying why when the training raised or the stream ended early) is checked in seconds;
tests/test_ray.py checks the same engine on a real two-node cluster."""

from __future__ import annotations

import pytest

ray = pytest.importorskip("ray", reason="Ray is in requirements-cluster.txt")

from core import runner  # noqa: E402
from core.config import RunConfig  # noqa: E402
from core.executors import ray_task  # noqa: E402
from core.executors.ray_task import OnRay, train_task  # noqa: E402
from core.store import RunStore  # noqa: E402

pytestmark = pytest.mark.slow  # each test trains a run or two (a second each, with the retries)


class Node:
    """ray.get_runtime_context() on a node, as train_task reads it."""

    def get_node_id(self):
        return "node-1"


class Remote:
    """`ray.remote(train_task)` as OnRay calls it: each attempt runs the task body here; `lose`
    names, per attempt, after how many events the stream breaks (a lost node), None for never."""

    class Lost(ConnectionError):
        pass

    def __init__(self, lose=(None,), drop=()):
        self.lose, self.drop, self.attempts = list(lose), set(drop), 0

    def options(self, **resources):
        return self

    def remote(self, config_dicts, dataset, names):
        self.attempts += 1
        stop = self.lose.pop(0) if self.lose else None

        def stream():
            for i, event in enumerate(train_task(config_dicts, dataset, names)):
                if stop is not None and i == stop:
                    raise Remote.Lost("node died")
                if event[1] not in self.drop:
                    yield event
        return stream()


@pytest.fixture
def on_ray(monkeypatch, tmp_path, sample):
    monkeypatch.setattr(ray, "get", lambda ref: ref)            # the events themselves, not references
    monkeypatch.setattr(ray, "get_runtime_context", lambda: Node())
    store = RunStore(tmp_path)

    def train(remote, configs):
        ids = [store.create(c, status="queued", executor="ray") for c in configs]
        engine = OnRay(store, remote, sample, {"num_cpus": 1})
        try:
            runner.train_job(store, ids, dataset=sample, engine=engine)
        except ray_task.TrainingFailed:
            pass  # written into the runs by the runner
        return store, ids
    return train


def config(**fields):
    return RunConfig.from_preset("mlp-fast", dataset="mnist-sample", epochs=2, device="cpu",
                                 train_subset=500).replace(**fields)


def test_a_run_on_ray_is_written_by_the_runner_as_a_run_here(on_ray):
    store, (run_id,) = on_ray(Remote(), [config()])
    run = store.get(run_id)
    assert run["status"] == "finished", run["error"]
    assert len(store.history(run_id)) == 2 and store.load_model(run_id) is not None
    assert run["node"] == "node-1" and store.load_checkpoint(run_id) is not None


def test_a_node_lost_mid_run_retries_it_once_and_says_so(on_ray):
    remote = Remote(lose=(2, None))   # lost after "started" and the first epoch
    store, (run_id,) = on_ray(remote, [config()])
    run = store.get(run_id)
    assert remote.attempts == 2 and run["status"] == "finished", run["error"]
    assert "retried once" in run["note"] and len(store.history(run_id)) == 2


def test_a_node_lost_twice_leaves_the_run_interrupted_and_resumable_here(on_ray):
    remote = Remote(lose=(2, 2))
    store, (run_id,) = on_ray(remote, [config()])
    run = store.get(run_id)
    assert remote.attempts == 2 and run["status"] == "interrupted" and "lost" in run["error"]
    assert runner.resume(store, run_id)["status"] == "finished"


def test_a_group_on_ray_whose_node_is_lost_is_retried_whole_and_checkpointed_for_every_member(on_ray):
    from core.store.writer import GROUP_CHECKPOINT

    remote = Remote(lose=(5, None))   # started x2, the group's checkpoint, epoch 1 of each member
    store, ids = on_ray(remote, [config(seed=s) for s in (0, 1)])
    assert remote.attempts == 2
    for run_id in ids:
        run = store.get(run_id)
        assert run["status"] == "finished" and "retried once" in run["note"], run
        assert (store.run_dir(run_id) / GROUP_CHECKPOINT).exists() and store.load_checkpoint(run_id)["group"] == ids


def test_training_that_fails_on_the_node_fails_the_run_saying_why(on_ray, monkeypatch):
    import core.training

    def out_of_memory(*args, **kwargs):
        raise MemoryError("the node ran out of memory")

    monkeypatch.setattr(core.training, "train", out_of_memory)  # what the task body trains with
    store, (run_id,) = on_ray(Remote(), [config()])
    run = store.get(run_id)
    assert run["status"] == "failed" and "on a Ray node: MemoryError: the node ran out of memory" in run["error"]


def test_a_stream_that_ends_without_the_result_fails_the_run_not_leaves_it_running(on_ray):
    store, (run_id,) = on_ray(Remote(drop={"result"}), [config()])
    run = store.get(run_id)
    assert run["status"] == "failed" and "without the run's result" in run["error"]
