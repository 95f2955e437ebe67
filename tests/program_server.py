"""A test tool, not part of the lab: runs the generated Keras and PyTorch programs
(tests/test_codegen.py) each in its own process, forked from a server that has imported torch,
torchvision and Keras (torch backend) once, so that a program costs its training and not an
interpreter's imports (Keras on torch 5-9 s on this VM, most of a one-epoch run on the offline
sample).

The server never imports the lab, runs with an empty PYTHONPATH from the programs' folder, and
each child runs the file as `python FILE` would (`runpy.run_path(..., run_name="__main__")`,
`sys.argv` and `sys.path[0]` set to the file's), its stdout and stderr into files. The test
that every preset's program runs standalone still starts a fresh interpreter for each
(`run_program` without `server`). Not used where CUDA is available: a forked child cannot use a
GPU that its parent had looked at.

Protocol, one JSON object a line: the client writes {"path", "out", "err"}; the server answers
{"pid"} at the fork and {"code"} when the child has exited.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
from pathlib import Path

PRELOAD = ("torch", "torch._dynamo", "torchvision", "numpy", "keras")


def serve() -> None:
    import importlib

    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except ImportError:  # Keras is optional (its tests skip): the programs import what they need
            pass
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            _child(request)  # never returns
        print(json.dumps({"pid": pid}), flush=True)
        _, status = os.waitpid(pid, 0)
        print(json.dumps({"code": os.waitstatus_to_exitcode(status)}), flush=True)


def _child(request: dict) -> None:
    import runpy

    code = 0
    try:
        out = os.open(request["out"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        err = os.open(request["err"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(out, 1)
        os.dup2(err, 2)
        path = request["path"]
        os.chdir(os.path.dirname(path))
        sys.argv = [path]
        sys.path[0] = os.path.dirname(path)
        runpy.run_path(path, run_name="__main__")
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException:  # noqa: BLE001 - the traceback is what the test reports
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


class ProgramServer:
    """The client: `run(path, timeout)` -> (exit code, stdout, stderr), as subprocess.run
    would give them."""

    def __init__(self, folder: Path):
        env = {**os.environ, "KERAS_BACKEND": "torch", "PYTHONPATH": ""}
        self.proc = subprocess.Popen([sys.executable, __file__], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     cwd=folder, env=env, text=True, bufsize=1)
        # A thread reads the answers: the fork's and the exit's can arrive together, and a select()
        # on the pipe would not see the second one once readline() had buffered it.
        self._answers: queue.Queue[str] = queue.Queue()
        self._reader = threading.Thread(target=self._pump, daemon=True)
        self._reader.start()
        self._read(600)

    def _pump(self) -> None:
        for line in self.proc.stdout:
            self._answers.put(line)

    def _read(self, timeout: float) -> dict:
        try:
            return json.loads(self._answers.get(timeout=timeout))
        except queue.Empty:
            raise TimeoutError(f"the program server did not answer in {timeout:.0f} s") from None

    def run(self, path: Path, timeout: float) -> tuple[int, str, str]:
        out, err = path.with_suffix(".out"), path.with_suffix(".err")
        self.proc.stdin.write(json.dumps({"path": str(path), "out": str(out), "err": str(err)}) + "\n")
        self.proc.stdin.flush()
        pid = self._read(60)["pid"]
        try:
            code = self._read(timeout)["code"]
        except TimeoutError:
            os.kill(pid, signal.SIGKILL)
            self._read(60)
            raise TimeoutError(f"{path.name} ran over {timeout:.0f} s") from None
        return code, out.read_text(), err.read_text()

    def close(self) -> None:
        """Every request has been answered, so no program is running: the server is killed
        rather than left to tear torch down (2 s)."""
        self.proc.kill()
        self.proc.wait()
        self._reader.join(30)  # the pipe's end ends it
        self.proc.stdin.close()
        self.proc.stdout.close()


if __name__ == "__main__":
    serve()
