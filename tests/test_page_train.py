"""The train page under AppTest: define, summary, settings, refused launches, a real background
job with live progress and Stop, the results, the shared link and the equivalent code."""

from __future__ import annotations

import pytest

from core.store import RunStore
from tests.conftest import hold_cpu_slot, interrupted_run, open_page
from tests.waiting import wait_until


def wait_for(at, predicate, timeout=90.0):
    """Rerun the page (as the fragment's timer does in a browser) until `predicate(at)`."""
    def rerun():
        at.run()
        assert not at.exception, at.exception
        return predicate(at)

    wait_until(rerun, timeout, "the page to show the awaited state", every=0.5)
    return at


def summary_caption(at) -> str:
    return next(c.value for c in at.caption if c.value.startswith("Total parameters"))


def test_course_mlp_summary_shows_its_219818_parameters():
    at = open_page("pages/train.py")
    assert not at.exception
    assert "**219,818**" in summary_caption(at)
    rows = at.dataframe[0].value
    assert list(rows["output shape"]) == ["(None, 784)", "(None, 256)", "(None, 64)", "(None, 32)", "(None, 10)"]


def test_choosing_a_preset_loads_its_layers_and_training_settings():
    at = open_page("pages/train.py")
    at.selectbox(key="t_preset").set_value("cnn").run()
    assert at.number_input(key="t_batch_size").value == 128
    assert at.number_input(key="t_epochs").value == 3
    assert "(None, 28, 28, 16)" in list(at.dataframe[0].value["output shape"])


def test_layers_can_be_added_moved_and_removed_and_the_summary_follows():
    at = open_page("pages/train.py")
    at.selectbox(key="t_add_type").set_value("dropout").run()
    at.button(key="t_add").click().run()
    types = list(at.dataframe[0].value["type"])
    assert types[4] == "Dropout(0.25)" and at.selectbox(key="t_preset").value == "custom"
    up = [b for b in at.button if b.key and b.key.endswith("_up")][4]
    up.click().run()
    assert list(at.dataframe[0].value["type"])[3] == "Dropout(0.25)"
    remove = [b for b in at.button if b.key and b.key.endswith("_remove")][3]
    remove.click().run()
    assert "Dropout(0.25)" not in list(at.dataframe[0].value["type"])
    units = [n for n in at.number_input if n.key and n.key.endswith("_units")][0]
    units.set_value(100).run()
    assert "**" + f"{784 * 100 + 100 + 100 * 64 + 64 + 64 * 32 + 32 + 330:,}" + "**" in summary_caption(at)


def test_an_architecture_whose_shapes_do_not_fit_is_explained_and_cannot_start():
    at = open_page("pages/train.py")
    at.selectbox(key="t_preset").set_value("cnn").run()
    [n for n in at.number_input if n.key and n.key.endswith("_size")][0].set_value(14).run()  # 28x28 -> 2x2
    [n for n in at.number_input if n.key and n.key.endswith("_size")][1].set_value(4).run()   # 4x4 on 2x2
    errors = [e.value for e in at.error]
    assert any("cannot be built" in e and "layer 6 (pool)" in e for e in errors), errors
    assert at.button(key="t_train").disabled


def test_a_batch_larger_than_the_data_is_refused_and_starts_nothing():
    at = open_page("pages/train.py")
    at.selectbox(key="t_dataset").set_value("mnist-sample").run()
    at.number_input(key="t_batch_size").set_value(50_000).run()
    at.button(key="t_train").click().run()
    assert any("Nothing was started" in e.value and "batch size 50000" in e.value for e in at.error)
    assert RunStore().list() == []


def test_a_gpu_that_is_not_there_is_refused_and_starts_nothing():
    at = open_page("pages/train.py", query={"model": "mlp", "device": "cuda:7", "dataset": "mnist-sample"})
    assert "not found" in at.selectbox(key="t_device").format_func("cuda:7")
    at.button(key="t_train").click().run()
    assert any("Nothing was started" in e.value and "cuda:7" in e.value for e in at.error), [e.value for e in at.error]
    assert RunStore().list() == []


