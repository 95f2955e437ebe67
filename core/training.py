"""Training one config: define, compile, fit and evaluate, the course's Keras workflow in one
call (`train`), and the result it gives (`TrainResult`). The loop itself is core.fit's, the
one loop a single run and a vectorised group (core.group_training) both train through.
"""

from __future__ import annotations

from core.callbacks import Callback
from core.config import RunConfig
from core.data import Dataset, load_dataset
from core.devices import resolve_device
from core.fit import GRAD_NORM_EVERY, Fit, num_batches  # noqa: F401
from core.fit_models import OneModel, l2_penalty, to_device  # noqa: F401
from core.train_result import TrainResult
from core.compiling import (autocast, check_precision, evaluate, evaluation_result,  # noqa: F401
                            loss_function, make_optimizer, make_scheduler, predictions)
from core.run_data import (TensorData, check_against_data, epoch_seed, prepare_data, shuffle_order,  # noqa: F401
                           split_indices, task_labels)


def train(config: RunConfig, dataset: Dataset | None = None, data_dir=None,
          callbacks: list[Callback] = (), resume_state: dict | None = None) -> TrainResult:
    """Define, compile, fit and evaluate one config: the course's Keras workflow in one call.

    `dataset` may be passed in (already loaded) to avoid reading the files again; otherwise
    it is loaded by name from `data_dir`. `resume_state` is a checkpoint to continue from.
    """
    device = resolve_device(config.device)
    if dataset is None:
        dataset = load_dataset(config.dataset, data_dir)
    fit = Fit(OneModel(config, dataset, device), [config], device, member_callbacks=[list(callbacks)],
              dataset_info=dataset.describe())
    start_epoch = fit.load_checkpoint(resume_state) if resume_state else 0
    (member,) = fit.fit(start_epoch)
    return member.result
