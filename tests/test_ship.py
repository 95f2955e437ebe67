"""Shipping a model: the exact inference rewrite, ONNX export of every preset and of editor-built
architectures, fp16 and int8 variants, what a model costs per layer and per platform, the
`python -m core export` command, the Ship page and the draw page's int8 toggle."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from core.runner import train_run
from core import cost, ship
from core.config import RunConfig
from core.export import ShippedModel, inference_layers
from core.models import PRESETS, build_model, course_mlp, preset_layers
from core.store import RunStore
from tests.conftest import FULL_MNIST, open_page, subprocess_env

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")


def randomized_batchnorm(model, negative: bool = False):
    """Give every batch norm non-trivial statistics (as training would), so that folding it is tested."""
    gen = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=gen))
            m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
            with torch.no_grad():
                m.weight.copy_(torch.rand(n, generator=gen) + 0.5)
                if negative:
                    m.weight[0] = -0.7
                m.bias.copy_(torch.randn(n, generator=gen))
    return model.eval()


def reference_probs(model, x):
    with torch.no_grad():
        return torch.softmax(model((x - 0.13) / 0.31), 1)


CUSTOM = [  # what the layer editor can build: BN after dense, valid conv after BN, avg pooling, dropout
    {"type": "conv", "filters": 8, "kernel": 3, "padding": "valid", "activation": "relu"},
    {"type": "batchnorm"},
    {"type": "conv", "filters": 8, "kernel": 3, "padding": "valid", "activation": "tanh"},
    {"type": "batchnorm"},
    {"type": "pool", "kind": "avg", "size": 2},
    {"type": "dropout", "rate": 0.2},
    {"type": "flatten"},
    {"type": "dense", "units": 32, "activation": "linear"},
    {"type": "batchnorm"},
    {"type": "dense", "units": 16, "activation": "sigmoid"},
]


@pytest.mark.parametrize("layers", [*[preset_layers(p) for p in PRESETS], CUSTOM], ids=[*PRESETS, "custom"])
@pytest.mark.parametrize("negative", [False, True], ids=["positive-bn", "negative-bn"])
def test_the_inference_rewrite_gives_the_same_probabilities(layers, negative):
    model = randomized_batchnorm(build_model(layers), negative)
    x = torch.rand(16, 1, 28, 28)
    shipped = ShippedModel(model, 0.13, 0.31).eval()
    with torch.no_grad():
        assert torch.allclose(shipped(x), reference_probs(model, x), atol=1e-5)


def test_batch_norms_fold_away_where_exact_and_stay_where_not():
    cnn = randomized_batchnorm(build_model(preset_layers("cnn")))
    kinds = [type(m).__name__ for m in inference_layers(cnn)]
    # the first BN moves past its max pooling but stays before the 'same'-padded conv; the second folds
    # into the dense layer after the flatten
    assert kinds == ["Conv2d", "ReLU", "MaxPool2d", "BatchNorm2d", "Conv2d", "ReLU", "MaxPool2d", "Flatten",
                     "Linear", "ReLU", "Linear"]
    custom = randomized_batchnorm(build_model(CUSTOM))
    assert not any("BatchNorm" in type(m).__name__ for m in inference_layers(custom))
    assert not any(isinstance(m, torch.nn.Dropout) for m in inference_layers(custom))
    negative = randomized_batchnorm(build_model(preset_layers("cnn")), negative=True)
    kinds = [type(m).__name__ for m in inference_layers(negative)]
    assert kinds.index("BatchNorm2d") < kinds.index("MaxPool2d")  # a negative scale does not commute with max


# --- cost ----------------------------------------------------------------------------------------

def test_layer_costs_of_the_course_mlp():
    rows = cost.layer_costs(course_mlp())
    assert [r["macs"] for r in rows] == [0, 784 * 256, 256 * 64, 64 * 32, 32 * 10]
    assert cost.totals(rows)["params"] == 219_818  # the slides' summary
    assert [r["activations"] for r in rows] == [784, 256, 64, 32, 10]
    # flatten: 784 in + 784 out, float32
    assert cost.peak_activation_bytes(rows, "fp32") == (784 + 784) * 4
    assert cost.peak_activation_bytes(rows, "int8") == 784 * 4 + 784  # the input stays float32


def test_a_convolutions_macs_are_output_pixels_times_filter_size():
    rows = cost.layer_costs(preset_layers("cnn"))
    assert rows[0]["macs"] == 28 * 28 * 16 * 9
    assert rows[3]["macs"] == 14 * 14 * 32 * 16 * 9


def test_platforms_say_whether_a_model_fits_and_why():
    mcu = cost.PLATFORMS["microcontroller"]
    assert mcu.fits(230_000, 4_000) == (True, "fits")
    ok, why = mcu.fits(900_000 * 4, 4_000)
    assert not ok and "flash" in why
    ok, why = mcu.fits(100_000, 400 * 1024)
    assert not ok and "RAM" in why
    # int8 is estimated faster than fp32 on the same class, from the same MACs
    assert mcu.estimate_ms(1_000_000, 5, "int8") < mcu.estimate_ms(1_000_000, 5, "fp32")
    assert mcu.estimate_ms(1_000_000, 5, "int8") == pytest.approx(10.0)


def test_the_int8_accuracy_change_is_said_in_words_not_a_signed_number():
    assert ship.accuracy_change(0.9100, 0.9110) == "0.10 points below fp32's"  # it read "-0.10 points from fp32's"
    assert ship.accuracy_change(0.9125, 0.9110) == "0.15 points above fp32's"
    assert ship.accuracy_change(0.91100001, 0.9110) == "the same as fp32's"


def test_pareto_front_keeps_runs_no_other_beats_on_both():
    points = [(100, 0.97), (200, 0.99), (300, 0.98), (50, 0.90), (200, 0.95)]
    assert ship.pareto_front(points) == [True, True, False, True, False]


# --- export on the sample ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def preset_store(tmp_path_factory, sample):
    """One short run of every preset, of a binary task and of an editor-built model, each on 800
    training digits of the offline sample (tested on its 1,000 test digits)."""
    store = RunStore(tmp_path_factory.mktemp("ship-runs"))
    ids = {}
    for preset in PRESETS:
        ids[preset] = train_run(store, 
            RunConfig.from_preset(preset, dataset="mnist-sample", epochs=1, train_subset=800, name=preset),
            sample)["run_id"]
    ids["binary"] = train_run(store, RunConfig.from_preset(
        "mlp", dataset="mnist-sample", epochs=1, train_subset=800, loss="binary_crossentropy", positive_class=3,
        name="binary"), sample)["run_id"]
    ids["custom"] = train_run(store, RunConfig(
        model="custom", layers=tuple(CUSTOM), dataset="mnist-sample", epochs=1, batch_size=64, train_subset=800,
        name="custom"), sample)["run_id"]
    return store, ids, sample


@pytest.fixture(scope="module")
def mlp_store(tmp_path_factory, sample):
    """One short run of the course MLP (the fast tier's export test)."""
    store = RunStore(tmp_path_factory.mktemp("ship-mlp"))
    run_id = train_run(store, RunConfig.from_preset("mlp", dataset="mnist-sample", epochs=1,
                                                                train_subset=800, name="mlp"), sample)["run_id"]
    return store, {"mlp": run_id}, sample


def exported(preset_store, which, variants=("none",)):
    store, ids, data = preset_store
    shipment = ship.prepare(store, ids[which])
    return shipment, {r["variant"]: r for r in ship.ship(shipment, variants=variants)}


@pytest.mark.slow
def test_the_course_mlp_exports_to_a_self_contained_onnx_file(mlp_store):
    shipment, rows = exported(mlp_store, "mlp")
    path = shipment.files["none"]
    import onnx  # here, not at the top: only the slow tests need it, and it takes a second to import

    proto = onnx.load(str(path))
    assert not (path.parent / (path.name + ".data")).exists()  # weights inside the one file
    assert [i.name for i in proto.graph.input] == ["pixels"] and [o.name for o in proto.graph.output] == ["probabilities"]
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims[1:]] == [1, 28, 28] and dims[0].dim_param  # a dynamic batch
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["mnist_lab.run_id"] == shipment.run_id and meta["mnist_lab.version"]
    assert "[0, 1]" in meta["mnist_lab.input"] and "inside the graph" in meta["mnist_lab.normalization"]
    assert [n.op_type for n in proto.graph.node][:2] == ["Sub", "Div"] and proto.graph.node[-1].op_type == "Softmax"
    assert rows["none"]["agreement"] >= 0.999 and rows["none"]["max_probability_difference"] < 1e-4
    assert rows["none"]["test_accuracy"] == pytest.approx(mlp_store[0].get(shipment.run_id)["test_accuracy"])


