"""Training in the calling process, one run after another: for a notebook, a script or a
test that wants a sweep without worker processes (a worker's start costs ~3 s on this
2-core machine, more than a 1-epoch trial on the sample). `submit` returns when its runs are
trained. Nothing runs in the background, so nothing can be cancelled or pruned mid-run:
the sweep's pruning needs the local or the Ray executor.
"""

from __future__ import annotations

from collections.abc import Sequence

from core.config import RunConfig
from core.executors.base import Executor, prepare


class InlineExecutor(Executor):
    name = "inline"

    def submit(self, configs: Sequence[RunConfig], group: str | None = None, vectorize: bool = False,
               dataset=None) -> list[str]:
        from core.data import load_dataset

        configs = prepare(self.store, configs, dataset)
        ids = []
        for config in configs:
            data = dataset if dataset is not None and dataset.name == config.dataset else \
                load_dataset(config.dataset, self.data_dir)
            run_id = self.store.create(config, status="running", group=group, executor=self.name)
            ids.append(run_id)
            try:
                self.store.train_in_this_process(config, data, run_id=run_id, data_dir=self.data_dir)
            except Exception:  # noqa: BLE001 - recorded in the run (failed, with why); the caller goes on
                pass
        return ids

    def resume(self, run_id: str) -> None:
        self.store.check_resumable(run_id)
        self.store.resume_in_this_process(run_id, data_dir=self.data_dir)
