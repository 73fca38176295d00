"""The package's three wings and their one direction: cli -> job -> compose -> rank, no import circle anywhere.

Every import counts, wherever it stands: at the top, inside a function (a lazy import) or under TYPE_CHECKING.
``python -m pytest tests/test_layers.py`` checks it; the failure names the import that breaks the rule.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, List, Set

PACKAGE = Path(__file__).resolve().parent.parent / "launcher" / "ds_helper"
# Lower number: lower layer. An import may only go to a module of the same or a lower layer.
LAYERS = {"rank": 0, "compose": 1, "job": 2, "cli": 3}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES: Dict[str, Path] = {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _layer(module: str) -> int:
    parts = module.split(".")
    if len(parts) == 1:
        return LAYERS["rank"]  # the package itself: imports nothing (ds_helper/__init__.py)
    return LAYERS.get(parts[1], LAYERS["cli"])  # ds_helper.cli and anything else at the top


def _imports(module: str) -> Set[str]:
    """The ds_helper modules ``module`` imports, anywhere in its file."""
    found: Set[str] = set()
    tree = ast.parse(MODULES[module].read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.split(".")[0] == "ds_helper")
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "ds_helper":
            for alias in node.names:  # `from ds_helper.rank import bind` imports the submodule bind
                submodule = f"{node.module}.{alias.name}"
                found.add(submodule if submodule in MODULES else node.module)
    return found - {module}


GRAPH: Dict[str, Set[str]] = {module: _imports(module) for module in MODULES}


def upward_imports(graph: Dict[str, Set[str]]) -> List[str]:
    return [
        f"{module} (layer {_layer(module)}) imports {target} (layer {_layer(target)})"
        for module, targets in sorted(graph.items())
        for target in sorted(targets)
        if _layer(target) > _layer(module)
    ]


def import_circles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    circles: List[List[str]] = []
    state: Dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(module: str, path: List[str]) -> None:
        state[module] = 1
        for target in sorted(graph.get(module, ())):
            if state.get(target) == 1:
                circles.append([*path[path.index(target) :], target])
            elif target not in state:
                visit(target, [*path, target])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    return circles


def test_every_import_points_down_or_sideways() -> None:
    assert upward_imports(GRAPH) == []


def test_no_import_circle() -> None:
    assert import_circles(GRAPH) == []


def test_the_wings_are_folders_and_every_module_lives_in_one() -> None:
    top = sorted(m for m in MODULES if m.count(".") == 1 and m.split(".")[1] not in LAYERS)
    assert top == [] and {m.split(".")[1] for m in MODULES if "." in m} == set(LAYERS)
    assert GRAPH["ds_helper"] == set()


def test_the_checks_catch_what_they_look_for() -> None:
    # A rank module importing the schema, and a circle through two rank modules, as a newcomer might write them.
    broken = {**GRAPH, "ds_helper.rank.plan": {"ds_helper.compose.schema", "ds_helper.rank.checks"}}
    assert upward_imports(broken) == ["ds_helper.rank.plan (layer 0) imports ds_helper.compose.schema (layer 1)"]
    circles = import_circles(broken)
    assert ["ds_helper.rank.plan", "ds_helper.rank.checks", "ds_helper.rank.plan"] in circles
    assert ["ds_helper.compose.schema", "ds_helper.rank.plan", "ds_helper.compose.schema"] in circles