@pytest.mark.slow
@pytest.mark.parametrize("which", [*PRESETS, "binary", "custom"])
def test_every_preset_binary_and_editor_run_exports_and_agrees(preset_store, which):
    shipment, rows = exported(preset_store, which)
    sess = ship.session(shipment.files["none"], 1)
    probs = ship.onnx_predict(sess, shipment.test_images)
    assert probs.shape == (len(shipment.test_images), 2 if which == "binary" else 10)
    assert rows["none"]["agreement"] >= 0.999
    assert np.abs(probs - shipment.stored_probs).max() < 1e-4


@pytest.mark.slow
def test_fp16_and_int8_variants_are_smaller_agree_and_say_what_stays_float(preset_store):
    shipment, rows = exported(preset_store, "cnn", variants=("none", "fp16", "int8"))
    assert rows["fp16"]["bytes"] < 0.55 * rows["none"]["bytes"]
    assert rows["int8"]["bytes"] < rows["none"]["bytes"] / 3.5
    assert rows["fp16"]["agreement"] >= 0.99 and rows["int8"]["agreement"] >= 0.98
    ops = {n["op"]: n["why"] for n in rows["int8"]["float_ops"]}
    assert "one-channel input" in ops["Conv"] and "Softmax" in ops  # the first conv, kept float on purpose
    assert "Gemm" not in ops  # the dense layers are int8
    # per-tensor or per-channel weights, chosen on validation digits by agreement with fp32, said in the file
    chosen = ship.file_metadata(shipment.files["int8"])["mnist_lab.int8_weights"]
    assert chosen.startswith(("per tensor", "per channel")) and "validation digits" in chosen
    assert rows["int8"]["int8_weights"] == chosen
    for row in rows.values():
        assert row["latency_ms"] > 0 and row["throughput"] > 0


