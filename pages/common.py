"""What several pages share: cached data sets and device lists (process-wide, read-only)."""

from __future__ import annotations

import os

import streamlit as st

from core.data import Dataset, load_dataset
from core.devices import DeviceInfo, list_devices


@st.cache_resource(show_spinner="Loading the data set...")
def dataset(name: str = "mnist", data_dir: str | None = None) -> Dataset:
    """A data set, loaded once per process and shared by every session (never mutated)."""
    return load_dataset(name, data_dir or os.environ.get("MNIST_LAB_DATA") or None)


@st.cache_resource
def devices() -> list[DeviceInfo]:
    return list_devices()


def dataset_banner(ds: Dataset) -> None:
    """Say which data set is in use; the offline sample always says it is a sample."""
    if ds.notice:
        st.warning(ds.notice, icon=":material/wifi_off:")
    elif ds.is_sample:
        st.info("Using the offline sample: 5,000 real MNIST digits (4,000 train / 1,000 test).")
