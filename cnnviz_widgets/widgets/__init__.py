"""Widgets: views and controls bound to a ModelState (ipywidgets + bqplot); no computation here.

>>> from cnnviz_widgets.widgets import Explorer
>>> Explorer("vgg16")                      # every view and control, bound to one ModelState

Views can also be used one by one on a shared state: `ActivationGrid(state)`, `WeightGrid(state)`,
`FilterEffect(state)`, `LayerSummary(state)`. Names are resolved lazily, so importing this package does not
import bqplot or a view module until it is used.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Explorer": "explorer",
    "WeightGrid": "grids",
    "ActivationGrid": "grids",
    "MosaicFigure": "mosaic",
    "LayerSummary": "summary",
    "FilterEffect": "effect",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'cnnviz_widgets.widgets' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # resolve once
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
