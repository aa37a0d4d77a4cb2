"""The layers stay as drawn in docs/architecture.md: who may import whom.

Every import of every module is read from its source (``ast``), including the lazy ones inside
functions, so a rule cannot be dodged by importing late.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("graph", "wire", "engine", "observe", "cli")

#: flow's packages and what each may import of flow (besides itself and flow.errors).
ALLOWED = {
    "flow.graph": set(),
    "flow.wire": set(),
    "flow.observe": {"flow.wire"},
    "flow.engine": {"flow.graph", "flow.wire", "flow.observe", "flow.clock"},
    "flow.cli": {"flow", "flow.graph", "flow.wire", "flow.engine", "flow.observe", "gui"},
}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Absolute names of every module ``path`` imports (relative imports resolved)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                mod = ".".join([*base, node.module] if node.module else base)
            else:
                mod = node.module or ""
            found.add(mod)
            found.update(f"{mod}.{alias.name}" for alias in node.names)
    return found


def sources(top: str) -> list[Path]:
    return sorted((ROOT / top).rglob("*.py"))


def layer_of(name: str) -> str:
    """``flow.engine.router.core`` -> ``flow.engine``; ``flow.errors`` -> itself; ``gui.app`` -> ``gui``."""
    parts = name.split(".")
    return ".".join(parts[:2]) if parts[0] == "flow" else parts[0]


def flow_imports(path: Path) -> set[str]:
    return {layer_of(m) for m in imports_of(path) if m == "flow" or m.startswith("flow.")
            or m == "gui" or m.startswith("gui.")}


@pytest.mark.parametrize("package", PACKAGES)
def test_flow_packages_import_only_what_their_layer_allows(package):
    layer = f"flow.{package}"
    allowed = ALLOWED[layer] | {layer, "flow.errors"}
    bad = {}
    for path in sources(f"flow/{package}"):
        wrong = {m for m in flow_imports(path) if m not in allowed and layer_of(m) not in allowed}
        if wrong:
            bad[str(path.relative_to(ROOT))] = sorted(wrong)
    assert not bad, f"imports that cross the layers of docs/architecture.md: {bad}"


def test_graph_imports_nothing_of_engine_wire_observe():
    for path in sources("flow/graph"):
        mods = imports_of(path)
        assert not any(m.startswith(("flow.engine", "flow.wire", "flow.observe", "flow.cli", "zmq"))
                       for m in mods), path


def test_nothing_below_cli_imports_cli():
    for package in ("graph", "wire", "engine", "observe"):
        for path in sources(f"flow/{package}"):
            assert not any(m.startswith("flow.cli") for m in imports_of(path)), path


def test_flow_never_imports_stages_or_gui_outside_cli():
    for path in sources("flow"):
        if path.is_relative_to(ROOT / "flow" / "cli"):
            continue
        mods = imports_of(path)
        assert not any(m.split(".")[0] in ("stages", "gui") for m in mods), path


def test_stages_never_import_zmq_or_the_engine():
    for path in sources("stages"):
        mods = imports_of(path)
        bad = {m for m in mods if m.split(".")[0] == "zmq"
               or m.startswith(("flow.engine", "flow.wire", "flow.observe", "flow.cli"))}
        assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


def test_gui_never_imports_stages_and_talks_only_to_the_monitor():
    for path in sources("gui"):
        mods = imports_of(path)
        bad = {m for m in mods if m.split(".")[0] == "stages"
               or m.startswith(("flow.engine", "flow.graph", "flow.cli"))}
        assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


def test_flow_top_level_holds_few_modules():
    top = sorted(p.name for p in (ROOT / "flow").glob("*.py"))
    assert len(top) <= 8, top
    for package in PACKAGES:
        init = ROOT / "flow" / package / "__init__.py"
        doc = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8")))
        assert doc and "import" in doc.lower(), f"{init}: say what the package is and may import"


def test_no_module_over_400_lines_without_a_reason():
    long = []
    for path in sources("flow"):
        text = path.read_text(encoding="utf-8")
        if text.count("\n") > 420:
            doc = ast.get_docstring(ast.parse(text)) or ""
            if "lines" not in doc:
                long.append(str(path.relative_to(ROOT)))
    assert not long, f"over ~400 lines, and the docstring does not say why: {long}"


def test_the_rule_checker_sees_lazy_and_relative_imports(tmp_path, monkeypatch):
    pkg = ROOT / "flow" / "graph" / "model.py"
    assert "flow.errors" in imports_of(pkg)
    src = tmp_path / "m.py"
    src.write_text("def f():\n    import zmq\n    from flow.engine import run\n")
    monkeypatch.setattr(__import__(__name__), "ROOT", tmp_path)
    assert {"zmq", "flow.engine", "flow.engine.run"} <= imports_of(src)
