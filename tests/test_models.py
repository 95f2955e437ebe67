"""Models: the course's presets, the Keras-style summary, shapes against torch, clear errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from core.models import (ArchitectureError, build_model, count_parameters, course_mlp, output_shapes,
                         summary)


def test_course_mlp_has_219818_parameters_like_the_slides():
    s = summary(course_mlp())
    assert s["total_params"] == 219_818 and s["non_trainable_params"] == 0
    assert [r["output_shape"] for r in s["rows"]] == ["(None, 784)", "(None, 256)", "(None, 64)",
                                                       "(None, 32)", "(None, 10)"]
    assert [r["params"] for r in s["rows"]] == [0, 200_960, 16_448, 2_080, 330]
    assert s["rows"][-1]["type"] == "Dense(10, softmax)"


def test_lenet5_and_fast_cnn_build_and_give_logits():
    for name, params in (("lenet5", 61_706), ("cnn", None)):
        from core.models import preset_layers

        model = build_model(preset_layers(name))
        out = model(torch.zeros(4, 1, 28, 28))
        assert tuple(out.shape) == (4, 10)
        if params:
            assert count_parameters(model) == params


@pytest.mark.parametrize("kernel,padding,stride", [(3, "valid", 1), (5, "same", 1), (3, "same", 2), (4, "same", 1),
                                                   (5, "valid", 2)])
def test_conv_output_size_matches_torch(kernel, padding, stride):
    layers = [{"type": "conv", "filters": 4, "kernel": kernel, "padding": padding, "stride": stride},
              {"type": "flatten"}]
    predicted = output_shapes(layers)[0]
    real = build_model(layers).blocks["conv2d"](torch.zeros(1, 1, 28, 28)).shape[1:]
    assert predicted == tuple(real)
    if padding == "same" and stride == 1:
        assert predicted[1:] == (28, 28)  # 'same' keeps the size
    if padding == "valid":
        assert predicted[1] == (28 - kernel) // stride + 1


def test_pooling_output_size_matches_torch():
    layers = [{"type": "pool", "kind": "avg", "size": 3}, {"type": "flatten"}]
    assert output_shapes(layers)[0] == tuple(nn.AvgPool2d(3)(torch.zeros(1, 1, 28, 28)).shape[1:])


def test_kernel_larger_than_its_input_is_explained():
    layers = [{"type": "pool", "size": 2}, {"type": "pool", "size": 2}, {"type": "pool", "size": 2},
              {"type": "conv", "filters": 8, "kernel": 5}, {"type": "flatten"}]
    with pytest.raises(ArchitectureError, match=r"layer 4 \(conv\): kernel 5x5 is larger than its 3x3 input"):
        output_shapes(layers)


def test_dense_on_an_image_asks_for_a_flatten():
    with pytest.raises(ArchitectureError, match="add a flatten layer before it"):
        output_shapes([{"type": "dense", "units": 10}])
    with pytest.raises(ArchitectureError, match="add a flatten layer before the output"):
        output_shapes([{"type": "conv", "filters": 2, "kernel": 3}])


def test_bad_layer_fields_name_the_layer():
    with pytest.raises(ArchitectureError, match=r"layer 2 \(dense\): unknown activation 'swish'"):
        output_shapes([{"type": "flatten"}, {"type": "dense", "units": 3, "activation": "swish"}])
    with pytest.raises(ArchitectureError, match=r"layer 1 \(dropout\): rate must be in \[0, 1\)"):
        output_shapes([{"type": "dropout", "rate": 1.5}, {"type": "flatten"}])
    with pytest.raises(ArchitectureError, match="units must be a whole number from 1 to 16,384"):
        output_shapes([{"type": "flatten"}, {"type": "dense", "units": 0}])


def test_every_activation_and_layer_kind_builds():
    layers = [{"type": "conv", "filters": 3, "kernel": 3, "padding": "same", "activation": "leaky_relu", "alpha": 0.2},
              {"type": "batchnorm"}, {"type": "pool", "kind": "avg"}, {"type": "dropout", "rate": 0.3},
              {"type": "flatten"}]
    layers += [{"type": "dense", "units": 8, "activation": a} for a in ("linear", "sigmoid", "tanh", "relu")]
    layers += [{"type": "batchnorm"}]
    model = build_model(layers)
    feats = model.forward_features(torch.zeros(2, 1, 28, 28))
    assert [name for name, _ in feats][:3] == ["conv2d", "batch_normalization", "average_pooling2d"]
    assert tuple(feats[-1][1].shape) == (2, 10)
    s = summary(layers)
    assert s["non_trainable_params"] == 2 * 3 + 2 * 8  # batch norm's running mean and variance


def test_binary_task_has_one_output_with_sigmoid():
    s = summary(course_mlp(), num_outputs=1)
    assert s["rows"][-1]["output_shape"] == "(None, 1)" and s["rows"][-1]["type"] == "Dense(1, sigmoid)"