# --- the command line ----------------------------------------------------------------------------

def cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "core", *args], capture_output=True, text=True, cwd=cwd,
                          env=subprocess_env(), timeout=300)


@pytest.mark.slow
def test_cli_export_prints_one_json_line_with_the_issues_fields(preset_store, tmp_path):
    store, ids, _ = preset_store
    out = tmp_path / "model.int8.onnx"
    p = cli("export", ids["mlp"], "--format", "onnx", "--quantize", "int8", "--out", str(out),
            "--runs-dir", str(store.root), "--json")
    assert p.returncode == 0, p.stderr
    result = json.loads(p.stdout.strip().splitlines()[-1])
    assert result["path"] == str(out.resolve()) and result["bytes"] == out.stat().st_size
    for key in ("test_accuracy", "agreement", "latency_ms", "throughput"):
        assert isinstance(result[key], float) and result[key] > 0
    assert result["agreement"] >= 0.97
    assert [p.name for p in tmp_path.iterdir()] == ["model.int8.onnx"]  # no temporary file left


@pytest.mark.slow
def test_cli_export_refuses_bad_input_with_one_error_line_and_writes_nothing(preset_store, tmp_path):
    store, ids, _ = preset_store
    queued = store.create(RunConfig.from_preset("mlp", dataset="mnist-sample", epochs=1), status="queued")
    before = sorted(p.name for p in tmp_path.iterdir())
    cases = {
        "unknown run": (["export", "20990101-000000-abcdef", "--runs-dir", str(store.root)], "no run"),
        "unfinished run": (["export", queued, "--runs-dir", str(store.root)], "is queued"),
        "missing folder": (["export", ids["mlp"], "--runs-dir", str(store.root), "--out",
                            str(tmp_path / "nope" / "m.onnx")], "does not exist"),
        "a folder as file": (["export", ids["mlp"], "--runs-dir", str(store.root), "--out", str(tmp_path)],
                             "is a folder"),
        "unknown option": (["export", ids["mlp"], "--quantize", "int4"], "invalid choice"),
        "unknown format": (["export", ids["mlp"], "--format", "tflite"], "invalid choice"),
    }
    for name, (args, message) in cases.items():
        p = cli(*args, "--json", cwd=tmp_path)
        assert p.returncode == 2, name
        lines = p.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], (name, p.stderr)
        assert p.stdout == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    store.delete(queued)


# --- the pages -----------------------------------------------------------------------------------

