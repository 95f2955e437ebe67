"""One training loop, one callback protocol (core.fit): a callback given to a member of a
vectorised group sees what it sees for the same config trained alone (progress, cancel,
checkpoint, early stopping), members are named, and the whole fit's callbacks get each epoch's
logs by member name."""

from __future__ import annotations

import pytest
import torch

from core.callbacks import Callback, Cancel, Checkpoint, Progress
from core.config import RunConfig
from core.data import Dataset
from core.group_training import train_group
from core.training import train

MLP = [{"type": "flatten"}, {"type": "dense", "units": 32, "activation": "relu"}]


@pytest.fixture(scope="module")
def data(sample) -> Dataset:
    return Dataset("mnist-sample", sample.train_images[:1200], sample.train_labels[:1200], sample.test_images[:200],
                   sample.test_labels[:200], source="test", fingerprint="fit")


def config(**kw) -> RunConfig:
    return RunConfig(**{"model": "custom", "layers": MLP, "dataset": "mnist-sample", "device": "cpu", "epochs": 3,
                        "batch_size": 100, **kw})


def test_progress_reports_for_a_group_member_what_it_reports_for_the_run_alone(data):
    alone, member = [], []
    train(config(seed=1), data, callbacks=[Progress(alone.append, every=4)])
    train_group([config(seed=0), config(seed=1)], data, member_callbacks=[[], [Progress(member.append, every=4)]],
                names=["a", "b"])
    assert [(e["kind"], e["epoch"], e.get("batch")) for e in alone] == \
        [(e["kind"], e["epoch"], e.get("batch")) for e in member]
    for a, b in zip(alone, member):
        assert a["loss" if a["kind"] == "batch" else "val_loss"] == \
            pytest.approx(b["loss" if b["kind"] == "batch" else "val_loss"], rel=1e-5)


def cancel_at(epoch: int, batch: int):
    """A Cancel that answers "cancelled" from (epoch, batch) on (both 0-based)."""
    seen = {"at": (0, 0)}

    class Where(Callback):
        def on_batch_end(self, trainer, e, b, n):
            seen["at"] = (e, b)

    return [Where(), Cancel(lambda: "cancelled" if seen["at"] >= (epoch, batch) else None)]


def test_a_cancel_stops_one_member_alone_as_it_stops_the_run_alone(data):
    alone = train(config(seed=1), data, callbacks=cancel_at(1, 3))
    results = train_group([config(seed=0), config(seed=1), config(seed=2)], data,
                          member_callbacks=[[], cancel_at(1, 3), []], names=["a", "b", "c"])
    assert alone.stop_reason == results[1].stop_reason == "cancelled"
    assert len(alone.history) == len(results[1].history) == 1   # the epoch it stopped in is not kept
    assert [len(results[i].history) for i in (0, 2)] == [3, 3] and not results[0].stop_reason


def test_the_whole_fit_gets_each_epochs_logs_by_member_name(data):
    seen = []

    class Logs(Callback):
        def on_epoch_end(self, fit, epoch, logs):
            seen.append((epoch, sorted(logs), [logs[name]["epoch"] for name in sorted(logs)]))

    train_group([config(seed=0, epochs=2), config(seed=1, epochs=2)], data, callbacks=[Logs()],
                names=["fold 1", "fold 2"])
    assert seen == [(0, ["fold 1", "fold 2"], [1, 1]), (1, ["fold 1", "fold 2"], [2, 2])]


def test_early_stopping_and_the_checkpoint_work_for_a_member_as_for_the_run_alone(data, tmp_path):
    stopping = config(seed=1, epochs=8, lr=0.2, early_stopping=1)   # a rate too high: validation loss rises
    alone = train(stopping, data, callbacks=[Checkpoint(tmp_path / "alone.pt", tmp_path / "alone_best.pt")])
    results = train_group([config(seed=0, epochs=8, lr=0.2), stopping], data,
                          member_callbacks=[[], [Checkpoint(tmp_path / "member.pt", tmp_path / "member_best.pt")]],
                          names=["plain", "stopping"])
    member = results[1]
    assert alone.stop_reason.startswith("early stopping") and member.stop_reason == alone.stop_reason
    assert len(member.history) == len(alone.history) < 8
    assert member.extra["restored_epoch"] == alone.extra["restored_epoch"]
    assert len(results[0].history) == 8   # the other member trained all its epochs
    pointer = torch.load(tmp_path / "member.pt", weights_only=True)   # a member's checkpoint names its group
    assert pointer["group"] == ["plain", "stopping"] and pointer["member"] == 1
    for name in ("alone", "member"):   # the best epoch's weights are the ones the run ends with
        best = torch.load(tmp_path / f"{name}_best.pt", weights_only=True)
        ended = (alone if name == "alone" else member).model.state_dict()
        assert all(torch.equal(best[k].cpu(), ended[k].cpu()) for k in best)
