"""Background jobs: training runs in worker processes, queued per device, cancellable."""

from __future__ import annotations

import os
import platform
import sqlite3
import threading
from pathlib import Path

import pytest
import torch

from core.config import RunConfig
from core.devices import DeviceError
from core.executors import Executor
from core.executors.local import LocalExecutor
from core.settings import WORKER_NICENESS
from core.runner import train_run
from core.store import RunStore, RunStoreError
from tests.conftest import hold_cpu_slot, interrupted_run
from tests.waiting import wait_until, wait_for_runs


def start_job(store, config):
    return LocalExecutor(store).submit([config])[0]


def wait_for(store, run_id, statuses=("finished", "failed", "cancelled", "interrupted"), timeout=180):
    return wait_for_runs(store, [run_id], statuses, timeout)[0]


def config(**kw):
    return RunConfig.from_preset("mlp", **{"dataset": "mnist-sample", "device": "cpu", "epochs": 2,
                                           "batch_size": 100, **kw})


@pytest.fixture
def store(tmp_path):
    return RunStore(tmp_path / "runs")


@pytest.mark.slow
def test_a_job_trains_in_another_process_and_lands_in_the_store(store):
    executor = LocalExecutor(store)
    assert isinstance(executor, Executor)
    run_id = executor.submit([config(name="bg")])[0]
    run = store.get(run_id)
    assert run["status"] in ("queued", "running") and run["pid"] != os.getpid()
    done = wait_for(store, run_id)
    assert done["status"] == "finished", done["error"]
    assert done["epochs_done"] == 2 and len(store.history(run_id)) == 2
    assert store.predictions(run_id)["probs"].shape == (1000, 10)
    assert executor.where(run_id) == platform.node()
    assert executor.progress(run_id)["status"] == "finished"
    if hasattr(os, "nice"):  # it trained below the app's priority, and says so
        assert store.environment(run_id)["niceness"] == min(19, os.nice(0) + WORKER_NICENESS)


