"""A test tool, not part of the lab: run the command line `python -m core ARGS` and kill its
process with SIGKILL (which no code can catch or clean up after) just before or just after
its Nth file rename, the moment a write of the store becomes visible. With kill_at=0 nothing
is killed and the number of renames is written to `count_file`, so a test can try every
kill point.

`run_command` is the command line's own `main`, run in a process forked from a forkserver
that has imported torch and the lab (tests/test_faults.py), so each kill point costs its
training, not an interpreter start. As a script it runs the real `python -m core`:

    KILL_AT=N KILL_WHEN=before|after RENAME_COUNT=FILE python tests/faults/kill_at_rename.py ARGS
"""

import contextlib
import os
import signal
import sys


def patch_renames(kill_at: int, when: str, count_file: str | None) -> None:
    real_replace = os.replace
    calls = [0]

    def replace(src, dst, *args, **kwargs):
        calls[0] += 1
        if calls[0] == kill_at and when == "before":
            os.kill(os.getpid(), signal.SIGKILL)
        real_replace(src, dst, *args, **kwargs)
        if calls[0] == kill_at and when == "after":
            os.kill(os.getpid(), signal.SIGKILL)
        if count_file:
            with open(count_file, "w") as f:
                f.write(str(calls[0]))

    os.replace = replace


def run_command(args: list[str], kill_at: int, when: str, count_file: str | None, output: str) -> None:
    """`python -m core ARGS` in this process (its stdout and stderr into `output`); exits with
    the command's status, unless killed first."""
    patch_renames(kill_at, when, count_file)
    from core.cli import main

    with open(output, "w") as out, contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        try:
            code = main(args)
        except BaseException:  # noqa: BLE001 - a traceback is what the suite looks for
            import traceback

            traceback.print_exc()
            code = 3
    sys.exit(code)


if __name__ == "__main__":
    import runpy

    patch_renames(int(os.environ.get("KILL_AT", "0")), os.environ.get("KILL_WHEN", "before"),
                  os.environ.get("RENAME_COUNT"))
    sys.argv = ["core", *sys.argv[1:]]
    runpy.run_module("core", run_name="__main__", alter_sys=True)
