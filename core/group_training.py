"""Training N configs of one architecture as one vectorised model (core.stacked): the folds of
a k-fold run, repeated seeds, a learning-rate grid. Each config still becomes a normal run
with its own history, weights, predictions and checkpoint.

What each model gets is what it would get trained alone (core.training): its own
initialization (seeded by its config), its own training and validation indices, its own
shuffle order each epoch (seeded from its seed and the epoch), its own learning rate and
schedule, its own early stopping. The losses of the N models are summed, so each model's
gradient is its own loss's gradient. Results match the same configs trained one by one up to
floating-point rounding (a batched matrix product sums in another order than a plain one);
dropout and augmentation draw different random numbers than one-by-one runs do, so with
them the models are equally good, not equal.

Limits handled, not hidden (`vectorize_plan` says which applies, and the runs train one by one):
  - configs that differ in anything but seed, fold, learning rate, L2, training subset,
    validation split or early stopping (architecture, batch size, epochs, optimizer, ...);
  - folds whose epochs have a different number of batches (their last batches of different
    sizes are fine: padded samples are masked out of the loss and of batch norm);
  - more than MAX_GROUP models.
Per-model learning rates: core.stacked.MemberRates. The loop is core.fit's, the one a single run
trains through; the stack itself is core.fit_models.Stack.
"""

from __future__ import annotations

from core.callbacks import Callback
from core.config import RunConfig
from core.data import Dataset
from core.devices import resolve_device
from core.fit import Fit
from core.fit_models import VAL_ROWS_PER_PASS, Stack  # noqa: F401
from core.train_result import TrainResult
from core.vectorize import MAX_GROUP, MAY_DIFFER, vectorize_plan  # noqa: F401


def train_group(configs: list[RunConfig], dataset: Dataset, callbacks: list[Callback] = (),
                member_callbacks: list[list[Callback]] | None = None, resume_state: dict | None = None,
                names: list[str] | None = None) -> dict[int, TrainResult]:
    """Train `configs` as one vectorised model; returns the result of each member that finished
    in this call, by position (a resumed group's members that had finished before are not
    trained again). `member_callbacks[i]` are member i's callbacks (the same a single run takes,
    core.callbacks); `callbacks` see the whole fit (core.fit.Fit) and each epoch's logs by member
    name (`names`, a run's id in the store)."""
    reason = vectorize_plan(configs, dataset, for_speed=False)
    if reason:
        raise ValueError(f"these runs cannot train as one vectorised model: {reason}")
    device = resolve_device(configs[0].device)
    fit = Fit(Stack(configs, dataset, device), configs, device, names=names, member_callbacks=member_callbacks,
              callbacks=callbacks, dataset_info=dataset.describe())
    start = fit.load_checkpoint(resume_state) if resume_state else 0
    fit.fit(start)
    return {m.index: m.result for m in fit.members if m.result is not None}
