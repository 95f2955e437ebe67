"""A lab a class can share: it listens on this computer only unless told otherwise, refuses the
network without a teacher password, and in classroom mode keeps deleting, importing and
clearing for the teacher and the number of jobs per student within a quota."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import tomllib
import urllib.request

import pytest

from core.config import RunConfig
from tests.conftest import ROOT
from tests.waiting import wait_until


@contextlib.contextmanager
def listening_on(address: str):
    """The app as if started with --server.address ADDRESS. (Setting Streamlit's option from a
    test does not reach the script AppTest runs, so the one function that reads it is
    replaced; that it reads the option right, and that a real server started as the README
    says is unreachable from the network, is checked below.)"""
    from ui import access

    real = access.on_network
    access.on_network = lambda: address not in access.LOOPBACK
    try:
        yield
    finally:
        access.on_network = real


def app(page: str | None = None, secrets: dict | None = None):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=90)
    for k, v in (secrets or {}).items():
        at.secrets[k] = v
    if page:
        at.switch_page(page)
    return at

def kfold_from_a_classroom(secrets: dict, student: str | None):
    """A k-fold started from the k-fold page of a classroom app (a teacher password set, listening
    on the network), by `student` (None: no name typed); the page after the click."""
    with listening_on("0.0.0.0"):
        at = app("pages/kfold.py", {"teacher_password": "s3cret", **secrets}).run()
        if student is not None:
            at.text_input(key="student").set_value(student).run()
        at.selectbox(key="k_data").set_value("mnist-sample").run()
        return at.button(key="k_go").click().run()



def test_the_project_config_listens_on_this_computer_only():
    from streamlit import config as st_config

    from ui import access

    config = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert config["server"]["address"] == "127.0.0.1"
    before = st_config.get_option("server.address")
    try:
        for address, network in (("127.0.0.1", False), ("localhost", False), ("0.0.0.0", True), (None, True)):
            st_config.set_option("server.address", address)
            assert access.on_network() is network
    finally:
        st_config.set_option("server.address", before)


def host_ip() -> str | None:
    """This machine's address on its network, if it has one besides loopback."""
    with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(("10.255.255.255", 1))
        ip = s.getsockname()[0]
        return None if ip.startswith("127.") else ip
    return None


@pytest.mark.slow
def test_streamlit_run_app_as_the_readme_says_is_not_reachable_from_the_network(tmp_path):
    ip = host_ip()
    if ip is None:
        pytest.skip("this machine has no network address besides loopback")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port)],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                            env={**os.environ, "MNIST_LAB_RUNS": str(tmp_path), "MNIST_LAB_STARTERS": "0"})
    try:
        def healthy():
            with contextlib.suppress(OSError):
                return urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=1).read() == b"ok"

        wait_until(healthy, 60, "the app to start", every=0.3)
        with pytest.raises(OSError):
            urllib.request.urlopen(f"http://{ip}:{port}/_stcore/health", timeout=2)
    finally:
        proc.terminate()
        proc.wait(10)


def test_on_the_network_without_a_teacher_password_the_lab_refuses_to_open():
    with listening_on("0.0.0.0"):
        at = app("pages/experiments.py").run()
    assert not at.exception
    assert len(at.error) == 1 and "teacher_password" in at.error[0].value and "secrets.toml" in at.error[0].value
    assert not at.title  # no page was shown


def test_classroom_mode_keeps_delete_import_and_clearing_for_the_teacher(kept):
    before = sorted(p.name for p in kept.root.rglob("*"))
    with listening_on("0.0.0.0"):
        at = app("pages/experiments.py", {"teacher_password": "s3cret"}).run()
        assert not at.exception and at.title[0].value == "Experiments"
        assert at.button(key="x_delete").disabled
        assert any("only the teacher can import runs" in i.value for i in at.info)
        assert not at.get("file_uploader")
        # the teacher signs in (a wrong password first), and may delete and import
        at.text_input(key="_teacher_pw").set_value("wrong")
        at = at.button(key="_teacher_in").click().run()
        assert any("Wrong password" in e.value for e in at.error)
        assert at.button(key="x_delete").disabled
        # after one wrong password the next try waits a second: until that wait has run out
        wait_until(lambda: at.session_state["_pw_until"] < time.time(), 5, "the wait after a wrong password")
        at.text_input(key="_teacher_pw").set_value("s3cret")
        at = at.button(key="_teacher_in").click().run()
        assert not at.button(key="x_delete").disabled
        assert at.get("file_uploader")
        student = app("pages/draw.py", {"teacher_password": "s3cret"}).run()
        assert not student.exception
    assert sorted(p.name for p in kept.root.rglob("*")) == before  # nothing was touched by the refusals


