"""Shared test fixtures: small data made in the tests (or the offline sample), and the full
MNIST only for the accuracy tests (skipped where `../shared/data/mnist` is not there)."""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
from pathlib import Path


def _compiled_modules_kept() -> None:
    """Python keeps the compiled form of the modules it imports (`__pycache__`, git-ignored) even
    where the environment says not to (PYTHONDONTWRITEBYTECODE=1, set in many containers, this
    VM's included). Without it every process the tests start (two pytest workers, and hundreds
    of `python -m core` commands, worker processes, servers and generated programs) compiles the
    lab's modules from source again, and each worker redoes pytest's assertion rewriting of every
    test module. Measured on this 2-core VM, one after the other: the fast tier 75 s with it
    off, 65 s with it kept (README, "Tests"). Set here, before the lab is imported, for this
    process and every process it starts."""
    sys.dont_write_bytecode = False
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)


_compiled_modules_kept()


def _one_core_per_xdist_worker() -> None:
    """Under pytest-xdist (`-n 2`, the README's test command), each worker process is one test
    at a time beside another; set before torch is imported, so that it and every process it
    starts obey it.

    - One CPU thread each: two 2-thread trainings on 2 cores spin against each other (two jobs
      sharing the CPU trained 65x slower per trial than one, bench/sweep.py), while two 1-thread
      tests use both cores and overlap what the other waits for (interpreter starts, a browser,
      a worker's poll).
    - A private runtime folder each ($XDG_RUNTIME_DIR, where core.executors.zygote keeps its
      socket): each worker has its own zygote, so that one worker's zygote tests (which stop it,
      start it, and check what a fork obeys) and its last test's `zygote.stop()` never reach the
      other worker's jobs.
    """
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if not worker:
        return
    os.environ["OMP_NUM_THREADS"] = "1"
    folder = tempfile.mkdtemp(prefix=f"mnist-lab-{worker}-")  # mode 0700, this user's
    os.environ["XDG_RUNTIME_DIR"] = folder
    atexit.register(shutil.rmtree, folder, ignore_errors=True)


_one_core_per_xdist_worker()

import numpy as np  # noqa: E402 - after the thread count is set
import pytest  # noqa: E402

from core.runner import train_run  # noqa: E402
from core.data import Dataset, load_sample  # noqa: E402
from core.idx import write_idx  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
FULL_MNIST = Path(os.environ.get("MNIST_LAB_TEST_DATA", ROOT.parent / "shared" / "data" / "mnist"))


