"""cnnviz_widgets: see inside a convolutional network from a Jupyter notebook.

>>> import cnnviz_widgets as cw
>>> model = cw.load_model("vgg16", weights="bsds500")   # offline VGG16 conv weights
>>> state = cw.ModelState(model, image=cw.sample_image("astronaut"))
>>> state.layer = "block3_conv1"; state.activation().shape
(128, 128, 256)

Names are resolved lazily so `import cnnviz_widgets` does not load TensorFlow.
"""

from __future__ import annotations

from cnnviz_widgets import old_paths
from cnnviz_widgets.lazy import lazy_names

__version__ = "0.1.0"

_EXPORTS = {
    "load_model": "network.loading",
    "model_info": "network.loading",
    "architecture": "network.loading",
    "ModelGraph": "network.graph",
    "load_image": "pictures.images",
    "sample_image": "pictures.images",
    "sample_names": "pictures.images",
    "load_digits": "pictures.datasets",
    "ModelState": "state.model_state",
    "CnnvizError": "errors",
    "ImageError": "errors",
    "LayerError": "errors",
    "ModelError": "errors",
    "WeightsUnavailableError": "errors",
    "CnnvizWarning": "errors",
    "FilterBreakdown": "lessons.filter_effect",
    "Explainer": "attribution.explainer",
    "Explanation": "attribution.explanation",
    "Target": "attribution.classes",
    "imagenet_class_names": "attribution.classes",
    "sanity_check": "attribution.sanity",
    "SanityReport": "attribution.sanity",
    "faithfulness": "attribution.faithfulness",
    "FaithfulnessCurve": "attribution.faithfulness",
    "export_png": "export.saving",
    "reproduce_code": "export.code",
    "Predictions": "widgets",
    "ClassActivationMap": "widgets",
    "CompareImages": "widgets",
    "CompareMethods": "widgets",
    "PixelBreakdown": "lessons.pixel_breakdown",
    "ReceptiveField": "lessons.receptive_field",
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
    "TrainingState": "state.training_state",
    "top_examples": "features.scanning",
    "TopExamples": "features.examples",
    "scan_shards": "features.scanning",
    "maximize": "features.visualisation",
    "FeatureVisualization": "features.visualisation",
    "sample_collection": "features.sources",
    "WhatItLooksFor": "widgets",
}

__all__ = ["__version__", *sorted(_EXPORTS)]


__getattr__, __dir__ = lazy_names(__name__, _EXPORTS)

# Modules of releases before 0.2 still import, with a DeprecationWarning naming their new home.
old_paths.install()
