"""What a newcomer waits for on the first open of a fresh lab, offline.

    python bench/first_open.py [--until 600]

Starts `streamlit run app.py` on an empty run store with no network (MNIST_LAB_OFFLINE=1),
opens the draw page in Chromium without clicking anything, and prints, in seconds from the
server's start:
  - when the draw page shows a working canvas (the starter draw model finished and the canvas
    component rendered): target at most 90 s;
  - when the metrics, k-fold and under/overfitting pages have real results (their starter
    runs finished), and when every starter run is done (or `--until` passed).
The store and the server log go to a temporary folder, printed at the end.

    python bench/first_open.py --person-runs 5 [--click-at 30]

A person's first run on a fresh lab, `--person-runs` times, each on a fresh lab and server:
the draw page opened as above in one tab (its canvas timed) and the train page in another, whose
Train button is clicked with its defaults at second `--click-at`, while the 18 starter runs are
queued or training. It
prints, per try, the seconds from the click until the run is running (it holds a slot) and
until it trains (its first batch reported), their p95 over the tries, and the canvas times:
targets: the first batch within 15 s of the click (p95), the canvas within 90 s.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from playwright import sync_api  # noqa: E402

from core.store import RunStore  # noqa: E402
from tests.browser import CHROMIUM_ARGS, app_server, chromium_path  # noqa: E402

DONE = ("finished", "failed", "cancelled", "interrupted")


def group_done(runs: list[dict], prefix: str) -> bool:
    members = [r for r in runs if (r.get("grp") or "").startswith(prefix)]
    return bool(members) and all(r["status"] in DONE for r in members)


def open_canvas(browser, url: str, timeout_s: float) -> None:
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(url + "/draw")
    # the canvas component's drawing surface, in the page (streamlit-drawable-canvas 0.13)
    page.locator('[data-testid="stCanvas"] canvas, .stCanvas canvas, canvas').first.wait_for(timeout=timeout_s * 1000)
    page.close()


CANVAS = '[data-testid="stCanvas"] canvas, .stCanvas canvas, canvas'


def person_run(click_at: float, limit: float = 120.0) -> dict:
    """One fresh lab: the draw page opened in one tab and the train page in another; Train
    clicked at `click_at` s; seconds from the click to running and to the run's first reported
    batch, and from the server's start to the canvas, both watched in one loop."""
    from tests.browser import wait_idle

    folder = Path(tempfile.mkdtemp(prefix="first-open-person-"))
    runs_dir = folder / "runs"
    t0 = time.perf_counter()
    out = {"store": str(runs_dir)}
    with app_server(runs_dir, {"MNIST_LAB_OFFLINE": "1", "MNIST_LAB_STARTERS": "1"}) as url, \
            sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        draw = browser.new_page(viewport={"width": 1400, "height": 1000})
        draw.goto(url + "/draw")
        train = browser.new_page(viewport={"width": 1400, "height": 1000})
        train.goto(url + "/train")
        wait_idle(train, timeout=limit)
        store = RunStore(runs_dir)

        def watch(until) -> None:
            while not until() and time.perf_counter() - t0 < click_at + limit:
                if "canvas" not in out and draw.locator(CANVAS).count():
                    out["canvas"] = time.perf_counter() - t0
                time.sleep(0.2)

        watch(lambda: time.perf_counter() - t0 >= click_at)
        before = {r["id"] for r in store.list()}
        train.get_by_role("button", name="Train", exact=True).click()
        clicked = time.perf_counter()
        out["clicked_at"] = clicked - t0
        out["queued_starters"] = sum(r["status"] == "queued" for r in store.list() if r.get("starter"))

        def mine_started() -> bool:
            mine = [r for r in store.list() if r["id"] not in before and not r.get("starter")]
            if mine and mine[0]["status"] == "running" and "running" not in out:
                out["running"] = time.perf_counter() - clicked
            if mine and (mine[0].get("progress") or mine[0]["epochs_done"]) and "training" not in out:
                out["training"] = time.perf_counter() - clicked
            return "training" in out and "canvas" in out

        watch(mine_started)
        out.setdefault("canvas", float("inf"))
        browser.close()
        # Workers outlive the server by design (nothing lost): stop this lab's jobs, or they would
        # train on through the next try and slow it.
        for r in store.list():
            if r["status"] in ("queued", "running"):
                store.request_cancel(r["id"])
    time.sleep(3)  # the cancelled workers stop within a batch
    return out


