"""Home: what the lab is, which data and hardware it found, and a grid of real digits."""

import numpy as np
import streamlit as st

from ui.navigation import PAGES, header
from ui.state import dataset, devices
from ui.widgets import dataset_banner

header("MNIST Lab", "See and try every idea of a first neural-network course on real training runs with MNIST digits.")

st.markdown("Every idea of the course, on real MNIST digits and real training runs on this computer:")
for col, group in zip(st.columns(3), ("Learn", "Train", "Play")):
    col.markdown(f"**{group}**")
    for path, title, icon in PAGES[group]:
        col.page_link(path, label=title, icon=icon)

ds = dataset("mnist")
dataset_banner(ds)
left, right = st.columns(2)
with left:
    st.subheader("Data")
    st.metric("Training digits", f"{len(ds.train_labels):,}")
    st.metric("Test digits", f"{len(ds.test_labels):,}")
    st.caption(f"Source: {ds.source}")
with right:
    st.subheader("Hardware")
    for d in devices():
        st.write(f"**{d.id}** — {d.name}" + (f", {d.memory_gb:.0f} GB" if d.memory_gb else ""))

st.subheader("Sample digits")
count = st.slider("How many digits", 8, 48, 24, step=8)
rng = np.random.default_rng(0)
idx = rng.permutation(len(ds.test_labels))[:count]  # more digits add to the grid, the first ones stay
cols = st.columns(8)
for i, j in enumerate(idx):
    cols[i % 8].image(ds.test_images[j], caption=f"label {ds.test_labels[j]}", width=64)
