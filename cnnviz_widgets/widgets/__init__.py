"""Widgets: views and controls bound to a ModelState (ipywidgets + bqplot); no computation here.

>>> from cnnviz_widgets.widgets import Explorer
>>> Explorer("vgg16")                      # every view and control, bound to one ModelState

Views can also be used one by one on a shared state: `ActivationGrid(state)`, `WeightGrid(state)`,
`FilterEffect(state)`, `LayerSummary(state)`. (`import cnnviz_widgets` alone does not import this package.)
"""

from .effect import FilterEffect
from .explorer import Explorer
from .grids import ActivationGrid, WeightGrid
from .mosaic import MosaicFigure
from .summary import LayerSummary

__all__ = ["ActivationGrid", "Explorer", "FilterEffect", "LayerSummary", "MosaicFigure", "WeightGrid"]
