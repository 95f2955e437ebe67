"""The MNIST_LAB_* variables are read in one place (core/settings.py) into one object, and the
README's table is that object's documentation."""

from __future__ import annotations

import ast
from pathlib import Path

from core.settings import VARIABLES, readme_table, settings
from tests.conftest import ROOT


def test_the_readme_table_lists_every_variable_with_its_default():
    assert readme_table() in (ROOT / "README.md").read_text()


def test_settings_follow_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("MNIST_LAB_RUNS", str(tmp_path))
    monkeypatch.setenv("MNIST_LAB_JOBS_PER_DEVICE", "3")
    monkeypatch.setenv("MNIST_LAB_CUDA_GRAPHS", "0")
    monkeypatch.setenv("MNIST_LAB_RAY_GPU_FRACTION", "7")  # not a fraction: the default
    monkeypatch.setenv("MNIST_LAB_THREADS", "two")         # not a number: every core
    now = settings()
    assert now.runs == Path(tmp_path) and now.jobs_per_device == 3 and not now.cuda_graphs
    assert now.ray_gpu_fraction == 0.25 and now.threads is None
    monkeypatch.setenv("MNIST_LAB_JOBS_PER_DEVICE", "")
    assert settings().jobs_per_device is None


def _reads_lab_variables(path: Path) -> bool:
    """Whether the module reads an MNIST_LAB_* variable: os.environ.get / os.environ[...] /
    os.getenv of such a name, written out or through a module constant."""
    tree = ast.parse(path.read_text())
    constants = {t.id: n.value.value for n in tree.body if isinstance(n, ast.Assign) and isinstance(n.value, ast.Constant)
                 for t in n.targets if isinstance(t, ast.Name)}

    def lab_name(node) -> bool:
        value = node.value if isinstance(node, ast.Constant) else constants.get(getattr(node, "id", None))
        return isinstance(value, str) and value.startswith("MNIST_LAB_")

    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and node.args and ast.unparse(node.func) in (
                "os.environ.get", "os.getenv", "os.environ.setdefault") and lab_name(node.args[0]):
            return True
        if isinstance(node, ast.Subscript) and ast.unparse(node.value) == "os.environ" and lab_name(node.slice):
            return True
    return False


def test_no_other_module_reads_the_labs_variables():
    """Production code asks settings(); no module reads an MNIST_LAB_* variable itself (the
    crash tests' pause hook is the tests' own: tests/hooks/sitecustomize.py)."""
    readers = {str(path.relative_to(ROOT)) for path in [*ROOT.joinpath("core").rglob("*.py"),
                                                         *ROOT.joinpath("ui").rglob("*.py"),
                                                         *ROOT.joinpath("pages").rglob("*.py"), ROOT / "app.py"]
               if _reads_lab_variables(path)}
    assert readers == set(), readers
    assert all(name.startswith("MNIST_LAB_") for name in VARIABLES)
