"""Train: the course's Keras workflow in the browser. Define a model (a preset or layer by
layer, with a live summary), compile and fit it on the hardware picked here as a background
job with live curves and a Stop button, then evaluate and save it.

Training never runs in this script: it runs in a worker process (core.executors) and this page
only reads the run store, in a fragment that refreshes itself once a second while a run is
active. Leaving the page, opening a second tab or reloading shows the same job.
"""

from __future__ import annotations

import uuid

import pandas as pd
import streamlit as st

from core.codegen import keras_code, pytorch_code
from core.handover import page_notebook, page_run
from core.idx import idx_zip
from core.experiments import device_speeds
from core.config import (LOSSES, LR_SCHEDULES, OPTIMIZERS, PRECISIONS, ConfigError, RunConfig,
                         from_query_params, to_query_params)
from core.data import DataError
from core.devices import DeviceError, bf16_warning, info
from core.layer_kinds import KINDS, editor_defaults
from core.models import PRESETS, ArchitectureError, preset_differences, summary
from core.launch import launch_run
from core.store import RunStoreError
from ui import access
from ui.access import runs_to_show
from ui.live_run import live_view
from ui.navigation import header
from ui.state import ACTIVE, dataset, datasets_here, devices, executor, safe_get, store
from ui.widgets import executor_picker, picked_executor


header("Train", "Define, compile, fit, evaluate and save a model — the course's Keras steps, in PyTorch, "
                "on the hardware you pick.")


# --- state: one config dict and one layer list, in plain session_state keys ---------------

def _with_ids(layers: list[dict]) -> list[dict]:
    return [{**layer, "_id": uuid.uuid4().hex[:8]} for layer in layers]


def _set_config(cfg: RunConfig) -> None:
    """Make `cfg` the page's setup, widgets included.

    Widgets are given their values through session_state, never through `value=`: a widget
    with a key keeps its browser-side value across reruns, so only a session_state write
    reaches the browser when a preset or a shared link changes the values.
    """
    st.session_state["train_cfg"] = cfg.to_dict()
    st.session_state["train_layers"] = _with_ids(cfg.architecture())
    for name, value in cfg.to_dict().items():
        if name not in ("layers", "kfold", "extra", "model"):
            st.session_state[f"t_{name}"] = value
    st.session_state["t_preset"] = cfg.model


def _seeded(name: str) -> str:
    """The widget key for config field `name`, seeded from the config when the widget has no
    state (first visit, or back from another page: Streamlit drops a page's widget state)."""
    key = f"t_{name}"
    if key not in st.session_state:
        st.session_state[key] = cfg[name] if name in cfg else cfg["model"]
    return key


def _default_config() -> RunConfig:
    """The course MLP on the data set that will really train: full MNIST where it is found,
    else the offline sample, labelled as such (never "MNIST" that silently trains on the sample)."""
    return RunConfig.from_preset("mlp", dataset="mnist" if "mnist" in datasets_here() else "mnist-sample")


if "train_cfg" not in st.session_state:
    try:
        shared = {k: v for k, v in st.query_params.items() if k not in ("run", "view", access.STUDENT_KEY)}
        _set_config(from_query_params(shared) if shared else _default_config())
    except ConfigError as exc:
        st.warning(f"The shared link has a bad setting, so the defaults are shown instead: {exc}")
        _set_config(_default_config())

cfg: dict = st.session_state["train_cfg"]
layers: list[dict] = st.session_state["train_layers"]


def _load_preset():
    name = st.session_state["t_preset"]
    keep = {k: cfg[k] for k in ("dataset", "device", "seed", "val_split")}
    if name == "custom":
        _set_config(RunConfig(model="custom", layers=tuple(_clean(layers)), **{
            k: v for k, v in cfg.items() if k not in ("model", "layers", "kfold", "extra", "name")}))
    else:
        _set_config(RunConfig.from_preset(name, **keep))


def _clean(ls: list[dict]) -> list[dict]:
    return [{k: v for k, v in layer.items() if k != "_id"} for layer in ls]


