"""Which runs can train as one vectorised model (core.group_training), and when they cannot,
why: the one rule every executor's planner (core.executors.base.plan_jobs), the CLI's kfold and
the group trainer itself ask."""

from __future__ import annotations

from core.config import RunConfig
from core.data import Dataset
from core.run_data import split_indices
from core.training import num_batches

MAX_GROUP = 16
MAY_DIFFER = {"seed", "kfold", "lr", "l2", "train_subset", "val_split", "early_stopping", "name", "extra"}


def vectorize_plan(configs: list[RunConfig], dataset: Dataset | None = None, for_speed: bool = True) -> str | None:
    """None when `configs` can train as one vectorised model, else the reason they cannot.

    With `for_speed`, also refuse where stacking is slower than one by one: convolutional models
    on a CPU (measured with bench/kfold_speed.py: five small CNNs stacked in one grouped
    convolution took 7.5x one model's epoch, five separate convolutions 5.2x, one by one 5x;
    convolutions already keep the CPU's cores busy, so there is no launch overhead to save)."""
    if len(configs) > MAX_GROUP:
        return f"{len(configs)} models are more than the {MAX_GROUP} trained together at most"
    first = configs[0].to_dict()
    first["layers"] = configs[0].architecture()
    for config in configs[1:]:
        other = config.to_dict()
        other["layers"] = config.architecture()
        for key in first:
            if key not in MAY_DIFFER and first[key] != other[key]:
                what = "architectures" if key in ("layers", "model") else key
                return (f"their {what} differ ({first[key] if key != 'layers' else configs[0].model} vs "
                        f"{other[key] if key != 'layers' else config.model}); only seeds, folds, learning rates, "
                        "L2, subsets and validation splits may differ")
    if for_speed and not configs[0].device.startswith("cuda") \
            and any(layer["type"] == "conv" for layer in configs[0].architecture()):
        return ("convolutional models train faster one by one on a CPU (stacked in one grouped convolution, "
                "5 CNNs took 7.5x one model's time; one by one 5x)")
    if dataset is not None:
        steps = {num_batches(len(split_indices(c, dataset.train_labels)[0]), c.batch_size) for c in configs}
        if len(steps) > 1:
            return (f"their training sets give epochs of different numbers of batches ({sorted(steps)}); "
                    "models in one stack take their steps together")
    return None
