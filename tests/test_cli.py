"""The command line: training to JSON, devices, and one `error:` line with status 2 for bad input."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from dataclasses import dataclass

import numpy as np
import pytest

from core.runner import train_run
from core.cli import main
from core.idx import write_idx
from tests.conftest import FULL_MNIST, ROOT, needs_full_mnist, subprocess_env, write_mnist_folder


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


def cli(*args, env=None):
    """`python -m core ARGS` in this process (what the command does, without a second of
    interpreter start per test); `cli_process` runs the real command line."""
    out, err = io.StringIO(), io.StringIO()
    saved = {k: os.environ.get(k) for k in (env or {})}
    os.environ.update(env or {})
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(list(args))
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return Result(code, out.getvalue(), err.getvalue())


def cli_process(*args, env=None):
    full_env = subprocess_env(**(env or {}))
    return subprocess.run([sys.executable, "-m", "core", *args], capture_output=True, text=True, cwd=ROOT,
                          env=full_env, timeout=600)


@pytest.mark.slow
def test_python_dash_m_core_train_prints_the_run_as_its_last_json_line(tmp_path):
    r = cli_process("train", "--dataset", "mnist-sample", "--model", "mlp", "--epochs", "2", "--device", "cpu",
            "--runs-dir", str(tmp_path), "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    for key in ("run_id", "run_dir", "device", "epochs_run", "test_accuracy", "test_loss", "history"):
        assert key in out
    assert out["device"] == "cpu" and out["epochs_run"] == 2 and len(out["history"]) == 2
    assert set(out["history"][0]) >= {"train_loss", "train_accuracy", "val_loss", "val_accuracy", "seconds"}
    assert out["test_accuracy"] > 0.85
    run_dir = tmp_path / out["run_id"]
    assert os.path.samefile(out["run_dir"], run_dir)
    assert (run_dir / "weights_last.pt").exists() and (run_dir / "predictions.npz").exists()


def test_devices_lists_the_cpu():
    r = cli("devices", "--json")
    assert r.returncode == 0
    assert json.loads(r.stdout)[-1]["id"] == "cpu"


def test_bf16_on_a_cpu_without_bf16_instructions_gets_a_note_before_training(tmp_path, monkeypatch):
    from core.devices import cpu_has_bf16

    args = ("train", "--dataset", "mnist-sample", "--epochs", "1", "--train-subset", "200", "--device", "cpu",
            "--no-store", "--json")
    r = cli(*args, "--precision", "bf16")
    assert r.returncode == 0, r.stderr
    assert ("note: bf16 on this CPU" in r.stderr) is (cpu_has_bf16() is False)  # this machine, either way
    monkeypatch.setattr("core.devices.cpu_has_bf16", lambda: False)            # an AVX2-only laptop
    r = cli(*args, "--precision", "bf16")
    assert "note: bf16 on this CPU" in r.stderr and "Use fp32 here" in r.stderr
    assert json.loads(r.stdout.strip().splitlines()[-1])["epochs_run"] == 1  # it still trains
    assert "bf16" not in cli(*args, "--precision", "fp32").stderr
    assert "no bf16 instructions" in cli("devices").stdout
    assert json.loads(cli("devices", "--json").stdout)[-1]["bf16"] is False


def test_summary_prints_the_course_mlp():
    r = cli("summary", "--model", "mlp")
    assert "Total params: 219,818" in r.stdout


def _corrupt(kind, folder):
    write_mnist_folder(folder)
    images = folder / "train-images-idx3-ubyte.gz"
    labels = folder / "train-labels-idx1-ubyte.gz"
    if kind == "magic":
        import gzip

        images.write_bytes(gzip.compress(b"\x00\x00\x0c\x03" + b"\x00" * 100))
    elif kind == "dims":
        write_idx(images, np.zeros((60, 28), dtype=np.uint8))
    elif kind == "truncated":
        import gzip

        data = gzip.decompress(images.read_bytes())
        images.write_bytes(gzip.compress(data[:-784]))
    elif kind == "count":
        write_idx(labels, np.zeros(30, dtype=np.uint8))
    elif kind == "range":
        write_idx(labels, np.full(60, 10, dtype=np.uint8))
    return folder


@pytest.mark.parametrize("kind,message", [
    ("magic", "wrong magic number"), ("dims", "wrong dimensions"), ("truncated", "file is truncated"),
    ("count", "does not equal the image count"), ("range", "label out of range"),
])
def test_corrupt_idx_files_exit_2_with_one_error_line(tmp_path, kind, message):
    folder = _corrupt(kind, tmp_path / "data")
    r = cli("train", "--data-dir", str(folder), "--epochs", "1", "--device", "cpu", "--runs-dir", str(tmp_path / "r"))
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]
    assert "train-" in lines[0]  # names the file


@pytest.mark.parametrize("args,message", [
    (["--epochs", "0"], "epochs: epochs must be a whole number from 1 to 10,000"),
    (["--epochs", "-2"], "epochs: epochs must be a whole number from 1 to 10,000"),
    (["--batch-size", "0"], "batch_size: batch size must be a whole number from 1 to 1,000,000"),
    (["--batch-size", "100000"], "batch_size: batch size 100000 is larger than the training set"),
    (["--lr", "0"], "lr: learning rate must be > 0"),
    (["--lr", "-0.1"], "lr: learning rate must be > 0"),
    (["--dataset", "cifar10"], "argument --dataset: invalid choice: 'cifar10'"),
    (["--model", "resnet"], "argument --model: invalid choice: 'resnet'"),
    (["--device", "cuda:3"], "device 'cuda:3' is not available"),
    (["--device", "tpu"], "unknown device 'tpu'; available: auto"),
    (["--data-dir", "/nonexistent/mnist"], "data folder /nonexistent/mnist does not exist"),
    (["--epochs", "two"], "argument --epochs: invalid int value: 'two'"),
    # issue 28: these were tracebacks, and fp16 on a CPU left a failed run behind
    (["--val-split", "0.9999"], "val_split 0.9999 cannot split the 4,000 training digits"),
    (["--val-split", "0.0001"], "val_split 0.0001 cannot split the 4,000 training digits"),
    (["--seed", "99999999999999"], "seed must be a whole number from 0 to 4,294,967,295"),
    (["--precision", "fp16", "--device", "cpu"], "fp16 mixed precision needs a CUDA GPU"),
])
def test_bad_arguments_exit_2_with_one_error_line(tmp_path, args, message):
    base = ["train", "--dataset", "mnist-sample", "--runs-dir", str(tmp_path)]
    if "--dataset" in args or "--data-dir" in args:
        base = ["train", "--runs-dir", str(tmp_path)]
    r = cli(*base, *args)
    assert r.returncode == 2, r.stdout + r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], r.stderr
    if "--dataset" in args or "--model" in args:
        assert "choose from" in lines[0]  # says what is allowed
    assert not any(tmp_path.glob("2*")), "a refused run must not create a run folder"


@needs_full_mnist
@pytest.mark.slow
def test_tuned_course_mlp_three_epochs_reaches_97_5_percent(tmp_path):
    r = cli("train", "--dataset", "mnist", "--data-dir", str(FULL_MNIST), "--model", "mlp-fast", "--epochs", "3",
            "--device", "cpu", "--seed", "0", "--json", "--runs-dir", str(tmp_path))
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["dataset"]["train_size"] == 60000 and out["dataset"]["test_size"] == 10000
    assert out["test_accuracy"] >= 0.975


def test_data_dir_with_the_offline_sample_says_it_is_not_used(tmp_path):
    r = cli("train", "--dataset", "mnist-sample", "--data-dir", str(tmp_path), "--epochs", "1", "--train-subset",
            "300", "--no-store", "--json")
    assert r.returncode == 0, r.stderr
    assert "--data-dir is not used with --dataset mnist-sample" in r.stderr


@pytest.mark.parametrize("where, says", [("a-file", "is a file, not a folder"), ("a-file/below", "Not a directory")])
def test_a_runs_dir_that_cannot_be_a_folder_is_one_error_line(tmp_path, where, says):
    (tmp_path / "a-file").write_text("not a folder")
    r = cli("runs", "list", "--runs-dir", str(tmp_path / where))
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: run store folder") and says in lines[0]


def test_runs_list_names_the_statuses_it_knows(tmp_path):
    r = cli("runs", "list", "--status", "foo", "--runs-dir", str(tmp_path))
    assert r.returncode == 2 and "invalid choice: 'foo'" in r.stderr and "finished" in r.stderr


def test_runs_export_to_a_folder_or_a_missing_folder_is_one_error_line(tmp_path, small):
    from core.config import RunConfig
    from core.store import RunStore

    store = RunStore(tmp_path / "runs")
    run_id = train_run(store, RunConfig.from_preset("mlp", dataset="mnist-sample", epochs=1,
                                                               train_subset=200), small)["run_id"]
    (tmp_path / "out").mkdir()
    for target, says in ((tmp_path / "missing" / "x.zip", "does not exist"), (tmp_path / "out", "is a folder")):
        r = cli("runs", "export", run_id, str(target), "--runs-dir", str(tmp_path / "runs"))
        assert r.returncode == 2
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: export to") and says in lines[0]
    assert list((tmp_path / "out").iterdir()) == [] and not (tmp_path / "missing").exists()


@pytest.mark.slow
def test_listing_and_cancelling_runs_from_the_command_line_imports_no_torch(tmp_path, small):
    """`runs list` and `runs cancel` read and edit the store only: they answer without torch's
    seconds of imports (only the asked command's parser is built; the user errors are looked up
    among the modules already imported), and a bad run id is still one error line. (`runs show`
    checks the run's config and files, with torch.)"""
    from core.config import RunConfig
    from core.store import RunStore

    store = RunStore(tmp_path / "runs")
    finished = train_run(store, RunConfig.from_preset("mlp", dataset="mnist-sample", epochs=1, train_subset=200),
                         small)["run_id"]
    queued = store.create(RunConfig.from_preset("mlp", dataset="mnist-sample"))
    probe = ("import runpy, sys\nsys.argv = ['core', *sys.argv[1:]]\n"
             "try:\n    runpy.run_module('core', run_name='__main__')\nexcept SystemExit as e:\n    code = e.code\n"
             "print('torch imported:', 'torch' in sys.modules, 'exit', code, file=sys.stderr)")
    for args, says in ((["list", "--json"], finished), (["cancel", queued, "--json"], queued),
                       (["cancel", "20000101-000000-abcdef"], "error: ")):
        r = subprocess.run([sys.executable, "-c", probe, "runs", *args, "--runs-dir", str(store.root)],
                           capture_output=True, text=True, cwd=ROOT, env=subprocess_env(), timeout=120)
        assert "torch imported: False" in r.stderr, (args, r.stderr[-2000:])
        assert says in r.stdout + r.stderr, (args, r.stdout[-2000:], r.stderr[-2000:])
    assert store.get(queued)["status"] == "cancelled"
