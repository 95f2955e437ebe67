"""The concept pages' maths (core.concepts) checked against torch, and the Learn pages driven
through AppTest."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from core import concepts as C
from tests.conftest import open_page


@pytest.mark.parametrize("name", list(C.ACTIVATION_FACTS))
def test_activations_and_derivatives_match_torch_autograd(name):
    x = torch.linspace(-6, 6, 241, dtype=torch.float64, requires_grad=True)
    torch_fn = {"linear": lambda t: 1.7 * t, "sigmoid": torch.sigmoid, "tanh": torch.tanh, "relu": torch.relu,
                "leaky_relu": lambda t: F.leaky_relu(t, 0.1)}[name]
    y = torch_fn(x)
    (grad,) = torch.autograd.grad(y.sum(), x)
    ours, dours = C.activation(name, x.detach().numpy(), a=1.7, alpha=0.1)
    np.testing.assert_allclose(ours, y.detach().numpy(), atol=1e-12)
    keep = np.abs(x.detach().numpy()) > 1e-9  # ReLU's kink at 0: both sides are conventions
    np.testing.assert_allclose(dours[keep], grad.numpy()[keep], atol=1e-12)


def test_softmax_sums_to_one_matches_torch_and_temperature_flattens():
    z = np.array([2.0, 1.0, 0.1])
    np.testing.assert_allclose(C.softmax(z), torch.softmax(torch.tensor(z), 0).numpy())
    assert C.softmax(z).sum() == pytest.approx(1.0)
    assert C.softmax(z, 5.0).max() < C.softmax(z).max() < C.softmax(z, 0.5).max()
    with pytest.raises(ValueError, match="temperature"):
        C.softmax(z, 0)


@pytest.mark.parametrize("n, k", [(28, 3), (28, 5), (13, 3), (7, 7)])
@pytest.mark.parametrize("padding", ["valid", "same"])
def test_convolution_output_sizes_match_torch_layers(n, k, padding):
    layer = torch.nn.Conv2d(1, 1, k, padding=padding)
    expected = layer(torch.zeros(1, 1, n, n)).shape[-1]
    assert C.conv_output_size(n, k, padding) == expected
    assert C.convolve2d(np.zeros((n, n)), np.ones((k, k)), padding).shape == (expected, expected)
    assert C.convolve1d(np.zeros(n), np.ones(k), padding).shape == (expected,)


def test_vertical_edge_kernel_responds_to_a_vertical_edge():
    img = np.zeros((8, 8))
    img[:, 4:] = 1.0
    out = C.convolve2d(img, C.KERNELS["vertical edges"], "valid")
    assert np.abs(out[:, 2]).max() == 4 and np.abs(out[:, 0]).max() == 0


def test_pooling_the_course_example_by_hand():
    np.testing.assert_array_equal(C.pool2d(C.COURSE_POOL_GRID, 2, "max"), [[5, 7], [9, 7]])
    np.testing.assert_allclose(C.pool2d(C.COURSE_POOL_GRID, 2, "avg"), [[3, 4.75], [4, 4]])


@pytest.mark.parametrize("n, size", [(28, 2), (26, 2), (7, 2), (9, 3)])
def test_pooling_output_sizes_match_torch_layers(n, size):
    for kind, layer in (("max", torch.nn.MaxPool2d(size)), ("avg", torch.nn.AvgPool2d(size))):
        assert C.pool2d(np.zeros((n, n)), size, kind).shape == tuple(layer(torch.zeros(1, 1, n, n)).shape[-2:])


def test_losses_match_torch():
    p = np.array([0.1, 0.6, 0.3])
    assert C.categorical_crossentropy(1, p) == pytest.approx(
        float(F.nll_loss(torch.log(torch.tensor(p))[None], torch.tensor([1]))))
    assert C.binary_crossentropy(1.0, 0.8) == pytest.approx(
        float(F.binary_cross_entropy(torch.tensor([0.8], dtype=torch.float64), torch.tensor([1.0], dtype=torch.float64))))
    assert C.binary_crossentropy(0.0, 0.8) == pytest.approx(-np.log(0.2))
    assert C.mean_squared_error(1, p) == pytest.approx(float(F.mse_loss(torch.tensor(p), torch.tensor([0.0, 1, 0]))))


def test_dropout_scales_kept_units_and_batchnorm_normalizes():
    kept, out = C.dropout_demo(np.ones(1000), 0.25, seed=0)
    assert np.allclose(out[kept], 1 / 0.75) and np.all(out[~kept] == 0)
    assert 0.65 < kept.mean() < 0.85
    normed = C.batchnorm_demo(np.random.default_rng(0).normal(5, 3, (64, 4)))
    np.testing.assert_allclose(normed.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(normed.std(0), 1, atol=1e-2)


def test_relu_network_separates_circles_where_the_linear_one_cannot():
    X, y = C.toy_data("circles", 300, seed=0)
    linear, relu = C.train_toy(X, y, "linear"), C.train_toy(X, y, "relu")
    assert relu["accuracy"] > 0.95 and linear["accuracy"] < 0.75
    assert len(relu["grid"]) == 60 * 60


def test_optimizer_race_converges_and_a_too_large_rate_diverges():
    paths = C.race("elongated valley", {"SGD": 0.6, "SGD + momentum": 0.05, "Adam": 0.3}, steps=150)
    final = paths.groupby("optimizer").last()
    assert bool(final.loc["SGD", "diverged"])          # 1 - 4·lr = -1.4: each step overshoots further
    assert final.loc["Adam", "loss"] < 0.05 and not bool(final.loc["Adam", "diverged"])
    assert final.loc["SGD + momentum", "loss"] < 0.05
    start = C.SURFACES["elongated valley"]["start"]
    assert tuple(paths[paths.step == 0][["x", "y"]].iloc[0]) == start


# --- the Learn pages ------------------------------------------------------------------------------

def test_activations_page_derivative_softmax_and_nonlinearity():
    at = open_page("pages/activations.py")
    assert not at.exception
    at.selectbox(key="a_fn").set_value("sigmoid").run()
    assert any("largest |f'(x)| on this range is 0.250" in c.value for c in at.caption)
    at.selectbox(key="a_fn").set_value("linear").run()
    at.slider(key="a_slope").set_value(2.0).run()
    assert any("is 2.000" in c.value for c in at.caption)
    at.text_input(key="a_logits").input("0, 0, 0, 0").run()
    assert any("sum to **1.000**" in m.value and "sum to **2.000**" in m.value for m in at.markdown)
    at.text_input(key="a_logits").input("1, x").run()
    assert any("Logits" in e.value for e in at.error)
    at.slider(key="a_b").set_value(2.0).run()
    acc = {m.label: float(m.value.rstrip("%")) for m in at.metric}
    assert acc["Accuracy with relu"] > acc["Accuracy with linear"]
    at.radio(key="a_toy").set_value("circles").run()
    acc = {m.label: float(m.value.rstrip("%")) for m in at.metric}
    assert acc["Accuracy with relu"] > 95 and acc["Accuracy with linear"] < 75


def test_layers_page_padding_pooling_and_missing_model_hint():
    at = open_page("pages/layers.py")
    assert not at.exception
    assert any("= **26**" in m.value for m in at.markdown)
    at.radio(key="l_padding").set_value("same").run()
    assert any("= **28**" in m.value for m in at.markdown)
    assert any("Max: `[[5.0, 7.0], [9.0, 7.0]]`" in m.value and "[[3.0, 4.75], [4.0, 4.0]]" in m.value
               for m in at.markdown)
    at.text_area(key="l_grid").input("1 2\n3 4").run()
    assert any("Max: `[[4.0]]`" in m.value and "average: `[[2.5]]`" in m.value for m in at.markdown)
    at.selectbox(key="l_kernel").set_value("custom").run()
    at.text_input(key="l_custom").input("1 2 3").run()
    assert any("need 9 numbers" in e.value for e in at.error)
    assert any("No finished run" in i.value for i in at.info)  # feature maps need a model: a hint, a link


def test_layers_page_shows_feature_maps_of_a_trained_cnn(trained_store):
    at = open_page("pages/layers.py")
    assert not at.exception
    assert at.selectbox(key="l_run").value
    assert len(at.get("image")) >= 8
    # each conv layer's caption: how much of the digit one value sees, from the model's own layers
    from core.cost import receptive_fields
    from core.inference import load_classifier

    layers = load_classifier(trained_store.run_dir(at.selectbox(key="l_run").value)).model.layer_specs
    convs = [f for layer, f in zip(layers, receptive_fields(layers)) if layer["type"] == "conv"]
    captions = [c.value for c in at.caption if "(its receptive field)" in c.value]
    assert len(captions) == len(convs) >= 2
    assert f"a {convs[0]}x{convs[0]} patch" in captions[0] and captions[0].endswith("edges and strokes.")
    assert f"a {convs[1]}x{convs[1]} patch" in captions[1] and f"against {convs[0]}x{convs[0]}" in captions[1]


def test_losses_page_values_and_divergence():
    at = open_page("pages/losses.py")
    assert not at.exception
    at.slider(key="o_conf").set_value(0.5).run()
    shown = {m.label: m.value for m in at.metric}
    assert shown["Categorical cross-entropy"] == f"{np.log(2):.4f}"
    assert shown["Mean squared error"] == f"{C.mean_squared_error(3, np.r_[[0.5 / 9] * 3, 0.5, [0.5 / 9] * 6]):.4f}"
    assert not at.warning
    at.slider(key="o_lr_sgd").set_value(0.6).run()
    assert any(w.value.startswith("SGD diverged") for w in at.warning)
