"""A class on one lab: 20 browser sessions against one server on this machine.

    python bench/load.py [--users 20] [--trainers 5] [--minutes 3]

Starts `streamlit run app.py` on a fresh store holding one draw model (trained first, on the
offline sample), then drives `--users` concurrent sessions (Playwright, one browser context each,
as Streamlit's own load-testing harness does) for `--minutes`: each switches pages from the
sidebar, draws digits on the draw page and opens the metrics page, and `--trainers` of them start
one small training (the course MLP, 1 epoch, offline sample) from the train page. Prints p50/p95
page-switch and draw-to-prediction latency, the errors seen (exception boxes, error alerts,
timeouts), the server process's peak memory, and whether every started job finished and was
recorded. Targets: 0 errors, p95 draw-to-prediction at most 1.5 s, peak server memory at most
3 GB, every job recorded.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from playwright.async_api import async_playwright  # noqa: E402

from core.data import load_sample  # noqa: E402
from core.handwriting import default_config  # noqa: E402
from core.store import RunStore  # noqa: E402
from tests.browser import CHROMIUM_ARGS, app_server, chromium_path  # noqa: E402

PAGES = [("Metrics", "Metrics"), ("Experiments", "Experiments"), ("Activations and neurons", None),
         ("Backpropagation", "Backpropagation"), ("Home", "MNIST Lab"), ("Under- and overfitting", None)]
ONE = [(0.5, 0.2), (0.5, 0.8)]
SEVEN = [(0.3, 0.25), (0.7, 0.25), (0.45, 0.8)]


def rss_mb(pid: int) -> float:
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


class Stats:
    def __init__(self):
        self.switch, self.draw, self.errors, self.jobs = [], [], [], []


async def idle(page, settle: float = 0.2, timeout: float = 60):
    end = time.time() + timeout
    quiet = None
    while time.time() < end:
        busy = await page.locator('[data-testid="stStatusWidget"]').count() > 0
        if busy:
            quiet = None
        elif quiet is None:
            quiet = time.time()
        elif time.time() - quiet >= settle:
            return
        await asyncio.sleep(0.05)
    raise TimeoutError("the page did not settle")


async def check_errors(page, who: str, stats: Stats):
    n = await page.locator('[data-testid="stException"]').count()
    n += await page.locator('[data-testid="stAlertContentError"]').count()
    if n:
        stats.errors.append(f"{who}: {n} error box(es) on {page.url}")


async def switch(page, link: str, title: str | None, stats: Stats):
    t = time.perf_counter()
    await page.locator('[data-testid="stSidebarNav"]').get_by_role("link", name=link, exact=True).click()
    if title:
        await page.locator('[data-testid="stMain"] h1', has_text=title).first.wait_for(timeout=60_000)
    await idle(page)
    stats.switch.append(time.perf_counter() - t - 0.2)


async def draw(page, strokes, stats: Stats):
    await page.locator('[data-testid="stSidebarNav"]').get_by_role("link", name="Draw a digit", exact=True).click()
    await page.locator('[data-testid="stMain"] h1', has_text="Draw a digit").first.wait_for(timeout=60_000)
    await idle(page, 0.3)
    canvas = page.locator("canvas").last
    box = await canvas.bounding_box(timeout=60_000)
    await page.mouse.move(box["x"] + strokes[0][0] * box["width"], box["y"] + strokes[0][1] * box["height"])
    await page.mouse.down()
    for x, y in strokes[1:]:
        await page.mouse.move(box["x"] + x * box["width"], box["y"] + y * box["height"], steps=8)
    t = time.perf_counter()
    await page.mouse.up()
    await page.locator('[data-testid="stMetric"]').filter(has_text="Prediction").first.wait_for(timeout=60_000)
    stats.draw.append(time.perf_counter() - t)


async def train_once(page, url: str, stats: Stats, who: str):
    """The train page opened from a shared link (the course MLP, 1 epoch, the offline sample),
    then Train: what a student does with the link a teacher hands out."""
    await page.goto(f"{url}/train?model=mlp&dataset=mnist-sample&epochs=1&batch_size=50")
    await page.locator('[data-testid="stMain"] h1', has_text="Train").first.wait_for(timeout=60_000)
    await idle(page)
    await page.get_by_role("button", name="Train", exact=True).first.click()
    await idle(page)
    stats.jobs.append(who)
    await check_errors(page, f"{who} (after Train)", stats)   # e.g. "Nothing was started: ..."


async def user(browser, url: str, i: int, trainer: bool, until: float, stats: Stats):
    who = f"user {i + 1}"
    context = await browser.new_context(viewport={"width": 1300, "height": 900})
    page = await context.new_page()
    try:
        await page.goto(url)
        await idle(page)
        if trainer:
            await train_once(page, url, stats, who)
        k = i
        while time.time() < until:
            link, title = PAGES[k % len(PAGES)]
            await switch(page, link, title, stats)
            await check_errors(page, who, stats)
            await draw(page, SEVEN if k % 2 else ONE, stats)
            await check_errors(page, who, stats)
            k += 1
    except Exception as exc:  # noqa: BLE001 - every failure of a session is counted and reported
        stats.errors.append(f"{who}: {type(exc).__name__}: {str(exc)[:160]}")
    finally:
        await context.close()


async def drive(url: str, users: int, trainers: int, minutes: float, stats: Stats):
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        until = time.time() + minutes * 60
        await asyncio.gather(*(user(browser, url, i, i < trainers, until, stats) for i in range(users)))
        await browser.close()


def pct(values, q):
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--trainers", type=int, default=5)
    parser.add_argument("--minutes", type=float, default=3.0)
    args = parser.parse_args()
    runs = Path(tempfile.mkdtemp(prefix="bench-load-")) / "runs"
    store = RunStore(runs)
    store.train_in_this_process(default_config("mnist-sample", name="draw model (sample)"), load_sample())
    stats = Stats()
    peak = {"mb": 0.0}
    env = {"MNIST_LAB_OFFLINE": "1", "MNIST_LAB_STARTERS": "0"}
    with app_server(runs, env) as url:
        import subprocess

        pid = int(subprocess.run(["pgrep", "-f", f"streamlit run app.py --server.port {url.rsplit(':', 1)[1]}"],
                                 capture_output=True, text=True).stdout.split()[0])
        done = threading.Event()

        def sample():
            while not done.is_set():
                peak["mb"] = max(peak["mb"], rss_mb(pid))
                time.sleep(0.5)

        threading.Thread(target=sample, daemon=True).start()
        t0 = time.time()
        asyncio.run(drive(url, args.users, args.trainers, args.minutes, stats))
        wall = time.time() - t0
        deadline = time.time() + 300  # let the started jobs finish
        while time.time() < deadline and any(r["status"] in ("queued", "running") for r in store.list()):
            time.sleep(1)
        done.set()
    jobs = [r for r in store.list() if r["name"] != "draw model (sample)"]
    recorded = sum(r["status"] == "finished" for r in jobs)
    print(f"{args.users} sessions ({args.trainers} training) against one server for {wall:.0f} s, this 2-core machine:")
    print(f"  page switch (click -> drawn): p50 {pct(stats.switch, 0.5):.2f} s, p95 {pct(stats.switch, 0.95):.2f} s "
          f"({len(stats.switch)} switches)")
    print(f"  draw -> prediction:           p50 {pct(stats.draw, 0.5):.2f} s, p95 {pct(stats.draw, 0.95):.2f} s "
          f"({len(stats.draw)} drawings)")
    print(f"  errors: {len(stats.errors)}")
    for e in stats.errors[:10]:
        print(f"    {e}")
    print(f"  server peak memory (RSS): {peak['mb']:.0f} MB")
    print(f"  trainings started {len(stats.jobs)}, in the store {len(jobs)}, finished and recorded {recorded}")
    log = next(runs.parent.glob("streamlit-*.log"), None)
    if log is not None:
        text = log.read_text(errors="replace")
        print(f"  server log {log}: {text.count('Traceback')} traceback(s)")
    ok = (not stats.errors and pct(stats.draw, 0.95) <= 1.5 and peak["mb"] <= 3072
          and recorded == len(stats.jobs) == len(jobs))
    print(f"  targets (0 errors, p95 draw <= 1.5 s, peak <= 3 GB, every job recorded): {'met' if ok else 'NOT met'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
