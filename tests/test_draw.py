"""Drawn digits: MNIST-style preprocessing of canvas pixels, stored models for inference,
the personal handwriting set, and the draw page."""

from __future__ import annotations

import numpy as np
import pytest

from core.handwriting import HandwritingSet, default_config
from core.inference import load_classifier
from core.preprocess import canvas_to_mnist, canvas_to_mnist_steps, mnist_to_canvas
from core.store import RunStore, RunStoreError
from tests.conftest import open_page
from tests.test_page_train import wait_for


@pytest.fixture(scope="module")
def seven(sample):
    return sample.test_images[int(np.flatnonzero(sample.test_labels == 7)[0])]


def test_small_in_a_corner_and_large_in_the_centre_give_nearly_the_same_image(seven):
    small = canvas_to_mnist(mnist_to_canvas(seven, 70, 0, top=5, left=200))
    large = canvas_to_mnist(mnist_to_canvas(seven, 250, 0, top=15, left=15))
    assert small.shape == (28, 28) and small.dtype == np.float32
    assert 0.0 <= small.min() and small.max() <= 1.0
    assert np.corrcoef(small.ravel(), large.ravel())[0, 1] > 0.9
    assert np.abs(small - large).mean() < 0.05


def test_output_is_like_mnist_20_pixel_box_centred_by_mass(seven):
    x = canvas_to_mnist(mnist_to_canvas(seven, 180, 3, top=90, left=20))
    ys, xs = np.nonzero(x > 0.1)
    assert max(ys.max() - ys.min(), xs.max() - xs.min()) + 1 <= 20
    cy = (x.sum(1) * np.arange(28)).sum() / x.sum()
    cx = (x.sum(0) * np.arange(28)).sum() / x.sum()
    assert abs(cy - 13.5) < 1 and abs(cx - 13.5) < 1


def test_empty_and_single_dot_canvases_give_none():
    canvas = np.zeros((280, 280, 4), np.uint8)
    canvas[..., 3] = 255
    assert canvas_to_mnist(canvas) is None
    canvas[140:150, 140:150, :3] = 255  # one dot of a 10-pixel brush
    assert canvas_to_mnist(canvas) is None
    transparent = np.zeros((280, 280, 4), np.uint8)
    assert canvas_to_mnist(transparent) is None


def test_dark_on_light_rgb_grayscale_and_transparent_input_are_handled(seven):
    rgba = mnist_to_canvas(seven, 200, 2, top=40, left=40)
    reference = canvas_to_mnist(rgba)
    dark_on_light = rgba.copy()
    dark_on_light[..., :3] = 255 - dark_on_light[..., :3]
    np.testing.assert_allclose(canvas_to_mnist(dark_on_light), reference, atol=1e-5)
    np.testing.assert_allclose(canvas_to_mnist(rgba[..., :3]), reference, atol=1e-5)
    np.testing.assert_allclose(canvas_to_mnist(rgba[..., 0]), reference, atol=1e-5)
    transparent = np.zeros_like(rgba)          # black strokes on a transparent canvas
    transparent[..., 3] = rgba[..., 0]
    np.testing.assert_allclose(canvas_to_mnist(transparent), reference, atol=1e-2)
    steps = canvas_to_mnist_steps(rgba)
    assert max(steps["scaled"].shape) == 20


def test_a_bad_image_shape_is_a_clear_error():
    with pytest.raises(ValueError, match="expected an"):
        canvas_to_mnist(np.zeros((10, 10, 7)))


def test_classifier_applies_the_runs_normalization_and_matches_its_stored_predictions(trained_store, sample):
    run = next(r for r in trained_store.list() if r["name"] == "cnn short")
    clf = load_classifier(trained_store.run_dir(run["id"]), which="last")
    probs = clf.predict_proba(sample.test_images.astype(np.float32) / 255)
    stored = trained_store.predictions(run["id"])["probs"]
    assert probs.shape == (len(sample.test_labels), 10)
    np.testing.assert_allclose(probs.sum(1), 1, atol=1e-5)
    np.testing.assert_allclose(probs, stored, atol=1e-4)
    cls, sal = clf.saliency(sample.test_images[0] / 255.0)
    assert sal.shape == (28, 28) and 0 <= cls <= 9 and sal.max() == pytest.approx(1.0)
    kinds = [k for _, k, _ in clf.features(sample.test_images[0] / 255.0)]
    assert kinds[0] == "conv" and kinds[-1] == "output"


