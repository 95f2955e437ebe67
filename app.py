"""MNIST Lab: `streamlit run app.py`. This file only sets up the navigation and shared chrome."""

import streamlit as st

st.set_page_config(page_title="MNIST Lab", page_icon=":material/grid_on:", layout="wide")

pages = {
    "Start": [st.Page("pages/home.py", title="Home", icon=":material/home:", default=True)],
    "Learn": [
        st.Page("pages/activations.py", title="Activations and neurons", icon=":material/function:"),
        st.Page("pages/layers.py", title="Layers and CNNs", icon=":material/layers:"),
        st.Page("pages/losses.py", title="Losses and optimizers", icon=":material/trending_down:"),
    ],
    "Train": [
        st.Page("pages/train.py", title="Train", icon=":material/model_training:"),
        st.Page("pages/experiments.py", title="Experiments", icon=":material/table_chart:"),
        st.Page("pages/metrics.py", title="Metrics", icon=":material/analytics:"),
        st.Page("pages/kfold.py", title="K-fold", icon=":material/view_week:"),
        st.Page("pages/fitting.py", title="Under- and overfitting", icon=":material/show_chart:"),
    ],
    "Play": [st.Page("pages/draw.py", title="Draw a digit", icon=":material/draw:")],
}
st.navigation(pages).run()
