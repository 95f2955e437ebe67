"""A CPU worker is forked from a preloaded process (core.executors.zygote), so that it trains
after a fraction of a second instead of after seconds of imports; it is still the same worker:
the same run bit for bit, its own pid, session, command line and log, killable and resumable,
with the lab's code read afresh, and it trains on when the zygote goes. What the zygote cannot
serve starts a fresh interpreter, as before, and the worker's log says why."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from core.config import RunConfig
from core.executors import zygote
from core.executors.local import LocalExecutor, _child_env
from core.store import RunStore
from core.store.processes import process_alive
from tests.conftest import hold_cpu_slot, pause_workers_at
from tests.waiting import wait_for_runs, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.skipif(sys.platform != "linux", reason="the zygote is Linux only")]

CONFIG = dict(dataset="mnist-sample", device="cpu", epochs=3, batch_size=100, train_subset=1500, seed=3)


@pytest.fixture
def store(tmp_path):
    return RunStore(tmp_path / "runs")


@pytest.fixture
def zygote_up(monkeypatch):
    """A zygote answering for this checkout (started if none is); its ping."""
    monkeypatch.setattr(zygote, "_launched_at", 0.0)
    zygote.ensure_started()
    return wait_until(zygote.ping, 120, "the zygote to answer")


def parent_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def private_mb(pid: int) -> float:
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:])
    return (int(fields["Private_Clean"].split()[0]) + int(fields["Private_Dirty"].split()[0])) / 1024


def wait_for(store, run_ids, statuses=("finished", "failed", "cancelled", "interrupted"), timeout=180):
    return wait_for_runs(store, run_ids, statuses, timeout)


def test_a_forked_worker_is_its_own_killable_process_and_trains_the_run_a_fresh_python_trains(
        store, zygote_up, monkeypatch):
    config = RunConfig.from_preset("mlp", **CONFIG)
    monkeypatch.setenv("MNIST_LAB_PRELOAD", "0")
    [fresh] = LocalExecutor(store).submit([config])
    monkeypatch.delenv("MNIST_LAB_PRELOAD")
    pause_workers_at(monkeypatch, "2:3")  # the tests' hook (a sitecustomize on PYTHONPATH) reaches a fork too
    [forked] = LocalExecutor(store).submit([config])
    pause_workers_at(monkeypatch, None)
    wait_until((store.run_dir(forked) / "paused").exists, 60, "the forked worker to pause")
    pid = store.get(forked)["pid"]
    assert parent_of(pid) == zygote_up["pid"] and os.getsid(pid) == pid  # its own session, as start_new_session
    assert f"-m core worker {forked}" in Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    assert zygote.stop()  # the zygote goes; its child trains on
    wait_until(lambda: zygote.ping() is None, 30, "the zygote to exit")
    assert process_alive(pid, store.get(forked)["pid_start"])
    os.kill(pid, signal.SIGKILL)
    [killed] = wait_for(store, [forked], statuses=("interrupted",), timeout=30)
    assert "died" in killed["error"] and killed["epochs_done"] == 1
    LocalExecutor(store).resume(forked)  # no zygote answers now: a fresh Python resumes it
    runs = wait_for(store, [fresh, forked], statuses=("finished", "failed"))
    assert [r["status"] for r in runs] == ["finished", "finished"], [r["error"] for r in runs]
    a, b = store.history(fresh), store.history(forked)
    assert [h["val_loss"] for h in a] == [h["val_loss"] for h in b] and len(a) == 3
    wa, wb = store.load_weights(fresh, "last"), store.load_weights(forked, "last")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert np.array_equal(store.predictions(fresh)["probs"], store.predictions(forked)["probs"])


def test_a_queued_child_shares_torch_with_the_zygote_instead_of_holding_a_copy(store, zygote_up):
    """The fresh worker waits for its slot before importing torch (280 MB private each,
    tests/test_jobs.py); a fork has torch mapped already, shared with the zygote."""
    holder = hold_cpu_slot(store)
    [waiting] = LocalExecutor(store).submit([RunConfig.from_preset("mlp", **CONFIG)])
    pid = store.get(waiting)["pid"]
    assert parent_of(pid) == zygote_up["pid"]
    wait_until(lambda: "nanosleep" in Path(f"/proc/{pid}/wchan").read_text(), 60, "the child to wait for its slot")
    with_torch = subprocess.Popen([sys.executable, "-c", "import torch, sys; print(1, flush=True); sys.stdin.read()"],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        with_torch.stdout.readline()
        assert "libtorch" in Path(f"/proc/{pid}/maps").read_text()
        assert private_mb(pid) < private_mb(with_torch.pid) / 3, (private_mb(pid), private_mb(with_torch.pid))
    finally:
        with_torch.kill()
    store.request_cancel(waiting)
    assert wait_for(store, [waiting])[0]["status"] == "cancelled"
    store.mark_failed(holder, "test over", status="cancelled")


def test_a_request_with_other_import_time_variables_starts_a_fresh_python_and_says_why(
        store, zygote_up, monkeypatch):
    # read by torch's import: a fork would not obey it (another value than the tests' own: "1"
    # under pytest-xdist, tests/conftest.py)
    monkeypatch.setenv("OMP_NUM_THREADS", "2" if os.environ.get("OMP_NUM_THREADS") == "1" else "1")
    [run_id] = LocalExecutor(store).submit([RunConfig.from_preset("mlp", **{**CONFIG, "epochs": 1})])
    assert wait_for(store, [run_id])[0]["status"] == "finished"
    log = (store.run_dir(run_id) / "worker.log").read_text()
    assert "started without the zygote: variables read at import differ: OMP_NUM_THREADS" in log


def test_the_zygote_preloads_libraries_and_each_child_reads_the_lab_afresh(tmp_path, zygote_up):
    assert zygote_up["preloaded"] and not [m for m in zygote_up["preloaded"] if m.split(".")[0] == "core"]
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(textwrap.dedent(f"""
        import sys
        core = [m for m in sys.modules if m == "core" or m.startswith("core.")]
        open({str(tmp_path / "seen.txt")!r}, "w").write(f"{{core}} {{'torch' in sys.modules}}")
    """))
    env = {**_child_env(), "PYTHONPATH": os.pathsep.join([str(hook), _child_env()["PYTHONPATH"]])}
    pid = zygote.spawn(["runs", "list", "--runs-dir", str(tmp_path / "runs")], tmp_path / "child.log", env)
    assert pid
    # the file exists from its open(), before the write: wait for what it says (a CI run read '')
    seen = tmp_path / "seen.txt"
    wait_until(lambda: seen.exists() and seen.read_text(), 30, "the child's sitecustomize")
    assert (tmp_path / "seen.txt").read_text() == "[] True"  # no lab module kept; torch preloaded
    wait_until(lambda: not process_alive(pid, None), 30, "the child to exit")
    assert "no runs" in (tmp_path / "child.log").read_text().lower()


def test_with_preload_off_no_zygote_is_asked_or_started(monkeypatch, tmp_path):
    monkeypatch.setenv("MNIST_LAB_PRELOAD", "0")
    monkeypatch.setattr(zygote, "_launched_at", 0.0)
    assert zygote.spawn(["runs", "list"], tmp_path / "log", _child_env()) is None
    assert not zygote.ensure_started()


def test_only_this_user_can_reach_the_zygote(zygote_up):
    """Whoever reaches its socket can have it run the lab's command line as this user: the
    socket lives in a folder only this user can enter, and is this user's only itself."""
    path = zygote.socket_path()
    assert path.exists() and not path.stat().st_mode & 0o077 and not path.parent.stat().st_mode & 0o077
    assert path.parent.stat().st_uid == os.getuid()
    if os.getuid() != 0:
        return  # the other user's try below needs root to become someone else
    child = os.fork()
    if child == 0:  # becomes nobody, and tries to reach the socket
        code = 1
        try:
            os.setgid(65534)
            os.setuid(65534)
            with socket.socket(socket.AF_UNIX) as conn:
                conn.connect(str(path))
        except PermissionError:
            code = 0
        finally:
            os._exit(code)
    assert os.waitpid(child, 0)[1] == 0, "another user reached the zygote's socket"


