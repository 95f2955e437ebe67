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

Settings in secrets.toml: `teacher_password`, `jobs_per_session` (default 2: jobs of one
student session queued or running at once), `max_queue` (default 8: queued jobs on a device
beyond which nobody but the teacher starts more).
"""

from __future__ import annotations

import hmac

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
        st.error("This lab is listening on the network, but no teacher password is set, so anyone on this network "
                 "could delete or import runs. Either start it for this computer only (`streamlit run app.py`, "
                 "which listens on 127.0.0.1), or set a password for classroom mode: put the line "
                 '`teacher_password = "choose-one"` in `.streamlit/secrets.toml` next to app.py and restart.',
                 icon=":material/lock:")
        st.stop()


def is_teacher() -> bool:
    return not classroom() or bool(st.session_state.get("_teacher"))


def teacher_login() -> None:
    """Classroom mode's line under every page's title: the quota, and the teacher's login."""
    if not classroom():
        return
    with st.container():
        if st.session_state.get("_teacher"):
            st.caption(":material/school: Classroom mode: you are signed in as the teacher.")
            if st.button("Sign out", key="_teacher_out"):
                st.session_state.pop("_teacher")
                st.rerun()
            return
        with st.expander(f":material/school: Classroom mode: you can train up to {jobs_per_session()} job(s) at a "
                         "time; deleting and importing runs is for the teacher. Teacher login"):
            entered = st.text_input("Password", type="password", key="_teacher_pw")
            if st.button("Sign in", key="_teacher_in"):
                if hmac.compare_digest(entered.encode(), str(_secret("teacher_password", "")).encode()):
                    st.session_state["_teacher"] = True
                    st.session_state.pop("_teacher_pw", None)
                    st.rerun()
                else:
                    st.error("Wrong password.")


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


def check_launch(store) -> None:
    """Raise AccessError when this session may not start another job now (classroom mode)."""
    if is_teacher():
        return
    runs = store.list()
    mine = [r for r in runs if r["id"] in set(st.session_state.get("_my_jobs", []))
            and r["status"] in ("queued", "running")]
    if len(mine) >= jobs_per_session():
        raise AccessError(f"you already have {len(mine)} job(s) queued or running, the most one student can have at "
                          "once in classroom mode; start the next when one finishes (or cancel one)")
    # jobs, not runs (a vectorised group is one job); the starter runs of a fresh lab do not count
    queued = len({r["pid"] or r["id"] for r in runs
                  if r["status"] == "queued" and '"starter": true' not in (r["config"] or "")})
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
    mine = set(st.session_state.get("_my_jobs", []))
    return [r for r in runs if r["id"] in mine]


def record_launch(run_ids) -> None:
    st.session_state["_my_jobs"] = [*st.session_state.get("_my_jobs", []), *run_ids]


class SessionExecutor:
    """The pages' executor: the real one, with classroom mode's quota checked before every
    submit and resume, and this session's jobs remembered (ui.state.executor returns it)."""

    def __init__(self, inner):
        self._inner = inner

    def submit(self, configs, *args, **kwargs):
        check_launch(self._inner.store)
        ids = self._inner.submit(configs, *args, **kwargs)
        record_launch(ids)
        return ids

    def resume(self, run_id: str) -> None:
        check_launch(self._inner.store)
        self._inner.resume(run_id)
        record_launch([run_id])

    def __getattr__(self, name):
        return getattr(self._inner, name)
