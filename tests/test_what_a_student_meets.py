"""What a student or a teacher meets first (issue 24), each defect as the test that found it:
charts after one epoch, numbers that must agree on one page, lesson texts computed from what
the page shows, drawings saved with the label picked, and address-bar parameters checked."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from core.runner import train_run
from core import backprop as bp
from core.concepts import fitted_line_accuracy, line_accuracy, toy_data
from core.config import RunConfig
from core.experiments import config_diff, readable
from core.handwriting import HandwritingSet
from tests.conftest import chart_specs, open_page

BAD_RUN = "20990101-000000-abcdef"


def title(spec: dict) -> str:
    t = spec.get("title")
    return (t.get("text") if isinstance(t, dict) else t) or ""


def titled(at, words: str) -> dict:
    return next(spec for spec in chart_specs(at) if words in title(spec))


# --- the data set a run says is the one it trained on ---------------------------------------------

def test_offline_the_train_page_defaults_to_the_sample_by_its_own_name():
    at = open_page("pages/train.py")  # no full MNIST here (conftest: offline, empty cache)
    assert not at.exception
    box = next(s for s in at.selectbox if s.label == "Data set")
    assert box.value == "mnist-sample"


def test_a_run_asked_on_mnist_offline_is_stored_and_listed_as_the_sample(tmp_path, sample):
    from core.data import load_dataset
    from core.executors.base import prepare
    from core.store import RunStore

    data = load_dataset("mnist")  # offline, nothing found: the sample, with a notice
    assert data.is_sample and data.notice
    config = prepare(RunStore(tmp_path), [RunConfig.from_preset("mlp", dataset="mnist")], data)[0]
    assert config.dataset == "mnist-sample"


def test_the_index_lists_the_data_a_run_trained_on_not_the_one_asked(tmp_path, small):
    from core.store import RunStore

    store = RunStore(tmp_path)
    run_id = train_run(store, RunConfig.from_preset("mlp", dataset="mnist", epochs=1, train_subset=200),
                                         small)["run_id"]  # "mnist" asked, the sample given (as offline)
    assert store.get(run_id)["dataset"] == "mnist-sample"
    store.rebuild_index()  # from the run folders alone
    assert store.get(run_id)["dataset"] == "mnist-sample"


# --- charts after one epoch ----------------------------------------------------------------------

def test_curves_after_one_epoch_read_whole_epochs_and_hold_their_points(kept):
    run = kept.list()[0]
    history = kept.history(run["id"])
    assert len(history) == 1  # a one-epoch run: what every live run is after its first epoch
    at = open_page("pages/metrics.py", query={"run": run["id"]})
    assert not at.exception
    for metric, key in (("Loss", "loss"), ("Accuracy", "accuracy")):
        spec = titled(at, f"{metric} per epoch")
        x = spec["encoding"]["x"]
        assert x["scale"]["domain"] == [1, 2] and x["axis"]["format"] == "d"  # ticks 1, 2 (not "1.000000")
        lo, hi = spec["encoding"]["y"]["scale"]["domain"]
        for value in (history[0][f"train_{key}"], history[0][f"val_{key}"]):
            assert lo < value < hi  # the points sit inside the plot


def test_experiments_overlay_draws_a_one_epoch_run_as_a_point(kept):
    at = open_page("pages/experiments.py")
    spec = titled(at, "per epoch (solid: train")
    layers = spec.get("layer", [spec])
    assert any(isinstance(layer["mark"], dict) and layer["mark"].get("point") for layer in layers)
    for layer in layers:
        x = layer.get("encoding", spec.get("encoding", {})).get("x")
        assert x["axis"]["format"] == "d" and x["scale"]["domain"] == [1, 2]


# --- numbers on one page agree ---------------------------------------------------------------------

def test_robustness_clean_accuracy_is_of_the_model_the_header_shows(trained_copy):
    store = trained_copy
    run = next(r for r in store.list() if r["name"] == "cnn short")
    folder = store.folder(run["id"])
    # the best epoch's weights differ from the final ones (as they do whenever validation peaked earlier)
    best = {k: torch.zeros_like(v) if v.is_floating_point() else v for k, v in folder.load_weights("last").items()}
    torch.save(best, folder / "weights_best.pt")
    at = open_page("pages/metrics.py", query={"run": run["id"], "view": "Robustness"})
    assert not at.exception
    p = store.predictions(run["id"])
    shown = {m.label: m.value for m in at.metric}
    header = f"{(p['labels'] == p['preds']).mean():.2%}"
    assert shown["Test accuracy"] == header
    assert shown["Accuracy on the clean digits"] == header  # 1,000 sample test digits: the same digits


def test_the_fgsm_slider_and_its_label_show_the_same_epsilon(trained_store):
    run = next(r for r in trained_store.list() if r["name"] == "cnn short")
    at = open_page("pages/metrics.py", query={"run": run["id"], "view": "Robustness"})
    at.radio(key="m_rob_kind").set_value("fgsm").run()
    assert any(m.label == "Accuracy at FGSM ε = 0.10" for m in at.metric)
    slider = at.slider(key="m_rob_fgsm")
    assert slider.proto.step == pytest.approx(0.01) and slider.proto.format == "%.2f"
    assert slider.value == pytest.approx(0.1)  # a third of 0.3, a value the slider can show
    slider.set_value(0.13).run()
    assert any(m.label == "Accuracy at FGSM ε = 0.13" for m in at.metric)


def test_learning_rates_read_rounded_in_tables():
    assert readable(0.0016756813861488488) == 0.001676
    assert readable(3) == 3 and readable("adam") == "adam" and readable(0.0) == 0.0
    a = RunConfig.from_preset("mlp", lr=0.0016756813861488488)
    diff = config_diff({"a": a, "b": RunConfig.from_preset("mlp")})
    assert diff.loc["lr", "a"] == 0.001676


# --- lesson texts -----------------------------------------------------------------------------------

def test_the_one_neuron_caption_states_the_lines_score_and_the_fitted_lines():
    at = open_page("pages/activations.py")
    at.slider(key="a_w1").set_value(0.5)
    at.slider(key="a_w2").set_value(-1.0)
    at.slider(key="a_b").set_value(0.3).run()
    X, y = toy_data("moons", 200, seed=0)
    mine, fitted = line_accuracy(X, y, [0.5, -1.0], 0.3), fitted_line_accuracy(X, y)
    caption = next(c.value for c in at.caption if "Your line" in c.value)
    assert f"Your line puts {mine:.0%}" in caption and f"gets {fitted:.0%}" in caption
    assert fitted > mine  # the old text called this line's score the best one line can do


def test_the_one_neuron_step_and_boundary_hold_for_zero_weights_and_bias():
    from core.concepts import boundary_line

    at = open_page("pages/activations.py")  # w₁ = w₂ = 1, b = 0: the title said "x₁ = -0.00"
    assert title(titled(at, "The bias moves the curve")).endswith("the step is at x₁ = 0.00")
    at.slider(key="a_w1").set_value(0.0).run()  # it said "x₁ = nan"
    assert title(titled(at, "The bias moves the curve")).endswith(
        "with w₁ = 0 there is no step: a = sigmoid(b) = 0.50 for every x₁")
    at.slider(key="a_w1").set_value(2.0)
    at.slider(key="a_w2").set_value(0.0)
    at.slider(key="a_b").set_value(-1.0).run()  # the boundary x₁ = 0.5 was not drawn at all
    assert not at.exception
    line = boundary_line([2.0, 0.0], -1.0, (-2.0, 3.0), (-2.0, 2.0))
    assert len(line) > 1 and (line["x1"] == 0.5).all() and line["x2"].between(-2.0, 2.0).all()
    assert boundary_line([0.0, 0.0], 1.0, (-2.0, 3.0), (-2.0, 2.0)).empty
    slanted = boundary_line([1.0, -1.0], 0.3, (-2.0, 3.0), (-2.0, 2.0))
    assert np.allclose(slanted["x1"] - slanted["x2"] + 0.3, 0)


def _epochs(val_losses, train_acc=1.0, val_acc=0.9):
    return [{"epoch": i + 1, "train_loss": 1.0 / (i + 1), "val_loss": v, "train_accuracy": train_acc,
             "val_accuracy": val_acc, "seconds": 1.0} for i, v in enumerate(val_losses)]


def test_the_annotated_diagnosis_never_says_overfitting_next_to_no_sign_of_it():
    from core.experiments import curve_verdict

    # measured: the regularization study's L2 + dropout arm, training error 0.00%, validation
    # error 8.63%, validation loss flat; the page said "Diagnosis: overfitting. ... Validation
    # loss did not turn up: no sign of overfitting in these epochs."
    memorized = curve_verdict(_epochs([0.49, 0.37, 0.34, 0.336, 0.333], val_acc=0.9137))
    assert "**Diagnosis: overfitting.**" in memorized and "no sign of overfitting" not in memorized
    assert "8.6 points worse on new digits" in memorized and "did not turn up" in memorized
    turned = curve_verdict(_epochs([0.5, 0.4, 0.35, 0.38, 0.42], val_acc=0.9))
    assert "lowest at epoch 3 and ended 20% above it" in turned and "overfitting begins there" in turned
    fine = curve_verdict(_epochs([0.5, 0.3, 0.2, 0.15], train_acc=0.99, val_acc=0.98))
    assert "**Diagnosis: good fit.**" in fine and "no sign of overfitting" in fine
    weak = curve_verdict(_epochs([2.0, 1.9, 1.85, 1.9], train_acc=0.6, val_acc=0.55))
    assert "**Diagnosis: underfitting.**" in weak and "overfitting begins" not in weak


def test_the_fitting_page_annotates_a_run_with_one_consistent_diagnosis(kept):
    from core.experiments import curve_verdict

    run = kept.list()[0]["id"]  # a finished run, its history replaced by one that memorized its digits
    history = _epochs([0.49, 0.37, 0.34, 0.336, 0.333], val_acc=0.9137)
    kept.record_history(run, history)
    at = open_page("pages/fitting.py")
    at.selectbox(key="f_run").set_value(run).run()
    assert not at.exception
    shown = [m.value for m in at.markdown if "Diagnosis" in m.value]
    assert shown == [curve_verdict(history)]


def test_the_regularization_study_says_which_arm_held_its_validation_loss():
    from core.experiments import regularization_caption, regularization_frame

    losses = {"none": [0.5, 0.4, 0.35, 0.37, 0.40, 0.42], "L2": [0.5, 0.4, 0.36, 0.36, 0.365, 0.37],
              "dropout": [0.5, 0.41, 0.37, 0.38, 0.39, 0.395], "L2 + dropout": [0.5, 0.4, 0.36, 0.35, 0.345, 0.344]}
    runs = [{"id": arm, "status": "finished", "test_accuracy": 0.9} for arm in losses]
    frame = regularization_frame(runs, {arm: _epochs(v) for arm, v in losses.items()}, {a: a for a in losses})
    # every arm memorizes its digits (training error 0): the course's table would call all four
    # "overfitting", which is why the study shows the curve's turn instead
    assert "regime" not in frame.columns
    turned = dict(zip(frame["arm"], frame["validation loss turned up"]))
    assert turned == {"none": "after epoch 3", "L2": "after epoch 3", "dropout": "after epoch 3", "L2 + dropout": "no"}
    assert frame.set_index("arm").loc["none", "above its lowest"] == pytest.approx(0.42 / 0.35 - 1)
    text = regularization_caption(frame)
    assert text.startswith("Lowest final validation loss: **L2 + dropout** (0.3440), against 0.4200 without")
    assert "lowest at epoch 3 and ended 20% above it; L2 + dropout did not turn up." in text
    flat = regularization_frame(runs[:1], {"none": _epochs([0.5, 0.4, 0.35, 0.34])}, {"none": "none"})
    assert "did not turn up in these epochs" in regularization_caption(flat)


def test_the_backprop_loss_chart_hugs_the_losses():
    at = open_page("pages/backprop.py")
    for _ in range(3):
        at = at.button(key="bp_next").click().run()
    spec = titled(at, "The loss going down")
    p, x, t = bp.START, bp.START_INPUTS, bp.START_TARGETS
    losses = [bp.loss(p, x, t), bp.loss(bp.sgd_step(p, bp.autograd_gradients(p, x, t), 0.5), x, t)]
    lo, hi = spec["encoding"]["y"]["scale"]["domain"]
    assert lo == pytest.approx(min(losses) / 1.02) and hi == pytest.approx(max(losses) * 1.02)  # not 0.1-1
    assert spec["encoding"]["x"]["axis"]["format"] == "d"


# --- results the person asked for, and diagnoses from the numbers shown -----------------------------

def test_after_train_k_folds_the_result_shown_is_the_new_cross_validation(kept, monkeypatch):
    import core.launch
    from core.experiments import kfold_configs

    base = RunConfig.from_preset("mlp", dataset="mnist-sample", epochs=1)
    for config in kfold_configs(base, 2):
        kept.create(config, status="finished", group="kfold-20260101-000000-000")  # the starter's, say
    at = open_page("pages/kfold.py")
    assert at.selectbox(key="k_group").value == "kfold-20260101-000000-000"

    def started(executor, config, k, stratified=True, dataset=None, vectorize=True):
        group = "kfold-20261130-120000-000"
        return group, [kept.create(c, status="finished", group=group) for c in kfold_configs(config, k)]

    monkeypatch.setattr(core.launch, "launch_kfold", started)
    at.slider(key="k_k").set_value(3).run()
    at.button(key="k_go").click().run()
    assert not at.exception
    assert at.selectbox(key="k_group").value == "kfold-20261130-120000-000"
    assert any(m.label == "Folds done" and m.value == "0 of 3" for m in at.metric)


def _capacity_study(errors: dict[int, tuple[float, float]]):
    runs, histories, configs = [], {}, {}
    for i, (cap, (train_err, val_err)) in enumerate(errors.items()):
        rid = f"r{i}"
        runs.append({"id": rid, "params": cap * 795, "status": "finished"})
        histories[rid] = [{"epoch": 1, "train_accuracy": 1 - train_err, "val_accuracy": 1 - val_err,
                           "train_loss": 0.1, "val_loss": 0.5}]
        configs[rid] = RunConfig.from_preset("mlp", extra={"capacity": cap})
    return runs, histories, configs


def test_the_capacity_study_shows_all_three_rows_of_the_courses_table():
    from core.experiments import capacity_frame

    # the starter study's final errors, measured (500 training digits, 40 epochs)
    frame = capacity_frame(*_capacity_study({2: (0.406, 0.4725), 8: (0.006, 0.13625), 128: (0.0, 0.11375),
                                             2048: (0.0, 0.10125)}))
    assert list(frame["regime"]) == ["underfitting", "overfitting", "good fit", "good fit"]
    # alone, a model that memorised its digits and does worse on new ones still overfits
    alone = capacity_frame(*_capacity_study({1: (0.6, 0.62), 512: (0.01, 0.25)}))
    assert list(alone["regime"]) == ["underfitting", "overfitting"]


def test_the_sweep_form_keeps_its_settings_across_pages():
    at = open_page("pages/sweeps.py")
    at.number_input(key="s_trials").set_value(5).run()
    at.multiselect(key="s_batch").set_value([64]).run()
    at.switch_page("pages/experiments.py").run()
    at.switch_page("pages/sweeps.py").run()
    assert at.number_input(key="s_trials").value == 5
    assert at.multiselect(key="s_batch").value == [64]


def test_compared_runs_with_one_name_are_told_apart_in_the_legend():
    from core.experiments import distinct_labels

    labels = distinct_labels({"20261130-000000-aaaaaa": "mlp", "20261130-000001-bbbbbb": "mlp",
                              "20261130-000002-cccccc": "cnn"})
    assert labels == {"20261130-000000-aaaaaa": "mlp (aaaaaa)", "20261130-000001-bbbbbb": "mlp (bbbbbb)",
                      "20261130-000002-cccccc": "cnn"}


# --- the draw page ----------------------------------------------------------------------------------

def test_a_drawing_is_saved_only_with_the_label_picked(trained_copy):
    root = trained_copy.root
    at = open_page("pages/draw.py")
    assert at.selectbox(key="d_label").value is None  # no default: it used to be 0
    at.number_input(key="d_sample").set_value(3).run()
    at.button(key="d_save").click().run()
    assert any("Say which digit you drew" in w.value for w in at.warning)
    assert len(HandwritingSet(root)) == 0
    at.selectbox(key="d_label").set_value(5).run()
    at.button(key="d_save").click().run()
    images, labels = HandwritingSet(root).load()
    assert list(labels) == [5]


# --- address-bar parameters -------------------------------------------------------------------------

@pytest.mark.parametrize("k", ["abc", "50", "1", "3.5", ""])
def test_a_kfold_link_with_a_bad_k_warns_and_shows_the_default(k):
    at = open_page("pages/kfold.py", query={"k": k})
    assert not at.exception and not at.error
    assert at.slider(key="k_k").value == 5
    assert any("k: must be a whole number from 2 to 10" in w.value and "bad setting" in w.value for w in at.warning)


def test_a_kfold_link_with_a_good_k_opens_on_it():
    at = open_page("pages/kfold.py", query={"k": "3"})
    assert at.slider(key="k_k").value == 3 and not at.warning


@pytest.mark.parametrize("page, key", [("pages/metrics.py", "m_run"), ("pages/draw.py", "d_run")])
def test_a_link_to_a_run_that_is_not_here_warns_and_opens_the_default(trained_store, page, key):
    at = open_page(page, query={"run": BAD_RUN})
    assert not at.exception
    assert any("run: no such finished run here" in w.value for w in at.warning)
    assert at.selectbox(key=key).value in {r["id"] for r in trained_store.list()}


def test_a_metrics_link_with_an_unknown_view_warns_and_opens_the_curves(trained_store):
    run = trained_store.list()[0]
    at = open_page("pages/metrics.py", query={"run": run["id"], "view": "nonsense"})
    assert not at.exception
    assert any("view: one of Training curves" in w.value for w in at.warning)
    assert at.checkbox(key="m_log") is not None  # the first view, the curves, is the one drawn


@pytest.mark.slow
def test_a_ship_link_to_a_run_that_is_not_here_warns(trained_store):
    at = open_page("pages/ship.py", query={"run": BAD_RUN}, timeout=240)
    assert not at.exception
    assert any("run: no such finished run here" in w.value for w in at.warning)


def test_the_draw_page_says_which_model_it_uses_and_on_what_data(trained_store):
    at = open_page("pages/draw.py")
    best = max(trained_store.list(), key=lambda r: r["test_accuracy"])
    caption = next(c.value for c in at.caption if "trained on" in c.value)
    assert caption.startswith("The most accurate finished model here") and f"**{best['name']}**" in caption
    assert "the offline sample" in caption and f"{best['test_accuracy']:.2%}" in caption


def test_the_losses_page_explains_its_mean_squared_error_from_the_curves_value():
    from core.concepts import mean_squared_error

    at = open_page("pages/losses.py")
    at.slider(key="o_conf").set_value(0.7).run()
    probs = np.full(10, 0.3 / 9)
    probs[3] = 0.7
    mse = mean_squared_error(3, probs)
    assert next(m.value for m in at.metric if m.label == "Mean squared error") == f"{mse:.4f}"
    text = " ".join(m.value for m in at.markdown)
    assert "(1 − 0.70)² = **0.0900** (the curve below)" in text and f"= **{mse:.4f}**" in text
    assert (0.09 + 9 * (0.3 / 9) ** 2) / 10 == pytest.approx(mse)  # what the sentence adds up


# --- a shared link is bounded before anything is built (issue 28, item 9) -----------------------------

HUGE = '[{"type":"conv","filters":512,"kernel":3,"padding":"same"},{"type":"flatten"},{"type":"dense","units":4096}]'


def _peak_reset() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # Linux: resets VmHWM, the process's peak resident memory
        return True
    except OSError:
        return False


def _peak_mb() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024


def test_a_link_to_a_huge_model_is_refused_by_its_size_without_building_it():
    if not _peak_reset():
        pytest.skip("no /proc/self/clear_refs here (Linux only)")
    before = _peak_mb()
    at = open_page("pages/train.py", query={"model": "custom", "layers": HUGE})
    assert not at.exception
    assert any("1,644,176,384 weights" in w.value and "at most 50,000,000" in w.value for w in at.warning)
    assert at.selectbox(key="t_preset").value == "mlp"  # the defaults instead
    assert _peak_mb() - before < 500  # the 6.6 GB of weights were never allocated


def test_the_largest_model_a_link_may_ask_for_is_summarised_without_its_weights():
    from core.config import RunConfig
    from core.models import MAX_WIDTH

    layers = [{"type": "flatten"}, {"type": "dense", "units": MAX_WIDTH}, {"type": "dense", "units": 2048}]
    config = RunConfig(model="custom", layers=tuple(layers), dataset="mnist-sample")
    if not _peak_reset():
        pytest.skip("no /proc/self/clear_refs here (Linux only)")
    before = _peak_mb()
    from core.config import to_query_params

    at = open_page("pages/train.py", query=to_query_params(config))
    assert not at.exception and not at.warning
    assert any("46,438,410" in m.value for m in [*at.markdown, *at.caption])  # the summary's total
    assert _peak_mb() - before < 500  # 186 MB of weights if they were built
    for key in ("units",):  # the editor's bounds are the config's: the widest layer opens in it
        assert max(n.value for n in at.number_input if n.key and n.key.endswith(key)) == MAX_WIDTH


def test_the_capacity_caption_states_the_studys_own_numbers():
    from core.experiments import capacity_caption, capacity_frame

    frame = capacity_frame(*_capacity_study({2: (0.406, 0.4725), 8: (0.006, 0.13625), 128: (0.0, 0.11375),
                                             2048: (0.0, 0.10125)}))
    text = capacity_caption(frame)
    assert f"Here the lowest is {1 - (1 - 0.10125):.2%}, by 2048 units" in text and "reach 0.00%" in text
    assert "10%" in text and "3 points" in text