def person_runs(tries: int, click_at: float) -> int:
    results = []
    for i in range(tries):
        r = person_run(click_at)
        results.append(r)
        print(f"try {i + 1}: canvas {r['canvas']:.1f} s; Train clicked at {r['clicked_at']:.1f} s with "
              f"{r['queued_starters']} starter runs queued; running after {r.get('running', float('nan')):.1f} s, "
              f"first batch after {r.get('training', float('nan')):.1f} s ({r['store']})", flush=True)

    def p95(values):
        return float(np.percentile(values, 95)) if values else float("nan")

    training = [r.get("training", float("inf")) for r in results]
    canvas = [r["canvas"] for r in results]
    print(f"a person's run, {tries} fresh labs: first batch p95 {p95(training):.1f} s after the click "
          f"(running p95 {p95([r.get('running', float('inf')) for r in results]):.1f} s); canvas p95 {p95(canvas):.1f} s")
    ok = p95(training) <= 15 and max(canvas) <= 90
    print(f"target (first batch within 15 s of the click, p95; canvas within 90 s): {'met' if ok else 'NOT met'}")
    return 0 if ok else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--until", type=float, default=600, help="stop waiting after this many seconds")
    parser.add_argument("--person-runs", type=int, default=0, help="measure a person's first run this many times")
    parser.add_argument("--click-at", type=float, default=30.0, help="when the person clicks Train (s)")
    args = parser.parse_args()
    if args.person_runs:
        return person_runs(args.person_runs, args.click_at)
    folder = Path(tempfile.mkdtemp(prefix="first-open-"))
    runs_dir = folder / "runs"
    t0 = time.perf_counter()
    seen: dict[str, float] = {}
    with app_server(runs_dir, {"MNIST_LAB_OFFLINE": "1", "MNIST_LAB_STARTERS": "1"}) as url:
        seen["server answers"] = time.perf_counter() - t0
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
            open_canvas(browser, url, args.until)
            seen["draw page: canvas ready"] = time.perf_counter() - t0
            browser.close()
        store = RunStore(runs_dir)
        checks = {"metrics page: a finished run": lambda runs: any(r["status"] == "finished" for r in runs),
                  "k-fold page: the 5 folds": lambda runs: group_done(runs, "kfold-"),
                  "under/overfitting page: the capacity study": lambda runs: group_done(runs, "fit-"),
                  "backprop page: sigmoid vs ReLU": lambda runs: group_done(runs, "grad-"),
                  "regularize arm": lambda runs: group_done(runs, "reg-"),
                  "every starter run": lambda runs: bool(runs) and all(r["status"] in DONE for r in runs)}
        while time.perf_counter() - t0 < args.until and len(seen) < len(checks) + 2:
            runs = store.list()
            for name, check in checks.items():
                if name not in seen and check(runs):
                    seen[name] = time.perf_counter() - t0
            time.sleep(1.0)
        runs = store.list()
    print(f"first open of a fresh lab, offline ({len(runs)} starter runs; store in {runs_dir}):")
    for name, seconds in sorted(seen.items(), key=lambda kv: kv[1]):
        print(f"  {name:<48} {seconds:7.1f} s")
    for name in checks:
        if name not in seen:
            print(f"  {name:<48} not within {args.until:.0f} s")
    failed = [r["name"] for r in runs if r["status"] in ("failed", "interrupted")]
    print(f"  failed starter runs: {len(failed)}{': ' + ', '.join(failed) if failed else ''}")
    ok = seen.get("draw page: canvas ready", 1e9) <= 90 and not failed
    print(f"target (canvas within 90 s, no failed starter): {'met' if ok else 'NOT met'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
