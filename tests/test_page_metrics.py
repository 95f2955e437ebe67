"""The metrics and experiments pages under AppTest, checked against scikit-learn on the
run's stored predictions."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from sklearn import metrics as skm

from core.runner import train_run
from core.store import RunStore
from tests.conftest import open_page


def cnn_run(store: RunStore) -> dict:
    return next(r for r in store.list() if r["name"] == "cnn short")


def test_metrics_page_draws_only_the_open_view(trained_store):
    run = cnn_run(trained_store)
    at = open_page("pages/metrics.py", query={"run": run["id"]})
    assert at.checkbox(key="m_log") is not None and not at.table and not at.dataframe  # curves only
    at = open_page("pages/metrics.py", query={"run": run["id"], "view": "Threshold"})
    assert len(at.table) == 2 and not at.dataframe


def test_metrics_page_without_runs_links_to_the_train_page():
    at = open_page("pages/metrics.py")
    assert not at.exception
    assert any("No finished run" in i.value for i in at.info)


def test_metrics_page_numbers_equal_scikit_learn_on_the_stored_predictions(trained_store):
    run = cnn_run(trained_store)
    p = trained_store.predictions(run["id"])
    at = open_page("pages/metrics.py", query={"run": run["id"], "view": "Per-class table"})
    assert not at.exception
    assert at.selectbox(key="m_run").value == run["id"]
    shown = {m.label: m.value for m in at.metric}
    assert shown["Test accuracy"] == f"{skm.accuracy_score(p['labels'], p['preds']):.2%}"
    assert shown["Mistakes"] == f"{int((p['labels'] != p['preds']).sum()):,}"
    table = at.dataframe[0].value.set_index("class")
    report = skm.classification_report(p["labels"], p["preds"], output_dict=True, zero_division=0)
    for c in map(str, range(10)):
        assert table.loc[c, "precision"] == pytest.approx(report[c]["precision"])
        assert table.loc[c, "recall"] == pytest.approx(report[c]["recall"])
        assert table.loc[c, "f1"] == pytest.approx(report[c]["f1-score"])
        assert table.loc[c, "support"] == report[c]["support"]
    assert table.loc["macro avg", "f1"] == pytest.approx(report["macro avg"]["f1-score"])
    assert table.loc["weighted avg", "recall"] == pytest.approx(report["weighted avg"]["recall"])
    at = open_page("pages/metrics.py", query={"run": run["id"], "view": "ROC and PR curves"})
    aucs = at.dataframe[0].value.set_index("curve")["ROC AUC"]
    y = np.eye(10)[p["labels"]]
    assert aucs["micro"] == pytest.approx(skm.roc_auc_score(y, p["probs"], average="micro"))
    for c in range(10):
        assert aucs[str(c)] == pytest.approx(skm.roc_auc_score(y[:, c], p["probs"][:, c]))


def test_threshold_slider_moves_the_2x2_matrix(trained_store):
    run = cnn_run(trained_store)
    p = trained_store.predictions(run["id"])
    at = open_page("pages/metrics.py", query={"run": run["id"], "view": "Threshold"})
    at.selectbox(key="m_pos").set_value(3).run()
    for thr in (0.5, 0.9):
        at.slider(key="m_thr").set_value(thr).run()
        matrix = at.table[0].value
        truth = p["labels"] == 3
        guess = p["probs"][:, 3] >= thr
        assert matrix.loc["actually positive", "predicted positive"] == int((truth & guess).sum())
        assert matrix.loc["actually negative", "predicted positive"] == int((~truth & guess).sum())
        assert matrix.loc["actually positive", "predicted negative"] == int((truth & ~guess).sum())
        rates = at.table[1].value.set_index("rate")["value"]
        assert float(rates["sensitivity (recall, TPR)"]) == pytest.approx(
            skm.recall_score(truth, guess), abs=1e-4)


def test_confusion_cell_shows_its_images_and_the_epoch_slider_shows_validation_matrices(trained_store):
    run = cnn_run(trained_store)
    p = trained_store.predictions(run["id"])
    wrong = np.flatnonzero(p["labels"] != p["preds"])
    t, q = int(p["labels"][wrong[0]]), int(p["preds"][wrong[0]])
    at = open_page("pages/metrics.py", query={"run": run["id"], "view": "Confusion matrix"})
    at.selectbox(key="m_cell_true").set_value(t).run()
    at.selectbox(key="m_cell_pred").set_value(q).run()
    n = int(((p["labels"] == t) & (p["preds"] == q)).sum())
    assert any(c.value == f"{n} test images with true class {t} predicted as {q}." for c in at.caption)
    at.slider(key="m_epoch").set_value(1).run()
    assert not at.exception


def test_gallery_filters_by_true_class_and_marks_mistakes(trained_store):
    run = cnn_run(trained_store)
    p = trained_store.predictions(run["id"])
    at = open_page("pages/metrics.py", query={"run": run["id"], "view": "Prediction gallery"})
    at.selectbox(key="m_g_true").set_value(5).run()
    at.radio(key="m_g_which").set_value("all").run()
    n = int((p["labels"] == 5).sum())
    assert any(c.value.startswith(f"{n:,} test images match") for c in at.caption)


def test_experiments_table_lists_every_run_and_compares_configs(trained_store):
    at = open_page("pages/experiments.py")
    assert not at.exception
    table = at.dataframe[0].value
    assert set(table["name"]) == {"mlp short", "cnn short"}
    assert set(table["status"]) == {"finished"}
    at.text_input(key="x_text").input("cnn").run()
    assert list(at.dataframe[0].value["name"]) == ["cnn short"]
    at.text_input(key="x_text").input("").run()
    at.multiselect(key="x_compare").set_value([r["id"] for r in trained_store.list()]).run()
    assert not at.exception
    diff = at.dataframe[1].value
    assert "model" in diff.index and "lr" in diff.index
    assert set(diff.loc["model"]) == {"mlp", "cnn"}


def test_experiments_rename_tag_and_delete_with_confirmation(trained_root, monkeypatch, tmp_path):
    root = tmp_path / "runs"
    shutil.copytree(trained_root, root)
    monkeypatch.setenv("MNIST_LAB_RUNS", str(root))
    store = RunStore(root)
    run = cnn_run(store)
    at = open_page("pages/experiments.py")
    at.selectbox(key="x_manage").set_value(run["id"]).run()
    at.text_input(key=f"x_name_{run['id']}").input("renamed").run()
    at.text_input(key=f"x_tags_{run['id']}").input("class-demo, cnn").run()
    at.button(key="x_save").click().run()
    assert store.get(run["id"])["name"] == "renamed"
    assert store.get(run["id"])["tags"] == ["class-demo", "cnn"]
    at.button(key="x_delete").click().run()
    assert any("cannot be undone" in w.value for w in at.warning)
    assert len(store.list()) == 2  # nothing deleted before the confirmation
    at.button(key="x_delete_yes").click().run()
    assert [r["name"] for r in store.list()] == ["mlp short"]
    assert not (root / run["id"]).exists()


@pytest.mark.slow
def test_hardware_comparison_times_the_config_on_every_device(trained_root, monkeypatch, tmp_path):
    from core.devices import list_devices
    from tests.test_page_train import wait_for

    root = tmp_path / "runs"
    shutil.copytree(trained_root, root)
    monkeypatch.setenv("MNIST_LAB_RUNS", str(root))
    store = RunStore(root)
    base = next(r for r in store.list() if r["name"] == "mlp short")
    at = open_page("pages/experiments.py")
    at.selectbox(key="x_hw_base").set_value(base["id"]).run()
    at.button(key="x_hw_go").click().run()
    timed = lambda: [r for r in RunStore(root).list() if (r["grp"] or "").startswith("hw-")]  # noqa: E731
    assert len(timed()) == len(list_devices())
    wait_for(at, lambda a: all(r["status"] == "finished" for r in timed()), timeout=120)
    at.run()
    table = at.dataframe[-1].value.set_index("device")
    assert set(table.index) == {d.id for d in list_devices()}
    h = RunStore(root).history(next(r["id"] for r in timed() if r["device"] == "cpu"))
    assert table.loc["cpu", "seconds per epoch"] == pytest.approx(h[0]["seconds"])
    assert table.loc["cpu", "speed-up over CPU"] == pytest.approx(1.0)


def test_metrics_page_for_a_binary_is_it_a_7_run(sample, tmp_path, monkeypatch):
    from core.config import RunConfig

    monkeypatch.setenv("MNIST_LAB_RUNS", str(tmp_path / "runs"))
    store = RunStore(tmp_path / "runs")
    out = train_run(store, RunConfig.from_preset("mlp", dataset="mnist-sample", epochs=1, train_subset=800,
                                                            loss="binary_crossentropy", positive_class=7), sample)
    p = store.predictions(out["run_id"])
    at = open_page("pages/metrics.py", query={"view": "Per-class table"})
    assert not at.exception
    assert any('is a 7' in i.value for i in at.info)
    assert {m.label: m.value for m in at.metric}["Test accuracy"] == f"{skm.accuracy_score(p['labels'], p['preds']):.2%}"
    assert list(at.dataframe[0].value["class"])[:2] == ["0", "1"]
    at = open_page("pages/metrics.py", query={"view": "Threshold"})
    at.slider(key="m_thr").set_value(0.3).run()
    matrix = at.table[0].value
    assert matrix.loc["actually positive", "predicted positive"] == int(((p["labels"] == 1) & (p["probs"][:, 1] >= 0.3)).sum())


def test_confusion_view_opens_on_the_most_common_mistake(trained_store):
    run = cnn_run(trained_store)
    p = trained_store.predictions(run["id"])
    cm = skm.confusion_matrix(p["labels"], p["preds"], labels=range(10))
    np.fill_diagonal(cm, -1)
    t, q = np.unravel_index(cm.argmax(), cm.shape)
    at = open_page("pages/metrics.py", query={"run": run["id"], "view": "Confusion matrix"})
    assert (at.selectbox(key="m_cell_true").value, at.selectbox(key="m_cell_pred").value) == (t, q)
    assert any(c.value == f"{cm[t, q]} test images with true class {t} predicted as {q}." for c in at.caption)
