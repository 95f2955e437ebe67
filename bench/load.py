"""A class on one lab: 20 browser sessions against one server on this machine.

    python bench/load.py [--users 20] [--trainers 5] [--minutes 3] [--think 4] [--ramp 0] [--server-first]
                         [--server-cpus 0,1]

Starts `streamlit run app.py` on a fresh store holding one draw model (trained first, on the
offline sample), then drives `--users` concurrent sessions (Playwright, one browser context each,
as Streamlit's own load-testing harness does) for `--minutes`. Each session is a student: opens a
page from the sidebar and reads it, goes to the draw page, draws a digit and looks at the
prediction, and again; `--trainers` of them first start one small training (the course MLP, 1
epoch, offline sample) from a shared link to the train page. Reading a page or a prediction takes
a random 0.5x-1.5x `--think` seconds (seeded per session; `--think 0` is a class of robots that
click as fast as the server answers). Prints p50/p95 page-switch and draw-to-prediction latency,
the errors seen (exception boxes, error alerts, timeouts), the server process's peak memory,
whether every started job finished and was recorded, and where the machine's CPU went (browsers,
server, training workers). Targets: 0 errors, p95 draw-to-prediction at most 1.5 s, peak server
memory at most 3 GB, every job recorded.

The browsers run on the same 2 cores as the server: in a class each student's browser has its
own machine. Waiting for the page happens inside each page (a small script polled every 50 ms),
not by asking Chromium over its debugging protocol many times a second, which with 20 idle
sessions took a large share of the browsers' CPU. `--server-first` puts the browsers' renderers
behind the server and the browsers' networking (see `browsers_behind`); on a machine with more
cores, `--server-cpus 0,1` gives the server two cores and the browsers the rest. `LOAD_SHOTS=DIR` logs
every request slower than 3 s with its timings and saves, for each session that fails, a
screenshot, the page's HTML and its requests still pending.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from playwright.async_api import async_playwright  # noqa: E402

from core.runner import train_run  # noqa: E402
from core.data import load_sample  # noqa: E402
from core.handwriting import default_config  # noqa: E402
from core.store import RunStore  # noqa: E402
from tests.browser import CHROMIUM_ARGS, app_server, chromium_path  # noqa: E402

from machine import BROWSERS_GROUP, CpuUse, browsers_behind, rss_mb, split_cpus  # noqa: E402  (bench/machine.py)

# (sidebar link, the page's title)
PAGES = [("Metrics", "Metrics"), ("Experiments", "Experiments"),
         ("Activations and neurons", "Neurons and activation functions"), ("Backpropagation", "Backpropagation"),
         ("Home", "MNIST Lab"), ("Under- and overfitting", "Under- and overfitting")]
ONE = [(0.5, 0.2), (0.5, 0.8)]
SEVEN = [(0.3, 0.25), (0.7, 0.25), (0.45, 0.8)]


def bench_browser() -> str | None:
    """The browser the benches drive: Chromium's headless shell when it is installed (`apt-get
    install chromium-headless-shell`; what Playwright itself launches for headless runs, made for
    automation, and lighter: bench/browser_cost.py measured less CPU per drawing and per page
    switch than with the full Chromium's new headless mode), else the full Chromium the tests
    use; MNIST_LAB_CHROMIUM chooses another."""
    if os.environ.get("MNIST_LAB_CHROMIUM"):
        return chromium_path()
    return shutil.which("chromium-headless-shell") or chromium_path()


class Stats:
    def __init__(self):
        self.switch, self.draw, self.errors, self.jobs = [], [], [], []
        self.placement = "browsers and server at the same priority (Chromium's browser and GPU processes at its own -8)"


# In-page waits (see the module docstring): polled by the page itself, 50 ms apart.
SETTLED = """([settle]) => {
  const now = performance.now();
  if (document.querySelector('[data-testid="stStatusWidget"]')) { window.__labQuiet = null; return false; }
  if (window.__labQuiet == null) { window.__labQuiet = now; return false; }
  return now - window.__labQuiet >= settle; }"""
STATUS_LINE = """() => { const e = [...document.querySelectorAll('[data-testid="stMarkdownContainer"]')]
  .find(e => e.textContent.includes(' · status ')); return e ? e.textContent : null; }"""
HAS_TEXT = """([selector, text]) => [...document.querySelectorAll(selector)].some(e => e.textContent.includes(text))"""


async def in_page(page, script: str, arg, what: str, timeout: float = 60):
    """Until `script(arg)` is true in the page (polled by the page itself, 50 ms apart);
    a timeout is reported as `what` (the bench's error list)."""
    try:
        await page.wait_for_function(script, arg=arg, polling=50, timeout=timeout * 1000)
    except Exception as exc:  # noqa: BLE001 - playwright's TimeoutError, reported as what did not happen
        raise TimeoutError(what) from exc


async def idle(page, settle: float = 0.2, timeout: float = 60):
    """Until Streamlit's "running" indicator has been gone for `settle` seconds."""
    await page.evaluate("window.__labQuiet = null")
    await in_page(page, SETTLED, [settle * 1000], "the page did not settle", timeout)


async def shown(page, selector: str, text: str, what: str, timeout: float = 60):
    await in_page(page, HAS_TEXT, [selector, text], f"{what} did not appear within {timeout:.0f} s", timeout)


async def check_errors(page, who: str, stats: Stats):
    n = await page.evaluate("""() => document.querySelectorAll(
        '[data-testid="stException"], [data-testid="stAlertContentError"]').length""")
    if n:
        stats.errors.append(f"{who}: {n} error box(es) on {page.url}")


async def switch(page, link: str, title: str, stats: Stats):
    t = time.perf_counter()
    await page.locator('[data-testid="stSidebarNav"]').get_by_role("link", name=link, exact=True).click()
    await shown(page, '[data-testid="stMain"] h1', title, f"the page {title!r}")
    await idle(page)
    stats.switch.append(time.perf_counter() - t - 0.2)


async def open_draw_page(page):
    await page.locator('[data-testid="stSidebarNav"]').get_by_role("link", name="Draw a digit", exact=True).click()
    await shown(page, '[data-testid="stMain"] h1', "Draw a digit", "the draw page")
    await idle(page, 0.3)


async def aim(page, strokes) -> dict:
    """The canvas's box, once it is ready for `strokes`. Hover first: Playwright scrolls the
    canvas into view and waits until it is stable and is what the pointer would hit (a bounding
    box read while the page still moves sends the stroke elsewhere: a text selection, a focused
    input)."""
    canvas = page.locator("canvas").last
    size = await canvas.evaluate("c => [c.clientWidth, c.clientHeight]")
    await canvas.hover(position={"x": strokes[0][0] * size[0], "y": strokes[0][1] * size[1]}, timeout=60_000)
    return await canvas.bounding_box(timeout=60_000)


async def stroke(page, box: dict, strokes) -> None:
    """Press at the first point and move through the others (the button stays down)."""
    await page.mouse.move(box["x"] + strokes[0][0] * box["width"], box["y"] + strokes[0][1] * box["height"])
    await page.mouse.down()
    for x, y in strokes[1:]:
        await page.mouse.move(box["x"] + x * box["width"], box["y"] + y * box["height"], steps=8)


async def release(page) -> float:
    """Let go of the mouse; seconds until the prediction shows."""
    t = time.perf_counter()
    await page.mouse.up()
    await shown(page, '[data-testid="stMetric"]', "Prediction", "the prediction")
    return time.perf_counter() - t


async def draw(page, strokes, stats: Stats):
    await open_draw_page(page)
    await stroke(page, await aim(page, strokes), strokes)
    stats.draw.append(await release(page))


async def train_once(page, url: str, stats: Stats, who: str):
    """The train page opened from a shared link (the course MLP, 1 epoch, the offline sample),
    then Train: what a student does with the link a teacher hands out."""
    await page.goto(f"{url}/train?model=mlp&dataset=mnist-sample&epochs=1&batch_size=50")
    await shown(page, '[data-testid="stMain"] h1', "Train", "the train page")
    await idle(page)
    before = await page.evaluate(STATUS_LINE)  # the page shows the newest run, maybe somebody else's
    await page.get_by_role("button", name="Train", exact=True).first.click()
    # The new job's live view ("NAME · status queued ...") says it started; it refreshes every
    # second while the job trains, so waiting for a quiet page would wait for the job.
    await in_page(page, f"([before]) => ({STATUS_LINE})() !== before || "
                        "document.querySelector('[data-testid=\"stAlertContentError\"]')", [before],
                  "the started job did not appear within 60 s")
    stats.jobs.append(who)
    await check_errors(page, f"{who} (after Train)", stats)   # e.g. "Nothing was started: ..."


class FailureCapture:
    """Debugging (`LOAD_SHOTS=DIR`): a session's failed and error responses, console errors,
    requests slower than 3 s with where their time went (waiting in the browser before being
    sent, the server's answer, the body) and requests still pending, and when it fails a
    screenshot and the page's HTML."""

    def __init__(self, page, folder: str, n: int):
        self.page, self.stem, self.pending = page, f"{folder}/user{n}", {}
        self.log = open(f"{self.stem}.log", "w")
        page.on("request", lambda r: self.pending.__setitem__(r, time.time()))
        page.on("requestfinished", self._finished)
        page.on("requestfailed", self._failed)
        page.on("response", lambda r: r.status >= 400 and self.write(f"HTTP {r.status} {r.url}"))
        page.on("console", lambda m: m.type in ("error", "warning") and self.write(f"{m.type} {m.text[:300]}"))
        page.on("pageerror", lambda e: self.write(f"pageerror {e}"))

    def _finished(self, request) -> None:
        since = self.pending.pop(request, None)
        if since is not None and time.time() - since > 3:
            t = request.timing
            self.write(f"SLOW {time.time() - since:.1f} s {request.url} queued {t['requestStart']:.0f} ms, "
                       f"server {t['responseStart'] - t['requestStart']:.0f} ms, body "
                       f"{t['responseEnd'] - t['responseStart']:.0f} ms, connect {t['connectStart']:.0f}")

    def write(self, line: str) -> None:
        self.log.write(f"{time.time():.1f} {line}\n")

    def _failed(self, request) -> None:
        self.pending.pop(request, None)
        self.write(f"FAILED {request.url} {request.failure}")

    async def save(self, exc: Exception) -> None:
        await self.page.screenshot(path=f"{self.stem}.png", full_page=True)
        Path(f"{self.stem}.html").write_text(await self.page.content())
        for request, since in self.pending.items():
            self.write(f"PENDING since {since:.1f} ({time.time() - since:.0f} s): {request.method} {request.url}")
        self.write(f"failed: {exc}")
        self.log.flush()


async def user(browser, url: str, i: int, trainer: bool, until: float, think: float, stats: Stats,
               arrive: float = 0.0):
    who = f"user {i + 1}"
    await asyncio.sleep(arrive)
    rng = random.Random(i)

    async def read():
        if think > 0:
            await asyncio.sleep(think * rng.uniform(0.5, 1.5))

    context = await browser.new_context(viewport={"width": 1300, "height": 900})
    page = await context.new_page()
    capture = FailureCapture(page, os.environ["LOAD_SHOTS"], i + 1) if os.environ.get("LOAD_SHOTS") else None
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
            await read()
            await draw(page, SEVEN if k % 2 else ONE, stats)
            await check_errors(page, who, stats)
            await read()
            k += 1
    except Exception as exc:  # noqa: BLE001 - every failure of a session is counted and reported
        stats.errors.append(f"{who}: {type(exc).__name__}: {str(exc)[:160]}")
        if capture is not None:
            await capture.save(exc)
    finally:
        await context.close()


async def drive(url: str, users: int, trainers: int, minutes: float, think: float, stats: Stats,
                ramp: float = 0.0, server_first: bool = False):
    async with async_playwright() as p:
        after_launch = None
        if server_first:
            after_launch, stats.placement = browsers_behind()
        browser = await p.chromium.launch(executable_path=bench_browser(), args=CHROMIUM_ARGS)
        if after_launch:
            after_launch()
        until = time.time() + minutes * 60
        await asyncio.gather(*(user(browser, url, i, i < trainers, until, think, stats, ramp * i / users) for i in range(users)))
        await browser.close()
    if server_first:  # empty now that the browsers and the driver are gone
        with contextlib.suppress(OSError):
            BROWSERS_GROUP.rmdir()


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
    parser.add_argument("--ramp", type=float, default=0.0,
                        help="the students arrive one after another over this many seconds (0: all at once)")
    parser.add_argument("--server-first", action="store_true",
                        help="the server, its workers and the browsers' networking get the CPU before the browsers' "
                             "renderers (a CPU control group; needs root): the browsers stand in for the students' "
                             "own machines")
    parser.add_argument("--think", type=float, default=4.0,
                        help="mean seconds a student reads a page or a prediction (0: no pause at all)")
    parser.add_argument("--server-cpus", default=None,
                        help="CPUs for the server and its training workers, e.g. 0,1; the browsers and this bench "
                             "get the others: on a machine with more cores, a 2-core server measured with the "
                             "browsers beside it (Linux)")
    args = parser.parse_args()
    server_cpus, other_cpus = split_cpus(args.server_cpus) if args.server_cpus else (None, None)
    runs = Path(tempfile.mkdtemp(prefix="bench-load-")) / "runs"
    store = RunStore(runs)
    train_run(store, default_config("mnist-sample", name="draw model (sample)"), load_sample())
    stats = Stats()
    peak = {"mb": 0.0}
    env = {"MNIST_LAB_OFFLINE": "1", "MNIST_LAB_STARTERS": "0"}
    if server_cpus:  # the server started below inherits this process's CPUs, and its workers the server's
        os.sched_setaffinity(0, server_cpus)
    with app_server(runs, env) as url:
        import subprocess

        if server_cpus:  # and the browsers launched later, this bench's
            os.sched_setaffinity(0, other_cpus)
            stats.placement += (f"; server and workers on CPUs {sorted(server_cpus)}, browsers on CPUs "
                                f"{sorted(other_cpus)}")

        pid = int(subprocess.run(["pgrep", "-f", f"streamlit run app.py --server.port {url.rsplit(':', 1)[1]}"],
                                 capture_output=True, text=True).stdout.split()[0])
        done, sessions_over = threading.Event(), threading.Event()

        cpu = CpuUse()

        def sample():
            while not done.is_set():
                peak["mb"] = max(peak["mb"], rss_mb(pid))
                if not sessions_over.is_set():
                    cpu.sample()
                time.sleep(0.5)

        threading.Thread(target=sample, daemon=True).start()
        t0 = time.time()
        asyncio.run(drive(url, args.users, args.trainers, args.minutes, args.think, stats, args.ramp, args.server_first))
        wall = time.time() - t0
        sessions_over.set()
        deadline = time.time() + 300  # let the started jobs finish
        while time.time() < deadline and any(r["status"] in ("queued", "running") for r in store.list()):
            time.sleep(1)
        done.set()
    jobs = [r for r in store.list() if r["name"] != "draw model (sample)"]
    recorded = sum(r["status"] == "finished" for r in jobs)
    print(f"{args.users} sessions ({args.trainers} training) against one server for {wall:.0f} s, "
          f"{os.cpu_count()} cores; {Path(bench_browser() or '?').name}; reading time {0.5 * args.think:.1f}-{1.5 * args.think:.1f} s; "
          f"{stats.placement}; arriving over {args.ramp:.0f} s:")
    print(f"  page switch (click -> drawn): p50 {pct(stats.switch, 0.5):.2f} s, p95 {pct(stats.switch, 0.95):.2f} s "
          f"({len(stats.switch)} switches)")
    print(f"  draw -> prediction:           p50 {pct(stats.draw, 0.5):.2f} s, p95 {pct(stats.draw, 0.95):.2f} s "
          f"({len(stats.draw)} drawings)")
    print(f"  errors: {len(stats.errors)}")
    for e in stats.errors[:10]:
        print(f"    {e}")
    print(f"  server peak memory (RSS): {peak['mb']:.0f} MB")
    print("  CPU used while the sessions ran (cores): " + ", ".join(
        f"{k} {v:.2f}" for k, v in cpu.cores(wall).items()))
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
