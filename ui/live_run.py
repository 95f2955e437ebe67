"""The live view of one training run on the train page (step 3, "fit"): queue position,
progress bars, live curves, the first layer's weights as they change, Stop and Resume. It
only reads the run store, in a fragment that refreshes itself once a second while the run is
active; the training runs in a worker process (core.executors)."""

from __future__ import annotations

import json

import streamlit as st

from core import learned
from core.store import RunStoreError
from ui import access, charts
from ui.state import ACTIVE, executor, safe_get, store


def _stop(run_id: str):
    try:
        access.check_may_edit(store().get(run_id), "stop or cancel")
        store().request_cancel(run_id)
    except RunStoreError as exc:
        st.session_state["train_error"] = str(exc)


def _resume(run_id: str):
    try:
        executor().resume(run_id)  # queued again at once; its worker waits for the device's slot
    except RunStoreError as exc:
        st.session_state["train_error"] = str(exc)
        return
    st.session_state["t_resuming"] = run_id


def resuming(run: dict) -> bool:
    """Whether `run` was resumed from this page and has not trained a batch since (it waits
    for its slot, or its worker loads the data and the checkpoint): the view says it resumes."""
    if st.session_state.get("t_resuming") != run["id"]:
        return False
    if run["status"] not in ACTIVE or run.get("progress"):
        st.session_state.pop("t_resuming", None)
        return False
    return True


def first_layer(run_id: str) -> None:
    """The first layer's weights as the worker last saved them (every ~2 s while it trains)."""
    snapshot = store().folder(run_id).first_layer()
    if snapshot is None:  # none yet, or unreadable (damaged, or replaced right now): the picture is left out
        return
    weights, epoch = snapshot
    kind = "unit" if weights.shape[1] == 28 else "filter"
    with st.expander(f"What the first layer is learning (epoch {epoch:.1f})", expanded=True):
        st.image(learned.weight_tiles(weights, upscale=3 if kind == "unit" else 10), clamp=True,
                 caption=f"The first {min(len(weights), 64)} of {len(weights)} {kind}s' weights: blue positive, red "
                         "negative. They start as noise and turn into stroke detectors as the run trains.")


def time_left(progress: dict, history: list[dict], batch_size: int) -> float | None:
    """Seconds until the last epoch ends at the speed so far: the mean finished epoch
    (validation included), or before the first ends, this epoch's samples per second."""
    left = progress["epochs"] - (progress["epoch"] - 1 + progress["batch"] / progress["batches"])
    if history:
        return left * sum(h["seconds"] for h in history) / len(history)
    speed = progress.get("samples_per_second") or 0
    return left * progress["batches"] * batch_size / speed if speed > 0 else None


def duration_text(seconds: float) -> str:
    """12 s, 3 min 05 s, 1 h 04 min: what a progress bar says is left."""
    s = round(seconds)
    if s < 60:
        return f"{s} s"
    return f"{s // 60} min {s % 60:02d} s" if s < 3600 else f"{s // 3600} h {s % 3600 // 60:02d} min"


def live_view(run_id: str) -> None:
    """Progress, curves and the stop button of one run; refreshes itself while it is active."""
    first = safe_get(run_id)
    if first is None:
        st.session_state.pop("train_run", None)
        return
    was_active = first["status"] in ACTIVE

    @st.fragment(run_every=1.0 if was_active else None)
    def view():
        run = safe_get(run_id)
        if run is None:
            return
        if was_active and run["status"] not in ACTIVE:
            st.rerun()  # the whole page once more: stops polling and shows the results
        history = store().history(run_id)
        again = resuming(run)
        st.markdown(f"**{run['name']}** · status **{'resuming' if again else run['status']}** · "
                    f"device `{run['device']}`")
        if again and run["status"] == "running":
            st.info("Resuming from the last checkpoint: the worker loads the data and the weights first...",
                    icon=":material/restart_alt:")
        if run["status"] == "queued":
            pos = store().queue_position(run_id)
            slots = executor().capacity(run["device"])
            st.info(("Resuming from the last checkpoint once it has a slot. " if again else "") +
                    (f"Waiting for `{run['device']}` ({store().running_jobs(run['device'])} of {slots} slot(s) "
                     f"busy): number {pos} in its queue." if pos else "Starting the worker..."))
            st.button("Cancel", icon=":material/cancel:", key="t_cancel", on_click=_stop, args=(run_id,),
                      help="Takes the run out of the queue; " + ("its finished epochs and checkpoint are kept."
                                                                 if history else "nothing was trained yet."))
        prog = run.get("progress")
        if run["status"] == "running":
            config = json.loads(run["config"])
            epochs = int(config["epochs"])
            if prog:
                ep_done = (prog["epoch"] - 1 + prog["batch"] / prog["batches"]) / prog["epochs"]
                left = time_left(prog, history, int(config["batch_size"]))
                eta = "" if left is None else f" · about {duration_text(left)} left" + (
                    " at most (early stopping may end it sooner)" if config.get("early_stopping") else "")
                st.progress(min(ep_done, 1.0), text=f"Epoch {prog['epoch']} of {prog['epochs']}{eta}")
                st.progress(prog["batch"] / prog["batches"],
                            text=f"Batch {prog['batch']} of {prog['batches']} · running loss {prog['loss']:.4f} · "
                                 f"{prog['samples_per_second']:,.0f} samples/s")
            elif not again:
                st.progress(len(history) / epochs, text="Loading data and building the model...")
            st.button("Stop", icon=":material/stop:", key="t_stop", on_click=_stop, args=(run_id,),
                      help="Stops within one batch; the finished epochs and their weights are kept.")
        if history:
            last = history[-1]
            m = st.columns(4)
            m[0].metric("Epochs done", len(history))
            m[1].metric("Validation accuracy", f"{last['val_accuracy']:.2%}")
            m[2].metric("Time per epoch", f"{sum(h['seconds'] for h in history) / len(history):.2f} s")
            m[3].metric("Samples per second", f"{last['samples_per_second']:,.0f}")
            how = steps_caption(store().environment(run_id))
            if how:
                st.caption(how)
            left, right = st.columns(2)
            left.altair_chart(charts.curves(history, "loss"), width="stretch")
            right.altair_chart(charts.curves(history, "accuracy"), width="stretch")
        first_layer(run_id)
        if run["status"] == "failed":
            st.error(f"The run failed: {run['error']}", icon=":material/error:")
        if run["status"] in ("interrupted", "cancelled"):
            st.warning(f"The run stopped ({run['status']}): {run['error'] or 'stopped by the user'}.")
            st.button("Resume from the last checkpoint", key="t_resume", on_click=_resume, args=(run_id,))

    view()


def steps_caption(environment: dict) -> str | None:
    """How a GPU run's steps ran: as a CUDA graph, or eagerly and why (core.cuda_graphs)."""
    loop = environment.get("cuda_graph", environment)  # a vectorised group keeps it under "cuda_graph"
    if loop.get("training_loop") == "cuda-graph":
        return ("Each training step runs as one CUDA graph: recorded once, then replayed with one launch, "
                "so the GPU does not wait for Python between its small kernels.")
    if loop.get("eager_reason"):
        return f"Training steps run one kernel at a time (no CUDA graph): {loop['eager_reason']}."
    return None
