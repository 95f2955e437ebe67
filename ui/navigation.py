"""The lab's pages and the navigation between them.

app.py builds `st.navigation` from PAGES and the home page its links. The one workaround that
reaches into Streamlit's internals lives here, with its reason and its guarding browser test
(tests/test_browser.py::test_a_fresh_server_opened_on_a_page_link_shows_the_apps_navigation).
Checked against Streamlit 1.67: there is no public way to do this; check again on every
Streamlit upgrade (the browser test fails if the private flag is renamed).
"""

from __future__ import annotations

import streamlit as st

# The lab's pages, by group.
PAGES = {
    "Start": [("pages/home.py", "Home", ":material/home:")],
    "Learn": [("pages/activations.py", "Activations and neurons", ":material/function:"),
              ("pages/layers.py", "Layers and CNNs", ":material/layers:"),
              ("pages/losses.py", "Losses and optimizers", ":material/trending_down:"),
              ("pages/backprop.py", "Backpropagation", ":material/account_tree:")],
    "Train": [("pages/train.py", "Train", ":material/model_training:"),
              ("pages/experiments.py", "Experiments", ":material/table_chart:"),
              ("pages/metrics.py", "Metrics", ":material/analytics:"),
              ("pages/ship.py", "Ship", ":material/rocket_launch:"),
              ("pages/kfold.py", "K-fold", ":material/view_week:"),
              ("pages/fitting.py", "Under- and overfitting", ":material/show_chart:"),
              ("pages/sweeps.py", "Sweeps", ":material/tune:")],
    "Play": [("pages/draw.py", "Draw a digit", ":material/draw:")],
}

_NAVIGATION_FIXED = False


def ensure_navigation() -> None:
    """Make the app's navigation (app.py) run even when a fresh server is first opened on a
    page's URL.

    Streamlit decides per process whether the app uses the old `pages/` folder mode, and keeps
    that mode until some run of app.py calls st.navigation. When the first request of a fresh
    server is a page URL (a shared link to /train), Streamlit runs that page file directly in
    folder mode, app.py never runs, and the sidebar lists every file of pages/. Switching the
    mode off and rerunning lets app.py define the navigation and open the same page. Streamlit
    offers no option for this, hence the private flag.
    """
    global _NAVIGATION_FIXED
    from streamlit.runtime.pages_manager import PagesManager

    # Once per process: after it, app.py's st.navigation keeps the flag off in a real server.
    # (AppTest resets the flag before every run and runs pages directly; rerunning there each
    # time would drop the button click that caused the run.)
    if PagesManager.uses_pages_directory and not _NAVIGATION_FIXED:
        _NAVIGATION_FIXED = True
        PagesManager.uses_pages_directory = False
        st.rerun()


def header(title: str, purpose: str) -> None:
    """Every page starts the same way: a title and one line saying what it is for (and, once
    per session, a note when the run index had to be rebuilt)."""
    ensure_navigation()
    from ui.access import gate, teacher_login
    from ui.state import ensure_starters, freeze_long_lived_objects, store_notice

    freeze_long_lived_objects()  # cheap garbage collections after each run (a no-op after the first calls)
    gate()  # app.py calls it too; here as well, for a page a fresh server runs directly
    ensure_starters()  # likewise (once per store and process: a cached call)
    notice = store_notice()
    if notice and not st.session_state.get("_store_notice_shown"):
        st.session_state["_store_notice_shown"] = True
        st.toast(notice, icon=":material/build:")
    st.title(title)
    st.caption(purpose)
    teacher_login()


def run_page(page) -> None:
    """Run the chosen page so that one damaged run never breaks it for everyone: a run file
    that turns out damaged while the page reads it is listed as damaged by the store
    (core.store: RunStore.mark_damaged), and the page is drawn again without it, saying which
    file; if the page still cannot be drawn the message stays under what it drew."""
    from core.store import FileDamaged, RunStoreError

    said = st.session_state.pop("_damaged_notice", None)
    if said:
        st.warning(f"A run was set aside as damaged: {said}. Its folder is kept; see Experiments.",
                   icon=":material/report:")
    try:
        page.run()
    except FileDamaged as exc:
        if said != str(exc):  # once per damage: a second time, the page itself needs that file
            st.session_state["_damaged_notice"] = str(exc)
            st.rerun()
        st.error(f"This page cannot show a damaged run: {exc}", icon=":material/report:")
    except RunStoreError as exc:
        st.error(str(exc), icon=":material/error:")