def subprocess_env(**extra) -> dict:
    """The environment for a `python -m core ...` child: this checkout first on PYTHONPATH,
    whatever PYTHONPATH already held after it."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]), **extra}


HOOKS = ROOT / "tests" / "hooks"


def pause_workers_at(monkeypatch, point: str | None) -> None:
    """Processes started from now on pause a stored run's training at `point` ("EPOCH:BATCH",
    1-based), writing `paused` into its folder (tests/hooks/sitecustomize.py); None: no more."""
    if point is None:
        monkeypatch.delenv("LAB_TEST_PAUSE_AT", raising=False)
        return
    monkeypatch.setenv("LAB_TEST_PAUSE_AT", point)
    if str(HOOKS) not in os.environ.get("PYTHONPATH", "").split(os.pathsep):
        monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(HOOKS), os.environ.get("PYTHONPATH", "")]))


@pytest.fixture(autouse=True, scope="session")
def _streamlit_components_scanned_once():
    """Each new AppTest scans the metadata of every installed package for Streamlit components
    (streamlit 1.67, AppTest._run: BidiComponentManager.discover_and_register_components): most
    of a page test's time (measured: `open_page("pages/experiments.py")` 0.43 s, 0.07 s with the
    scan done once). The installed packages do not change while the tests run, so the scan runs
    once and every AppTest registers what it found (the drawing canvas)."""
    from streamlit.components.v2 import manifest_scanner

    scan = manifest_scanner.scan_component_manifests
    found = scan()
    manifest_scanner.scan_component_manifests = lambda max_workers=None: list(found)
    yield
    manifest_scanner.scan_component_manifests = scan


@pytest.fixture(autouse=True, scope="session")
def _no_zygote_left_behind():
    """The workers the tests start are forked from a preloaded zygote (core.executors.zygote),
    started by the first of them; it would otherwise wait IDLE_S after the last test."""
    yield
    from core.executors import zygote

    zygote.stop()


@pytest.fixture(autouse=True)
def _offline_and_isolated(monkeypatch, tmp_path_factory):
    """No test touches the network, the user's cache or the user's run store."""
    monkeypatch.setenv("MNIST_LAB_OFFLINE", "1")
    monkeypatch.setenv("MNIST_LAB_CACHE", str(tmp_path_factory.mktemp("cache")))
    monkeypatch.delenv("MNIST_LAB_DATA", raising=False)
    monkeypatch.setenv("MNIST_LAB_RUNS", str(tmp_path_factory.mktemp("runs")))
    monkeypatch.setenv("MNIST_LAB_STARTERS", "0")  # the starter runs are tested on purpose (test_starters.py)


@pytest.fixture(scope="session")
def sample() -> Dataset:
    return load_sample()


@pytest.fixture(scope="session")
def small(sample) -> Dataset:
    """1,000 training and 300 test digits of the offline sample: trains in a second."""
    return Dataset("mnist-sample", sample.train_images[:1000], sample.train_labels[:1000],
                   sample.test_images[:300], sample.test_labels[:300], source="test subset",
                   fingerprint="test-small")


def write_mnist_folder(folder: Path, n_train: int = 60, n_test: int = 20, gz: bool = True,
                       layout: str = "") -> Path:
    """Four valid IDX files of random digits, flat or in a sub-layout like MNIST/raw."""
    rng = np.random.default_rng(0)
    base = folder / layout if layout else folder
    base.mkdir(parents=True, exist_ok=True)
    ext = ".gz" if gz else ""
    write_idx(base / f"train-images-idx3-ubyte{ext}", rng.integers(0, 256, (n_train, 28, 28)))
    write_idx(base / f"train-labels-idx1-ubyte{ext}", np.arange(n_train) % 10)
    write_idx(base / f"t10k-images-idx3-ubyte{ext}", rng.integers(0, 256, (n_test, 28, 28)))
    write_idx(base / f"t10k-labels-idx1-ubyte{ext}", np.arange(n_test) % 10)
    return folder


# Training digits of the full MNIST for the tests that compare the Keras and PyTorch programs
# (and notebooks) with the lab's run: the same stratified subset in all three, all 10,000 test
# digits. A quarter of the 48,000 keeps those trainings to minutes on a 2-CPU machine and tests
# the same code.
PARITY_SUBSET = 12_000

needs_full_mnist = pytest.mark.skipif(
    not (FULL_MNIST / "train-images-idx3-ubyte.gz").exists() and not (FULL_MNIST / "train-images-idx3-ubyte").exists(),
    reason=f"full MNIST not found at {FULL_MNIST} (set MNIST_LAB_TEST_DATA)",
)


def interrupted_run(store, config, dataset=None, epochs: int = 1) -> str:
    """A run stopped after `epochs` finished epochs the way a killed process or a closed laptop
    lid leaves it (interrupted, with the checkpoint of its last epoch); returns its id."""
    from core.callbacks import Callback

    class Interrupt(Callback):
        def on_epoch_end(self, trainer, epoch, log):
            if epoch == epochs - 1:
                raise KeyboardInterrupt

    before = {r["id"] for r in store.list()}
    with pytest.raises(KeyboardInterrupt):
        train_run(store, config, dataset, callbacks=[Interrupt()])
    [run_id] = [r["id"] for r in store.list() if r["id"] not in before]
    return run_id


def hold_cpu_slot(store) -> str:
    """A run this test process "trains": it holds the CPU's one slot until the test marks it
    ended, so a queued job waits behind it."""
    from core.config import RunConfig

    holder = store.create(RunConfig.from_preset("mlp", dataset="mnist-sample", device="cpu", name="holds the slot"),
                          status="queued")
    store.record_worker(holder, os.getpid())
    assert store.claim_slot([holder], "cpu", 1)
    return holder


def open_page(page: str, query: dict | None = None, timeout: int = 90):
    """The app (navigation included) under AppTest, switched to `page` (e.g. "pages/train.py")."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=timeout)
    for k, v in (query or {}).items():
        at.query_params[k] = v
    at.switch_page(page)
    return at.run()


def vega_nodes(at) -> list:
    """Every Altair chart element an AppTest run drew, in page order. AppTest has no public
    accessor for chart elements, so this walks its element tree (`_tree`); the one place the
    tests do."""
    def walk(node):
        yield node
        children = getattr(node, "children", None)
        if isinstance(children, dict):
            for child in children.values():
                yield from walk(child)

    return [node for node in walk(at._tree) if getattr(node, "type", "") == "vega_lite_chart"]


