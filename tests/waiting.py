"""How tests wait for a state: poll a check until it holds or a deadline passes, then fail naming
what was awaited and what was last seen. A fixed sleep either wastes time on a fast machine or
fails on a slow one; this returns as soon as the state is there."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import TypeVar

from core.store.records import TERMINAL

T = TypeVar("T")


def wait_until(check: Callable[[], T], timeout: float = 60.0, what: str = "the condition", every: float = 0.05,
               seen: Callable[[], object] | None = None) -> T:
    """check()'s first truthy value; AssertionError after `timeout` seconds, saying `what` was
    awaited and what `seen()` (else the last value) showed."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {timeout:g} s for {what}; last seen: {seen() if seen else value!r}")
        time.sleep(every)


def wait_steady(read: Callable[[], T], ok: Callable[[T], bool], settle: float, timeout: float = 60.0,
                what: str = "a steady state", every: float = 0.05) -> T:
    """read()'s value once it has been `ok` and unchanged for `settle` seconds (a page that has
    stopped redrawing); AssertionError after `timeout`, with the last value read."""
    last = {"value": None, "since": None}

    def steady() -> bool:
        value = read()
        if not ok(value) or value != last["value"] or last["since"] is None:
            last.update(value=value, since=time.monotonic() if ok(value) else None)
            return False
        return time.monotonic() - last["since"] >= settle

    wait_until(steady, timeout, what, every, seen=lambda: last["value"])
    return last["value"]


def wait_for_runs(store, run_ids: Iterable[str], statuses: Iterable[str] = TERMINAL, timeout: float = 180.0,
                  every: float = 0.1) -> list[dict]:
    """The runs, once every one of them has one of `statuses` (by default: any terminal status)."""
    run_ids, statuses = list(run_ids), {str(s) for s in statuses}

    def runs() -> list[dict]:
        return [store.get(r) for r in run_ids]

    return wait_until(lambda: (lambda rs: rs if all(r["status"] in statuses for r in rs) else None)(runs()),
                      timeout, f"runs {run_ids} to be {'/'.join(sorted(statuses))}", every,
                      seen=lambda: [r["status"] for r in runs()])
