"""The browser tour (issue 24): every page at the narrowest width a projector shows (1280x720) and
a laptop's (1440x900), on a store that has something for every page to draw. On each page: no
error, no text cut short with an ellipsis, no chart wider than its column, and no text of a chart
outside its drawing or shortened by Vega ("…"). Then the defects a person saw, one by one: the
k-fold grid at k = 2, the backpropagation drawing's labels, the gradient legend, the steps of a
drawn "1" in one row, the saliency title.

Skipped, with the reason, where no Chromium is installed (as tests/test_browser.py).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from core import sweeps
from core.config import RunConfig
from core.data import Dataset, load_sample
from core.executors.inline import InlineExecutor
from core.launch import launch_activation_comparison, launch_capacity, launch_kfold
from core.store import RunStore
from tests.browser import (ONE, PAGES, app_server, chromium_path, draw_strokes, errors_on,
                           metric_value, wait_drawn, wait_idle)
from tests.conftest import ROOT
from tests.waiting import wait_until

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
pytestmark = [pytest.mark.slow, pytest.mark.skipif(chromium_path() is None,
                                reason="no Chromium found (apt-get install chromium, or set MNIST_LAB_CHROMIUM)")]

VIEWPORTS = [(1280, 720), (1440, 900)]

# Per chart: its drawing inside its column, every text of it inside the chart's box and whole.
CHARTS = """() => Array.from(document.querySelectorAll('[data-testid="stVegaLiteChart"]')).flatMap((box, i) => {
  const svg = box.querySelector('svg');
  if (!svg) return [];
  const b = box.getBoundingClientRect(), s = svg.getBoundingClientRect(), out = [];
  if (s.right > b.right + 1 || s.left < b.left - 1) out.push(`chart ${i}: ${s.width}px wide in a ${b.width}px column`);
  for (const t of svg.querySelectorAll('text')) {
    const r = t.getBoundingClientRect();
    if (!t.textContent.trim()) continue;
    if (t.textContent.includes('…')) out.push(`chart ${i}: "${t.textContent}" shortened`);
    // 6 px of slack: Vega sets axis titles flush with the edge (a pixel or two over it, still drawn)
    if (r.left < b.left - 6 || r.right > b.right + 6 || r.top < b.top - 6 || r.bottom > b.bottom + 6)
      out.push(`chart ${i}: "${t.textContent}" outside its box`);
  }
  return out;
})"""
# Text Streamlit shortens with an ellipsis (a label wider than its column).
CUT = """() => Array.from(document.querySelectorAll('[data-testid="stMain"] *')).filter(el => {
  if (el.tagName === 'INPUT') return false;
  const cs = getComputedStyle(el);
  return cs.textOverflow === 'ellipsis' && el.scrollWidth > el.clientWidth + 1;
}).map(el => el.textContent.slice(0, 80))"""


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The app on a store with a k-fold, a capacity study, the sigmoid/ReLU comparison, a
    finished sweep and a model to draw with: every page has something to draw."""
    runs = tmp_path_factory.mktemp("tour") / "runs"
    store = RunStore(runs)
    sample = load_sample()
    small = Dataset("mnist-sample", sample.train_images[:1000], sample.train_labels[:1000], sample.test_images,
                    sample.test_labels, source="tour subset", fingerprint=sample.fingerprint)
    inline = InlineExecutor(store)
    base = RunConfig.from_preset("mlp-fast", dataset="mnist-sample", epochs=2)
    launch_kfold(inline, base.replace(name="tour 2-fold"), 2, dataset=small)
    launch_capacity(inline, RunConfig.from_preset("mlp", dataset="mnist-sample", epochs=3, train_subset=300),
                    [2, 128], dataset=small)
    launch_activation_comparison(inline, RunConfig.from_preset("mlp", dataset="mnist-sample", epochs=2,
                                                               name="course MLP"), dataset=small)
    inline.submit([RunConfig.from_preset("cnn", dataset="mnist-sample", epochs=2, name="draw model (tour)")],
                  dataset=small)
    # The sweep trains in this process (the command line's sweep, with its worker per trial, is
    # tested in tests/test_sweeps.py and tests/test_faults.py): the tour needs a finished sweep to
    # show, and four worker starts cost about half a minute of the suite here.
    spec = sweeps.new_sweep(store, RunConfig.from_preset("mlp-fast", dataset="mnist-sample", epochs=1), None,
                            "random", trials=4)
    sweeps.run_sweep(store, inline, spec, dataset=sample, poll_s=0)
    with app_server(runs, {"MNIST_LAB_OFFLINE": "1", "MNIST_LAB_STARTERS": "0"}) as url:
        yield url


