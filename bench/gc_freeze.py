"""What Streamlit's after-run garbage collection costs the lab's server, without and with the
libraries' objects frozen (ui.state.freeze_long_lived_objects).

    python bench/gc_freeze.py [--reps 5]

Streamlit runs `gc.collect(2)` after every script and fragment run. This imports what the pages
import, times that collection (median of `--reps`), freezes as the page header does, and times
it again in the same process (the libraries' part of what each rerun of each session pays),
then times what the page header's call itself costs on a rerun (nothing new imported), against
`gc.get_freeze_count()`, which walks everything frozen.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ui.state import freeze_long_lived_objects, import_page_modules  # noqa: E402


def collect_seconds(reps: int) -> float:
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        gc.collect(2)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def per_call_seconds(fn, calls: int) -> float:
    t = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - t) / calls


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()
    import_page_modules()
    tracked = len(gc.get_objects())
    before = collect_seconds(args.reps)
    frozen = freeze_long_lived_objects()
    after = collect_seconds(args.reps)
    print(f"pages' modules imported: {tracked:,} objects tracked by the garbage collector")
    print(f"  gc.collect(2) before freezing: {before * 1000:.1f} ms (median of {args.reps})")
    print(f"  after freezing {frozen:,} objects ({len(gc.get_objects()):,} still tracked): {after * 1e6:.1f} us "
          f"= {after / before:.5f}x (in the server each run also walks what the sessions hold: a few thousand "
          f"objects)")
    header = per_call_seconds(freeze_long_lived_objects, args.reps * 200)
    walk = per_call_seconds(gc.get_freeze_count, args.reps)
    print(f"  the header's freeze_long_lived_objects() on a rerun: {header * 1e6:.2f} us a call; "
          f"gc.get_freeze_count() (walks the frozen objects): {walk * 1000:.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