def test_a_child_whose_pid_the_caller_never_got_never_runs(tmp_path, zygote_up):
    """A caller that gave up waiting for the reply starts the job itself: the zygote's child
    for it must not start it too (it waits for the word the zygote sends once the pid is out)."""
    seen = tmp_path / "ran.txt"
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(f"open({str(seen)!r}, 'w').write('ran')\n")
    env = {**_child_env(), "PYTHONPATH": os.pathsep.join([str(hook), _child_env()["PYTHONPATH"]])}
    request = {"argv": ["runs", "list", "--runs-dir", str(tmp_path / "runs")], "log": str(tmp_path / "child.log"),
               "cwd": str(zygote.ROOT), "env": env, "python": sys.executable, "root": str(zygote.ROOT)}
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.connect(str(zygote.socket_path()))
        conn.sendall(json.dumps(request).encode() + b"\n")
        conn.shutdown(socket.SHUT_RDWR)  # gone before the reply
    assert zygote.ping()  # the zygote served on
    pid = zygote.spawn(request["argv"], tmp_path / "second.log", env)  # the same request, waited for: it runs
    wait_until(seen.exists, 30, "the second child's sitecustomize")
    wait_until(lambda: not process_alive(pid, None), 30, "the second child to exit")
    assert "no runs" in (tmp_path / "second.log").read_text().lower()
    assert not (tmp_path / "child.log").exists()  # the first child never got as far as its log