def test_a_corrupt_weights_file_is_refused(trained_root, tmp_path):
    import shutil

    store = RunStore(trained_root)
    run = store.list()[0]
    folder = tmp_path / run["id"]
    shutil.copytree(store.run_dir(run["id"]), folder)
    for f in folder.glob("weights_*.pt"):
        f.write_bytes(b"not a model")
    with pytest.raises(RunStoreError, match="not a valid weights file"):
        load_classifier(folder)


def test_handwriting_set_adds_evaluates_exports_and_clears(trained_store, sample, tmp_path):
    hw = HandwritingSet(tmp_path)
    run = next(r for r in trained_store.list() if r["name"] == "cnn short")
    clf = load_classifier(trained_store.run_dir(run["id"]))
    for img, lab in zip(sample.test_images[:5], sample.test_labels[:5]):
        hw.add(img / 255.0, int(lab))
    ev = hw.evaluate(clf)
    expected = (clf.predict_proba(sample.test_images[:5] / 255.0).argmax(1) == sample.test_labels[:5]).mean()
    assert ev["count"] == 5 and ev["accuracy"] == pytest.approx(expected) and ev["confusion"].sum() == 5
    with np.load(__import__("io").BytesIO(hw.export())) as z:
        assert z["images"].shape == (5, 28, 28) and list(z["labels"]) == list(sample.test_labels[:5])
    with pytest.raises(ValueError, match="digit 0..9"):
        hw.add(np.zeros((28, 28)), 12)
    hw.clear()
    assert len(hw) == 0


def test_default_draw_model_is_the_augmented_cnn():
    cfg = default_config("mnist-sample")
    assert cfg.model == "cnn" and cfg.augment and cfg.dataset == "mnist-sample"


def test_draw_page_shows_a_hint_for_an_empty_canvas_and_classifies_a_digit(trained_store, sample):
    at = open_page("pages/draw.py")
    assert not at.exception and not at.error
    assert any("Draw a digit" in i.value for i in at.info)
    assert not [m for m in at.metric if m.label == "Prediction"]  # no guess on an empty canvas
    run_id = at.selectbox(key="d_run").value
    assert run_id == max(trained_store.list(), key=lambda r: r["test_accuracy"])["id"]  # best run by default
    # the test digits there are, no more (it offered 0 to 9,999 and wrapped around the sample's 1,000)
    assert at.number_input(key="d_sample").max == len(sample.test_images) - 1
    at.number_input(key="d_sample").set_value(7).run()
    clf = load_classifier(trained_store.run_dir(run_id))
    expected = int(clf.predict_proba(canvas_to_mnist(sample.test_images[7])[None]).argmax())
    assert next(m.value for m in at.metric if m.label == "Prediction") == str(expected)
    assert len(at.get("image")) >= 5  # the four steps and the feature maps


def test_draw_page_saves_a_labelled_drawing_to_my_handwriting(trained_root, monkeypatch, tmp_path):
    import shutil

    root = tmp_path / "runs"
    shutil.copytree(trained_root, root)
    monkeypatch.setenv("MNIST_LAB_RUNS", str(root))
    at = open_page("pages/draw.py")
    at.button(key="d_save").click().run()
    assert any("canvas is empty" in w.value for w in at.warning)
    at.number_input(key="d_sample").set_value(0).run()
    at.selectbox(key="d_label").set_value(7).run()
    at.button(key="d_save").click().run()
    assert len(HandwritingSet(root)) == 1
    assert next(m.value for m in at.metric if m.label == "Drawings in your set") == "1"


@pytest.mark.slow
def test_draw_page_without_models_trains_the_draw_model_in_one_click():
    at = open_page("pages/draw.py")
    at.button(key="d_quick").click().run()
    assert not at.exception
    runs = RunStore().list()
    assert len(runs) == 1 and runs[0]["name"].startswith("draw model")
    wait_for(at, lambda a: RunStore().list()[0]["status"] == "finished", timeout=180)
    at.run()
    assert at.selectbox(key="d_run").value == runs[0]["id"]


def test_draw_page_shows_hidden_activations_for_an_mlp(trained_store):
    mlp = next(r for r in trained_store.list() if r["name"] == "mlp short")
    at = open_page("pages/draw.py", query={"run": mlp["id"]})
    at.number_input(key="d_sample").set_value(1).run()
    assert at.selectbox(key="d_run").value == mlp["id"]
    assert not at.exception
    texts = " ".join(str(i.proto) for i in at.get("image"))
    assert "activations of its 256 units" in texts and "activations of its 32 units" in texts