def test_fp16_on_a_cpu_is_refused_and_starts_nothing():
    at = open_page("pages/train.py", query={"model": "mlp", "device": "cpu", "precision": "fp16"})
    at.button(key="t_train").click().run()
    assert any("Nothing was started" in e.value and "fp16 mixed precision needs a CUDA GPU" in e.value
               for e in at.error)
    assert RunStore().list() == []


def test_bf16_on_a_cpu_without_bf16_instructions_is_flagged_on_the_train_and_kfold_pages(monkeypatch):
    from core.devices import DeviceInfo

    def machine(bf16):
        monkeypatch.setattr("ui.state.devices", lambda: [DeviceInfo("cpu", "cpu", "AVX2 laptop", threads=4, bf16=bf16)])

    def warnings(at):
        return [w.value for w in at.warning if "bf16 on this CPU" in w.value]

    machine(False)
    at = open_page("pages/train.py", query={"model": "mlp", "device": "cpu", "precision": "bf16"})
    assert any("AVX2 laptop" in w and "Use fp32 here" in w for w in warnings(at)), [w.value for w in at.warning]
    at.selectbox(key="t_precision").set_value("fp32").run()
    assert warnings(at) == []
    at = open_page("pages/kfold.py")
    assert warnings(at) == []
    at.selectbox(key="k_precision").set_value("bf16").run()
    assert len(warnings(at)) == 1
    monkeypatch.setenv("MNIST_LAB_RAY_ADDRESS", "127.0.0.1:6379")  # a cluster: its nodes' CPUs are not this one
    at = open_page("pages/train.py", query={"model": "mlp", "device": "cpu", "precision": "bf16"})
    assert len(warnings(at)) == 1
    at.radio(key="t_executor").set_value("ray").run()
    assert warnings(at) == []
    at = open_page("pages/kfold.py")
    at.selectbox(key="k_precision").set_value("bf16").run()
    assert len(warnings(at)) == 1
    at.radio(key="k_executor").set_value("ray").run()
    assert warnings(at) == []
    monkeypatch.delenv("MNIST_LAB_RAY_ADDRESS")
    machine(True)
    at = open_page("pages/train.py", query={"model": "mlp", "device": "cpu", "precision": "bf16"})
    assert warnings(at) == []


def test_a_bad_hyperparameter_names_the_field():
    at = open_page("pages/train.py")
    at.number_input(key="t_lr").set_value(0.0).run()
    assert any("**lr**" in e.value for e in at.error)
    assert at.button(key="t_train").disabled


def test_a_shared_link_opens_the_same_model_hyperparameters_and_seed():
    query = {"model": "cnn", "lr": "0.003", "batch_size": "64", "epochs": "4", "seed": "42", "optimizer": "sgd"}
    at = open_page("pages/train.py", query=query)
    assert at.selectbox(key="t_preset").value == "cnn"
    assert at.number_input(key="t_lr").value == 0.003
    assert at.number_input(key="t_batch_size").value == 64
    assert at.number_input(key="t_seed").value == 42
    assert at.selectbox(key="t_optimizer").value == "sgd"
    assert at.query_params["seed"] == "42" and at.query_params["lr"] == "0.003"
    at.number_input(key="t_seed").set_value(7).run()  # the address bar follows every change
    assert at.query_params["seed"] == "7"


def test_equivalent_pytorch_and_keras_code_follow_the_settings():
    at = open_page("pages/train.py")
    at.number_input(key="t_batch_size").set_value(32).run()
    codes = [c.value for c in at.code]
    assert any("EPOCHS, BATCH = 32, 32" in c and "nn.Linear(784, 256)" in c for c in codes)
    assert any("EPOCHS, BATCH, LR = 32, 32, 0.001" in c and "validation_data=(x_val, y_val)" in c
               and "model.summary()" in c for c in codes)
    at.number_input(key="t_l2").set_value(0.0001).run()
    codes = [c.value for c in at.code]
    assert any("L2 * sum((w * w).sum() for w in kernels)" in c for c in codes)
    assert any("kernel_regularizer=regularizers.l2(L2)" in c for c in codes)


