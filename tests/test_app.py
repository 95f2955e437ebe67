"""The app's pages under Streamlit's AppTest (headless, no browser)."""

from __future__ import annotations

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from tests.conftest import ROOT, open_page


def test_home_page_shows_data_hardware_and_digits():
    at = open_page("pages/home.py")
    assert not at.exception
    # Offline in tests: the notice says it is the sample and how to get the full set.
    assert any("offline sample" in w.value for w in at.warning)
    assert [m.value for m in at.metric] == ["4,000", "1,000"]
    assert len(at.get("image")) == 24
    from core.data import load_sample

    labels = load_sample().test_labels[np.random.default_rng(0).permutation(1000)[:24]]
    shown = [str(img.proto).split("caption: ")[1].split("\"")[1] for img in at.get("image")]
    by_column = [i for c in range(8) for i in range(24) if i % 8 == c]  # the page fills 8 columns
    assert shown == [f"label {labels[i]}" for i in by_column]  # each digit is captioned with its own label
    at.slider[0].set_value(8).run()
    assert len(at.get("image")) == 8


def test_app_navigation_opens_the_home_page():
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60).run()
    assert not at.exception
    assert at.title[0].value == "MNIST Lab"


@pytest.mark.slow  # a fresh Python that imports torch, pandas and Altair: seconds
def test_after_each_rerun_the_garbage_collector_walks_only_what_the_runs_made():
    """Streamlit collects garbage after every script run; the libraries' ~330,000 objects are
    frozen once (ui.state.freeze_long_lived_objects) so that this stays cheap, and frozen again
    when new modules were imported since. In a fresh process: the test must not freeze pytest's."""
    import subprocess
    import sys

    code = """
import gc, importlib
from ui.state import freeze_long_lived_objects
before = len(gc.get_objects())
frozen = freeze_long_lived_objects()
walked = len(gc.get_objects())
count = gc.get_freeze_count
gc.get_freeze_count = None  # walks all that is frozen (33 ms): not on every rerun
again = freeze_long_lived_objects()
gc.get_freeze_count = count
importlib.import_module("xml.dom.minidom")  # a module the pages had not imported
refrozen = freeze_long_lived_objects()
print(before, frozen, walked, again, refrozen)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    before, frozen, walked, again, refrozen = map(int, out.stdout.split()[-5:])
    assert frozen > 100_000 and frozen >= before            # torch, pandas, Altair... imported, then frozen
    assert walked < frozen / 10                             # what a collection still walks
    assert again == frozen                                  # no new module: nothing done
    assert refrozen > frozen                                # a new module: frozen as well