def test_the_password_is_compared_in_constant_time():
    source = (ROOT / "ui" / "access.py").read_text()
    assert "hmac.compare_digest(" in source and 'st.secrets' in source


@pytest.mark.slow
def test_a_student_trains_within_the_quota_and_is_told_when_it_is_used_up(kept):
    with listening_on("0.0.0.0"):
        at = app("pages/train.py", {"teacher_password": "s3cret", "jobs_per_session": 1}).run()
        at.text_input(key="student").set_value("ana").run()
        at.selectbox(key="t_dataset").set_value("mnist-sample").run()
        at.number_input(key="t_epochs").set_value(100).run()
        at = at.button(key="t_train").click().run()
        first = at.session_state["train_run"]
        assert not any("Nothing was started" in e.value for e in at.error)
        at = at.button(key="t_train").click().run()
        refused = [e.value for e in at.error if "Nothing was started" in e.value]
        assert refused and "the most one student can have" in refused[0]
        assert len(kept.list()) == 2  # the kept run and the first job only
        kept.request_cancel(first)


def test_a_full_queue_is_said_clearly(kept):
    """Three jobs of others wait; with max_queue 3 a student's k-fold is refused with a
    message saying why, and nothing is added to the store."""
    for i in range(3):
        kept.create(RunConfig.from_preset("mlp", dataset="mnist-sample", name=f"queued {i}"), status="queued")
    at = kfold_from_a_classroom({"max_queue": 3}, student="ana")
    assert any("the queue is full (3 jobs waiting" in e.value for e in at.error)
    assert len(kept.list()) == 4


def test_a_student_opening_the_train_page_sees_no_classmates_run_as_their_own(kept):
    """A new tab on the train page shows the newest run for one user; in classroom mode a
    student's tab shows only the student's own jobs (the kept run is somebody else's), while
    the teacher still sees the newest run."""
    with listening_on("0.0.0.0"):
        student = app("pages/train.py", {"teacher_password": "s3cret"}).run()
        assert not student.exception
        assert "train_run" not in student.session_state
        assert "3. Fit" not in [s.value for s in student.subheader]
        student.text_input(key="_teacher_pw").set_value("s3cret")
        teacher = student.button(key="_teacher_in").click().run()
        assert teacher.session_state["train_run"] == kept.list()[0]["id"]
        assert "3. Fit" in [s.value for s in teacher.subheader]
    alone = app("pages/train.py").run()
    assert alone.session_state["train_run"] == kept.list()[0]["id"]


# --- students kept apart (issue 24) -------------------------------------------------------------------

def test_a_student_without_a_name_can_neither_train_nor_keep_drawings(kept):
    at = kfold_from_a_classroom({}, student=None)
    assert any("type your name" in e.value for e in at.error)
    assert len(kept.list()) == 1


def test_a_student_renames_tags_and_notes_only_their_own_runs(kept):
    theirs = kept.create(RunConfig.from_preset("mlp", dataset="mnist-sample", name="ana's run"), status="finished")
    kept.set_owner(theirs, "ana")
    other = kept.list()[-1]["id"] if kept.list()[-1]["id"] != theirs else kept.list()[0]["id"]
    with listening_on("0.0.0.0"):
        at = app("pages/experiments.py", {"teacher_password": "s3cret"}).run()
        at.text_input(key="student").set_value("ana").run()
        at.selectbox(key="x_manage").set_value(theirs).run()
        assert not at.button(key="x_save").disabled
        at.text_input(key=f"x_name_{theirs}").set_value("ana's best").run()
        at = at.button(key="x_save").click().run()
        assert kept.get(theirs)["name"] == "ana's best"
        at.selectbox(key="x_manage").set_value(other).run()
        assert at.button(key="x_save").disabled  # somebody else's run (here: the teacher's kept run)
        assert at.button(key="x_delete").disabled
    assert kept.get(other)["name"] == "kept"


def test_the_job_quota_is_per_student_in_every_tab(kept):
    waiting = kept.create(RunConfig.from_preset("mlp", dataset="mnist-sample", name="ana's queued"), status="queued")
    kept.set_owner(waiting, "ana")  # started from ana's first tab
    second_tab = kfold_from_a_classroom({"jobs_per_session": 1}, student="ana")
    assert any("the most one student can have" in e.value for e in second_tab.error)
    assert len(kept.list()) == 2


