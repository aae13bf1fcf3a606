"""The package's imports point one way along the data flow.

Every module of ``sgdsai_cli`` sits in a layer; a module may import only from its own part or from a
lower layer. Two parts of the same layer (``models`` and ``optim``) do not import each other. Lazy
imports inside functions count too: the rule is about what a layer knows, not when it learns it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "sgdsai_cli"

# part (first name below sgdsai_cli) -> layer, lowest first
LAYERS = {
    "version": 0, "errors": 0,
    "units": 1, "files": 1, "cache": 1, "progress": 1, "extras": 1,
    "precision": 2, "results": 2, "schema": 3,
    "models": 3, "optim": 3,
    "measure": 4,
    "analysis": 5,
    "render": 6,
    "cli": 7,
    "__init__": 8, "__main__": 8,
}


def _part(module: str) -> str:
    """'sgdsai_cli.measure.sizing' -> 'measure'; 'sgdsai_cli' -> '__init__'."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module) for every import in the file, relative ones resolved."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    here = _module_name(path).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            if module == "sgdsai_cli":  # `from sgdsai_cli import x`: x names a part
                found += [(node.lineno, f"sgdsai_cli.{alias.name}") for alias in node.names]
            else:
                found.append((node.lineno, module))
    return [(line, m) for line, m in found if m == "sgdsai_cli" or m.startswith("sgdsai_cli.")]


def _violations() -> list[str]:
    bad = []
    for path in sorted(PACKAGE.rglob("*.py")):
        mine = _part(_module_name(path)) if path.parent != PACKAGE or path.stem != "__init__" else "__init__"
        if path.parent == PACKAGE and path.stem not in ("__init__",):
            mine = path.stem
        for line, module in _imports(path):
            theirs = _part(module)
            if theirs == mine:
                continue
            if theirs not in LAYERS:
                bad.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {module}: part not in LAYERS")
            elif LAYERS[theirs] >= LAYERS[mine]:
                bad.append(f"{path.relative_to(PACKAGE.parent)}:{line} ({mine}, layer {LAYERS[mine]}) imports "
                           f"{module} ({theirs}, layer {LAYERS[theirs]})")
    return bad


def test_every_part_has_a_layer():
    parts = {p.stem if p.is_file() else p.name for p in PACKAGE.iterdir()
             if (p.is_file() and p.suffix == ".py") or (p.is_dir() and (p / "__init__.py").exists())}
    assert parts - set(LAYERS) == set()


def test_imports_point_down_the_data_flow():
    assert _violations() == []


@pytest.mark.parametrize(("source", "expected"), [
    ("from sgdsai_cli.cli.app import app\n", ["sgdsai_cli.cli.app"]),
    ("def f():\n    from ..render import profile\n", ["sgdsai_cli.render"]),
    ("from sgdsai_cli import render\n", ["sgdsai_cli.render"]),
    ("import torch\n", []),
])
def test_import_walker_sees_lazy_and_relative_imports(tmp_path, source, expected, monkeypatch):
    fake = PACKAGE / "measure" / "_layer_probe.py"
    monkeypatch.setattr(Path, "read_text", lambda self, encoding=None: source)
    assert [m for _, m in _imports(fake)] == expected


MAX_MODULE_LINES = 450  # "about 400": a module past this holds more than one concept


def test_no_module_is_too_long():
    long = {str(p.relative_to(PACKAGE.parent)): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES}
    assert long == {}


# the team's design contract lives outside the repository; spelled in parts so this file does not cite it
OUTSIDE = ("/".join(["..", "shared", ""]), "DESIGN" + ".md")


def test_nothing_cites_a_file_outside_the_repository():
    root = PACKAGE.parent
    texts = [p for p in [*PACKAGE.rglob("*.py"), *(root / "tests").rglob("*.py"), root / "README.md",
                         *(root / "docs").rglob("*.md")] if p.exists()]
    cited = [str(p.relative_to(root)) for p in texts if any(o in p.read_text(encoding="utf-8") for o in OUTSIDE)
             and p.name != "test_layers.py"]
    assert cited == []
