"""MNIST Lab: `streamlit run app.py`. This file only sets up the navigation and shared chrome."""

import streamlit as st

from ui import access
from ui.navigation import PAGES, run_page
from ui.state import ensure_starters

# An emoji icon, drawn by the browser: a Material icon as favicon is fetched from fonts.gstatic.com
# on every page load, a failed request on a student's laptop offline.
st.set_page_config(page_title="MNIST Lab", page_icon="🔢", layout="wide")
access.gate()  # on the network only with a teacher password (classroom mode); see ui/access.py
ensure_starters()  # a first open is never empty: small starter runs train in the background (core.starters)

run_page(st.navigation({group: [st.Page(path, title=title, icon=icon, default=path == "pages/home.py")
                                 for path, title, icon in pages]
                         for group, pages in PAGES.items()}))
