"""Home: what the lab is, which data and hardware it found, and a grid of real digits."""

import numpy as np
import streamlit as st

from pages.common import dataset, dataset_banner, devices, header

header("MNIST Lab", "See and try every idea of a first neural-network course on real training runs with MNIST digits.")

st.markdown("Every idea of the course, on real MNIST digits and real training runs on this computer:")
g1, g2, g3 = st.columns(3)
with g1:
    st.markdown("**Learn**")
    st.page_link("pages/activations.py", label="Activations and neurons", icon=":material/function:")
    st.page_link("pages/layers.py", label="Layers and CNNs", icon=":material/layers:")
    st.page_link("pages/losses.py", label="Losses and optimizers", icon=":material/trending_down:")
with g2:
    st.markdown("**Train**")
    st.page_link("pages/train.py", label="Train a model", icon=":material/model_training:")
    st.page_link("pages/experiments.py", label="Compare experiments", icon=":material/table_chart:")
    st.page_link("pages/metrics.py", label="Metrics of a run", icon=":material/analytics:")
    st.page_link("pages/kfold.py", label="K-fold cross-validation", icon=":material/view_week:")
    st.page_link("pages/fitting.py", label="Under- and overfitting", icon=":material/show_chart:")
with g3:
    st.markdown("**Play**")
    st.page_link("pages/draw.py", label="Draw a digit", icon=":material/draw:")

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
idx = rng.choice(len(ds.test_labels), size=count, replace=False)
cols = st.columns(8)
for i, j in enumerate(idx):
    cols[i % 8].image(ds.test_images[j], caption=f"label {ds.test_labels[j]}", width=64)