@pytest.mark.slow
def test_each_student_keeps_and_clears_their_own_handwriting(trained_copy):
    from core.handwriting import HandwritingSet

    root = trained_copy.root
    with listening_on("0.0.0.0"):
        for name, label in (("ana", 5), ("ben", 3)):
            at = app("pages/draw.py", {"teacher_password": "s3cret"}).run()
            at.text_input(key="student").set_value(name).run()
            at.number_input(key="d_sample").set_value(3).run()
            at.selectbox(key="d_label").set_value(label).run()
            at = at.button(key="d_save").click().run()
            assert any(m.label == "Drawings in your set" and m.value == "1" for m in at.metric)
        at.button(key="d_clear_set").click().run()
        at = at.button(key="d_clear_yes").click().run()  # ben clears his set
    assert list(HandwritingSet(root, "ana").load()[1]) == [5]
    assert len(HandwritingSet(root, "ben")) == 0 and len(HandwritingSet(root)) == 0


def test_the_teachers_sign_in_survives_a_reload(kept, monkeypatch):
    from ui import access

    with listening_on("0.0.0.0"):
        at = app("pages/experiments.py", {"teacher_password": "s3cret"}).run()
        at.text_input(key="_teacher_pw").set_value("s3cret")
        at = at.button(key="_teacher_in").click().run()
        script = " ".join(str(getattr(h, "proto", h)) for h in at.get("html"))
        assert "mnist_lab_teacher=" in script and "SameSite=Strict" in script and "s3cret" not in script
        token = script.split("mnist_lab_teacher=")[1].split(";")[0]
        monkeypatch.setattr(access, "teacher_cookie", lambda: token)  # the browser sends it back after a reload
        reloaded = app("pages/experiments.py", {"teacher_password": "s3cret"}).run()
        assert not reloaded.button(key="x_delete").disabled
        monkeypatch.setattr(access, "teacher_cookie", lambda: "1." + token.split(".")[1])  # expired
        assert app("pages/experiments.py", {"teacher_password": "s3cret"}).run().button(key="x_delete").disabled
        monkeypatch.setattr(access, "teacher_cookie", lambda: token)
        other_password = app("pages/experiments.py", {"teacher_password": "changed"}).run()
        assert other_password.button(key="x_delete").disabled


def test_a_students_sweep_trials_are_stored_as_theirs(tmp_path, small):
    from core import sweeps
    from core.executors.inline import InlineExecutor
    from core.store import RunStore

    store = RunStore(tmp_path)
    base = RunConfig.from_preset("mlp", dataset="mnist-sample", epochs=1, train_subset=200)
    spec = sweeps.new_sweep(store, base, {"lr": {"log": [1e-4, 1e-2]}}, "random", trials=2, owner="ana")
    assert sweeps.load_spec(store, spec.sweep_id).owner == "ana"
    sweeps.run_sweep(store, InlineExecutor(store), spec, dataset=small)
    trials = store.list(group=spec.sweep_id)
    assert len(trials) == 2 and {r["owner"] for r in trials} == {"ana"}


def sweep_of(store, owner: str, driver_alive: bool):
    """A sweep of `owner` whose driver is this test process (alive: as if at work between two
    trials) or a process that is gone (its driver died: the machine restarted)."""
    import json

    from core import sweeps
    from core.store.processes import process_start_time

    base = RunConfig.from_preset("mlp", dataset="mnist-sample", epochs=1)
    spec = sweeps.new_sweep(store, base, {"lr": {"log": [1e-4, 1e-2]}}, "random", trials=4, owner=owner)
    driver = ({"pid": os.getpid(), "pid_start": process_start_time(os.getpid())} if driver_alive
              else {"pid": 2 ** 22 + 7})
    (sweeps.sweep_folder(store, spec.sweep_id) / "driver.json").write_text(
        json.dumps({**driver, "host": socket.gethostname()}))
    return spec


def test_a_students_sweep_holds_its_share_of_the_quota_between_two_trials(kept):
    """A sweep's driver makes its trials one after another without the quota check (it was
    checked at launch): between two trials the sweep still holds its job, so a job started
    then cannot make the next trial one more than the quota."""
    from core.sweeps import trial_config
    from ui.access import jobs_held

    spec = sweep_of(kept, "ana", driver_alive=True)
    assert jobs_held(kept, "ana") == 1 and jobs_held(kept, "ben") == 0  # no trial training now
    waiting = kept.create(RunConfig.from_preset("mlp", dataset="mnist-sample", name="ana's queued"), status="queued")
    kept.set_owner(waiting, "ana")
    refused = kfold_from_a_classroom({"jobs_per_session": 2}, student="ana")  # the sweep's job + the queued one
    assert any("the most one student can have" in e.value for e in refused.error)
    assert len(kept.list()) == 2
    trial = kept.create(trial_config(RunConfig.from_dict(spec.base), spec.sweep_id, 0, {"lr": 1e-3}),
                        group=spec.sweep_id, status="running")
    kept.set_owner(trial, "ana")
    assert jobs_held(kept, "ana") == 2  # the trial training is the sweep's job, not one more
    (kept.root / "sweeps" / spec.sweep_id / "result.json").write_text("{}")  # the sweep's driver ended
    assert jobs_held(kept, "ana") == 2  # a trial still training counts as itself, beside the queued run


