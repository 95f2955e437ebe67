"""The lecture's topics the lab added in this round, each view checked against torch and
scikit-learn: backpropagation step by step, vanishing gradients on real runs, L2 and the
regularize arm, the slides' recipe as the `mlp` preset, what the network learned (first-layer
weights, the hidden-layer map), robustness to noise, rotation and FGSM."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pytest
import torch

from core.runner import train_run
from core import backprop as bp
from core.config import RunConfig
from core.inference import load_classifier
from core.experiments import activation_configs, gradient_norms_frame, regularization_configs
from core.store import RunStore
from tests.conftest import ROOT, open_page, subprocess_env, vega_nodes


def chart_frames(at) -> list:
    """The data of every Altair chart an AppTest run drew (decoded from the Arrow bytes
    Streamlit sends to the browser), in page order."""
    return [pa.ipc.open_stream(ds.data.data).read_pandas() for node in vega_nodes(at) for ds in node.proto.datasets]


def torch_gradients(p: dict, x, t, activation: str) -> dict:
    """The 2-2-2 network written independently as torch layers: its autograd gradients."""
    h = torch.nn.Linear(2, 2, dtype=torch.float64)
    o = torch.nn.Linear(2, 2, dtype=torch.float64)
    def tensor(values):
        return torch.tensor(values, dtype=torch.float64)

    with torch.no_grad():
        h.weight.copy_(tensor([[p["w1"], p["w2"]], [p["w3"], p["w4"]]]))
        h.bias.copy_(tensor([p["b1"], p["b2"]]))
        o.weight.copy_(tensor([[p["w5"], p["w6"]], [p["w7"], p["w8"]]]))
        o.bias.copy_(tensor([p["b3"], p["b4"]]))
    f = {"sigmoid": torch.sigmoid, "tanh": torch.tanh, "relu": torch.relu}[activation]
    out = f(o(f(h(torch.tensor(x, dtype=torch.float64)))))
    (0.5 * ((torch.tensor(t, dtype=torch.float64) - out) ** 2).sum()).backward()
    g = {"w1": h.weight.grad[0, 0], "w2": h.weight.grad[0, 1], "w3": h.weight.grad[1, 0], "w4": h.weight.grad[1, 1],
         "w5": o.weight.grad[0, 0], "w6": o.weight.grad[0, 1], "w7": o.weight.grad[1, 0], "w8": o.weight.grad[1, 1],
         "b1": h.bias.grad[0], "b2": h.bias.grad[1], "b3": o.bias.grad[0], "b4": o.bias.grad[1]}
    return {k: float(v) for k, v in g.items()}


# --- backpropagation -------------------------------------------------------------------------------

def test_the_backprop_example_is_mazurs_worked_example():
    p, x, t = bp.START, bp.START_INPUTS, bp.START_TARGETS
    assert bp.loss(p, x, t) == pytest.approx(0.298371109, abs=1e-9)
    after = bp.sgd_step(p, bp.autograd_gradients(p, x, t), 0.5)
    assert after["w5"] == pytest.approx(0.35891648, abs=1e-8)
    assert after["w1"] == pytest.approx(0.149780716, abs=1e-9)


@pytest.mark.parametrize("activation", bp.ACTIVATIONS)
def test_backprop_gradients_equal_autograd_and_the_chain_rule(activation):
    rng = np.random.default_rng(3)
    for _ in range(5):
        p = {k: float(v) for k, v in zip(bp.PARAMS, rng.normal(0, 1, len(bp.PARAMS)))}
        x, t = tuple(rng.uniform(-1, 1, 2)), tuple(rng.uniform(0, 1, 2))
        expected = torch_gradients(p, x, t, activation)
        for name, value in bp.autograd_gradients(p, x, t, activation).items():
            assert value == pytest.approx(expected[name], abs=1e-12)
        for name, value in bp.chain_rule_gradients(p, x, t, activation).items():
            assert value == pytest.approx(expected[name], abs=1e-12)


def test_backprop_page_steps_forward_loss_backward_update():
    at = open_page("pages/backprop.py")
    assert not at.exception
    assert "Backpropagation" in at.title[0].value
    p, x, t = dict(bp.START), bp.START_INPUTS, bp.START_TARGETS
    assert any(f"{bp.forward(p, x)['o1']:.6f}" in m.value for m in at.markdown)  # 1. forward pass
    at = at.button(key="bp_next").click().run()
    assert any(f"{bp.loss(p, x, t):.9f}" in m.value for m in at.markdown)  # 2. loss
    at = at.button(key="bp_next").click().run()  # 3. backward pass: autograd next to the chain rule
    table = at.dataframe[0].value.set_index("parameter")
    expected = torch_gradients(p, x, t, "sigmoid")
    for name in bp.PARAMS:
        assert table.loc[name, "autograd ∂L/∂w"] == f"{expected[name]:.9f}"
        assert table.loc[name, "chain rule product"] == f"{expected[name]:.9f}"
    assert table["equal"].all()
    at = at.button(key="bp_next").click().run()  # 4. the update, with learning rate 0.5: weights only, as Mazur
    update = at.dataframe[0].value.set_index("parameter")
    for name in bp.PARAMS:
        moved = p[name] - 0.5 * expected[name] if name.startswith("w") else p[name]
        assert update.loc[name, "after"] == pytest.approx(moved)
    assert at.number_input(key="bp_w5").value == pytest.approx(0.35891648, abs=1e-8)
    new_loss = bp.loss(bp.sgd_step(p, bp.autograd_gradients(p, x, t), 0.5), x, t)
    assert any(f"{new_loss:.9f}" in m.value for m in at.markdown)
    note = " ".join(c.value for c in at.caption)
    assert "0.291027924" in note and f"{new_loss:.9f}" in note  # his post's figure, and the computed one
    losses = chart_frames(at)[-1]["loss"].tolist()
    assert losses[1] < losses[0]
    at.number_input(key="bp_n").set_value(200)
    at = at.button(key="bp_run").click().run()
    losses = chart_frames(at)[-1]["loss"].to_numpy()
    assert len(losses) == 202 and np.all(np.diff(losses) < 0)  # the loss going down, every step


def test_mazurs_example_updates_the_weights_and_the_biases_only_when_asked():
    p, x, t = bp.START, bp.START_INPUTS, bp.START_TARGETS
    grads = bp.autograd_gradients(p, x, t)
    # The weights his post prints after one update (biases fixed), and the loss they give: 0.291027774
    # (his post prints 0.291027924 for it; the page says both).
    mazur = {"w1": 0.149780716, "w2": 0.19956143, "w3": 0.24975114, "w4": 0.29950229, "w5": 0.35891648,
             "w6": 0.408666186, "w7": 0.511301270, "w8": 0.561370121}
    after = bp.sgd_step(p, grads, 0.5)
    for name, value in mazur.items():
        assert after[name] == pytest.approx(value, abs=1e-8)
    assert bp.loss(after, x, t) == pytest.approx(0.291027774, abs=1e-9)
    assert bp.loss({**p, **mazur}, x, t) == pytest.approx(0.291027774, abs=1e-9)
    with_biases = bp.sgd_step(p, grads, 0.5, update_biases=True)
    assert with_biases["b1"] == pytest.approx(p["b1"] - 0.5 * grads["b1"])
    assert bp.loss(with_biases, x, t) == pytest.approx(0.280471447, abs=1e-9)
    at = open_page("pages/backprop.py")
    at.toggle(key="bp_biases").set_value(True).run()
    for _ in range(3):
        at = at.button(key="bp_next").click().run()
    update = at.dataframe[0].value.set_index("parameter")
    assert update.loc["b1", "after"] == pytest.approx(with_biases["b1"])
    assert any("0.280471447" in m.value for m in at.markdown)


def test_backprop_page_takes_edited_inputs_weights_and_learning_rate():
    at = open_page("pages/backprop.py")
    at.number_input(key="bp_x1").set_value(0.7)
    at.number_input(key="bp_w3").set_value(-1.2)
    at.selectbox(key="bp_act").set_value("tanh")
    at = at.run()
    p = {**bp.START, "w3": -1.2}
    x = (0.7, bp.START_INPUTS[1])
    for _ in range(2):
        at = at.button(key="bp_next").click().run()
    table = at.dataframe[0].value.set_index("parameter")
    expected = torch_gradients(p, x, bp.START_TARGETS, "tanh")
    assert table.loc["w3", "autograd ∂L/∂w"] == f"{expected['w3']:.9f}"


def test_sigmoid_gradients_vanish_towards_the_input_on_the_course_mlp(small, tmp_path, monkeypatch):
    """Measured on real runs: the first layer's gradient relative to the last one is far
    smaller with sigmoid than with ReLU, and the page shows both runs' norms per layer."""
    monkeypatch.setenv("MNIST_LAB_RUNS", str(tmp_path))
    store = RunStore(tmp_path)
    base = RunConfig.from_preset("mlp", dataset="mnist-sample", epochs=1, name="course MLP")
    runs = {}
    for config in activation_configs(base):
        run_id = store.create(config, status="running", group="grad-test")
        train_run(store, config, small, run_id=run_id)
        runs[config.extra["activation"]] = store.history(run_id)
    frame = gradient_norms_frame(runs)
    ratio = {act: f[f.depth == 1].norm.iloc[-1] / f[f.depth == f.depth.max()].norm.iloc[-1]
             for act, f in frame.groupby("run")}
    assert ratio["sigmoid"] < ratio["relu"] / 5
    at = open_page("pages/backprop.py")
    assert not at.exception
    shown = chart_frames(at)[-2]  # the per-layer chart of the last epoch
    for act in ("sigmoid", "relu"):
        got = shown[shown.run == act].sort_values("depth").norm.to_numpy()
        want = frame[(frame.run == act) & (frame.epoch == 1)].sort_values("depth").norm.to_numpy()
        assert got == pytest.approx(want)


