"""A run's status is one enum with its sets, and what a run is (its task, its group's kind,
whether it is a starter) are index columns: filled when the run is written, when the index is
rebuilt and when an older index is opened; no caller searches config text or group names."""

from __future__ import annotations

import re
import sqlite3

from core.config import RunConfig
from core.store import RunStore
from core.store.records import ACTIVE, RESUMABLE, STATUSES, TERMINAL, WITH_RESULTS, Status
from tests.conftest import ROOT


def test_the_status_sets_partition_the_statuses():
    assert set(ACTIVE) | set(TERMINAL) == set(Status) and not set(ACTIVE) & set(TERMINAL)
    assert set(WITH_RESULTS) <= set(TERMINAL) and set(RESUMABLE) <= set(TERMINAL)
    assert STATUSES == tuple(s.value for s in Status) and Status.FINISHED == "finished"


def test_task_and_group_kind_are_columns_from_creation_reindex_and_old_indexes(tmp_path):
    store = RunStore(tmp_path)
    multi = store.create(RunConfig.from_preset("mlp", dataset="mnist-sample"), group="kfold-20261130-101500-001")
    binary = store.create(RunConfig.from_preset("mlp", dataset="mnist-sample", loss="binary_crossentropy",
                                                positive_class=3), group="hw-20261130-101500-002")
    alone = store.create(RunConfig.from_preset("cnn", dataset="mnist-sample"))

    def kinds(s):
        return {r["id"]: (r["task"], r["group_kind"]) for r in s.list()}

    expected = {multi: ("multiclass", "kfold"), binary: ("binary", "hardware"), alone: ("multiclass", None)}
    assert kinds(store) == expected
    store.rebuild_index()
    assert kinds(store) == expected
    # an index from before the columns: they are filled when it opens
    with sqlite3.connect(tmp_path / "index.sqlite") as db:
        db.execute("ALTER TABLE runs DROP COLUMN task")
        db.execute("ALTER TABLE runs DROP COLUMN group_kind")
    assert kinds(RunStore(tmp_path)) == expected


def test_no_caller_searches_config_text_or_group_names():
    for path in [*ROOT.joinpath("core").rglob("*.py"), *ROOT.joinpath("ui").rglob("*.py"),
                 *ROOT.joinpath("pages").rglob("*.py")]:
        text = path.read_text()
        assert not re.search(r"""['"]"(starter|binary_crossentropy)"[^'"]*['"] (not )?in""", text), path
        if path.name != "records.py":
            assert not re.search(r"""\["grp"\]\.startswith|grp.*startswith\(""", text), path
