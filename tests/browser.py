"""Driving the real app in a real browser: start `streamlit run app.py` on a free port with its
own run store, open Debian's Chromium through Playwright, wait for Streamlit to finish a
script run, draw on the canvas. Used by tests/test_browser.py and bench/app_speed.py.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

from tests.waiting import wait_steady, wait_until

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
PAGES = {"home": "", "train": "train", "experiments": "experiments", "metrics": "metrics", "kfold": "kfold",
         "fitting": "fitting", "draw": "draw", "activations": "activations", "layers": "layers",
         "losses": "losses", "backprop": "backprop", "sweeps": "sweeps", "ship": "ship"}


def chromium_path() -> str | None:
    for candidate in (os.environ.get("MNIST_LAB_CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium"),
                      shutil.which("chromium-browser")):
        if candidate and Path(candidate).exists():
            return candidate
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def app_server(runs_dir: Path, extra_env: dict | None = None, app_dir: Path = ROOT, address: str = "127.0.0.1"):
    """`streamlit run app.py` (of `app_dir`) on a free port, listening on `address` (0.0.0.0: the
    network, classroom mode); yields its base URL on localhost."""
    port = free_port()
    env = {**os.environ, "MNIST_LAB_RUNS": str(runs_dir), **(extra_env or {})}
    Path(runs_dir).mkdir(parents=True, exist_ok=True)
    log = open(Path(runs_dir).parent / f"streamlit-{port}.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port), "--server.headless", "true",
         "--server.address", address, "--browser.gatherUsageStats", "false"],
        cwd=app_dir, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        def healthy() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"streamlit exited with {proc.returncode}; see {log.name}")
            try:
                return urllib.request.urlopen(url + "/_stcore/health", timeout=1).read() == b"ok"
            except OSError:
                return False

        wait_until(healthy, 60, "streamlit to answer its health check", every=0.2)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 15)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(10)
        log.close()


# The app's root names the script run's state (streamlit 1.67's frontend: `data-test-script-state`
# on stApp, from the moment the server says a run started). The 'Running' indicator shows only
# 500 ms into a run, so a wait that looked at it alone could see 0.3 s of quiet inside a run.
APP_RUNNING = ('[data-testid="stApp"][data-test-script-state="running"], '
               '[data-testid="stApp"][data-test-script-state="rerunRequested"]')


def wait_idle(page, timeout: float = 60.0, settle: float = 0.3) -> None:
    """Wait until Streamlit has finished the current script run (not running, no 'Running'
    indicator and no skeletons for `settle` seconds)."""
    def busy() -> bool:
        return page.locator(APP_RUNNING).count() > 0 or \
            page.locator('[data-testid="stStatusWidget"]').count() > 0 or \
            page.locator('[data-testid="stSkeleton"]').count() > 0 or \
            page.locator('[data-testid="stMain"] h1').count() == 0

    wait_steady(busy, lambda b: not b, settle, timeout, "the app to finish running")


def body_shows(page, text: str, timeout: float = 30.0) -> bool:
    """Whether the page shows `text` within `timeout` seconds. What a rerun writes after a click
    is read this way: `wait_idle` can return before the rerun has begun (the app's status widget
    is not up yet), which a loaded machine made visible (a summary read 11 s after a preset was
    picked, during a `-n 2` run, still showed the old one)."""
    try:
        wait_until(lambda: text in page.inner_text("body"), timeout, f"the page to show {text!r}", every=0.2)
    except AssertionError:
        return False
    return True


# What the page shows, drawn: each visible Vega chart's marks and size, each image's size, the
# sidebar's links. Vega draws after Streamlit's script run has ended, so wait_idle alone returns too early.
LAYOUT = """() => [
  ...Array.from(document.querySelectorAll('[data-testid="stVegaLiteChart"]')).map(box => {
    const svg = box.querySelector('svg'), r = box.getBoundingClientRect();
    if (box.offsetParent === null || r.width === 0) return 'hidden';  // in a closed expander or tab
    return svg ? `${svg.querySelectorAll('path, text, line, rect').length}@${Math.round(r.width)}x${Math.round(r.height)}`
               : 'not drawn';
  }),
  ...Array.from(document.querySelectorAll('[data-testid="stImage"] img')).map(i => `${i.complete}:${i.height}`),
  `nav ${document.querySelectorAll('[data-testid="stSidebarNav"] a').length}`]"""


def wait_drawn(page, timeout: float = 60.0, settle: float = 0.3) -> None:
    """Wait until every chart on the page is drawn and nothing it draws has changed for `settle`
    seconds (returns as soon as that holds, instead of a fixed second after the script run)."""
    wait_steady(lambda: page.evaluate(LAYOUT), lambda layout: "not drawn" not in layout, settle, timeout,
                "the page's charts and images to be drawn")


def errors_on(page) -> list[str]:
    """Exception boxes and error alerts shown on the page."""
    found = [e.inner_text() for e in page.locator('[data-testid="stException"]').all()]
    found += [e.inner_text() for e in page.locator('[data-testid="stAlertContentError"]').all()]
    return found


def draw_strokes(page, strokes: list[list[tuple[float, float]]], canvas_selector: str = "canvas") -> None:
    """Draw with the mouse on the (upper) drawing canvas; points are fractions of its size."""
    for stroke in strokes:
        draw_until_release(page, stroke, canvas_selector)
        page.mouse.up()


def draw_until_release(page, stroke: list[tuple[float, float]], canvas_selector: str = "canvas") -> None:
    """One stroke drawn with the button still held: releasing it (page.mouse.up()) sends the
    drawing to the app, the moment the latency benchmarks time from."""
    box = page.locator(canvas_selector).last.bounding_box()
    x0, y0 = stroke[0]
    page.mouse.move(box["x"] + x0 * box["width"], box["y"] + y0 * box["height"])
    page.mouse.down()
    for x, y in stroke[1:]:
        page.mouse.move(box["x"] + x * box["width"], box["y"] + y * box["height"], steps=8)


def wait_metric(page, label: str, value: str, timeout: float = 30.0) -> None:
    """Wait until the st.metric with this label shows `value`. After a click, wait_idle alone can
    return before the click's script run has begun (a loaded machine starts it later than the
    0.3 s of quiet it waits for); the value the run must show cannot be read too early."""
    def shown() -> str | None:
        found = metric(page, label)
        return value_of(found) if found.count() else None

    def seen() -> dict:
        return {"shown": shown(), "alerts": [w.inner_text() for w in page.locator('[data-testid="stAlert"]').all()]}

    wait_until(lambda: shown() == value, timeout, f"{label!r} to read {value!r}", seen=seen)


ONE = [[(0.5, 0.15), (0.5, 0.85)]]
SEVEN = [[(0.3, 0.2), (0.72, 0.2), (0.45, 0.85)]]
ZERO = [[(0.5, 0.15), (0.3, 0.3), (0.27, 0.55), (0.35, 0.8), (0.5, 0.86), (0.65, 0.8), (0.73, 0.55), (0.7, 0.3),
         (0.5, 0.15)]]


def metric(page, label: str):
    """The st.metric with this label (a Playwright locator)."""
    return page.locator('[data-testid="stMetric"]').filter(
        has=page.locator('[data-testid="stMetricLabel"]', has_text=label)).first


def value_of(found) -> str:
    """The value an st.metric locator shows."""
    return found.locator('[data-testid="stMetricValue"]').inner_text().strip()


def metric_value(page, label: str, timeout: float = 20.0) -> str:
    """The value of the st.metric with this label, waiting for it to appear."""
    found = metric(page, label)
    found.wait_for(timeout=timeout * 1000)
    return value_of(found)
