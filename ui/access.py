"""Who may do what: safe by default, and a classroom mode for a lab hosted on the network.

- On this computer only (the default: `.streamlit/config.toml` sets server.address to
  127.0.0.1): one user, everything allowed.
- Listening on the network (`--server.address 0.0.0.0`, or no address set): only with a
  teacher password in `.streamlit/secrets.toml` (`teacher_password = "..."`). Without one the
  app refuses to open and says how to set it; with one it is in classroom mode: deleting and
  importing runs, clearing the handwriting set and starting jobs beyond a per-session quota
  need the teacher's login (Streamlit's documented password pattern: st.secrets, compared
  with hmac.compare_digest). Students train within their quota and see a clear message when
  the queue is full.

Who is who in classroom mode, without accounts or cookies for students: a student types a name
under the page's title (kept in the session through page switches, and in the address bar's
`?student=` parameter through reloads; another tab gets it by typing the same name). The runs a
student starts are stored with that name (`owner`), so the quota counts a student's jobs in every
tab, the train page opens on the student's own runs, and the student may rename, tag and note
those runs only; "my handwriting" is one set per name. Names are not passwords: a class shares
them on trust, as it shares the machine. The teacher's sign-in is kept across reloads by a cookie
holding an expiring HMAC of the password (`mnist_lab_teacher`, 12 hours, SameSite=Strict), never
the password itself.

Settings in secrets.toml: `teacher_password`, `jobs_per_session` (default 2: jobs of one
student queued or running at once), `max_queue` (default 8: queued jobs on a device
beyond which nobody but the teacher starts more).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time

import streamlit as st

from core.store import RunStoreError

LOOPBACK = {"127.0.0.1", "localhost", "::1"}
DEFAULT_JOBS_PER_SESSION = 2
DEFAULT_MAX_QUEUE = 8


class AccessError(RunStoreError):
    """A job or an action this session may not start. A RunStoreError because every page
    already shows those as one clear message with nothing started."""


def _secret(name: str, default=None):
    try:
        return st.secrets.get(name, default)
    except Exception:  # noqa: BLE001 - no secrets.toml at all (StreamlitSecretNotFoundError)
        return default


def on_network() -> bool:
    """Does the server listen beyond this computer? (Streamlit's default, no address, is every interface.)"""
    address = st.get_option("server.address")
    return not address or str(address) not in LOOPBACK


def classroom() -> bool:
    return on_network()


def gate() -> None:
    """Refuse to serve the lab on the network without a teacher password (app.py calls it first)."""
    if on_network() and not _secret("teacher_password"):
        # One hidden page: without a call to st.navigation Streamlit lists the files of pages/ in
        # the sidebar (raw file names, links to pages that would refuse too).
        st.navigation([st.Page(_refusal, title="MNIST Lab", default=True)], position="hidden").run()
        st.stop()


def _refusal() -> None:
    st.error("This lab is listening on the network, but no teacher password is set, so anyone on this network "
             "could delete or import runs. Either start it for this computer only (`streamlit run app.py`, "
             "which listens on 127.0.0.1), or set a password for classroom mode: put the line "
             '`teacher_password = "choose-one"` in `.streamlit/secrets.toml` next to app.py and restart.',
             icon=":material/lock:")


TEACHER_COOKIE = "mnist_lab_teacher"
TEACHER_HOURS = 12
STUDENT_KEY = "student"  # the text box's key, and the address bar's parameter
NAME = re.compile(r"^[\w .'-]{1,40}$")


def _teacher_token(expiry: int) -> str:
    password = str(_secret("teacher_password", ""))
    return hmac.new(password.encode(), f"mnist-lab-teacher:{expiry}".encode(), hashlib.sha256).hexdigest()


def _cookie_says_teacher() -> bool:
    """The browser holds an unexpired token made with this password (a reload keeps the sign-in)."""
    if st.session_state.get("_signed_out") or not _secret("teacher_password"):
        return False
    value = teacher_cookie()
    if not isinstance(value, str):
        return False
    expiry, _, signature = value.partition(".")
    if not expiry.isdigit() or int(expiry) < time.time():
        return False
    return hmac.compare_digest(signature.encode(), _teacher_token(int(expiry)).encode())


def teacher_cookie() -> str | None:
    """The token the browser sent with this session's connection (read-only in Streamlit)."""
    try:
        return st.context.cookies.get(TEACHER_COOKIE)
    except Exception:  # noqa: BLE001 - no browser behind this run (AppTest, a bare script)
        return None


def _set_cookie(value: str, max_age: int) -> None:
    # Streamlit reads cookies (st.context.cookies) but has no call to set one: a line of script
    # does it. The value is an expiry and a hex HMAC: nothing in it needs escaping.
    st.html(f"<script>document.cookie = '{TEACHER_COOKIE}={value}; path=/; max-age={max_age}; SameSite=Strict';"
            "</script>", unsafe_allow_javascript=True, width=1)


def is_teacher() -> bool:
    if not classroom():
        return True
    if st.session_state.get("_teacher"):
        return True
    if _cookie_says_teacher():
        st.session_state["_teacher"] = True
        return True
    return False


def student() -> str | None:
    """The name this student typed (classroom mode), or None (none yet, the teacher, one user's lab)."""
    if not classroom() or is_teacher():
        return None
    name = str(st.session_state.get("_student_name") or "").strip()
    return name if NAME.match(name) else None


def owner() -> str | None:
    """Whose runs and drawings these are: a student's name, "teacher", or None for one user's lab."""
    if not classroom():
        return None
    return "teacher" if is_teacher() else student()


def may_edit(run: dict) -> bool:
    """Rename, tag, note, stop, resume: the teacher any run, a student their own runs."""
    return is_teacher() or (student() is not None and run.get("owner") == student())


def check_may_edit(run: dict, action: str) -> None:
    if not may_edit(run):
        raise AccessError(f"classroom mode: only the teacher and the student who started it can {action} "
                          f"run {run['id']}")


def teacher_login() -> None:
    """Classroom mode's line under every page's title: the quota, and the teacher's login."""
    if not classroom():
        return
    with st.container():
        if st.session_state.pop("_cookie", None):
            expiry = int(time.time()) + TEACHER_HOURS * 3600
            _set_cookie(f"{expiry}.{_teacher_token(expiry)}", TEACHER_HOURS * 3600)
        if st.session_state.pop("_cookie_clear", None):
            _set_cookie("", 0)
        if is_teacher():
            st.caption(":material/school: Classroom mode: you are signed in as the teacher.")
            if st.button("Sign out", key="_teacher_out"):
                st.session_state.pop("_teacher")
                st.session_state.update(_signed_out=True, _cookie_clear=True)
                st.rerun()
            return
        c1, c2 = st.columns([1, 2])
        # The name lives in the session (`_student_name`: through page switches, which start each
        # page's box afresh) and in the address bar (`?student=`: through a reload, which starts a
        # new session that reads it back).
        known = st.session_state.get("_student_name") or str(st.query_params.get(STUDENT_KEY) or "")
        if len(known) > 40:
            c1.warning("The name in the link is longer than 40 characters: type yours.")
            known = ""
        typed = c1.text_input("Your name", value=known, key=STUDENT_KEY, max_chars=40,
                              placeholder="type it to train and keep drawings",
                              help="Your runs, your job quota and your handwriting set go with this name, in every "
                                   "tab (it stays in the address bar). Use the same name each time.").strip()
        if typed and not NAME.match(typed):
            c1.warning("A name is 1 to 40 letters, digits, spaces, dots, apostrophes or dashes.")
        st.session_state["_student_name"] = typed if NAME.match(typed) else ""
        if NAME.match(typed) and st.query_params.get(STUDENT_KEY) != typed:
            st.query_params[STUDENT_KEY] = typed
        with c2.expander(f":material/school: Classroom mode: up to {jobs_per_session()} job(s) each at a time; "
                         "deleting and importing runs is for the teacher. Teacher login"):
            entered = st.text_input("Password", type="password", key="_teacher_pw")
            if st.button("Sign in", key="_teacher_in"):
                wait = guess_wait()
                if wait > 0:
                    st.error(f"Too many wrong passwords: try again in {wait:.0f} s.")
                elif hmac.compare_digest(entered.encode(), str(_secret("teacher_password", "")).encode()):
                    st.session_state.update(_teacher=True, _cookie=True)
                    st.session_state.pop("_signed_out", None)
                    st.session_state.pop("_teacher_pw", None)
                    st.rerun()
                else:
                    wrong_guess()
                    st.error("Wrong password.")


# Password guessing: after each wrong password this browser session waits 1, 2, 4 ... 60 s before
# the next try is checked; beyond 10 wrong passwords on the whole server in 10 minutes, every
# session waits too (a class shares one server: guessing from many tabs is slowed as well).
SERVER_FREE_GUESSES, GUESS_WINDOW_S, MAX_WAIT_S = 10, 600, 60


@st.cache_resource
def server_guesses() -> dict:
    """The server's wrong passwords of the last GUESS_WINDOW_S seconds, shared by every session."""
    import threading

    return {"lock": threading.Lock(), "times": [], "until": 0.0}


def guess_wait() -> float:
    """Seconds before the next password try is checked (0: now)."""
    server = server_guesses()
    return max(0.0, max(st.session_state.get("_pw_until", 0.0), server["until"]) - time.time())


def wrong_guess() -> None:
    now = time.time()
    fails = st.session_state.get("_pw_fails", 0) + 1
    st.session_state.update(_pw_fails=fails, _pw_until=now + min(MAX_WAIT_S, 2 ** (fails - 1)))
    server = server_guesses()
    with server["lock"]:
        server["times"] = [t for t in server["times"] if now - t < GUESS_WINDOW_S] + [now]
        extra = len(server["times"]) - SERVER_FREE_GUESSES
        if extra > 0:
            server["until"] = now + min(MAX_WAIT_S, 2 ** (extra - 1))


def allowed(action: str) -> bool:
    """True when this session may do `action` (delete runs, import runs, ...); otherwise says
    so where the control would be."""
    if is_teacher():
        return True
    st.info(f"Classroom mode: only the teacher can {action}.", icon=":material/lock:")
    return False


def jobs_per_session() -> int:
    return int(_secret("jobs_per_session", DEFAULT_JOBS_PER_SESSION))


def max_queue() -> int:
    return int(_secret("max_queue", DEFAULT_MAX_QUEUE))


def job_key(run: dict) -> str:
    """Runs of one job share it: a vectorised group trains as one worker, any other run alone."""
    group = (run.get("vectorized") or {}).get("group") if isinstance(run.get("vectorized"), dict) else None
    return group[0] if group else run["id"]


def sweep_share(spec: dict) -> int:
    """The jobs a sweep holds while its driver works: the trials it trains at once."""
    return max(1, int(spec.get("parallel") or 1))


def check_sweep_resume(store, spec: dict) -> None:
    """Raise AccessError when resuming this interrupted sweep would take the student over the
    quota: it takes its share again, less its trials still training from before (counted
    already, as runs of their own)."""
    from core.store.records import ACTIVE
    from core.sweeps import sweep_runs

    still = sum(r["status"] in ACTIVE for r in sweep_runs(store, spec["sweep_id"]))
    check_launch(store, max(0, sweep_share(spec) - still))


def jobs_held(store, name: str, runs: list[dict] | None = None) -> int:
    """The jobs `name` holds now: each queued or running run of theirs (a vectorised group is
    one), and each sweep of theirs whose driver is still at work as the trials it trains at once
    (`parallel`, what its launch was checked for), whether a trial is training or the driver is
    between two; that sweep's trial runs are not counted again. A sweep keeps its share for its
    whole life: counted by its trials only, a job started between two trials took the share
    and the next trial went one over the quota."""
    from core.store.records import ACTIVE
    from core.sweeps import driver_running, list_sweeps

    sweeping = {s["sweep_id"]: sweep_share(s) for s in list_sweeps(store)
                if s.get("owner") == name and driver_running(store, s["sweep_id"])}
    runs = store.list() if runs is None else runs
    jobs = {job_key(r) for r in runs if r.get("owner") == name and r["status"] in ACTIVE and r.get("grp") not in sweeping}
    return len(jobs) + sum(sweeping.values())


def check_launch(store, new_jobs: int = 1) -> None:
    """Raise AccessError when this student may not start `new_jobs` more jobs now (classroom
    mode). Jobs, not clicks: "Train 4 models" is four jobs, a vectorised k-fold one."""
    if is_teacher():
        return
    name = student()
    if name is None:
        raise AccessError("type your name under the page's title first: in classroom mode your runs, your job quota "
                          "and your handwriting go with it")
    runs = store.list()
    mine = jobs_held(store, name, runs)
    quota = jobs_per_session()
    if mine + new_jobs > quota:
        raise AccessError(
            (f"this starts {new_jobs} jobs and you have {mine} queued or running; " if new_jobs > 1 else
             f"you already have {mine} job(s) queued or running (a sweep: the trials it trains at once); ")
            + f"{quota} at once is the most one student can have in classroom mode: start it when some finish "
            "(or cancel one), or ask the teacher")
    # jobs, not runs (a vectorised group is one job); the starter runs of a fresh lab do not count
    queued = len({job_key(r) for r in runs
                  if r["status"] == "queued" and not r.get("starter")})
    if queued >= max_queue():
        raise AccessError(f"the queue is full ({queued} jobs waiting for this machine); try again when some "
                          "have finished")


def runs_to_show(runs: list[dict]) -> list[dict]:
    """The runs a page may open by itself for this session (a new tab on the train page shows the
    newest of them): every run for one user or the teacher, but in classroom mode a student's
    own jobs only, so that nobody opens the lab to find a classmate's run as if it were theirs.
    Every run stays reachable on purpose (experiments, metrics)."""
    if is_teacher():
        return runs
    name = student()
    return [r for r in runs if name is not None and r.get("owner") == name]


def record_launch(store, run_ids) -> None:
    """Store who started these runs (classroom mode); nothing for one user's lab."""
    who = owner()
    if who is not None:
        for run_id in run_ids:
            store.set_owner(run_id, who)


def jobs_of(configs, vectorize: bool, dataset=None) -> int:
    """How many jobs a submit starts: one for models that train together as one vectorised model,
    else one per model (the executors' own plan, core.group_training.vectorize_plan)."""
    configs = list(configs)
    if vectorize and len(configs) > 1:
        from core.devices import resolve_device
        from core.group_training import vectorize_plan

        try:
            resolved = [c.replace(device=str(resolve_device(c.device))) for c in configs]
            if vectorize_plan(resolved, dataset) is None:
                return 1
        except Exception:  # noqa: BLE001 - a config the executor will refuse anyway: count every model
            pass
    return len(configs)


class SessionExecutor:
    """The pages' executor: the real one, with classroom mode's quota checked before every
    submit and resume, and this session's jobs remembered (ui.state.executor returns it)."""

    def __init__(self, inner):
        self._inner = inner

    def submit(self, configs, group=None, vectorize=False, dataset=None):
        check_launch(self._inner.store, jobs_of(configs, vectorize, dataset))
        ids = self._inner.submit(configs, group=group, vectorize=vectorize, dataset=dataset)
        record_launch(self._inner.store, ids)
        return ids

    def resume(self, run_id: str) -> None:
        check_may_edit(self._inner.store.get(run_id), "resume")
        check_launch(self._inner.store)
        self._inner.resume(run_id)

    def __getattr__(self, name):
        return getattr(self._inner, name)
