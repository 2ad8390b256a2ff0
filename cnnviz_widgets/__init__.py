"""cnnviz_widgets: see inside a convolutional network from a Jupyter notebook.

>>> import cnnviz_widgets as cw
>>> model = cw.load_model("vgg16", weights="bsds500")   # offline VGG16 conv weights
>>> state = cw.ModelState(model, image=cw.sample_image("astronaut"))
>>> state.layer = "block3_conv1"; state.activation().shape
(128, 128, 256)

Names are resolved lazily so `import cnnviz_widgets` does not load TensorFlow.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "load_model": "models",
    "model_info": "models",
    "architecture": "models",
    "ModelGraph": "models",
    "load_image": "images",
    "sample_image": "images",
    "sample_names": "images",
    "load_digits": "datasets",
    "ModelState": "state",
    "CnnvizError": "errors",
    "ImageError": "errors",
    "LayerError": "errors",
    "ModelError": "errors",
    "WeightsUnavailableError": "errors",
    "CnnvizWarning": "errors",
    "FilterBreakdown": "effects",
    "Explainer": "explain",
    "Explanation": "explain",
    "Target": "explain",
    "imagenet_class_names": "explain",
    "export_png": "export",
    "reproduce_code": "export",
    "Predictions": "widgets",
    "ClassActivationMap": "widgets",
    "CompareImages": "widgets",
    "PixelBreakdown": "analysis",
    "ReceptiveField": "analysis",
    "ConvolutionAtPixel": "widgets",
    "ChannelStats": "widgets",
    "Explorer": "widgets",
    "WeightGrid": "widgets",
    "ActivationGrid": "widgets",
    "MosaicFigure": "widgets",
    "LayerSummary": "widgets",
    "FilterEffect": "widgets",
    "TrainingMonitor": "widgets",
    "fit_in_background": "widgets",
    "TrainingState": "training_state",
    "top_examples": "scan",
    "TopExamples": "scan",
    "scan_shards": "scan",
    "maximize": "maximization",
    "FeatureVisualization": "maximization",
    "sample_collection": "scan",
    "WhatItLooksFor": "widgets",
}

__all__ = ["__version__", *sorted(_EXPORTS)]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'cnnviz_widgets' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # resolve once
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
