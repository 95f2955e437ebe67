"""The command line, `python -m core COMMAND`: each command lives in its own module and adds
its parser here; they share only core.cli.common.

    train, devices, summary, worker   core/cli/train.py
    runs list|show|...|resume         core/cli/runs.py
    kfold                             core/cli/kfold.py
    sweep                             core/cli/sweep.py
    export                            core/cli/export.py

Every bad argument exits with status 2 and one line on stderr that starts with `error:` and
says what is wrong and what is allowed. With `--json`, the last line of stdout is one JSON
object; progress goes to stderr (a bar on a terminal, nothing otherwise).
"""

from __future__ import annotations

import sqlite3
import sys

from core.cli.common import USER_ERRORS, Parser, UsageError, fail


def build_parser() -> Parser:
    from core.cli import export, kfold, runs, sweep, train

    parser = Parser(prog="python -m core", description="MNIST Lab from the command line")
    sub = parser.add_subparsers(dest="command", parser_class=Parser)
    for module in (train, runs, kfold, sweep, export):
        module.add_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from core.devices import set_threads

    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if not args.command:
            raise UsageError("a command is required: " + ", ".join(sorted(parser._subparsers._group_actions[0].choices)))
        set_threads()
        return args.handler(args)
    except UsageError as exc:
        return fail(str(exc))
    except USER_ERRORS as exc:
        return fail(str(exc))
    except (OSError, sqlite3.Error) as exc:  # a full disk, a read-only folder: one line, not a traceback
        from core.store.files import failure_text

        return fail(failure_text(exc).replace("could not write the run's files", "could not write"))
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


__all__ = ["build_parser", "main"]
