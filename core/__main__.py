"""`python -m core ...`: see core/cli/__init__.py."""

import sys

if __name__ == "__main__":
    argv = sys.argv[1:]
    # A worker waits for its slot before torch is imported (core.executors.queue), unless it
    # is the fork a waiting worker handed its job to (`--waited` given: that one waited).
    if argv[:1] == ["worker"] and "--waited" not in argv:
        from core.executors.queue import background_priority, wait_from_argv
        from core.executors.zygote import hand_over

        background_priority()  # the app's pages before background training (see its docstring)
        argv = ["worker", *wait_from_argv(argv[1:])]
        if argv[-2:] == ["--waited", "cancelled"]:
            sys.exit(0)  # cancelled while queued, and recorded so (core.executors.queue): nothing to import
        fork = hand_over(argv[1:])
        if fork:
            print(f"handed to the zygote's fork {fork}, which trains it", flush=True)  # worker.log
            sys.exit(0)
    from core.cli import main

    sys.exit(main(argv))
