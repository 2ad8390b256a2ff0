"""The package's shape: old module paths still import, and no module reaches into another's private names."""

from __future__ import annotations

import ast
import importlib
import sys
import warnings
from pathlib import Path

import pytest

import cnnviz_widgets
from cnnviz_widgets.old_paths import MOVED

PACKAGE = Path(cnnviz_widgets.__file__).parent


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("old", sorted(MOVED))
def test_an_old_module_path_still_imports_and_says_where_it_went(old):
    sys.modules.pop(old, None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        module = importlib.import_module(old)
    moved = [w for w in caught if issubclass(w.category, DeprecationWarning) and old in str(w.message)]
    assert moved and all(home in str(moved[0].message) for home in MOVED[old])
    for name in module.__all__:
        value = getattr(module, name)
        assert any(getattr(importlib.import_module(home), name, None) is value for home in MOVED[old])


def test_an_old_path_names_what_it_lost():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        old = importlib.import_module("cnnviz_widgets.models")
    assert old.load_model is cnnviz_widgets.load_model
    with pytest.raises(AttributeError, match="cnnviz_widgets.network.loading"):
        old._hed_weights_path  # noqa: B018  (private names did not move with a promise)


def test_no_module_imports_another_modules_private_names():
    reaches = []
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("cnnviz_widgets"):
                reaches += [f"{path.relative_to(PACKAGE)}: {node.module}.{a.name}"
                            for a in node.names if a.name.startswith("_") and a.name != "__version__"]
    assert reaches == []


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_a_module_is_at_most_500_lines(path):
    assert len(path.read_text().splitlines()) <= 500


def test_the_architecture_page_names_every_room_and_module():
    page = (PACKAGE.parent / "ARCHITECTURE.md").read_text()
    rooms = sorted(p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists())
    missing = [f"{room}/" for room in rooms if f"`{room}/`" not in page]
    for room in rooms:
        if room == "widgets":  # the views are listed in the README's table, not one by one here
            continue
        missing += [f"{room}/{m.stem}" for m in sorted((PACKAGE / room).glob("[!_]*.py")) if f"`{m.stem}`" not in page]
    missing += [m.name for m in sorted(PACKAGE.glob("[!_]*.py")) if f"`{m.stem}`" not in page and m.stem != "cli"]
    assert missing == []