@pytest.mark.slow
def test_two_jobs_started_at_once_from_two_threads_both_finish_one_at_a_time(store):
    ids, positions = [], []

    def go(i):
        ids.append(start_job(store, config(name=f"tab {i}", seed=i, epochs=3)))

    threads = [threading.Thread(target=go, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(ids) == 2
    def queue_positions():   # one device, one slot: the other waits in the queue
        runs = {r["id"]: r for r in store.list()}
        if any(r["status"] == "running" for r in runs.values()):
            return [store.queue_position(i) for i in ids if runs[i]["status"] == "queued"]

    positions = wait_until(queue_positions, 60, "one run training and the other queued", every=0.02)
    assert positions == [1]
    for run_id in ids:
        assert wait_for(store, run_id)["status"] == "finished"
    assert sqlite3.connect(store.db_path).execute("PRAGMA integrity_check").fetchone()[0] == "ok"



def test_a_stop_asked_while_the_worker_starts_up_is_not_lost(store, small):
    """A worker claims its slot (the run reads as running), then loads torch and the data for
    seconds; a Stop clicked then used to be wiped when training began, and the run trained all
    its epochs. Now the first batch sees it."""
    config = RunConfig.from_preset("mlp", dataset="mnist-sample", device="cpu", epochs=50, batch_size=100)
    run_id = store.create(config, status="queued")
    assert store.claim_slot([run_id], "cpu", 1) and store.get(run_id)["status"] == "running"
    store.request_cancel(run_id)
    out = train_run(store, config, small, run_id=run_id)
    assert out["status"] == "cancelled" and store.get(run_id)["epochs_done"] == 0

@pytest.mark.slow
def test_cancel_stops_a_job_and_keeps_its_finished_epochs(store):
    run_id = start_job(store, RunConfig.from_preset("cnn", dataset="mnist-sample", device="cpu", epochs=20,
                                                    batch_size=16))
    wait_until(lambda: store.get(run_id)["epochs_done"] >= 1, 120, "the first epoch")
    store.request_cancel(run_id)
    run = wait_for(store, run_id)
    assert run["status"] == "cancelled" and 1 <= run["epochs_done"] < 20
    assert len(store.history(run_id)) == run["epochs_done"]
    assert (store.run_dir(run_id) / "checkpoint.pt").exists()


def test_a_device_that_is_not_there_starts_nothing(store):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(DeviceError, match="not available"):
        start_job(store, config(device="cuda"))
    assert store.list() == []


@pytest.mark.slow
@pytest.mark.skipif(platform.system() != "Linux", reason="reads /proc")
def test_a_queued_worker_waits_for_its_slot_without_torch_and_can_be_cancelled(store, monkeypatch):
    """A fresh lab queues 18 starter runs at once: each waiting worker used to hold torch's
    ~280 MB. A worker now imports torch only once its job has a slot. This is the worker that
    starts a fresh interpreter (a GPU job, macOS, a request the zygote refuses); one forked from
    the preloaded zygote shares torch's pages instead (tests/test_zygote.py)."""
    monkeypatch.setenv("MNIST_LAB_PRELOAD", "0")
    holder = hold_cpu_slot(store)
    waiting = start_job(store, config(name="waits"))
    pid = store.get(waiting)["pid"]
    wait_in_slot_queue(pid)
    assert store.get(waiting)["status"] == "queued" and store.queue_position(waiting) == 1
    maps = open(f"/proc/{pid}/maps").read()
    assert "libtorch" not in maps and "python" in maps
    # A background job yields the CPU to the app's pages (field 19 of /proc/PID/stat: nice).
    nice = int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[16])
    assert nice == min(19, os.nice(0) + WORKER_NICENESS)
    store.request_cancel(waiting)
    assert wait_for(store, waiting, timeout=60)["status"] == "cancelled"
    store.mark_failed(holder, "test over", status="cancelled")


def wait_in_slot_queue(pid: int) -> None:
    """Until worker `pid` waits for its slot: sleeping between its claims (core.executors.queue's
    poll), with SQLite loaded, that is, past every import it makes before it has a slot."""
    def waiting() -> bool:
        try:
            maps, wchan = open(f"/proc/{pid}/maps").read(), open(f"/proc/{pid}/wchan").read()
        except OSError:
            return False
        return "_sqlite3" in maps and "nanosleep" in wchan

    wait_until(waiting, 60, f"worker {pid} to wait for its slot")


@pytest.mark.slow
def test_a_queued_worker_starts_training_when_the_slot_frees(store):
    holder = hold_cpu_slot(store)
    waiting = start_job(store, config(name="waits", epochs=1))
    wait_in_slot_queue(store.get(waiting)["pid"])
    assert store.get(waiting)["status"] == "queued"
    store.mark_failed(holder, "done holding", status="cancelled")
    done = wait_for(store, waiting)
    assert done["status"] == "finished", done["error"]


@pytest.mark.slow
@pytest.mark.skipif(platform.system() != "Linux", reason="reads /proc")
def test_a_resumed_run_waits_for_its_slot_like_a_new_one(store):
    """A resume used to start at once, sharing the CPU with whatever job held its slot. Now the
    run is queued again at once (the page shows it waiting) and resumes from its checkpoint
    when the slot frees."""
    stopped = interrupted_run(store, config(name="stopped", train_subset=500))
    assert store.get(stopped)["status"] == "interrupted" and store.get(stopped)["epochs_done"] == 1
    holder = hold_cpu_slot(store)
    LocalExecutor(store).resume(stopped)
    run = store.get(stopped)
    assert run["status"] == "queued" and store.queue_position(stopped) == 1 and run["pid"] != os.getpid()
    wait_in_slot_queue(run["pid"])
    assert store.get(stopped)["status"] == "queued" and store.get(stopped)["epochs_done"] == 1
    store.mark_failed(holder, "done holding", status="cancelled")
    done = wait_for(store, stopped)
    assert done["status"] == "finished" and len(store.history(stopped)) == 2 and done["error"] is None, done["error"]
    assert [h["epoch"] for h in store.history(stopped)] == [1, 2]


def test_a_resume_whose_worker_cannot_start_leaves_the_run_as_it_was(store, monkeypatch):
    """Queued again, then no worker could be started (or another resume took the run first):
    the run is stopped again with its own message, not queued forever behind a live app."""
    import core.executors.local as local

    run_id = store.create(config(name="stopped"), status="queued")
    store.mark_failed(run_id, "the worker process 1 died; resume continues from epoch 1", status="interrupted")

    def no_process(*args, **kw):
        raise OSError("no more processes")

    monkeypatch.setattr(local, "spawn", no_process)
    with pytest.raises(OSError, match="no more processes"):
        LocalExecutor(store).resume(run_id)
    run = store.get(run_id)
    assert run["status"] == "interrupted" and run["error"].startswith("the worker process 1 died")
    assert store.queue_to_resume(run_id, "interrupted") and store.get(run_id)["status"] == "queued"
    assert not store.queue_to_resume(run_id, "interrupted")  # taken already: a second resume is refused
    with pytest.raises(RunStoreError, match="only a stopped run"):
        LocalExecutor(store).resume(run_id)


def test_a_job_whose_worker_cannot_start_fails_saying_why_instead_of_waiting_forever(store, monkeypatch):
    import core.executors.local as local

    def no_process(*args, **kw):
        raise OSError("no more processes")

    monkeypatch.setattr(local, "spawn", no_process)
    with pytest.raises(OSError, match="no more processes"):
        LocalExecutor(store).submit([config(name="never started")])
    [run] = store.list()
    assert run["status"] == "failed" and run["error"] == "its worker process could not be started: no more processes"


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(os, "nice"), reason="Unix only")
def test_background_priority_is_set_by_MNIST_LAB_WORKER_NICE_and_0_turns_it_off():
    import subprocess
    import sys

    code = ("import os; from core.executors.queue import background_priority; "
            "before = os.nice(0); added = background_priority(); print(added, os.nice(0) - before)")
    if os.nice(0) + WORKER_NICENESS > 19:
        pytest.skip("this test process is already too nice to measure the step")
    for value, expected in (("", f"{WORKER_NICENESS} {WORKER_NICENESS}"), ("3", "3 3"), ("0", "0 0")):
        env = {**os.environ, "MNIST_LAB_WORKER_NICE": value}
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True,
                             cwd=Path(__file__).resolve().parents[1])
        assert out.stdout.split() == expected.split(), value


