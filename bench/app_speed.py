"""Speed of the app as a user meets it, measured in a real browser (Chromium + Playwright):

1. from `streamlit run app.py` to the home page fully drawn,
2. switching between pages (sidebar click to the page fully drawn),
3. the drawn-digit round trip (mouse up to the prediction shown),
4. the metrics page for a run with 10,000 test predictions (needs the full MNIST: --data-dir).

Reference, measured the same way in the same run: a one-line Streamlit app (`st.title`), the
floor that Streamlit itself costs on this machine.

    python bench/app_speed.py --data-dir ../shared/data/mnist
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.runner import train_run  # noqa: E402
from core.data import load_dataset  # noqa: E402
from core.handwriting import default_config  # noqa: E402
from core.store import RunStore  # noqa: E402
from tests.browser import (CHROMIUM_ARGS, ONE, SEVEN, ZERO, app_server, chromium_path, draw_until_release,  # noqa: E402
                           metric_value, wait_idle)

# sidebar link -> the page's title
NAV = {"Train": "Train", "Experiments": "Experiments", "Metrics": "Metrics", "K-fold": "K-fold cross-validation",
       "Under- and overfitting": "Under- and overfitting", "Draw a digit": "Draw a digit",
       "Activations and neurons": "Neurons and activation functions", "Layers and CNNs": "Layers and CNNs",
       "Losses and optimizers": "Losses and optimizers", "Home": "MNIST Lab"}


def switch(page, link: str, title: str) -> None:
    """Click a sidebar link; return when the new page's title is shown and the run is over."""
    page.locator('[data-testid="stSidebarNav"]').get_by_role("link", name=link, exact=True).click()
    page.locator('[data-testid="stMain"] h1', has_text=title).first.wait_for()
    wait_idle(page, settle=0.2)


def load_time(browser, start_server) -> tuple[float, float]:
    """Seconds from starting the server to the first page drawn; and the server start alone."""
    t0 = time.perf_counter()
    with start_server() as url:
        t_server = time.perf_counter() - t0
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(url)
        wait_idle(page, settle=0.2)
        total = time.perf_counter() - t0 - 0.2  # the settle wait is not page time
        page.close()
    return total, t_server


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", help="full MNIST IDX folder (for the 10,000-prediction metrics page)")
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args(argv)
    if chromium_path() is None:
        print("no Chromium found (apt-get install chromium)")
        return 1
    from playwright.sync_api import sync_playwright

    tmp = Path(tempfile.mkdtemp(prefix="app-speed-"))
    runs = tmp / "runs"
    store = RunStore(runs)
    ds = load_dataset("mnist", args.data_dir)
    t0 = time.perf_counter()
    out = train_run(store, default_config(ds.name, epochs=1), ds)
    print(f"setup: trained a 1-epoch draw model on {ds.name} ({len(ds.test_labels):,} test predictions) "
          f"in {time.perf_counter() - t0:.1f} s; test accuracy {out['test_accuracy']:.2%}")
    env = {"MNIST_LAB_DATA": args.data_dir} if args.data_dir else {"MNIST_LAB_OFFLINE": "1"}
    ref_app = tmp / "ref"
    ref_app.mkdir()
    (ref_app / "app.py").write_text("import streamlit as st\nst.title('Reference')\n")

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        lab, ref = [], []
        for _ in range(args.repeat):
            lab.append(load_time(browser, lambda: app_server(runs, env))[0])
            ref.append(load_time(browser, lambda: app_server(tmp / "ref-runs", env, app_dir=ref_app))[0])
        print(f"\n1. streamlit run -> home page drawn: median {statistics.median(lab):.2f} s "
              f"(runs: {', '.join(f'{v:.2f}' for v in lab)}); reference one-line app: {statistics.median(ref):.2f} s")

        with app_server(runs, env) as url:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(url)
            wait_idle(page)
            for name, title in NAV.items():  # warm-up: first visits fill the caches
                switch(page, name, title)
            times = {}
            for name, title in NAV.items():
                t = time.perf_counter()
                switch(page, name, title)
                times[name] = time.perf_counter() - t - 0.2
            print("2. page switch (click -> drawn), after one warm-up visit each: median "
                  f"{statistics.median(times.values()):.2f} s, max {max(times.values()):.2f} s ({max(times, key=times.get)})")
            for name, v in times.items():
                print(f"     {name:28s} {v:.2f} s")

            trips = []
            for strokes in (ONE, SEVEN, ZERO) * args.repeat:
                page.goto(f"{url}/draw")  # a fresh, empty canvas (not timed)
                wait_idle(page, settle=0.3)
                draw_until_release(page, strokes[0])
                t = time.perf_counter()
                page.mouse.up()
                page.locator('[data-testid="stMetric"]').filter(has_text="Prediction").first.wait_for()
                trips.append(time.perf_counter() - t)
            print(f"3. drawn digit, mouse up -> prediction shown: median {statistics.median(trips):.2f} s, "
                  f"max {max(trips):.2f} s ({len(trips)} drawings)")

            from urllib.parse import quote

            for view in ("Training curves", "Confusion matrix", "Prediction gallery", "ROC and PR curves"):
                times = []
                for _ in range(2):  # a new session each time: first open, then opened again
                    t = time.perf_counter()
                    page.goto(f"{url}/metrics?run={out['run_id']}&view={quote(view)}")
                    page.locator('[data-testid="stMain"] h1', has_text="Metrics").first.wait_for()
                    wait_idle(page, settle=0.2)
                    times.append(time.perf_counter() - t - 0.2)
                print(f"4. metrics page, {len(ds.test_labels):,} test predictions, view {view!r}: {times[0]:.2f} s "
                      f"first open (new session), {times[1]:.2f} s opened again")
            assert metric_value(page, "Test samples") == f"{len(ds.test_labels):,}"
        browser.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