# --- L2 and the slides' recipe --------------------------------------------------------------------

@pytest.mark.slow
def test_cli_trains_the_slides_recipe_with_l2(tmp_path):
    out = subprocess.run([sys.executable, "-m", "core", "train", "--dataset", "mnist-sample", "--model", "mlp",
                          "--epochs", "1", "--l2", "0.0001", "--runs-dir", str(tmp_path), "--json"],
                         capture_output=True, text=True, env=subprocess_env(), cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    config = json.loads((tmp_path / result["run_id"] / "config.json").read_text())["config"]
    assert config["l2"] == 0.0001 and config["lr"] == 0.001 and config["lr_schedule"] == "constant"
    assert config["batch_size"] == 50 and config["val_split"] == 0.2 and config["optimizer"] == "adam"
    assert [layer.get("units") for layer in RunConfig.from_dict(config).architecture() if layer["type"] == "dense"] \
        == [256, 64, 32]
    assert result["parameters"] == 219_818  # Flatten -> 256 -> 64 -> 32 -> 10, as the slides' summary()


def test_l2_adds_lambda_times_the_squared_kernels_to_the_loss(small):
    """Keras' kernel_regularizer=l2(λ): the recorded penalty is λ·Σw² over the kernels (not the biases)."""
    from core.training import train

    result = train(RunConfig.from_preset("mlp", dataset="mnist-sample", epochs=1, l2=1e-3, train_subset=200), small)
    kernels = [v for k, v in result.model.state_dict().items() if k.endswith("weight") and v.dim() > 1]
    assert result.history[-1]["l2_penalty"] == pytest.approx(1e-3 * sum(float((w * w).sum()) for w in kernels),
                                                             rel=1e-5)


def test_regularize_arm_trains_the_same_model_without_and_with_l2_and_dropout():
    from core.experiments import regularization_base

    arms = regularization_configs(regularization_base("mnist-sample", 2, 300), 512, 1e-3, 0.5)
    assert [(c.l2, any(layer["type"] == "dropout" for layer in c.architecture())) for c in arms] == \
        [(0.0, False), (1e-3, False), (0.0, True), (1e-3, True)]
    widths = {tuple(layer.get("units") for layer in c.architecture() if layer["type"] == "dense") for c in arms}
    assert len(widths) == 1


# --- what the network learned, robustness ---------------------------------------------------------

def test_what_it_learned_shows_the_first_layer_and_a_pca_map_equal_to_scikit_learn(trained_store, sample):
    from sklearn.decomposition import PCA

    run = next(r for r in trained_store.list() if r["name"] == "mlp short")
    at = open_page("pages/metrics.py", query={"run": run["id"], "view": "What it learned"})
    assert not at.exception
    assert at.get("image")  # the 28x28 tiles of the first layer's weights
    layer = at.selectbox(key="m_emb_layer").value
    shown = chart_frames(at)[0].sort_values("index")
    clf = load_classifier(trained_store.run_dir(run["id"]))
    x = torch.from_numpy(sample.test_images[shown["index"].to_numpy()].astype(np.float32) / 255.0)[:, None]
    with torch.no_grad():
        features = dict(clf.model.forward_features(clf.normalize(x)))[layer]
    expected = PCA(n_components=2, random_state=0).fit_transform(features.detach().reshape(len(x), -1).numpy())
    assert shown[["x", "y"]].to_numpy() == pytest.approx(expected, abs=1e-4)
    preds = trained_store.predictions(run["id"])["preds"][shown["index"].to_numpy()]
    assert (shown["predicted"].astype(int).to_numpy() == preds).all()
    assert shown["image"].str.startswith("data:image/png;base64,").all()  # the digit on hover


@pytest.mark.slow
def test_fgsm_accuracy_on_the_page_equals_a_direct_computation(trained_store, sample):
    run = next(r for r in trained_store.list() if r["name"] == "cnn short")
    at = open_page("pages/metrics.py", query={"run": run["id"], "view": "Robustness"})
    at.radio(key="m_rob_kind").set_value("fgsm")
    at = at.run()
    at.slider(key="m_rob_fgsm").set_value(0.2)
    at = at.run()
    assert not at.exception
    shown = {m.label: m.value for m in at.metric}
    # directly: x + 0.2·sign(∇x cross-entropy), clipped, with the model's own input normalisation, on the
    # weights whose test predictions the page's header shows (the run's final weights)
    clf = load_classifier(trained_store.run_dir(run["id"]), "last")
    x = torch.from_numpy(sample.test_images.astype(np.float32) / 255.0).requires_grad_(True)
    y = torch.from_numpy(sample.test_labels.astype(np.int64))
    torch.nn.functional.cross_entropy(clf.model(clf.normalize(x[:, None])), y).backward()
    adv = (x + 0.2 * x.grad.sign()).clamp(0, 1).detach()
    with torch.no_grad():
        acc = float((clf.model(clf.normalize(adv[:, None])).argmax(1) == y).float().mean())
        clean = float((clf.model(clf.normalize(x.detach()[:, None])).argmax(1) == y).float().mean())
    assert shown["Accuracy at FGSM ε = 0.20"] == f"{acc:.2%}"  # as the slider shows it
    assert shown["Accuracy on the clean digits"] == f"{clean:.2%}"
    assert acc < clean - 0.2  # the attack works
    curve = chart_frames(at)[0]
    assert curve["accuracy"].iloc[0] == pytest.approx(clean) and curve["accuracy"].is_monotonic_decreasing


def test_the_fgsm_curve_takes_the_gradient_once_and_gives_each_epsilons_own_attack(trained_store, sample):
    """The sign of the gradient is taken at the clean digits, so the curve computes it once; each
    point equals the attack recomputed from scratch at that ε."""
    from core import robustness as R

    run = next(r for r in trained_store.list() if r["name"] == "cnn short")
    clf = load_classifier(trained_store.run_dir(run["id"]), "last")
    images, labels = sample.test_images[:300] / 255.0, sample.test_labels[:300]
    calls = []
    real = R.fgsm_direction
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(R, "fgsm_direction", lambda *a, **k: calls.append(1) or real(*a, **k))
        curve = R.accuracy_curve(clf, images, labels, "fgsm", R.AMOUNTS["fgsm"])
    assert len(calls) == 1
    for eps, acc in zip(curve["amount"], curve["accuracy"]):
        alone = R.accuracy(clf, R.fgsm(clf, images, labels, eps) if eps else images, labels)
        assert acc == alone, eps
    assert curve["accuracy"].iloc[-1] < curve["accuracy"].iloc[0] - 0.2


@pytest.mark.slow
def test_noise_and_rotation_lower_accuracy_and_show_the_changed_digits(trained_store):
    run = next(r for r in trained_store.list() if r["name"] == "cnn short")
    for kind, amount in (("noise", 0.6), ("rotation", 90.0)):
        at = open_page("pages/metrics.py", query={"run": run["id"], "view": "Robustness"})
        at.radio(key="m_rob_kind").set_value(kind)
        at = at.run()
        at.slider(key=f"m_rob_{kind}").set_value(amount)
        at = at.run()
        assert not at.exception
        shown = {m.label: m.value for m in at.metric}
        clean = float(shown["Accuracy on the clean digits"].rstrip("%"))
        changed = float(next(v for k, v in shown.items() if k.startswith("Accuracy at")).rstrip("%"))
        assert changed < clean - 10
        assert len(at.get("image")) == 16  # 8 clean digits and the same 8 changed
