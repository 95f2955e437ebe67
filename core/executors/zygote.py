"""A preloaded process that forks the lab's background processes, so that a worker starts
training in a fraction of a second instead of after seconds of imports.

Why: every job trains in its own process (core.executors.local), and a fresh Python pays its
imports before the first batch: torch, torch._dynamo (pulled in by the first Adam), scikit-learn
(the stratified validation split), torchvision, PIL. Measured on this 2-core VM: 7.2 s from a
worker's slot to its first batch, for a training of 0.1 s; a sweep pays it once per trial. The
zygote (the name Android gives its preloaded app forker) imports those libraries once and forks
a child per job; the child is the worker, as `python -m core ARGS` would be.

Hand-written because multiprocessing's forkserver ties each child to a Process object of its
caller (joined at the caller's exit, with a sentinel pipe to it), while a worker must outlive
the app that started it (a restart of `streamlit run` must not stop a training).

What a child shares with the zygote, and what it does not:
- only third-party libraries are preloaded; each child purges every `core` module and imports
  the lab afresh from disk, so an edit to the lab is seen by the next job, as before;
- the child applies the request's environment, working folder and PYTHONPATH (and runs a
  `sitecustomize` found there, as a starting interpreter would), starts its own session (like
  `start_new_session`), writes to its log, and exits through the normal interpreter shutdown;
- a library may read some variables when it is imported (OMP_*, MKL_*, TORCH*, ...), and the
  interpreter others when it starts (PYTHON*): a request whose values of those differ from the
  zygote's, or from another Python or checkout, is refused, and the caller starts a fresh
  interpreter as before;
- the zygote never initialises CUDA (importing torch does not), so a child may; GPU and MPS jobs
  are nevertheless started the plain way (core.executors.local), as the fork path has not been
  checked on a GPU.

Linux only (fork of a process that has loaded torch is not safe on macOS; Windows has no fork).
MNIST_LAB_PRELOAD=0 turns it off. The zygote exits after IDLE_S without a request; the first
request finding none starts one and is itself started the plain way.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from core.settings import settings

ROOT = Path(__file__).resolve().parents[2]
IDLE_S = 20 * 60
CONNECT_S = 5.0
REPLY_S = 30.0  # a fork on a loaded machine; past it the caller starts the job itself and the
#                 zygote, unable to hand the pid over, kills its child before it did anything
PRELOAD = ("numpy", "pandas", "torch", "torch.optim", "torch._dynamo", "torchvision", "torchvision.transforms.v2",
           "PIL.Image", "PIL.ImageDraw", "scipy.stats", "sklearn.model_selection", "sklearn.metrics",
           "sklearn.preprocessing", "optuna")
# Variables a preloaded library may have read at its import, or the interpreter at its start
# (PYTHONWARNINGS, PYTHONUNBUFFERED, ...): a child must see the zygote's values.
IMPORT_TIME_PREFIXES = ("OMP_", "MKL_", "KMP_", "OPENBLAS_", "TORCH", "PYTORCH_", "CUDA_", "LD_", "PYTHON")
# ... except those read later, which the child's environment carries: PYTHONPATH (each child
# applies it) and PYTHONBREAKPOINT (read at every breakpoint() call; `ray.init` writes it into
# the environment of the process that called it, so after a Ray sweep the app's would differ).
READ_AT_USE = frozenset({"PYTHONPATH", "PYTHONBREAKPOINT"})
_launched_at = 0.0


def supported() -> bool:
    return sys.platform == "linux" and hasattr(os, "fork") and hasattr(socket, "AF_UNIX") and settings().preload


def _key() -> str:
    return hashlib.sha256(f"{sys.executable}\0{ROOT}".encode()).hexdigest()[:16]


def _private_folder() -> Path | None:
    """A folder only this user can enter ($XDG_RUNTIME_DIR, else one made in the temporary
    folder), or None when the one found is not (someone else's, or open to others): whoever
    can reach the socket can have the zygote run the lab's command line as this user."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    folder = Path(runtime) if runtime else Path(tempfile.gettempdir()) / f"mnist-lab-{os.getuid()}"
    try:
        folder.mkdir(mode=0o700, exist_ok=True)
        info = folder.stat()
    except OSError:
        return None
    return folder if info.st_uid == os.getuid() and not info.st_mode & 0o077 else None


def socket_path() -> Path | None:
    """One zygote per Python and checkout, in the user's private folder (a Unix socket's path
    must stay under 108 bytes); None when there is no private folder."""
    folder = _private_folder()
    return folder / f"mnist-lab-zygote-{_key()}.sock" if folder else None


def _import_time_env(env: dict) -> dict:
    return {k: v for k, v in env.items() if k.startswith(IMPORT_TIME_PREFIXES) and k not in READ_AT_USE}


# --- the caller's side ------------------------------------------------------------------

def _ask(message: dict, timeout: float = CONNECT_S) -> dict | None:
    path = socket_path()
    if path is None:
        return None
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(timeout)
            conn.connect(str(path))
            conn.sendall(json.dumps(message).encode() + b"\n")
            reply = conn.makefile("rb").readline()
        return json.loads(reply) if reply else None
    except (OSError, ValueError):
        return None


def spawn(args: list[str], log_path, env: dict, say_refusal: bool = True) -> int | None:
    """Start `python -m core ARGS` as a child of the zygote, in its own session, writing to
    `log_path`; returns its pid, or None when no zygote can take it (then the caller starts a
    fresh interpreter, and the log says why unless `say_refusal` is False). A missing zygote
    is started for the next call."""
    if not supported():
        return None
    reply = _ask({"argv": args, "log": str(Path(log_path).resolve()), "cwd": str(ROOT), "env": env,
                  "python": sys.executable, "root": str(ROOT), "nice": os.nice(0)}, timeout=REPLY_S)
    if reply is None:
        ensure_started()
        return None
    if reply.get("refused") and say_refusal:
        with open(log_path, "a") as log:  # why this one pays a fresh interpreter's imports
            log.write(f"started without the zygote: {reply['refused']}\n")
    return reply.get("pid")


def hand_over(argv: list[str]) -> int | None:
    """In a fresh worker that waited for its CPU slot (core.executors.queue: queued before a
    zygote answered, as a fresh lab's starters are): hand the job to a fork when a zygote answers
    now, which trains seconds sooner than this process would after its own imports. `argv`:
    wait_from_argv's, ending `--waited claimed`. Records the fork as the runs' worker (the slot
    is counted by that pid: it stays one job) and returns its pid, after which this process
    exits; None: this process trains the job itself."""
    import sqlite3

    from core.executors.queue import worker_args
    from core.store.folder import RunFolder
    from core.store.index import IndexBroken, RunIndex
    from core.store.processes import process_start_time

    if argv[-2:] != ["--waited", "claimed"] or "torch" in sys.modules or not supported():
        return None  # not a claimed job, or this process is a fork already (torch preloaded)
    if ping() is None:
        return None  # none answering now: none is started for this one job (the next submit does)
    known = worker_args(argv)
    root = Path(known.runs_dir)
    index = RunIndex(root / "index.sqlite")
    try:
        if any((index.get(r) or {}).get("device") != "cpu" for r in known.runs):
            return None
    except (IndexBroken, sqlite3.Error):
        return None
    # A refusal was said in the log when this job was submitted (why this process is a fresh one).
    pid = spawn(["worker", *argv], RunFolder(root, known.runs[0]) / "worker.log", dict(os.environ),
                say_refusal=False)
    if not pid:
        return None
    start = process_start_time(pid)
    try:
        for run_id in known.runs:  # before this process exits: a reader must never see the job's worker gone
            index.update(run_id, pid=pid, pid_start=start)
            RunFolder(root, run_id).write_meta(pid=pid, pid_start=start)
    except (IndexBroken, sqlite3.Error, OSError, ValueError):
        pass  # the fork trains it all the same, and records itself when it starts (mark_running)
    return pid


def ensure_started() -> bool:
    """Start a zygote in the background unless one answers (or one was started in the last
    minute and is still importing); returns whether this call started one."""
    global _launched_at
    path = socket_path() if supported() else None
    if path is None or time.monotonic() - _launched_at < 60 or ping() is not None:
        return False
    _launched_at = time.monotonic()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with open(path.with_suffix(".log"), "ab") as log:
        subprocess.Popen([sys.executable, "-m", "core.executors.zygote"], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                         stdin=subprocess.DEVNULL, env=env, start_new_session=True)
    return True


def stop() -> bool:
    """Ask the zygote to exit (its children train on); returns whether one answered."""
    return _ask({"stop": True}) is not None


def ping() -> dict | None:
    """The zygote's pid and what it preloaded, or None when none answers."""
    return _ask({"ping": True})


def ready(timeout: float = 120.0) -> dict | None:
    """Start a zygote unless one answers, and wait up to `timeout` s for it to answer (its
    imports); its ping, or None (not supported here, or not up in time)."""
    ensure_started()
    deadline = time.monotonic() + timeout
    while (answer := ping()) is None and supported() and time.monotonic() < deadline:
        time.sleep(0.2)
    return answer


# --- the zygote's side ------------------------------------------------------------------

def _preload() -> list[str]:
    """Import PRELOAD in a thread of the lowest CPU priority (Linux sets niceness per thread):
    the zygote is often started beside a fresh lab's starter runs and a person's first job, and
    its seconds of imports must not take their cores. The thread has ended before the first
    fork, and the forking thread keeps the zygote's own priority, which the children inherit."""
    import importlib
    import threading

    loaded = []

    def load() -> None:
        try:
            os.setpriority(os.PRIO_PROCESS, 0, 19)  # 0: this thread (Linux)
        except OSError:
            pass
        for name in PRELOAD:
            try:
                importlib.import_module(name)
                loaded.append(name)
            except Exception:  # noqa: BLE001 - an optional library missing: its children import it themselves
                pass

    thread = threading.Thread(target=load, name="preload")
    thread.start()
    thread.join()
    return loaded


def _refusal(request: dict, before: dict) -> str | None:
    """Why the zygote cannot fork this request, or None. `before`: its import-time variables
    before its imports; a value the libraries set themselves when imported (torch sets
    CUDA_MODULE_LOADING) is the same in a caller that imported them too."""
    if request.get("python") != sys.executable or request.get("root") != str(ROOT):
        return "another Python or checkout"
    asked, after = _import_time_env(request.get("env") or {}), _import_time_env(dict(os.environ))
    differ = sorted(k for k in {*asked, *before, *after} if asked.get(k) not in (before.get(k), after.get(k)))
    if differ:
        return f"variables read at import differ: {', '.join(differ)}"
    if not isinstance(request.get("argv"), list) or not request.get("log"):
        return "not a request"
    return None


def _same_user(conn: socket.socket) -> bool:
    """Whether the process at the other end runs as this user (Linux SO_PEERCRED: pid, uid, gid)."""
    import struct

    try:
        _, uid, _ = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
    except OSError:
        return False
    return uid == os.getuid()


def serve(listener: socket.socket, loaded: list[str], before: dict) -> dict | None:
    """Answer requests until idle or told to stop (returns None); in a forked child, return its
    request (the caller then becomes that process). `before`: the zygote's import-time
    variables as they were before its imports."""
    import signal

    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped by the kernel: no zombies
    listener.settimeout(IDLE_S)
    while True:
        try:
            conn, _ = listener.accept()
        except TimeoutError:
            return None
        with conn:
            conn.settimeout(CONNECT_S)
            if not _same_user(conn):
                continue
            try:
                request = json.loads(conn.makefile("rb").readline() or b"{}")
            except (OSError, ValueError):
                continue
            if request.get("stop"):
                conn.sendall(b'{"stopped": true}\n')
                return None
            if request.get("ping"):
                conn.sendall(json.dumps({"pid": os.getpid(), "preloaded": loaded}).encode() + b"\n")
                continue
            refusal = _refusal(request, before)
            if refusal:
                conn.sendall(json.dumps({"refused": refusal}).encode() + b"\n")
                continue
            sys.stdout.flush()
            sys.stderr.flush()
            go_read, go_write = os.pipe()
            pid = os.fork()
            if pid == 0:
                listener.close()
                os.close(go_write)
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                go = os.read(go_read, 1)
                os.close(go_read)
                if go != b"1":
                    raise SystemExit(0)  # out of this child only: main() never reaches its cleanup
                return request
            os.close(go_read)
            try:
                conn.sendall(json.dumps({"pid": pid}).encode() + b"\n")
                os.write(go_write, b"1")
            except OSError:
                # The caller gave up waiting and starts the job itself: this child must not
                # start it too. It waits for the word, so it has done nothing yet.
                os.kill(pid, signal.SIGKILL)
            finally:
                os.close(go_write)


def become(request: dict) -> int:
    """In a forked child: turn into `python -m core ARGV` with the request's environment, at
    the caller's CPU priority or lower (as a child the caller started itself would be)."""
    import importlib
    import importlib.util
    import runpy
    import signal

    os.setsid()
    asked = request.get("nice")
    if isinstance(asked, int) and asked > os.nice(0):
        os.nice(asked - os.nice(0))
    try:  # `ps` and /proc/PID/cmdline show the command this child is, not the zygote's
        import setproctitle

        setproctitle.setproctitle(" ".join([sys.executable, "-m", "core", *request["argv"]]))
    except ImportError:
        pass
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    base = [p for p in sys.path if p not in ("", str(ROOT))]
    extra = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    sys.path[:] = [request["cwd"], *extra, *base]
    for name in [m for m in sys.modules if m == "core" or m.startswith("core.")]:
        del sys.modules[name]  # the lab afresh from disk: an edit reaches the next job
    importlib.invalidate_caches()
    spec = importlib.util.find_spec("sitecustomize")
    if spec is not None and spec.origin != getattr(sys.modules.get("sitecustomize"), "__file__", None):
        sys.modules.pop("sitecustomize", None)
        importlib.import_module("sitecustomize")  # as a starting interpreter runs the one on its path
    import numpy as np

    np.random.seed()  # a fresh interpreter's global generator is seeded from the OS, not shared
    sys.argv = ["-m", *request["argv"]]
    try:
        runpy.run_module("core", run_name="__main__", alter_sys=True)
    except SystemExit as done:
        return done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    return 0


def main() -> int:
    import fcntl
    import gc

    path = socket_path()
    if path is None:
        print("zygote: no private folder for its socket; workers start as fresh Pythons", flush=True)
        return 1
    lock = open(path.with_suffix(".lock"), "w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return 0  # another zygote serves this Python and checkout
    started = time.monotonic()
    before = _import_time_env(dict(os.environ))
    loaded = _preload()
    gc.collect()
    gc.freeze()  # children's collections do not touch (and so copy) the preloaded objects' pages
    path.unlink(missing_ok=True)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_mask = os.umask(0o177)  # the socket itself is this user's only, too
    try:
        listener.bind(str(path))
    finally:
        os.umask(old_mask)
    listener.listen(64)
    print(f"zygote {os.getpid()}: preloaded {', '.join(loaded)} in {time.monotonic() - started:.1f} s", flush=True)
    request = serve(listener, loaded, before)
    if request is None:
        path.unlink(missing_ok=True)
        return 0
    lock.close()
    sys.exit(become(request))


if __name__ == "__main__":
    sys.exit(main())