def test_a_student_resuming_their_interrupted_sweep_stays_within_the_quota(kept, monkeypatch):
    """Resuming a sweep starts its trials again: in classroom mode it is a launch like any other,
    refused while the student's other jobs fill the quota."""
    from core import launch

    spec = sweep_of(kept, "ana", driver_alive=False)
    resumed = []
    monkeypatch.setattr(launch, "resume_sweep", lambda store, sweep_id, *args: resumed.append(sweep_id))
    waiting = [kept.create(RunConfig.from_preset("mlp", dataset="mnist-sample", name=f"ana's {i}"), status="queued")
               for i in range(2)]
    for run_id in waiting:
        kept.set_owner(run_id, "ana")
    with listening_on("0.0.0.0"):
        at = app("pages/sweeps.py", {"teacher_password": "s3cret", "jobs_per_session": 2}).run()
        at.text_input(key="student").set_value("ana").run()
        at = at.button(key="s_resume").click().run()
        assert any("the most one student can have" in e.value for e in at.error)
        assert resumed == []
        kept.request_cancel(waiting[0])  # one of ana's jobs ends: room for the sweep's one
        at.button(key="s_resume").click().run()
    assert resumed == [spec.sweep_id]


def test_password_guesses_wait_longer_after_each_wrong_one(kept):
    from ui import access

    with listening_on("0.0.0.0"):
        at = app("pages/experiments.py", {"teacher_password": "s3cret"}).run()
        at.text_input(key="_teacher_pw").set_value("guess-1")
        at = at.button(key="_teacher_in").click().run()
        assert any("Wrong password" in e.value for e in at.error)
        at.text_input(key="_teacher_pw").set_value("s3cret")  # right, but too soon after a wrong one
        at = at.button(key="_teacher_in").click().run()
        assert any("Too many wrong passwords" in e.value for e in at.error)
        assert at.button(key="x_delete").disabled
        assert 0 < at.session_state["_pw_until"] - time.time() <= 1
        for fails in (2, 3, 4):  # each wrong password doubles the wait
            at.session_state["_pw_until"] = 0.0
            at.text_input(key="_teacher_pw").set_value(f"guess-{fails}")
            at = at.button(key="_teacher_in").click().run()
            assert at.session_state["_pw_until"] - time.time() == pytest.approx(2 ** (fails - 1), abs=0.5)
    server = access.server_guesses()
    assert server["until"] == 0.0 or len(server["times"]) > access.SERVER_FREE_GUESSES


def test_the_teacher_password_file_is_never_committed():
    out = subprocess.run(["git", "check-ignore", ".streamlit/secrets.toml"], cwd=ROOT, capture_output=True, text=True)
    if out.returncode == 128:
        pytest.skip("not a git checkout")
    assert out.returncode == 0, ".streamlit/secrets.toml is not git-ignored"


def test_the_quota_counts_the_jobs_a_click_starts(kept):
    from ui.access import jobs_of

    base = RunConfig.from_preset("mlp", dataset="mnist-sample", epochs=1)
    folds = [base.replace(kfold=(3, i, True)) for i in range(3)]
    assert jobs_of(folds, vectorize=True) == 1          # a vectorised k-fold is one job
    assert jobs_of(folds, vectorize=False) == 3
    widths = [RunConfig.from_preset("mlp", dataset="mnist-sample", layers=None) for _ in range(4)]
    assert jobs_of(widths, vectorize=False) == 4         # "Train 4 models": four jobs
    with listening_on("0.0.0.0"):
        at = app("pages/fitting.py", {"teacher_password": "s3cret", "jobs_per_session": 2}).run()
        at.text_input(key="student").set_value("ana").run()
        at = at.button(key="f_go").click().run()         # four widths by default
    assert any("this starts 4 jobs" in e.value for e in at.error)
    assert len(kept.list()) == 1


@pytest.mark.parametrize("value", ["<script>", "a" * 60, "ana;drop"])
def test_a_bad_student_name_in_the_link_is_said_and_not_used(kept, value):
    with listening_on("0.0.0.0"):
        at = app("pages/kfold.py", {"teacher_password": "s3cret"})
        at.query_params["student"] = value
        at = at.run()
        assert not at.exception
        says = "A name is 1 to 40 letters" if len(value) <= 40 else "longer than 40 characters"
        assert any(says in w.value for w in at.warning)
        at.selectbox(key="k_data").set_value("mnist-sample").run()
        at = at.button(key="k_go").click().run()
    assert any("type your name" in e.value for e in at.error)  # not taken as a name: nothing starts
    assert len(kept.list()) == 1
