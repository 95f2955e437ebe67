"""What one student's actions cost the browser and the server, in CPU seconds.

    python bench/browser_cost.py [--reps 5]

One browser session against one server (a fresh store holding the draw model, trained first on
the offline sample), nothing else running: for each page of bench/load.py's round, the CPU the
browser (all Chromium processes) and the server used from the click in the sidebar until the page
has been quiet for a second; and a drawing split in three: going to the draw page, the stroke
itself, and from releasing the mouse until the prediction has been drawn. Medians over `--reps`
rounds (the first round, which loads the lab's scripts, is left out).

Why: bench/load.py runs 20 such browsers on the server's machine; these figures say how much of
the machine a class's browsers ask for, against what the server needs for them.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from playwright.async_api import async_playwright  # noqa: E402

import load  # noqa: E402  (bench/load.py: the same pages, waits and strokes)
import machine  # noqa: E402  (bench/machine.py: CPU time by kind of process)
from core.runner import train_run  # noqa: E402
from core.data import load_sample  # noqa: E402
from core.handwriting import default_config  # noqa: E402
from core.store import RunStore  # noqa: E402
from tests.browser import CHROMIUM_ARGS, app_server  # noqa: E402


class Meter:
    """CPU seconds of the browsers and of the server since the last `lap()`."""

    def __init__(self):
        self.last = self.now()

    @staticmethod
    def now() -> tuple[float, float]:
        use = machine.cpu_seconds_by_pid().values()
        return (sum(s for kind, s in use if kind == "browsers"), sum(s for kind, s in use if kind == "server"))

    def lap(self) -> tuple[float, float]:
        now = self.now()
        out = (now[0] - self.last[0], now[1] - self.last[1])
        self.last = now
        return out


async def measure(url: str, reps: int) -> dict[str, list[tuple[float, float]]]:
    costs: dict[str, list[tuple[float, float]]] = {}
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=load.bench_browser(), args=CHROMIUM_ARGS)
        page = await (await browser.new_context(viewport={"width": 1300, "height": 900})).new_page()
        await page.goto(url)
        await load.idle(page)
        for rep in range(reps + 1):
            seen = []
            for link, title in load.PAGES:
                await asyncio.sleep(1)
                meter = Meter()
                await load.switch(page, link, title, load.Stats())
                await asyncio.sleep(1)
                seen.append((f"page: {link}", meter.lap()))
            await asyncio.sleep(1)
            meter = Meter()
            await load.open_draw_page(page)
            await asyncio.sleep(1)
            seen.append(("draw 1: open the draw page", meter.lap()))
            box = await load.aim(page, load.ONE)
            meter.lap()
            await load.stroke(page, box, load.ONE)
            await asyncio.sleep(1)
            seen.append(("draw 2: the stroke", meter.lap()))
            await load.release(page)
            await load.idle(page, 0.3)
            await asyncio.sleep(1)
            seen.append(("draw 3: mouse up -> prediction drawn", meter.lap()))
            if rep:  # the first round loads the lab's scripts
                for what, cost in seen:
                    costs.setdefault(what, []).append(cost)
        await browser.close()
    return costs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    runs = Path(tempfile.mkdtemp(prefix="bench-browser-cost-")) / "runs"
    train_run(RunStore(runs), default_config("mnist-sample", name="draw model (sample)"), load_sample())
    with app_server(runs, {"MNIST_LAB_OFFLINE": "1", "MNIST_LAB_STARTERS": "0"}) as url:
        t0 = time.time()
        costs = asyncio.run(measure(url, args.reps))
    print(f"one session ({Path(load.bench_browser() or '?').name}), CPU seconds per action (medians of {args.reps} "
          f"rounds, {time.time() - t0:.0f} s):")
    print(f"  {'action':40s} {'browser':>8s} {'server':>8s}")
    total = [0.0, 0.0]
    for what, values in costs.items():
        b, s = statistics.median(v[0] for v in values), statistics.median(v[1] for v in values)
        print(f"  {what:40s} {b:8.2f} {s:8.2f}")
        if what.startswith("draw"):
            total[0] += b
            total[1] += s
    pages = [statistics.median(v[0] for v in values) for what, values in costs.items() if what.startswith("page")]
    print(f"  one drawing in all: browser {total[0]:.2f} s, server {total[1]:.2f} s; a page switch: browser "
          f"{statistics.mean(pages):.2f} s on average")
    return 0


if __name__ == "__main__":
    sys.exit(main())
