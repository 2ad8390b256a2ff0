"""The module paths of release 0.1, kept importable while users move to the new ones.

Its flat modules (`cnnviz_widgets.models`, `.explain`, `.scan`, ...) became subpackages grouped by
concern. Importing an old path still works: it gives a module whose names come from the new modules, and warns
once with a DeprecationWarning that names where each now lives. To be removed in 1.0.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import warnings
from types import ModuleType
from typing import Any

MOVED = {
    "cnnviz_widgets.models": ("cnnviz_widgets.network.loading", "cnnviz_widgets.network.graph"),
    "cnnviz_widgets.activations": ("cnnviz_widgets.network.extractor",),
    "cnnviz_widgets.memory": ("cnnviz_widgets.network.memory",),
    "cnnviz_widgets.variables": ("cnnviz_widgets.network.weights",),
    "cnnviz_widgets.feed": ("cnnviz_widgets.network.feed",),
    "cnnviz_widgets.images": ("cnnviz_widgets.pictures.images",),
    "cnnviz_widgets.inputs": ("cnnviz_widgets.pictures.preprocessing",),
    "cnnviz_widgets.render": ("cnnviz_widgets.pictures.render",),
    "cnnviz_widgets.datasets": ("cnnviz_widgets.pictures.datasets",),
    "cnnviz_widgets.effects": ("cnnviz_widgets.lessons.filter_effect", "cnnviz_widgets.lessons.arithmetic",
                               "cnnviz_widgets.lessons.channel_ranking"),
    "cnnviz_widgets.analysis": ("cnnviz_widgets.lessons.pixel_breakdown", "cnnviz_widgets.lessons.receptive_field",
                                "cnnviz_widgets.lessons.channel_stats"),
    "cnnviz_widgets.explain": ("cnnviz_widgets.attribution.explainer", "cnnviz_widgets.attribution.explanation",
                               "cnnviz_widgets.attribution.classes", "cnnviz_widgets.attribution.heatmaps"),
    "cnnviz_widgets.scan": ("cnnviz_widgets.features.scanning", "cnnviz_widgets.features.examples",
                            "cnnviz_widgets.features.sources"),
    "cnnviz_widgets.maximization": ("cnnviz_widgets.features.visualisation",),
    "cnnviz_widgets.training_state": ("cnnviz_widgets.state.training_state",),
    "cnnviz_widgets.widgets.explain": ("cnnviz_widgets.widgets.attribution",),
}
"""Old module → the modules that now hold its public names, searched in this order."""


class _OldPathFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname: str, path: Any, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        if fullname not in MOVED:
            return None
        return importlib.machinery.ModuleSpec(fullname, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> None:
        return None  # the default module object

    def exec_module(self, module: ModuleType) -> None:
        homes = MOVED[module.__name__]
        warnings.warn(f"{module.__name__} has moved: import from {' or '.join(homes)} instead",
                      DeprecationWarning, stacklevel=2)
        modules = [importlib.import_module(home) for home in homes]

        def __getattr__(name: str) -> Any:
            for new in modules:
                if not name.startswith("_") and hasattr(new, name):
                    return getattr(new, name)
            raise AttributeError(f"{module.__name__}.{name} is gone; its module moved to {' or '.join(homes)}")

        module.__getattr__ = __getattr__  # type: ignore[method-assign]
        module.__all__ = sorted({n for new in modules for n in vars(new) if not n.startswith("_")})


def install() -> None:
    """Make the old paths importable (once per process)."""
    if not any(isinstance(finder, _OldPathFinder) for finder in sys.meta_path):
        sys.meta_path.append(_OldPathFinder())
