"""Training in the calling process, one run after another: for a notebook, a script or a
test that wants a sweep without worker processes (a worker's start costs ~3 s on this
2-core machine, more than a 1-epoch trial on the sample). `submit` returns when its runs are
trained. Nothing runs in the background, so nothing can be cancelled or pruned mid-run:
the sweep's pruning needs the local or the Ray executor.
"""

from __future__ import annotations

from collections.abc import Sequence

from core.config import RunConfig
from core.executors.base import Executor, plan_jobs, prepare, record_plan


class InlineExecutor(Executor):
    name = "inline"

    def submit(self, configs: Sequence[RunConfig], group: str | None = None, vectorize: bool = False,
               dataset=None) -> list[str]:
        """Train the configs here, planned as every executor plans (plan_jobs): a vectorised group
        trains as one stack, the others one after another."""
        from core.runner import train_job

        configs = prepare(self.store, configs, dataset)
        plan, reason = plan_jobs(configs, vectorize, dataset)
        ids = [self.store.create(config, status="running", group=group, executor=self.name) for config in configs]
        record_plan(self.store, ids, plan, reason)
        for job in plan:
            try:
                train_job(self.store, [ids[i] for i in job], dataset, data_dir=self.data_dir)
            except Exception:  # noqa: BLE001 - recorded in the run (failed, with why); the caller goes on
                pass
        return ids

    def resume(self, run_id: str) -> None:
        """A stopped run, or the whole vectorised group it was trained in, trained here."""
        from core.runner import resume

        resume(self.store, run_id, data_dir=self.data_dir)
