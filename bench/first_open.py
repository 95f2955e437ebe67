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
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from playwright import sync_api  # noqa: E402

from core.store import RunStore  # noqa: E402
from tests.browser import CHROMIUM_ARGS, app_server, chromium_path  # noqa: E402

DONE = ("finished", "failed", "cancelled", "interrupted")


def group_done(runs: list[dict], prefix: str) -> bool:
    members = [r for r in runs if (r.get("grp") or "").startswith(prefix)]
    return bool(members) and all(r["status"] in DONE for r in members)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--until", type=float, default=600, help="stop waiting after this many seconds")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="first-open-"))
    runs_dir = folder / "runs"
    t0 = time.perf_counter()
    seen: dict[str, float] = {}
    with app_server(runs_dir, {"MNIST_LAB_OFFLINE": "1", "MNIST_LAB_STARTERS": "1"}) as url:
        seen["server answers"] = time.perf_counter() - t0
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(url + "/draw")
            # the canvas component's drawing surface, in the page (streamlit-drawable-canvas 0.13)
            page.locator('[data-testid="stCanvas"] canvas, .stCanvas canvas, canvas').first.wait_for(
                timeout=args.until * 1000)
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
