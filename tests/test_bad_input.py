"""A corpus of bad input: each item gets a clear message naming what is wrong, and the run
store stays byte-for-byte unchanged. (More of the corpus lives next to the feature it
attacks: run archives in test_runs.py and test_store.py, IDX files in test_idx_and_data.py,
model files in test_draw.py; the README counts them all.)"""

from __future__ import annotations

import errno
import hashlib
import json

import numpy as np
import pytest

from core.runner import train_run
from core.config import SHARED_FIELDS, ConfigError, RunConfig, from_query_params, to_query_params
from core.store import RunStore, RunStoreError
from tests.conftest import open_page


def store_digest(root) -> dict:
    """Every file of the store and its bytes' hash (the index included)."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and not p.name.endswith(("-wal", "-shm"))}


# --- shared links ---------------------------------------------------------------------------------

NUMERIC = {"positive_class": (-1, 10), "lr": (-0.1, 1e9), "momentum": (-1, 5), "batch_size": (0, 10 ** 9),
           "epochs": (0, 10 ** 9), "val_split": (0, 1.5), "seed": (-1, None), "l2": (-1, 5),
           "early_stopping": (-1, None), "train_subset": (-5, None)}
CHOICES = ("model", "dataset", "loss", "optimizer", "device", "precision", "lr_schedule")


def link_corpus() -> list[tuple[str, dict, str]]:
    """(what, link parameters, the field the message must name)."""
    good = to_query_params(RunConfig.from_preset("mlp", dataset="mnist"))
    items = []
    for name in NUMERIC:
        items.append((f"{name}: not a number", {**good, name: "abc"}, name))
        for bad in NUMERIC[name]:
            if bad is not None:
                items.append((f"{name}: out of range {bad}", {**good, name: str(bad)}, name))
    for name in CHOICES:
        items.append((f"{name}: unknown value", {**good, name: "no-such-" + name}, name))
    for name in SHARED_FIELDS:
        items.append((f"{name}: a huge string", {**good, name: "9" * 100_000}, name))
    items += [("unknown key", {**good, "evil": "1"}, "evil"),
              ("unknown key, huge", {**good, "x" * 10_000: "1"}, "unknown parameter"),
              ("layers: not JSON", {**good, "model": "custom", "layers": "[{"}, "layers"),
              ("layers: not a list of layers", {**good, "model": "custom", "layers": '"dense"'}, "layers"),
              ("layers: unknown layer type", {**good, "model": "custom", "layers": '[{"type": "teleport"}]'},
               "teleport"),
              ("layers: a huge network", {**good, "model": "custom",
                                          "layers": json.dumps([{"type": "flatten"}, {"type": "dense", "units": 10 ** 9}])}, "units"),
              ("layers: too many", {**good, "model": "custom",
                                    "layers": json.dumps([{"type": "flatten"}] + [{"type": "dense", "units": 2}] * 100)},
               "layers")]
    return items


LINKS = link_corpus()


@pytest.mark.parametrize("what, params, names", LINKS, ids=[w for w, _, _ in LINKS])
def test_every_bad_shared_link_parameter_is_refused_naming_it(what, params, names):
    with pytest.raises(ConfigError) as info:
        from_query_params(params)
    assert names in str(info.value) or names == getattr(info.value, "field", None), str(info.value)


def test_the_train_page_opens_a_bad_link_with_the_defaults_and_says_why(kept):
    before = store_digest(kept.root)
    at = open_page("pages/train.py", query={"lr": "abc", "evil": "1"})
    assert not at.exception
    assert any("bad setting" in w.value for w in at.warning)
    assert store_digest(kept.root) == before


# --- a run folder's config.json -------------------------------------------------------------------

CONFIGS = [("not JSON", b"{oops"), ("a list", b"[1, 2]"), ("epochs a string", {"epochs": "ten"}),
           ("lr negative", {"lr": -1}), ("unknown key", {"teleport": True}), ("layers not a list", {"layers": 5}),
           ("batch size a float", {"batch_size": 1.5}), ("no config at all", {})]


@pytest.mark.parametrize("what, change", CONFIGS, ids=[w for w, _ in CONFIGS])
def test_a_run_folder_with_a_bad_config_json_is_named_and_the_other_runs_are_fine(kept, small, what, change):
    victim = train_run(kept, RunConfig.from_preset("mlp", dataset="mnist-sample", epochs=1,
                                                              train_subset=200, name="victim"), small)["run_id"]
    path = kept.run_dir(victim) / "config.json"
    if isinstance(change, bytes):
        path.write_bytes(change)
    else:
        saved = json.loads(path.read_text())
        saved["config"] = {**saved["config"], **change} if change else {}
        if not change:
            del saved["config"]
        path.write_text(json.dumps(saved))
    others = {k: v for k, v in store_digest(kept.root).items() if not k.startswith(victim) and "index" not in k}
    with pytest.raises(RunStoreError) as info:
        RunStore(kept.root).config(victim)
    assert victim in str(info.value) or "config.json" in str(info.value)
    store = RunStore(kept.root)
    assert {r["name"] for r in store.list()} >= {"kept"}  # listing still works
    kept_id = next(r["id"] for r in store.list() if r["name"] == "kept")
    assert store.config(kept_id).name == "kept"
    assert {k: v for k, v in store_digest(kept.root).items() if not k.startswith(victim) and "index" not in k} \
        == others


# --- canvas arrays ---------------------------------------------------------------------------------

CANVASES = [("1-D", np.zeros(10)), ("2 channels", np.zeros((280, 280, 2))), ("5 channels", np.zeros((28, 28, 5))),
            ("empty", np.zeros((0, 0, 4))), ("strings", np.full((28, 28), "a")), ("objects", np.full((28, 28), None)),
            ("NaN", np.full((280, 280, 4), np.nan)), ("infinite", np.full((28, 28), np.inf)),
            ("one pixel", np.zeros((1, 1, 4)))]


@pytest.mark.parametrize("what, array", CANVASES, ids=[w for w, _ in CANVASES])
def test_a_bad_canvas_array_is_a_clear_error(what, array):
    from core.preprocess import canvas_to_mnist

    with pytest.raises(ValueError, match="expected|not numbers"):
        canvas_to_mnist(array)


@pytest.mark.parametrize("what, array", [("NaN", np.full((28, 28), np.nan)), ("wrong shape", np.zeros((27, 28))),
                                         ("RGB", np.zeros((28, 28, 3)))])
def test_a_bad_array_given_to_a_model_is_a_clear_error(kept, what, array):
    from core.inference import load_classifier

    clf = load_classifier(kept.run_dir(kept.list()[0]["id"]))
    with pytest.raises(ValueError, match="expected|not numbers"):
        clf.predict_proba(array)


# --- a full disk ---------------------------------------------------------------------------------

def test_a_full_disk_while_a_run_saves_fails_that_run_with_the_reason_and_nothing_else(kept, small, monkeypatch):
    """ENOSPC in the middle of writing the predictions (the first result file): the run is
    failed with the reason, no half-written file is left, every earlier run is unchanged."""
    before = {k: v for k, v in store_digest(kept.root).items() if "index" not in k}
    import core.atomic

    real = core.atomic.np.savez_compressed

    def full_disk(file, **arrays):
        with open(file, "wb") as f:
            f.write(b"PK\x03\x04 half a file")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(core.atomic.np, "savez_compressed", full_disk)
    with pytest.raises(OSError):
        train_run(kept, RunConfig.from_preset("mlp", dataset="mnist-sample", epochs=1, train_subset=200,
                                                         name="disk full"), small)
    monkeypatch.setattr(core.atomic.np, "savez_compressed", real)
    store = RunStore(kept.root)
    failed = next(r for r in store.list() if r["name"] == "disk full")
    assert failed["status"] == "failed" and "No space left on device" in failed["error"]
    folder = store.run_dir(failed["id"])
    assert not [p.name for p in folder.iterdir() if ".tmp" in p.name]
    assert not (folder / "predictions.npz").exists()
    after = {k: v for k, v in store_digest(kept.root).items() if "index" not in k and not k.startswith(failed["id"])}
    assert after == before


# --- run archives the other tests do not try (test_runs.py has the rest) -------------------------

def _export(store, tmp_path):
    run_id = store.list()[0]["id"]
    return store.export_zip(run_id, tmp_path / "good.zip")


def _members(path) -> dict:
    import zipfile

    with zipfile.ZipFile(path) as z:
        return {i.filename: z.read(i) for i in z.infolist()}


def test_a_symlink_member_is_refused_and_the_store_is_unchanged(kept, tmp_path):
    import stat
    import zipfile

    members = _members(_export(kept, tmp_path))
    bad = tmp_path / "symlink.zip"
    with zipfile.ZipFile(bad, "w") as z:
        for name, data in members.items():
            if name == "weights_last.pt":
                info = zipfile.ZipInfo(name)
                info.external_attr = (stat.S_IFLNK | 0o777) << 16
                z.writestr(info, "/etc/passwd")
            else:
                z.writestr(name, data)
    before = store_digest(kept.root)
    with pytest.raises(RunStoreError, match="symbolic link"):
        kept.import_zip(bad)
    assert store_digest(kept.root) == before


def test_a_zip_bomb_whose_headers_lie_about_its_size_is_refused(kept, tmp_path):
    """300 MB of zeros (1.4 MB compressed) whose local and central headers both claim 1,000
    bytes: refused with a message, without 300 MB ever being decompressed (zipfile stops at
    the claimed size and the CRC does not match; the import also counts what really comes out
    of the decompressor)."""
    import struct
    import zipfile

    members = _members(_export(kept, tmp_path))
    bad = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bad, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for name, data in members.items():
            if name == "weights_last.pt":  # 1.4 MB at zlib's fastest level; level 6 takes 2.5x longer
                z.writestr(name, bytes(300 * 2**20), compresslevel=1)
            else:
                z.writestr(name, data)
    raw = bytearray(bad.read_bytes())
    with zipfile.ZipFile(bad) as z:
        info = z.getinfo("weights_last.pt")
    struct.pack_into("<I", raw, info.header_offset + 22, 1000)  # the local header's size
    central = raw.find(b"PK\x01\x02")
    while central != -1:
        name_len = struct.unpack_from("<H", raw, central + 28)[0]
        if raw[central + 46:central + 46 + name_len] == b"weights_last.pt":
            struct.pack_into("<I", raw, central + 24, 1000)  # the central directory's size
        central = raw.find(b"PK\x01\x02", central + 4)
    bad.write_bytes(bytes(raw))
    with zipfile.ZipFile(bad) as z:
        assert z.getinfo("weights_last.pt").file_size == 1000  # the lie is in place
    before = store_digest(kept.root)
    with pytest.raises(RunStoreError, match="cannot be read|larger than"):
        kept.import_zip(bad)
    assert store_digest(kept.root) == before


# --- data folders too small to train on ---------------------------------------------------------------

def _idx_folder(folder, n_train: int, n_test: int, labels=None):
    from core.idx import write_idx

    rng = np.random.default_rng(0)
    folder.mkdir()
    write_idx(folder / "train-images-idx3-ubyte.gz", rng.integers(0, 256, (n_train, 28, 28)).astype(np.uint8))
    write_idx(folder / "train-labels-idx1-ubyte.gz",
              (labels if labels is not None else np.arange(n_train) % 10).astype(np.uint8))
    write_idx(folder / "t10k-images-idx3-ubyte.gz", rng.integers(0, 256, (n_test, 28, 28)).astype(np.uint8))
    write_idx(folder / "t10k-labels-idx1-ubyte.gz", (np.arange(n_test) % 10).astype(np.uint8))
    return folder


@pytest.mark.parametrize("n_train, n_test, labels, message", [
    (0, 20, None, "cannot split the 0 training digits"),
    (5, 20, None, "cannot split the 5 training digits"),
    (12, 20, None, "cannot split the 12 training digits"),
    (60, 20, np.r_[np.arange(59) % 9, 9], "Classes with too few members are: [9]"),
    (60, 0, None, "no test digits"),
])
def test_an_idx_folder_too_small_to_train_on_is_one_error_line_and_leaves_no_run(tmp_path, n_train, n_test, labels,
                                                                                   message):
    from tests.test_cli import cli

    folder = _idx_folder(tmp_path / "data", n_train, n_test, labels)
    runs = tmp_path / "runs"
    result = cli("train", "--data-dir", str(folder), "--epochs", "1", "--batch-size", "4", "--runs-dir", str(runs))
    assert result.returncode == 2 and result.stderr.startswith("error:") and message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert RunStore(runs).list() == []
