"""A layer kind is one entry (core/layer_kinds.py): every registered kind, run through all that
reads its entry: output shape, the model built from it, the stack of N models (the same
numbers), the summary's label and Keras name, the cost table, the PyTorch and Keras code (the
same parameter count as the lab's model) and the train page's layer editor. Global average
pooling was added as an entry only."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from core.codegen import keras_layers, torch_layers
from core.config import RunConfig
from core.cost import feature_maps_text, layer_costs, receptive_fields
from core.layer_kinds import KINDS, ArchitectureError, editor_defaults
from core.models import PRESETS, build_model, count_parameters, output_shapes, preset_layers, summary
from core.stacked import StackedModel
from tests.conftest import ROOT, open_page, subprocess_env
from tests.test_codegen import needs_keras

CONV = {"type": "conv", "filters": 4, "kernel": 3, "padding": "same", "stride": 1, "activation": "relu"}


def architecture_with(kind: str) -> list[dict]:
    """A small model around one layer of `kind` with the editor's defaults: after a convolution
    when it takes an image, after a flatten when it takes features, then flattened if needed."""
    layer = {"type": kind, **editor_defaults(kind)}
    if kind == "dense":
        layer["units"] = 8
    for before in ([CONV], [CONV, {"type": "flatten"}]):
        try:
            shapes = output_shapes(before + [layer, {"type": "flatten"}])
            return before + [layer] + ([{"type": "flatten"}] if len(shapes[len(before)]) == 3 else [])
        except ArchitectureError:
            continue
    raise AssertionError(f"no small architecture takes a {kind} layer")


def configs():
    return [RunConfig.from_preset("mlp", dataset="mnist-sample").replace(model="custom", layers=tuple(architecture_with(k)))
            for k in KINDS]


@pytest.mark.parametrize("kind", list(KINDS))
def test_every_kind_builds_stacks_summarises_and_costs(kind):
    layers = architecture_with(kind)
    index = next(i for i, layer in enumerate(layers) if layer["type"] == kind)
    torch.manual_seed(0)
    models = [build_model(layers).eval() for _ in range(3)]
    x = torch.randn(5, 1, 28, 28)
    assert models[0](x).shape == (5, 10)
    # the stack of three computes what the three models compute
    stacked = StackedModel(models).eval()
    together = stacked(x.expand(3, *x.shape).contiguous())
    for i, model in enumerate(models):
        assert torch.allclose(together[i], model(x), atol=1e-5), (kind, i)
    # the summary: the kind's label and Keras name, parameters as built
    row = summary(layers)["rows"][index]
    assert row["type"] == KINDS[kind].label(layers[index])
    assert row["layer"].startswith(KINDS[kind].keras_name(layers[index]))
    assert summary(layers)["total_params"] == count_parameters(models[0]) + sum(
        b.numel() for n, b in models[0].named_buffers() if "running" in n)
    # the cost table has the layer, with its multiply-accumulates
    cost = layer_costs(layers)[index]
    assert cost["type"] == row["type"] and cost["macs"] == KINDS[kind].macs(
        layers[index], output_shapes(layers)[index - 1] if index else (1, 28, 28), output_shapes(layers)[index])


def measured_fields(layers: list[dict]) -> list[int | None]:
    """Each layer's receptive field as autograd sees it: the input pixels on which the value at
    the centre of the layer's first map depends (None: all 784 of them). Max pools become
    average pools (the same windows; a max passes a gradient to one pixel only), weights and
    biases small and positive so no ReLU is off and no tanh saturates."""
    model = build_model([{**layer, "kind": "avg"} if layer["type"] == "pool" else layer for layer in layers]).eval()
    with torch.no_grad():
        for param in model.parameters():
            param.fill_(0.01)  # small: a tanh (LeNet-5) must not saturate to a zero gradient
    out, shape = [], (1, 28, 28)
    for index, next_shape in enumerate(output_shapes(layers)[:len(layers)]):
        x = torch.ones(1, 1, 28, 28, requires_grad=True)
        value = model.forward_features(x)[index][1][0].flatten()
        # the centre of the first map (a flatten's values are its input's maps), else the first unit
        image = next_shape if len(next_shape) == 3 else shape if layers[index]["type"] == "flatten" else None
        value[(image[1] // 2) * image[2] + image[2] // 2 if image and len(image) == 3 else 0].backward()
        shape = next_shape
        support = x.grad[0, 0] != 0
        rows, cols = support.any(1).nonzero(), support.any(0).nonzero()
        side = int(rows.max() - rows.min() + 1)
        assert side == int(cols.max() - cols.min() + 1)
        out.append(None if bool(support.all()) and image is None else side)
    return out


@pytest.mark.parametrize("architecture", [*KINDS, *PRESETS])
def test_every_kinds_receptive_field_is_what_autograd_sees(architecture):
    layers = architecture_with(architecture) if architecture in KINDS else preset_layers(architecture)
    assert receptive_fields(layers) == measured_fields(layers)


def test_the_layers_page_says_how_much_of_the_digit_each_feature_map_sees():
    fields = receptive_fields(preset_layers("lenet5"))
    assert fields[:4] == [5, 6, 14, 16]
    first = feature_maps_text("conv2d", (6, 24, 24), 5, 5)
    assert first == ("conv2d: 6 maps of 24x24; each value is computed from a 5x5 patch of the 28x28 digit (its "
                     "receptive field): small enough for edges and strokes.")
    assert feature_maps_text("conv2d_1", (16, 8, 8), 14, 5).endswith(
        "a 14x14 patch of the 28x28 digit (its receptive field), against 5x5 for the first convolution: larger parts "
        "of the digit.")
    assert "the whole digit" in feature_maps_text("conv2d_9", (8, 3, 3), 30, 3)


def test_a_pool_with_its_own_stride_is_written_into_both_programs():
    from torch import nn  # noqa: F401 - the generated lines name nn

    layers = (CONV, {"type": "pool", "kind": "max", "size": 3, "stride": 1}, {"type": "flatten"})
    config = RunConfig.from_preset("mlp", dataset="mnist-sample").replace(model="custom", layers=layers)
    module = eval("nn.Sequential(" + "\n".join(torch_layers(config)) + "\n)")
    assert module(torch.randn(2, 1, 28, 28)).shape == (2, 10)  # its dense layer takes 26x26 maps, not 9x9
    assert "layers.MaxPooling2D((3, 3), strides=1)," in keras_layers(config)


def test_every_kinds_pytorch_code_builds_the_labs_model():
    from torch import nn  # noqa: F401 - the generated lines name nn

    for config in configs():
        module = eval("nn.Sequential(" + "\n".join(torch_layers(config)) + "\n)")
        lab = build_model(config.architecture())
        assert count_parameters(module) == count_parameters(lab), config.layers
        assert module(torch.randn(2, 1, 28, 28)).shape == (2, 10)


@pytest.mark.slow
def test_every_kinds_keras_code_builds_the_labs_parameter_count(tmp_path):
    """Keras 3 on its torch backend, in its own process: each kind's model has the summary's
    total parameter count (batch norm's running statistics included, as Keras counts them)."""
    needs_keras()
    programs = [("\n".join(keras_layers(config)), summary(config.architecture())["total_params"])
                for config in configs()]
    script = tmp_path / "build.py"
    script.write_text("import json, sys\nimport keras\nfrom keras import layers\n"
                      "for code, _ in json.loads(sys.argv[1]):\n"
                      "    print(keras.Sequential(eval('[' + code + '\\n]')).count_params())\n")
    out = subprocess.run([sys.executable, str(script), json.dumps(programs)], capture_output=True, text=True,
                         env=subprocess_env(KERAS_BACKEND="torch"), cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert [int(v) for v in out.stdout.split()] == [total for _, total in programs]


def test_the_layer_editor_adds_every_kind(monkeypatch, tmp_path):
    monkeypatch.setenv("MNIST_LAB_RUNS", str(tmp_path))
    at = open_page("pages/train.py")
    at.selectbox(key="t_preset").set_value("cnn").run()
    for kind in KINDS:
        at.selectbox(key="t_add_type").set_value(kind).run()
        at.button(key="t_add").click().run()
        assert not at.exception, kind
    shown = [e.value for e in at.markdown]
    assert all(any(f". {kind}**" in text for text in shown) for kind in KINDS)


def test_global_average_pooling_is_the_mean_of_each_feature_map():
    layers = [CONV, {"type": "global_avg_pool"}]
    assert output_shapes(layers)[1] == (4,)
    model = build_model(layers).eval()
    x = torch.randn(2, 1, 28, 28)
    features = dict(model.forward_features(x))
    maps = features["conv2d"]
    assert torch.allclose(features["global_average_pooling2d"], maps.mean((2, 3)))
    with pytest.raises(ArchitectureError, match="global average pooling needs an image"):
        output_shapes([{"type": "flatten"}, {"type": "global_avg_pool"}])


def test_train_config_trains_any_architecture_from_a_file(tmp_path, capsys):
    """`train --config FILE`: a config written by hand (here a CNN ending in global average
    pooling, which the presets do not use), then the stored run's own config.json with two
    flags over its fields; a file that is not a config is one error line."""
    from core.cli import main
    from core.store import RunStore

    hand = {"layers": [CONV, {"type": "pool", "kind": "max", "size": 2}, {"type": "global_avg_pool"}],
            "dataset": "mnist-sample", "epochs": 1, "train_subset": 500, "batch_size": 50, "name": "by hand"}
    (tmp_path / "hand.json").write_text(json.dumps(hand))
    runs = str(tmp_path / "runs")
    assert main(["train", "--config", str(tmp_path / "hand.json"), "--runs-dir", runs, "--json"]) == 0
    first = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["run_id"]
    store = RunStore(runs)
    config = store.config(first)
    assert config.model == "custom" and list(config.layers) == hand["layers"] and config.name == "by hand"
    assert summary(config.architecture())["rows"][2]["type"] == "GlobalAveragePooling2D"
    saved = store.run_dir(first) / "config.json"
    assert main(["train", "--config", str(saved), "--epochs", "2", "--seed", "5", "--runs-dir", runs, "--json"]) == 0
    second = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["run_id"]
    assert store.config(second) == config.replace(epochs=2, seed=5)
    assert store.get(second)["epochs_done"] == 2
    for content, says in (("not json", "not JSON"), ("[1, 2]", "expected a JSON object"),
                          ('{"lr": -1}', "lr"), ('{"layers": [{"type": "sideways"}]}', "unknown layer type")):
        (tmp_path / "bad.json").write_text(content)
        assert main(["train", "--config", str(tmp_path / "bad.json"), "--runs-dir", runs]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and says in err and len(err.strip().splitlines()) == 1, err
    assert len(store.list()) == 2
