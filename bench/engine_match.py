"""Do two versions of the lab train the same configs to the same result? For a change of the
training engine (the one loop of core/fit.py replaced two trainers): the same single runs and
vectorised groups, trained by this tree and by another checkout (`--before`, e.g. a `git worktree`
of the commit before), compared weight by weight, history entry by history entry.

    git worktree add /tmp/before COMMIT
    python bench/engine_match.py --before /tmp/before

Prints, for each case, whether the weights and test probabilities are bit-identical and which
history fields differ (timings are left out). Runs on the offline sample, on the CPU.
"""

from __future__ import annotations

import argparse
import pickle
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent

# Trains every case in the tree it runs in (its own `core`) and pickles the results to argv[1].
TRAIN = r'''
import pickle, sys
sys.path.insert(0, ".")
from core.config import RunConfig
from core.data import load_dataset
from core.experiments import kfold_configs
from core.group_training import train_group
from core.training import train

ds = load_dataset("mnist-sample", None)
mlp = [{"type": "flatten"}, {"type": "dense", "units": 32, "activation": "relu"}]
base = dict(model="custom", layers=mlp, dataset="mnist-sample", device="cpu")
singles = {
    "mlp": RunConfig(**base, epochs=2, batch_size=64),
    "mlp, L2, one-cycle": RunConfig(**base, epochs=2, batch_size=64, l2=1e-3, lr_schedule="onecycle", lr=3e-3),
    "cnn, augmented, bf16": RunConfig.from_preset("cnn", dataset="mnist-sample", device="cpu", epochs=1, augment=True,
                                                  precision="bf16"),
    "binary, early stopping": RunConfig(**base, epochs=4, batch_size=128, loss="binary_crossentropy",
                                        positive_class=3, early_stopping=1),
    "odd training subset": RunConfig(**base, epochs=2, batch_size=100, train_subset=1001),
}
group = RunConfig(**base, epochs=2, batch_size=64, lr_schedule="onecycle", lr=3e-3)
groups = {
    "3 folds": kfold_configs(group, 3),
    "lr and L2 grid": [group.replace(lr=lr, l2=l2, early_stopping=1, epochs=3)
                       for lr, l2 in ((1e-3, 0), (3e-3, 1e-3), (1e-2, 1e-2))],
}

def keep(r):
    return ({k: v.detach().cpu().clone() for k, v in r.model.state_dict().items()}, r.history, r.test["probs"],
            r.stop_reason)

out = {name: [keep(train(cfg, ds))] for name, cfg in singles.items()}
out.update({name: [keep(r) for _, r in sorted(train_group(cfgs, ds).items())] for name, cfgs in groups.items()})
pickle.dump(out, open(sys.argv[1], "wb"))
'''


def results_of(tree: Path, path: Path) -> dict:
    subprocess.run([sys.executable, "-c", TRAIN, str(path)], cwd=tree, check=True)
    with open(path, "rb") as f:
        return pickle.load(f)  # written just now by this script's own code, not a user's file


def compare(before: dict, after: dict) -> list[str]:
    import numpy as np
    import torch

    lines = []
    for name, models in before.items():
        for i, (b, a) in enumerate(zip(models, after[name])):
            weights = all(torch.equal(b[0][k], a[0][k]) for k in b[0])
            probs = np.array_equal(b[2], a[2])
            fields = sorted({k for hb, ha in zip(b[1], a[1]) for k in hb
                             if k not in ("seconds", "samples_per_second") and hb[k] != ha.get(k)})
            same_len = len(b[1]) == len(a[1]) and b[3] == a[3]
            label = name if len(models) == 1 else f"{name}, model {i + 1}"
            lines.append(f"  {label:34s} weights {'bit-identical' if weights else 'DIFFER'}, test probabilities "
                         f"{'identical' if probs else 'DIFFER'}, epochs and stop {'same' if same_len else 'DIFFER'}, "
                         f"history fields that differ: {', '.join(fields) or 'none'}")
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", required=True, help="another checkout of the lab (the version to compare with)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        before = results_of(Path(args.before).resolve(), Path(scratch) / "before.pkl")
        after = results_of(HERE, Path(scratch) / "after.pkl")
    print(f"{args.before} (before) against {HERE} (this tree), offline sample, CPU:")
    print("\n".join(compare(before, after)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
