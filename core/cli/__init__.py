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

import importlib
import sqlite3
import sys

from core.cli.common import Parser, UsageError, fail, user_errors
from core.settings import settings

# Which module adds each command's parser: only the asked command's module is imported, so
# that `runs list` does not pay the imports of the commands that train (torch: about 4 s).
COMMANDS = {"train": "train", "devices": "train", "summary": "train", "worker": "train", "runs": "runs",
            "kfold": "kfold", "sweep": "sweep", "export": "export"}


def build_parser(command: str | None = None) -> Parser:
    """The parser of every command, or of `command` only (its module's commands)."""
    modules = [COMMANDS[command]] if command in COMMANDS else list(dict.fromkeys(COMMANDS.values()))
    parser = Parser(prog="python -m core", description="MNIST Lab from the command line")
    sub = parser.add_subparsers(dest="command", parser_class=Parser)
    for name in modules:
        importlib.import_module(f"core.cli.{name}").add_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        parser = build_parser(argv[0] if argv else None)
        args = parser.parse_args(argv)
        if not args.command:
            raise UsageError("a command is required: " + ", ".join(sorted(COMMANDS)))
        if settings().threads:
            from core.devices import set_threads

            set_threads()
        return args.handler(args)
    except UsageError as exc:
        return fail(str(exc))
    except (OSError, sqlite3.Error) as exc:  # a full disk, a read-only folder: one line, not a traceback
        from core.store.files import failure_text

        return fail(failure_text(exc).replace("could not write the run's files", "could not write"))
    except Exception as exc:
        if not isinstance(exc, user_errors()):
            raise
        return fail(str(exc))
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


__all__ = ["build_parser", "main"]
