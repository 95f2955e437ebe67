"""The house rules, checked on the source: core never imports streamlit, modules import one
another without cycles, no module reaches into another's private parts, the commands of
the CLI share only core.cli.common, and no module is over 450 lines nor a class over 300."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def sources(*folders):
    for folder in folders:
        yield from sorted((ROOT / folder).rglob("*.py"))


def imports(path: Path) -> set[str]:
    """Every module `path` imports, at the top or inside a function (a lazy import is still a
    dependency: the old cli <-> runs_cli circle was made of lazy imports)."""
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
    return found


MAX_MODULE_LINES, MAX_CLASS_LINES = 450, 300


def test_no_module_over_450_lines_and_no_class_over_300():
    """Small modules named after what they hold, the lab's, its tests' and its benches' alike."""
    too_long = []
    for path in [ROOT / "app.py", *sources("core", "ui", "pages", "tests", "bench")]:
        text = path.read_text()
        if len(text.splitlines()) > MAX_MODULE_LINES:
            too_long.append(f"{path.relative_to(ROOT)}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ClassDef) and node.end_lineno - node.lineno + 1 > MAX_CLASS_LINES:
                too_long.append(f"{path.relative_to(ROOT)}: class {node.name}, {node.end_lineno - node.lineno + 1} lines")
    assert too_long == []


def test_core_never_imports_streamlit():
    for path in sources("core"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            assert not any(n.split(".")[0] == "streamlit" for n in names), f"{path} imports streamlit"


def test_core_modules_depend_on_one_another_without_cycles():
    """The layers point one way: executors -> store -> trainer -> data and models."""
    modules = {module_name(p): p for p in sources("core")}
    graph = {name: {m for m in imports(p) if m in modules and m != name} for name, p in modules.items()}
    # importing a submodule runs its package's __init__ first: an edge to the package too
    for name in list(graph):
        for m in list(graph[name]):
            package = m.rsplit(".", 1)[0]
            if package in modules and package != "core" and package != name and not name.startswith(package + "."):
                graph[name].add(package)
    state: dict[str, int] = {}

    def visit(node, path):
        state[node] = 1
        for nxt in graph[node]:
            if state.get(nxt) == 1:
                raise AssertionError("import cycle: " + " -> ".join(path + [nxt]))
            if nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for name in graph:
        if name not in state:
            visit(name, [name])


def test_cli_commands_share_only_the_common_module():
    for path in sorted((ROOT / "core" / "cli").glob("*.py")):
        if path.name in ("__init__.py", "common.py"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("core.cli"):
                assert node.module == "core.cli.common", f"{path.name} imports {node.module}"


def test_no_module_reaches_into_another_objects_private_parts():
    """`store._db()` from the scheduler was the old sin: only an object's own methods touch
    its underscore names (libraries' documented underscore APIs are listed)."""
    allowed = {"_foreach_norm", "_subparsers", "_group_actions", "_asdict", "_replace", "_fields",
               # torch's op that picks its bf16 CPU kernel; torch has no public name for the same test
               "_is_mkldnn_bf16_supported"}
    offenders = []
    for path in sources("core", "ui", "pages"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
                owner = node.value
                if isinstance(owner, ast.Name) and owner.id in ("self", "cls"):
                    continue
                if node.attr in allowed:
                    continue
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} .{node.attr}")
    assert offenders == []


def test_pages_hold_no_training_code():
    """Pages lay out widgets and call core: no page builds an optimizer or a training loop."""
    for path in sources("pages"):
        text = path.read_text()
        for forbidden in ("torch.optim", ".backward()", "optimizer.step"):
            assert forbidden not in text, f"{path.name} contains {forbidden}"


def test_pages_use_the_stores_and_executors_public_api():
    """No page or ui module builds a path to a run's files or imports an executor's internals:
    RunFolder's accessors (has, version, read_bytes, first_layer) and Executor.capacity serve them."""
    from core.store.folder import RunFolder

    names = set(RunFolder.FILES.values()) | {"history.json", "checkpoint.pt", "split.npz", "run.json"}
    for path in [*sources("pages"), *sources("ui"), ROOT / "app.py"]:
        text = path.read_text()
        for name in names:
            assert f'"{name}"' not in text, f"{path.name} names the run file {name}"
        assert "run_dir(" not in text, f"{path.name} builds a run's path"
        internal = {m for m in imports(path) if m.startswith("core.executors.") and m.split(".")[2] != "base"
                    and (ROOT / "core" / "executors" / f"{m.split('.')[2]}.py").exists()}
        assert not internal, f"{path.name} imports {sorted(internal)}"