def _edited():
    """Any edit of the layers makes the model custom (the preset picker says so too)."""
    cfg["model"] = "custom"
    st.session_state["t_preset"] = "custom"


def _move(i: int, step: int):
    j = i + step
    if 0 <= j < len(layers):
        layers[i], layers[j] = layers[j], layers[i]
        _edited()


def _remove(i: int):
    layers.pop(i)
    _edited()


def _add():
    kind = st.session_state["t_add_type"]
    layers.append({"type": kind, **editor_defaults(kind), "_id": uuid.uuid4().hex[:8]})
    _edited()


# --- 1. define ----------------------------------------------------------------------------

st.subheader("1. Define the model")
presets = list(PRESETS) + ["custom"]
st.session_state.setdefault("t_preset", cfg["model"])
st.selectbox("Start from", presets, key="t_preset", on_change=_load_preset,
             format_func=lambda p: PRESETS[p]["title"] if p in PRESETS else "Custom (edit the layers below)",
             help="A preset loads its layers and its recommended training settings; editing a layer makes "
                  "the model custom.")
chosen = st.session_state["t_preset"]
if chosen in PRESETS:
    about = PRESETS[chosen].get("about", "")
    if chosen == "mlp-fast":
        about += " What differs from the slides' recipe: " + "; ".join(preset_differences("mlp", "mlp-fast")) + "."
    reference = PRESETS[chosen].get("reference")
    if reference:
        about += f" Published: {reference['figure']} ({reference['citation']}). This preset: {reference['lab']}."
    st.caption(about)

with st.expander(f"Layers ({len(layers)}) — add, remove, reorder, edit", expanded=cfg["model"] == "custom"):
    for i, layer in enumerate(layers):
        uid, kind = layer["_id"], layer["type"]
        cols = st.columns([1.2, 1, 1, 1, 1, 1, 0.4, 0.4, 0.4])
        cols[0].markdown(f"**{i + 1}. {kind}**")
        k = f"layer_{uid}_"
        for col, field in zip(cols[1:6], KINDS[kind].fields):  # the kind's fields (core/layer_kinds.py)
            value = layer.get(field.key, field.default)
            if field.options:
                layer[field.key] = col.selectbox(field.key, field.options, field.options.index(value) if value in
                                                 field.options else 0, key=k + field.key, on_change=_edited)
            elif isinstance(field.default, float):
                layer[field.key] = col.number_input(field.key, float(field.low), float(field.high), float(value),
                                                    field.step, key=k + field.key, on_change=_edited)
            else:
                layer[field.key] = col.number_input(field.key, int(field.low), int(field.high), int(value),
                                                    key=k + field.key, on_change=_edited)
        cols[6].button("", icon=":material/arrow_upward:", key=k + "up", on_click=_move, args=(i, -1), help="move up", disabled=i == 0)
        cols[7].button("", icon=":material/arrow_downward:", key=k + "down", on_click=_move, args=(i, 1), help="move down",
                       disabled=i == len(layers) - 1)
        cols[8].button("", icon=":material/close:", key=k + "remove", on_click=_remove, args=(i,), help="remove this layer")
    add_cols = st.columns([2, 1, 4])
    add_cols[0].selectbox("New layer", list(KINDS), key="t_add_type")
    add_cols[1].button("Add layer", on_click=_add, key="t_add")
    st.caption("The output layer (Dense 10 with softmax, or Dense 1 with sigmoid for a binary task) is added "
               "automatically.")

arch_error = None
try:
    summ = summary(_clean(layers), 1 if cfg["loss"] == "binary_crossentropy" else 10)
    st.dataframe(pd.DataFrame(summ["rows"])[["layer", "type", "output_shape", "params"]]
                 .rename(columns={"output_shape": "output shape", "params": "parameters"}),
                 hide_index=True, width="stretch")
    st.caption(f"Total parameters: **{summ['total_params']:,}** (trainable {summ['trainable_params']:,}, "
               f"non-trainable {summ['non_trainable_params']:,}) — this is `model.summary()`.")