def test_the_progress_bar_says_about_how_long_is_left():
    from ui.live_run import duration_text, time_left

    prog = {"epoch": 3, "epochs": 10, "batch": 480, "batches": 960, "samples_per_second": 12_000}
    # two epochs done in 3.2 and 3.4 s, half of the third: 7.5 epochs left at 3.3 s each
    assert time_left(prog, [{"seconds": 3.2}, {"seconds": 3.4}], 50) == pytest.approx(7.5 * 3.3)
    # during the first epoch: the samples left at this epoch's speed
    first = {**prog, "epoch": 1}
    assert time_left(first, [], 50) == pytest.approx(9.5 * 960 * 50 / 12_000)
    assert time_left({**first, "samples_per_second": 0}, [], 50) is None
    assert [duration_text(s) for s in (12.4, 185, 3840)] == ["12 s", "3 min 05 s", "1 h 04 min"]


@pytest.mark.slow
def test_training_runs_in_the_background_shows_progress_and_stops():
    at = open_page("pages/train.py")
    at.selectbox(key="t_dataset").set_value("mnist-sample").run()
    at.number_input(key="t_epochs").set_value(200).run()
    at.button(key="t_train").click().run()
    assert not at.exception
    run_id = at.session_state["train_run"]
    # Live: status, progress bars and, after the first epoch, the curves and speed.
    wait_for(at, lambda a: any(m.label == "Epochs done" for m in a.metric))
    assert any(p.proto.text.startswith("Epoch") for p in at.get("progress")) or \
        RunStore().get(run_id)["status"] == "running"
    assert all(" left" in p.proto.text for p in at.get("progress") if p.proto.text.startswith("Epoch"))
    assert any(m.label == "Samples per second" for m in at.metric)
    # A new session (another tab) re-attaches to the same live job.
    other = open_page("pages/train.py")
    assert other.session_state["train_run"] == run_id
    at.button(key="t_stop").click().run()
    wait_for(at, lambda a: RunStore().get(run_id)["status"] == "cancelled")
    wait_for(at, lambda a: any(m.label == "Test accuracy" for m in a.metric))
    run = RunStore().get(run_id)
    assert 1 <= run["epochs_done"] < 200
    shown = next(m.value for m in at.metric if m.label == "Test accuracy")
    assert shown == f"{run['test_accuracy']:.2%}"
    assert {b.proto.label for b in at.get("download_button")} >= {"Weights (.pt state dict)", "Config (JSON)",
                                                                   "History (CSV)"}
    assert any(w.value.startswith("The run stopped (cancelled)") for w in at.warning)
    # The stopped run is in the experiments table, and its metrics match its stored predictions.
    table = open_page("pages/experiments.py").dataframe[0].value.set_index("id")
    assert table.loc[run_id, "status"] == "cancelled" and table.loc[run_id, "epochs_done"] == run["epochs_done"]
    metrics = open_page("pages/metrics.py", query={"run": run_id})
    p = RunStore().predictions(run_id)
    shown = {m.label: m.value for m in metrics.metric}
    assert shown["Test accuracy"] == f"{(p['labels'] == p['preds']).mean():.2%}"
    assert shown["Mistakes"] == f"{int((p['labels'] != p['preds']).sum()):,}"


