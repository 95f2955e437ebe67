"""The draw page's round trip (mouse up -> prediction shown, and -> every element of the page
drawn) on a quiet machine and on a busy one, interleaved in one run: a drawing on the quiet
machine, then one while `--busy` processes keep every core busy at normal priority (what a
student meets with another program working, or a class on one machine), and so on.

    python bench/draw_latency.py --busy 2 --repeat 3

The floor is the canvas component's own: streamlit-drawable-canvas 0.13 sends a stroke to the
server 200 ms after it ends (a debounce in its frontend, not a parameter of st_canvas).
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.runner import train_run  # noqa: E402
from core.data import load_sample  # noqa: E402
from core.handwriting import default_config  # noqa: E402
from core.store import RunStore  # noqa: E402
from tests.browser import (CHROMIUM_ARGS, ONE, SEVEN, ZERO, app_server, chromium_path, draw_until_release,
                           wait_idle)  # noqa: E402


def spin(stop) -> None:
    """One core kept busy until `stop` is set."""
    x = 0
    while not stop.is_set():
        for _ in range(100_000):
            x += 1


def round_trip(page, url: str, strokes) -> tuple[float, float]:
    page.goto(f"{url}/draw")  # a fresh, empty canvas (not timed)
    wait_idle(page, 120, settle=0.3)
    # The canvas component reports its empty state once mounted, which reruns its fragment: a stroke
    # drawn before that rerun ends waits behind it (0.3-0.4 s here), which a person never meets.
    time.sleep(1.0)
    wait_idle(page, 60, settle=0.3)
    draw_until_release(page, strokes[0])
    start = time.perf_counter()
    page.mouse.up()
    page.locator('[data-testid="stMetric"]').filter(has_text="Prediction").first.wait_for()
    shown = time.perf_counter() - start
    wait_idle(page, 60, settle=0.2)
    return shown, time.perf_counter() - start - 0.2


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--busy", type=int, default=2, help="processes keeping a core busy each (default 2)")
    p.add_argument("--repeat", type=int, default=3, help="rounds of three drawings (1, 7, 0)")
    args = p.parse_args()
    if chromium_path() is None:
        sys.exit("no Chromium found (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    runs = Path(tempfile.mkdtemp(prefix="draw-latency-")) / "runs"
    train_run(RunStore(runs), default_config("mnist-sample", epochs=1), load_sample())
    results: dict[str, list[tuple[float, float]]] = {"quiet": [], "busy": []}
    with app_server(runs, {"MNIST_LAB_OFFLINE": "1", "MNIST_LAB_STARTERS": "0"}) as url, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        page = browser.new_context(viewport={"width": 1280, "height": 720}).new_page()
        round_trip(page, url, ONE)  # warm-up: the model loaded, the page's code cached
        for strokes in (ONE, SEVEN, ZERO) * args.repeat:
            results["quiet"].append(round_trip(page, url, strokes))
            stop = multiprocessing.Event()
            hogs = [multiprocessing.Process(target=spin, args=(stop,)) for _ in range(args.busy)]
            for h in hogs:
                h.start()
            try:
                results["busy"].append(round_trip(page, url, strokes))
            finally:
                stop.set()
                for h in hogs:
                    h.join()
        browser.close()
    for name, trips in results.items():
        shown, drawn = [t[0] for t in trips], [t[1] for t in trips]
        print(f"{name:5s} ({args.busy if name == 'busy' else 0} busy processes): mouse up -> prediction median "
              f"{statistics.median(shown):.2f} s, max {max(shown):.2f} s; -> page drawn median "
              f"{statistics.median(drawn):.2f} s, max {max(drawn):.2f} s ({len(trips)} drawings)")


if __name__ == "__main__":
    main()