except (ArchitectureError, KeyError, TypeError, ValueError) as exc:
    arch_error = exc
    st.error(f"This architecture cannot be built: {exc}", icon=":material/error:")


# --- 2. compile and fit settings -----------------------------------------------------------

st.subheader("2. Compile and fit")
here = datasets_here()
ds_options = ["mnist", "mnist-sample"] + (["fashion-mnist"] if "fashion-mnist" in here else [])
if cfg["dataset"] not in ds_options:
    ds_options.append(cfg["dataset"])
ds_labels = {"mnist": "MNIST (60,000 / 10,000)" + ("" if "mnist" in here else " — not found here: downloaded if the "
                                                   "network answers, else the run trains on the offline sample "
                                                   "and is stored as mnist-sample"),
             "mnist-sample": "Offline sample (4,000 / 1,000 real MNIST digits)",
             "fashion-mnist": "Fashion-MNIST"}
dev_list = devices()
dev_ids = [d.id for d in dev_list]
dev_labels = {d.id: d.label for d in dev_list}
if cfg["device"] in ("auto", "") or cfg["device"] is None:
    cfg["device"] = dev_ids[0]
if st.session_state.get("t_device") in ("auto", ""):
    st.session_state["t_device"] = cfg["device"]
if cfg["device"] not in dev_ids:  # e.g. a shared link made on a GPU machine: kept, and refused on launch
    dev_ids.append(cfg["device"])
    dev_labels[cfg["device"]] = f"{cfg['device']} (not found on this machine)"

c1, c2, c3, c4 = st.columns(4)
cfg["dataset"] = c1.selectbox("Data set", ds_options, key=_seeded("dataset"),
                              format_func=lambda d: ds_labels.get(d, d))
cfg["device"] = c2.selectbox("Hardware", dev_ids, key=_seeded("device"),
                             format_func=lambda d: dev_labels[d], help="Detected devices, best first.")
cfg["optimizer"] = c3.selectbox("Optimizer", OPTIMIZERS, key=_seeded("optimizer"))
cfg["lr"] = c4.number_input("Learning rate", min_value=0.0, max_value=10.0, step=1e-4, format="%.5f",
                            key=_seeded("lr"))
c1, c2, c3, c4 = st.columns(4)
cfg["loss"] = c1.selectbox("Loss", LOSSES, key=_seeded("loss"),
                           help="categorical_crossentropy: 10 classes. binary_crossentropy: one digit against the rest.")
cfg["batch_size"] = c2.number_input("Batch size", min_value=1, max_value=100_000, key=_seeded("batch_size"))
cfg["epochs"] = c3.number_input("Epochs", min_value=1, max_value=500, key=_seeded("epochs"))
cfg["val_split"] = c4.slider("Validation split", 0.05, 0.5, step=0.05, key=_seeded("val_split"),
                             help="Seeded and stratified (Keras takes the last samples instead).")
with st.expander("More settings"):
    c1, c2, c3, c4 = st.columns(4)
    cfg["seed"] = c1.number_input("Seed", min_value=0, max_value=2**31 - 1, key=_seeded("seed"))
    cfg["early_stopping"] = c2.number_input("Early stopping patience (0 = off)", 0, 100, key=_seeded("early_stopping"))
    cfg["lr_schedule"] = c3.selectbox("Learning-rate schedule", LR_SCHEDULES, key=_seeded("lr_schedule"))
    cfg["precision"] = c4.selectbox("Precision", PRECISIONS, key=_seeded("precision"),
                                    help="bf16 autocast on CPU/CUDA; fp16 with gradient scaling on CUDA.")
    c1, c2, c3, c4 = st.columns(4)
    cfg["momentum"] = c1.number_input("Momentum (SGD)", 0.0, 0.99, step=0.05, key=_seeded("momentum"))
    cfg["train_subset"] = c2.number_input("Use only N training digits (0 = all)", 0, 60_000, step=500,
                                          key=_seeded("train_subset"))
    cfg["augment"] = c3.checkbox("Augment the digits", key=_seeded("augment"),
                                 help="Random shifts, rotations and stroke widths: makes the model read hand-drawn "
                                      "digits better (draw page).")
    if cfg["loss"] == "binary_crossentropy":
        cfg["positive_class"] = c4.number_input("Positive class", 0, 9, key=_seeded("positive_class"))
    c1, c2 = st.columns([1, 3])
    cfg["l2"] = c1.number_input("L2 regularization λ", 0.0, 1.0, step=1e-4, format="%.5f", key=_seeded("l2"),
                                help="Keras' kernel_regularizer=l2(λ): λ·Σw² of every weight matrix and kernel is "
                                     "added to the loss (the slides use 0.0001). 0 = off.")
    cfg["name"] = st.text_input("Run name (optional)", key=_seeded("name"), max_chars=120)


