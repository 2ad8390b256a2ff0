"""Widgets: views and controls bound to a ModelState (ipywidgets + bqplot); no computation here.

>>> from cnnviz_widgets.widgets import Explorer
>>> Explorer("vgg16")                      # every view and control, bound to one ModelState

Views can also be used one by one on a shared state: `ActivationGrid(state)`, `WeightGrid(state)`,
`FilterEffect(state)`, `LayerSummary(state)`. (`import cnnviz_widgets` alone does not import this package.)
"""

from cnnviz_widgets.widgets.attribution import ClassActivationMap, CompareImages, Predictions
from cnnviz_widgets.widgets.compare_methods import CompareMethods
from cnnviz_widgets.widgets.effect import FilterEffect
from cnnviz_widgets.widgets.explorer import Explorer
from cnnviz_widgets.widgets.grids import ActivationGrid, WeightGrid
from cnnviz_widgets.widgets.looksfor import WhatItLooksFor
from cnnviz_widgets.widgets.mosaic import MosaicFigure
from cnnviz_widgets.widgets.pixel import ConvolutionAtPixel
from cnnviz_widgets.widgets.stats import ChannelStats
from cnnviz_widgets.widgets.summary import LayerSummary

__all__ = ["ActivationGrid", "ChannelStats", "ClassActivationMap", "CompareImages", "CompareMethods",
           "ConvolutionAtPixel", "Explorer",
           "FilterEffect", "LayerSummary", "MosaicFigure", "Predictions", "TrainingMonitor", "WeightGrid",
           "WhatItLooksFor", "fit_in_background"]


def __getattr__(name: str):
    # The training monitor is a keras Callback: importing it loads Keras, so it is imported when asked for.
    if name == "TrainingMonitor":
        from cnnviz_widgets.widgets.training_monitor import TrainingMonitor

        return TrainingMonitor
    if name in ("BackgroundFit", "fit_in_background"):
        from cnnviz_widgets.widgets import background_fit

        return getattr(background_fit, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