@pytest.mark.slow
def test_ship_page_shows_every_variant_downloads_and_the_platform_estimate(trained_store):
    run = next(r for r in trained_store.list() if r["name"] == "cnn short")
    at = open_page("pages/ship.py", query={"run": run["id"]}, timeout=240)
    assert not at.exception, at.exception
    measured = at.dataframe[0].value
    assert list(measured.model) == ["PyTorch fp32 (eager)", "ONNX fp32", "ONNX fp16", "ONNX int8"]
    int8 = measured.iloc[3]
    assert int8["smaller than fp32"] > 3 and int8["agreement (%)"] >= 98
    assert measured["test accuracy (%)"].iloc[0] == pytest.approx(100 * run["test_accuracy"])
    assert len(at.get("download_button")) == 3
    # the lesson text's numbers come from the table
    text = " ".join(m.value for m in at.markdown)
    assert f"{measured['file (KB)'].iloc[1] / measured['file (KB)'].iloc[3]:.1f}x smaller" in text
    assert f"{int8['agreement (%)']:.2f}%" in text
    assert ship.accuracy_change(int8["test accuracy (%)"] / 100, measured["test accuracy (%)"].iloc[1] / 100) in text

    def platform_table():
        return next(d.value for d in at.dataframe if "estimate (ms)" in d.value.columns)

    platform = platform_table()  # the default: the microcontroller, where size matters most
    cnn_costs = cost.layer_costs(preset_layers("cnn"))
    macs = cost.totals(cnn_costs)["macs"]
    assert platform["estimate (ms)"].iloc[3] == pytest.approx(1000 * macs / 100e6)  # int8, 100 M MAC/s
    fits = [why == "fits" for why in platform["fits the microcontroller"]]
    assert fits == [kb * 1024 <= 1024 ** 2 and act * 1024 <= 256 * 1024
                    for kb, act in zip(platform["file (KB)"], platform["peak activations (KB)"])]
    assert f"{sum(fits)} of 4 variants fit" in text
    at.selectbox(key="s_platform").set_value("laptop").run()
    platform = platform_table()
    assert list(platform["fits the laptop"]) == ["fits"] * 4
    assert platform["estimate (ms)"].iloc[3] == pytest.approx(1000 * (macs / 150e9 + len(cnn_costs) * 2e-6))
    # every run is on the trade-off chart, the front counted from the same points
    caption = " ".join(c.value for c in at.caption)
    assert "of 2 runs are on the Pareto front" in caption
    assert "1 of 2 runs timed" in caption  # the selected run, timed with its variants
    at.button(key="s_measure").click().run()
    assert "2 of 2 runs timed" in " ".join(c.value for c in at.caption)


def test_ship_page_without_runs_says_to_train_first():
    at = open_page("pages/ship.py")
    assert not at.exception
    assert any("No finished run" in i.value for i in at.info)


@pytest.mark.slow
def test_draw_page_classifies_with_the_int8_model_side_by_side(trained_store, sample):
    at = open_page("pages/draw.py", timeout=180)
    at.toggle(key="d_int8").set_value(True).run()
    at.number_input(key="d_sample").set_value(7).run()
    assert not at.exception, at.exception
    shown = {m.label: m.value for m in at.metric}
    assert "PyTorch fp32" in shown and "int8 ONNX" in shown
    assert shown["PyTorch fp32"] == shown["int8 ONNX"]  # a clear test digit: both read it alike


# --- full MNIST ----------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.skipif(not FULL_MNIST.is_dir(), reason="full MNIST not found (set MNIST_LAB_TEST_DATA)")
@pytest.mark.parametrize("preset", ["mlp", "cnn"])
def test_int8_keeps_accuracy_on_full_mnist(preset, tmp_path):
    from core.data import load_dataset

    data = load_dataset("mnist", str(FULL_MNIST))
    store = RunStore(tmp_path)
    epochs = 2 if preset == "mlp" else 1
    run_id = train_run(store, RunConfig.from_preset(preset, dataset="mnist", epochs=epochs), data,
                                         data_dir=str(FULL_MNIST))["run_id"]
    shipment = ship.prepare(store, run_id, str(FULL_MNIST))
    rows = {r["variant"]: r for r in ship.ship(shipment, variants=("none", "int8"))}
    assert rows["none"]["agreement"] >= 0.999
    assert rows["none"]["bytes"] / rows["int8"]["bytes"] >= 3.5
    assert abs(rows["int8"]["test_accuracy"] - rows["none"]["test_accuracy"]) <= 0.003
    assert rows["int8"]["agreement"] >= 0.99