def test_a_request_with_another_interpreter_start_variable_starts_a_fresh_python(store, zygote_up, monkeypatch):
    monkeypatch.setenv("PYTHONWARNINGS", "default")  # read when an interpreter starts, not after
    [run_id] = LocalExecutor(store).submit([RunConfig.from_preset("mlp", **{**CONFIG, "epochs": 1})])
    wait_for(store, [run_id])
    log = (store.run_dir(run_id) / "worker.log").read_text()
    assert "started without the zygote: variables read at import differ: PYTHONWARNINGS" in log


def test_a_variable_read_at_use_does_not_send_a_job_to_a_fresh_python(store, zygote_up, monkeypatch):
    """`ray.init` writes PYTHONBREAKPOINT into its caller's environment (read at each breakpoint()
    call, not at start): after a Ray sweep in the app's process, its CPU jobs are still forked."""
    monkeypatch.setenv("PYTHONBREAKPOINT", "ray.util.rpdb._driver_set_trace")  # what ray.init sets on a driver
    pause_workers_at(monkeypatch, "1:2")
    [run_id] = LocalExecutor(store).submit([RunConfig.from_preset("mlp", **{**CONFIG, "epochs": 1})])
    pause_workers_at(monkeypatch, None)
    wait_until((store.run_dir(run_id) / "paused").exists, 60, "the worker to pause")
    pid = store.get(run_id)["pid"]
    try:
        assert parent_of(pid) == zygote_up["pid"]
        assert "started without the zygote" not in (store.run_dir(run_id) / "worker.log").read_text()
    finally:
        os.kill(pid, signal.SIGKILL)


def test_a_job_that_waited_as_a_fresh_python_is_handed_to_a_fork_when_its_slot_comes(store, zygote_up, monkeypatch):
    """A fresh lab queues its starters before the zygote answers, so each waits for its slot as a
    fresh Python. When its slot comes and a zygote answers, it hands the job to a fork instead of
    paying the imports: the fork is recorded as the job's worker (killable, resumable), at the
    waiting worker's CPU priority, and the waiting process exits."""
    from core.settings import settings

    holder = hold_cpu_slot(store)
    assert zygote.stop()
    wait_until(lambda: zygote.ping() is None, 30, "the zygote to exit")
    monkeypatch.setattr(zygote, "_launched_at", time.monotonic())  # this submit starts no zygote
    pause_workers_at(monkeypatch, "1:2")
    [run_id] = LocalExecutor(store).submit([RunConfig.from_preset("mlp", **{**CONFIG, "epochs": 2})])
    pause_workers_at(monkeypatch, None)
    waiter = store.get(run_id)["pid"]
    assert parent_of(waiter) == os.getpid()  # no zygote answered: a fresh Python waits for the slot
    wait_until(lambda: "nanosleep" in Path(f"/proc/{waiter}/wchan").read_text(), 60, "the worker to wait")
    monkeypatch.setattr(zygote, "_launched_at", 0.0)
    up = zygote.ready()
    store.mark_failed(holder, "test over", status="cancelled")  # the slot is free
    wait_until((store.run_dir(run_id) / "paused").exists, 60, "the handed-over job to pause")
    fork = store.get(run_id)["pid"]
    assert fork != waiter and parent_of(fork) == up["pid"]
    wait_until(lambda: os.waitpid(waiter, os.WNOHANG)[0] == waiter, 30, "the waiting process to exit")  # our child
    assert os.getpriority(os.PRIO_PROCESS, fork) == min(19, os.nice(0) + settings().worker_nice)  # the waiter's, once
    assert store.get(run_id)["status"] == "running"  # its recorded worker is alive
    os.kill(fork, signal.SIGKILL)
    [killed] = wait_for(store, [run_id], statuses=("interrupted",), timeout=30)
    assert f"process {fork} died" in killed["error"]
    LocalExecutor(store).resume(run_id)
    [done] = wait_for(store, [run_id], statuses=("finished", "failed"))
    assert done["status"] == "finished" and len(store.history(run_id)) == 2, done["error"]
    log = (store.run_dir(run_id) / "worker.log").read_text()
    assert f"handed to the zygote's fork {fork}" in log and "started without the zygote" not in log