# --- a person's run never waits behind a fresh lab's starter runs ---------------------------------

def _queued(store, name, starter=False):
    return store.create(RunConfig.from_preset("mlp", dataset="mnist-sample", epochs=1, name=name, device="cpu",
                                              extra={"starter": True} if starter else {}), status="queued")


def test_a_persons_run_goes_ahead_of_queued_starters(tmp_path):
    store = RunStore(tmp_path)
    starters = [_queued(store, f"starter {i}", starter=True) for i in range(3)]
    mine = _queued(store, "mine")  # created last
    assert store.queue_position(mine) == 1 and store.queue_position(starters[0]) == 2
    assert not store.claim_slot([starters[0]], "cpu", 1)  # a starter takes no slot while a person's run waits
    assert store.claim_slot([mine], "cpu", 1)
    assert store.claim_slot([starters[0]], "cpu", 2)  # nobody waits now: starters take the free slots


def test_a_persons_run_starts_beside_a_starter_that_holds_the_only_slot(tmp_path):
    store = RunStore(tmp_path)
    starter = _queued(store, "starter", starter=True)
    assert store.claim_slot([starter], "cpu", 1)
    mine = _queued(store, "mine")
    assert store.claim_slot([mine], "cpu", 1)  # starters do not count against a person's slots
    other = _queued(store, "someone else's")
    assert not store.claim_slot([other], "cpu", 1)  # people's runs still share the device's slots
    late_starter = _queued(store, "starter 2", starter=True)
    store.request_cancel(other)
    assert not store.claim_slot([late_starter], "cpu", 1)  # the device is full: a starter waits


def test_an_index_from_before_the_starter_column_learns_which_runs_are_starters(tmp_path):
    store = RunStore(tmp_path)
    starter, mine = _queued(store, "s", starter=True), _queued(store, "m")
    db = sqlite3.connect(tmp_path / "index.sqlite")
    db.execute("ALTER TABLE runs DROP COLUMN starter")
    db.commit()
    db.close()
    store = RunStore(tmp_path)
    assert store.get(starter)["starter"] == 1 and store.get(mine)["starter"] == 0


@pytest.mark.slow
def test_cli_cancels_queued_runs_and_refuses_ended_ones(tmp_path):
    import json as _json
    import subprocess
    import sys as _sys

    from tests.conftest import subprocess_env

    store = RunStore(tmp_path)
    a, b = _queued(store, "a"), _queued(store, "b")
    p = subprocess.run([_sys.executable, "-m", "core", "runs", "cancel", a, b, "--runs-dir", str(tmp_path), "--json"],
                       capture_output=True, text=True, env=subprocess_env(), timeout=120)
    assert p.returncode == 0, p.stderr
    out = _json.loads(p.stdout.strip().splitlines()[-1])
    assert [o["status"] for o in out] == ["cancelled", "cancelled"]
    c = _queued(store, "c")
    p = subprocess.run([_sys.executable, "-m", "core", "runs", "cancel", c, a, "--runs-dir", str(tmp_path)],
                       capture_output=True, text=True, env=subprocess_env(), timeout=120)
    assert p.returncode == 2 and p.stderr.startswith("error: nothing was cancelled") and f"run {a} is cancelled" in p.stderr
    assert store.get(c)["status"] == "queued"  # one refused run refuses the whole command
    store.request_cancel(c)