@pytest.fixture(params=VIEWPORTS, ids=lambda v: f"{v[0]}x{v[1]}")
def page(browser, request):
    width, height = request.param
    context = browser.new_context(viewport={"width": width, "height": height})
    pg = context.new_page()
    yield pg
    context.close()


def visit(page, url: str, path: str):
    page.goto(f"{url}/{path}")
    wait_idle(page, 120)
    wait_drawn(page)  # Vega draws after the script run ends


def fits(page) -> list[str]:
    return page.evaluate(CHARTS) + [f'label cut: "{t}"' for t in page.evaluate(CUT)]


@pytest.mark.parametrize("name", list(PAGES))
def test_every_page_fits_a_projector_and_a_laptop(server, page, name):
    visit(page, server, PAGES[name])
    assert errors_on(page) == []
    assert fits(page) == []


def test_the_kfold_grid_draws_a_row_per_fold_at_k_2(server, page):
    visit(page, server, "kfold?k=2")
    grid = page.locator('[data-testid="stVegaLiteChart"]').first
    cells = grid.locator("g.mark-rect path").all()
    assert len(cells) >= 2 * 20
    tops = sorted({round(c.bounding_box()["y"]) for c in cells})
    heights = {round(c.bounding_box()["height"]) for c in cells}
    assert len(tops) == 2 and min(heights) >= 15  # two rows of cells, each a visible band (not one squashed line)
    assert fits(page) == []


def _overlaps(a: dict, b: dict) -> bool:
    return not (a["x"] + a["width"] <= b["x"] or b["x"] + b["width"] <= a["x"] or
                a["y"] + a["height"] <= b["y"] or b["y"] + b["height"] <= a["y"])


def test_the_backprop_drawing_labels_do_not_overlap_and_both_activations_are_in_the_legend(server, page):
    visit(page, server, "backprop")
    for step in ("Loss.", "Backward pass."):  # every weight's label has its gradient as a second line
        page.get_by_role("button", name="Next step").click()
        page.get_by_text(step, exact=False).first.wait_for(timeout=20_000)  # this click's run, not the last
        wait_idle(page)
    wait_drawn(page)
    drawing = page.locator('[data-testid="stVegaLiteChart"]').first
    boxes = [(t.text_content(), t.bounding_box()) for t in drawing.locator("g.mark-text text").all()
             if (t.text_content() or "").strip()]
    assert len(boxes) >= 8 + 6
    clashes = [(a, b) for i, (a, ba) in enumerate(boxes) for b, bb in boxes[i + 1:]
               if _overlaps(ba, bb) and not (len(a) <= 2 or len(b) <= 2)]  # node names sit in their circles
    assert clashes == []
    over_training = page.locator('[data-testid="stVegaLiteChart"]').last
    legend = " ".join(t.text_content() for t in over_training.locator("g.role-legend text").all())
    assert "relu" in legend and "sigmoid" in legend
    assert fits(page) == []


def test_the_draw_page_shows_a_drawn_one_in_one_row_of_squares(server, page):
    visit(page, server, "draw")
    draw_strokes(page, ONE)
    metric_value(page, "Prediction", timeout=60)
    wait_idle(page)
    wait_drawn(page)
    steps = [page.locator('[data-testid="stImage"]').filter(has_text=caption).first.locator("img")
             for caption in ("your drawing", "cropped to the strokes", "(20x20 box)", "centred by mass")]
    heights = [s.bounding_box()["height"] for s in steps]
    assert max(heights) - min(heights) <= 2, heights  # a tall "1" no longer runs below the row
    saliency = page.locator('[data-testid="stImage"]').filter(has_text="Saliency")
    assert "the score of" in saliency.inner_text()  # the whole title (it was cut to "score of :")
    assert fits(page) == []


