"""`python -m core ...`: see core/cli/__init__.py."""

import sys

if __name__ == "__main__":
    argv = sys.argv[1:]
    if argv[:1] == ["worker"]:  # wait for a slot before torch is imported (core.executors.queue)
        from core.executors.queue import background_priority, wait_from_argv

        background_priority()  # the app's pages before background training (see its docstring)
        argv = ["worker", *wait_from_argv(argv[1:])]
        if argv[-2:] == ["--waited", "cancelled"]:
            sys.exit(0)  # cancelled while queued, and recorded so (core.executors.queue): nothing to import
    from core.cli import main

    sys.exit(main(argv))