def share_in_address_bar(params: dict[str, str]) -> None:
    """The setup's parameters in the address bar, the others dropped; classroom mode's `student`
    stays (the student's name, kept there through reloads: ui.access)."""
    for key in [k for k in st.query_params if k not in params and k != access.STUDENT_KEY]:
        del st.query_params[key]
    for key, value in params.items():
        if st.query_params.get(key) != value:
            st.query_params[key] = value


config, config_error = None, None
if arch_error is None:
    try:
        fields = {k: v for k, v in cfg.items() if k not in ("layers", "extra")}
        if cfg["model"] == "custom":
            fields["layers"] = tuple(_clean(layers))
        config = RunConfig(**fields)
        share_in_address_bar(to_query_params(config))  # the link in the address bar shares this setup
    except ConfigError as exc:
        config_error = exc
        st.error(f"Setting **{exc.field}**: {exc}", icon=":material/error:")


def hardware_note(config: RunConfig) -> None:
    """Which device trained this setup fastest among the stored runs, and how many jobs the
    chosen device takes at once."""
    speeds = device_speeds(store().list(), config)
    if len(speeds):
        best = speeds.iloc[0]
        text = f"Fastest for this setup among your runs: **{best['device']}**, {best['seconds per epoch']:.2f} s per epoch"
        if len(speeds) > 1:
            slow = speeds.iloc[-1]
            text += f" ({best['speed-up']:.1f}x {slow['device']}'s {slow['seconds per epoch']:.2f} s)"
        st.caption(text + ". The experiments page times a config on every device.")
    # about this machine's hardware: said when the job trains here (a Ray node's CPU is not known here)
    here = picked_executor("t_executor") == "local"
    warning = bf16_warning(config.precision, info(config.device, devices())) if here else None
    if warning:
        st.warning(warning, icon=":material/speed:")
    slots = executor().capacity(config.device)
    busy = store().running_jobs(config.device)
    st.caption(f"`{config.device}` trains {'one job' if slots == 1 else f'up to {slots} jobs'} at once"
               f" ({busy} running now)." + (" A CPU trains one job at a time: two would only share its cores."
                                          if config.device == "cpu" else ""))


if config is not None:
    hardware_note(config)


def _start():
    try:
        ds = dataset(config.dataset)
        run_id = launch_run(executor(picked_executor("t_executor")), config, dataset=ds)
    except (ConfigError, DeviceError, DataError, ArchitectureError, RunStoreError) as exc:
        st.session_state["train_error"] = str(exc)
        return
    st.session_state.pop("train_error", None)
    st.session_state["train_run"] = run_id


executor_picker("t_executor")
st.button("Train", type="primary", icon=":material/play_arrow:", key="t_train", on_click=_start,
          disabled=config is None, help="Starts a background job; you can leave this page while it runs.")
if st.session_state.get("train_error"):
    st.error(f"Nothing was started: {st.session_state['train_error']}", icon=":material/error:")
st.caption("Share this setup: copy the address bar — the link opens this model, these hyperparameters and this seed.")


# --- 3. fit: the live job --------------------------------------------------------------------