def test_on_the_network_without_a_password_the_refusal_lists_no_pages(browser, tmp_path):
    """The refusal used to leave Streamlit's own page list (the file names of pages/) in the sidebar."""
    with app_server(tmp_path / "runs", {"MNIST_LAB_OFFLINE": "1", "MNIST_LAB_STARTERS": "0"},
                    address="0.0.0.0") as url:
        page = browser.new_page(viewport={"width": 1280, "height": 720})
        for path in ("", "experiments"):
            page.goto(f"{url}/{path}")
            page.get_by_text("no teacher password is set").first.wait_for(timeout=60_000)
            wait_drawn(page)
            assert page.locator('[data-testid="stSidebarNav"] a').count() == 0
            assert "experiments" not in page.locator('[data-testid="stSidebar"]').all_inner_texts()
        page.close()


def classroom_copy(tmp_path: Path) -> Path:
    """This checkout with a teacher password in .streamlit/secrets.toml (where the README puts it)."""
    app = tmp_path / "lab"
    shutil.copytree(ROOT, app, ignore=shutil.ignore_patterns(".venv", ".git", "runs", "__pycache__", "*.pyc"))
    (app / ".streamlit" / "secrets.toml").write_text('teacher_password = "s3cret"\n')
    return app


def test_in_classroom_mode_a_name_survives_reloads_and_page_switches_and_so_does_the_teachers_sign_in(
        browser, tmp_path):
    with app_server(tmp_path / "runs", {"MNIST_LAB_OFFLINE": "1", "MNIST_LAB_STARTERS": "0"},
                    app_dir=classroom_copy(tmp_path), address="0.0.0.0") as url:
        context = browser.new_context(viewport={"width": 1280, "height": 720})
        page = context.new_page()
        visit(page, url, "train")
        name = page.get_by_role("textbox", name="Your name")
        name.fill("ana")
        name.press("Enter")
        wait_idle(page)
        page.wait_for_url("**student=ana**", timeout=60_000)
        assert "model=mlp" in page.url  # the setup's link is still in the address bar, with the name
        page.reload()
        wait_idle(page, 120)
        assert page.get_by_role("textbox", name="Your name").input_value() == "ana"
        page.locator('[data-testid="stSidebarNav"]').get_by_role("link", name="Draw a digit").click()
        page.locator('[data-testid="stMain"] h1', has_text="Draw a digit").first.wait_for(timeout=60_000)
        wait_idle(page, 120)
        assert page.get_by_role("textbox", name="Your name").input_value() == "ana"
        assert "student=ana" in page.url
        page.get_by_text("Teacher login").first.click()
        password = page.get_by_role("textbox", name="Password")
        password.fill("s3cret")
        # Enter hands the typed password to the app before the click: a click that lands while the
        # field has not sent its value yet signs in with an empty one ("Wrong password", a CI run).
        password.press("Enter")
        wait_idle(page)
        page.get_by_role("button", name="Sign in").click()
        page.get_by_text("signed in as the teacher").first.wait_for(timeout=60_000)
        # The cookie is set by the page's script after the rerun that says "signed in" (CI, loaded, read
        # the cookies before it landed): wait for it.
        cookie = wait_until(lambda: next((c for c in context.cookies() if c["name"] == "mnist_lab_teacher"), None),
                            60, "the teacher's cookie")
        assert "s3cret" not in cookie["value"] and cookie["sameSite"] == "Strict"
        page.reload()
        wait_idle(page, 120)
        page.get_by_text("signed in as the teacher").first.wait_for(timeout=60_000)
        assert errors_on(page) == []
        context.close()