@pytest.mark.slow
def test_a_run_interrupted_mid_training_is_shown_and_resumes_from_the_page(sample):
    from core.config import RunConfig

    store = RunStore()
    interrupted_run(store, RunConfig.from_preset("mlp", dataset="mnist-sample", epochs=4, train_subset=800), sample,
                    epochs=2)
    run = store.list()[0]
    assert run["status"] == "interrupted" and run["epochs_done"] == 2
    at = open_page("pages/train.py")  # a new session shows the newest run, with what happened to it
    assert any("The run stopped (interrupted)" in w.value for w in at.warning)
    at.button(key="t_resume").click().run()
    # at once, before the worker has loaded torch: the page says it is resuming (it showed "interrupted")
    assert any("Resuming from the last checkpoint" in i.value for i in at.info)
    wait_for(at, lambda a: RunStore().get(run["id"])["status"] == "finished", timeout=120)
    done = RunStore().get(run["id"])
    assert done["epochs_done"] == 4 and len(RunStore().history(run["id"])) == 4
    wait_for(at, lambda a: any("status **finished**" in m.value for m in a.markdown))
    assert next(m.value for m in at.metric if m.label == "Epochs done") == "4"


@pytest.mark.slow
def test_a_run_resumed_while_another_trains_waits_in_the_queue_and_can_be_cancelled(sample):
    """The CPU's one slot is held: the resumed run is queued (not trained beside the other), the
    page says so, and Cancel, which says the finished epochs stay, takes it out of the queue."""
    from core.config import RunConfig

    store = RunStore()
    stopped = interrupted_run(store, RunConfig.from_preset("mlp", dataset="mnist-sample", epochs=3, train_subset=500,
                                                           device="cpu"), sample)
    at = open_page("pages/train.py")  # on the newest run: the stopped one
    holder = hold_cpu_slot(store)
    try:
        at.button(key="t_resume").click().run()
        assert store.get(stopped)["status"] == "queued"
        info = " ".join(i.value for i in at.info)
        assert "Resuming from the last checkpoint once it has a slot" in info and "number 1 in its queue" in info
        cancel = at.button(key="t_cancel")
        assert "finished epochs and checkpoint are kept" in cancel.proto.help
        cancel.click().run()
        run = wait_until(lambda: (lambda r: r if r["status"] == "cancelled" else None)(store.get(stopped)), 60,
                         "the queued resume to be cancelled")
        assert run["epochs_done"] == 1 and store.load_checkpoint(stopped) is not None
    finally:
        store.mark_failed(holder, "test over", status="cancelled")


def test_the_page_opens_on_the_persons_latest_run_never_on_a_starter(kept, small):
    from core.config import RunConfig

    mine = kept.list()[0]["id"]
    starter = kept.create(RunConfig.from_preset("mlp", dataset="mnist-sample", epochs=1, name="starter: x",
                                                extra={"starter": True}), status="queued")
    assert kept.get(starter)["starter"] == 1
    at = open_page("pages/train.py")
    assert at.session_state["train_run"] == mine  # the newest run is the starter; the page opens on the person's
    kept.request_cancel(starter)


def test_a_queued_run_is_cancelled_from_the_page(kept):
    from core.config import RunConfig

    queued = kept.create(RunConfig.from_preset("mlp", dataset="mnist-sample", epochs=1, name="waiting"),
                         status="queued")
    at = open_page("pages/train.py")
    assert at.session_state["train_run"] == queued
    at.button(key="t_cancel").click().run()
    assert kept.get(queued)["status"] == "cancelled"
    assert kept.get(kept.list()[-1]["id"])["status"] == "finished"  # the other run is untouched


def test_the_page_says_whether_a_gpu_run_trained_as_a_cuda_graph_or_why_not(kept):
    run_id = kept.list()[0]["id"]
    kept.update_environment(run_id, {"training_loop": "eager",
                                     "eager_reason": "fp16 loss scaling checks every step on the host"})
    at = open_page("pages/train.py")
    assert any("no CUDA graph): fp16 loss scaling" in c.value for c in at.caption)
    kept.update_environment(run_id, {"training_loop": "cuda-graph", "graphs_captured": 3})
    at = open_page("pages/train.py")
    assert any("runs as one CUDA graph" in c.value for c in at.caption)
    kept.update_environment(run_id, {"training_loop": "eager", "eager_reason": None})   # a CPU run: nothing said
    at = open_page("pages/train.py")
    assert not any("CUDA graph" in c.value for c in at.caption)