def chart_specs(at) -> list[dict]:
    """The Vega-Lite spec of every Altair chart an AppTest run drew (what the browser renders)."""
    import json

    return [json.loads(node.proto.spec) for node in vega_nodes(at)]


@pytest.fixture(scope="session")
def trained_root(tmp_path_factory, sample):
    """A run store holding two finished short runs on the offline sample (MLP, small CNN)."""
    from core.config import RunConfig
    from core.store import RunStore

    root = tmp_path_factory.mktemp("trained-runs")
    store = RunStore(root)
    train_run(store, RunConfig.from_preset("mlp", dataset="mnist-sample", epochs=3, train_subset=1500,
                                                      name="mlp short"), sample)
    train_run(store, RunConfig.from_preset("cnn", dataset="mnist-sample", epochs=2, train_subset=1500,
                                                      name="cnn short"), sample)
    return root


@pytest.fixture
def trained_store(trained_root, monkeypatch):
    from core.store import RunStore

    monkeypatch.setenv("MNIST_LAB_RUNS", str(trained_root))
    return RunStore(trained_root)


@pytest.fixture
def trained_copy(trained_root, tmp_path, monkeypatch):
    """A private copy of the trained store (also the app's, through MNIST_LAB_RUNS), for a test
    that changes it."""
    import shutil

    from core.store import RunStore

    root = tmp_path / "runs"
    shutil.copytree(trained_root, root)
    monkeypatch.setenv("MNIST_LAB_RUNS", str(root))
    return RunStore(root)


@pytest.fixture(scope="session")
def kept_root(tmp_path_factory, small):
    """A store with one finished run named "kept", trained once for the session."""
    from core.config import RunConfig
    from core.store import RunStore

    root = tmp_path_factory.mktemp("kept") / "runs"
    train_run(RunStore(root), RunConfig.from_preset("mlp", dataset="mnist-sample", epochs=1, train_subset=200,
                                                    name="kept"), small)
    return root


@pytest.fixture
def kept(kept_root, tmp_path, monkeypatch):
    """A store of this test's own (also the app's, through MNIST_LAB_RUNS) with one finished run
    named "kept", which refused actions and bad input must leave as it is (a copy of `kept_root`:
    copying a run is milliseconds, training it a third of a second)."""
    import shutil

    from core.store import RunStore

    shutil.copytree(kept_root, tmp_path, dirs_exist_ok=True)
    monkeypatch.setenv("MNIST_LAB_RUNS", str(tmp_path))
    return RunStore(tmp_path)


@pytest.fixture(scope="module")
def browser():
    """Debian's Chromium through Playwright, for the real-browser tests (a skip, saying why, where
    Playwright is not installed or Chromium does not start)."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    from tests.browser import CHROMIUM_ARGS, chromium_path

    with sync_api.sync_playwright() as p:
        try:
            b = p.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        except Exception as exc:  # noqa: BLE001 - a Chromium that cannot start is a skip, with why
            pytest.skip(f"Chromium at {chromium_path()} does not start: {exc}")
        yield b
        b.close()


# The files that take longest, longest first (by file, in the 44ba69b CI run's `--durations=0`:
# test_codegen.py 720 s, test_faults.py 461 s, test_accuracy.py 299 s, the browser files 444 s,
# then 150-200 s each). Under pytest-xdist a file runs on one worker (`--dist loadscope`); started
# last, one of them kept one worker busy for minutes after the other had run out of work (the
# slides' MLP, 112 s alone at the end of a `-n 2` run). Then the files the fast tier (`-m "not
# slow"`) spends longest in, which also take 10-50 s in the full suite: test_what_a_student_meets.py
# (17 s of the fast tier's 97 s), alphabetically last, kept one worker busy 14 s after the other
# had finished. Within a file the order stays as written.
LONGEST_FIRST = ("test_codegen.py", "test_faults.py", "test_accuracy.py", "test_browser_tour.py", "test_browser.py",
                 "test_resume.py", "test_handover.py", "test_sweeps.py", "test_ray.py", "test_ship.py", "test_runs.py",
                 "test_what_a_student_meets.py", "test_lecture.py", "test_classroom.py", "test_zygote.py",
                 "test_vectorized.py", "test_concepts.py", "test_page_metrics.py", "test_cli.py", "test_page_train.py")


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # a stable sort