run_id = st.session_state.get("train_run")
if run_id is None:  # a new tab or a reload: re-attach to the newest active run, else show the newest run
    # in classroom mode a student's own runs only; never a fresh lab's starter run, as if it were theirs
    every = [r for r in runs_to_show(store().list()) if not r.get("starter")]
    active = [r for r in every if r["status"] in ACTIVE]
    run_id = (active or every or [{"id": None}])[0]["id"]
    if run_id:
        st.session_state["train_run"] = run_id

if run_id:
    st.subheader("3. Fit")
    live_view(run_id)
    run = safe_get(run_id)
    if run and run["status"] in ("finished", "cancelled") and store().folder(run_id).has("metrics"):
        st.subheader("4. Evaluate and save")
        metrics = store().metrics(run_id)
        m = st.columns(4)
        m[0].metric("Test accuracy", f"{metrics['test_accuracy']:.2%}")
        m[1].metric("Test loss", f"{metrics['test_loss']:.4f}")
        m[2].metric("Best validation accuracy", f"{metrics['best_val_accuracy']:.2%}")
        m[3].metric("Training time", f"{metrics['seconds']:.1f} s")
        st.page_link("pages/metrics.py", label="Open its metrics", icon=":material/analytics:",
                     query_params={"run": run_id})
        folder = store().folder(run_id)
        d = st.columns(3)
        # The files are read when a button is clicked (a callable as data), not on every rerun.
        d[0].download_button("Weights (.pt state dict)", lambda: folder.read_bytes("weights"), f"{run_id}-weights.pt",
                             mime="application/octet-stream", key="t_dl_weights")
        d[1].download_button("Config (JSON)", lambda: folder.read_bytes("config"), f"{run_id}-config.json",
                             mime="application/json", key="t_dl_config")
        d[2].download_button("History (CSV)",
                             lambda: pd.DataFrame(store().history(run_id)).drop(columns=["val_confusion"],
                                                                                errors="ignore").to_csv(index=False),
                             f"{run_id}-history.csv", mime="text/csv", key="t_dl_history")


# --- the same in code -------------------------------------------------------------------------

if config is not None:
    st.subheader("The same in code")
    where = datasets_here().get(config.dataset, "")
    folder = where.removeprefix("folder ") if where.startswith("folder ") else None
    st.caption("Both programs train this run as the lab does (schedule, L2, early stopping, augmentation, the "
               "validation split...) and read the four MNIST files from the folder in `DATA` at the top, offline. "
               "Where a framework cannot do what the lab does, a comment says so.")
    torch_tab, keras_tab = st.tabs(["PyTorch", "Keras (as in the course)"])
    torch_tab.code(pytorch_code(config, folder), language="python")
    keras_tab.code(keras_code(config, folder), language="python")
    # The same programs as Jupyter notebooks, one cell per course step (built on click).
    nb_torch, nb_keras = st.columns(2)
    # the shown run's own notebook (as `runs export --format notebook` writes it) when the page
    # shows that run's config, else the config's
    shown_run = page_run(store(), run_id, config)
    for column, framework, label in ((nb_torch, "pytorch", "PyTorch"), (nb_keras, "keras", "Keras")):
        column.download_button(f"{label} notebook (.ipynb)",
                               lambda f=framework: page_notebook(store(), shown_run, config, f, folder)[0],
                               f"{shown_run or config.name or config.model}-{framework}.ipynb",
                               mime="application/x-ipynb+json", key=f"t_dl_nb_{framework}", on_click="ignore")
    if config.dataset == "mnist-sample":
        sample = dataset("mnist-sample")
        # Built on click (gzip of 5,000 digits): on every rerun it was a large part of the server's
        # work with a class on the train page (bench/load.py).
        st.download_button("The offline sample as MNIST files (.zip), for DATA", lambda: idx_zip(
            sample.train_images, sample.train_labels, sample.test_images, sample.test_labels),
            "mnist-sample-idx.zip", mime="application/zip", key="t_dl_sample", on_click="ignore")
