"""Executors keep one promise set: which runs train together is planned by one function
(core.executors.base.plan_jobs) for the local, inline and Ray executors and the CLI's kfold;
the inline executor trains a vectorised group as one stack like the local one; the Ray
executor resolves `auto` against the cluster and checks the precision before anything is
stored."""

from __future__ import annotations

import ast

import pytest

from core.config import ConfigError, RunConfig
from core.executors.base import plan_jobs
from core.store import RunStore
from tests.conftest import ROOT

BASE = dict(dataset="mnist-sample", device="cpu", epochs=1, train_subset=400, batch_size=50)


def test_plan_jobs_says_what_trains_together_and_why_not():
    seeds = [RunConfig.from_preset("mlp", seed=s, **BASE) for s in range(3)]
    assert plan_jobs(seeds, vectorize=True) == ([[0, 1, 2]], None)
    assert plan_jobs(seeds, vectorize=False) == ([[0], [1], [2]], None)
    assert plan_jobs(seeds, vectorize=False, refused="asked to") == ([[0], [1], [2]], "asked to")
    mixed = [seeds[0], RunConfig.from_preset("mlp-fast", **BASE)]
    jobs, reason = plan_jobs(mixed, vectorize=True)
    assert jobs == [[0], [1]] and "differ" in reason
    assert plan_jobs(seeds[:1], vectorize=True) == ([[0]], None)


def test_only_the_planner_decides_what_trains_together():
    callers = set()
    for path in ROOT.joinpath("core").rglob("*.py"):
        tree = ast.parse(path.read_text())
        if any(isinstance(n, ast.Call) and getattr(n.func, "id", getattr(n.func, "attr", None)) == "vectorize_plan"
               for n in ast.walk(tree)):
            callers.add(str(path.relative_to(ROOT)))
    # the planner, and the group trainer checking a group it is handed (for_speed=False)
    assert callers == {"core/executors/base.py", "core/group_training.py"}, callers


@pytest.mark.slow
def test_the_inline_executor_trains_a_vectorised_group_as_one_stack(tmp_path, sample):
    from core.executors.inline import InlineExecutor

    store = RunStore(tmp_path)
    ids = InlineExecutor(store).submit([RunConfig.from_preset("mlp", seed=s, **BASE) for s in range(3)],
                                       group="g", vectorize=True, dataset=sample)
    runs = [store.get(r) for r in ids]
    assert all(r["status"] == "finished" for r in runs)
    assert all(r["vectorized"] == {"group": ids} for r in runs)
    assert all(store.environment(r)["training_loop"] == "vectorised: 3 models in one stack" for r in ids)
    alone = InlineExecutor(store).submit([RunConfig.from_preset("mlp", seed=s, **BASE) for s in range(2)],
                                         vectorize=False, dataset=sample)
    assert all(store.get(r)["vectorized"] is None and store.get(r)["status"] == "finished" for r in alone)


class FakeRay:
    def __init__(self, gpus):
        self.gpus = gpus

    def cluster_resources(self):
        return {"CPU": 8, **({"GPU": self.gpus} if self.gpus else {})}


def test_the_ray_executor_resolves_auto_on_the_cluster_and_checks_precision(monkeypatch):
    import core.executors.ray as ray_executor

    executor = object.__new__(ray_executor.RayExecutor)
    monkeypatch.setattr(ray_executor, "_ray", lambda: FakeRay(gpus=0))
    config = RunConfig.from_preset("mlp", dataset="mnist-sample", device="auto")
    assert executor.resolve(config).device == "cpu"
    with pytest.raises(ConfigError, match="fp16 mixed precision needs a CUDA GPU"):
        executor.resolve(config.replace(precision="fp16"))
    monkeypatch.setattr(ray_executor, "_ray", lambda: FakeRay(gpus=2))
    assert executor.resolve(config.replace(precision="fp16")).device == "cuda"
