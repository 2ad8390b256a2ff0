"""What a score is: the model's classifier, its class names, the top classes, and a `Target`.

For a model with a classifier (output (batch, classes)) the ImageNet class names shipped in
``data/imagenet_classes.json`` name the 1000 classes. A score is a class's logit (the value before softmax, as
in the Grad-CAM paper) or its probability, or, for a model without a classifier (the offline VGG16 conv
weights), the mean activation of one channel of a layer: "what in the picture drives this filter".
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

import numpy as np

from cnnviz_widgets.errors import ModelError
from cnnviz_widgets.network.graph import ModelGraph

SCORES = ("logit", "probability")
"""What a class target's gradient is taken of: the class's logit (pre-softmax; Grad-CAM's choice: it does
not shrink as other classes grow) or its probability (the model's output)."""


IMAGENET_CLASSES = 1000


@functools.cache
def imagenet_class_index() -> dict[int, tuple[str, str]]:
    """The ImageNet-1k classes in Keras' ``imagenet_class_index.json`` form: index -> (WordNet id, name).

    Shipped with the package (see data/CREDITS.md), so nothing is downloaded. Names are Keras' short ones,
    e.g. 281 -> ("n02123045", "tabby"), 817 -> ("n04285008", "sports_car").
    """
    text = resources.files("cnnviz_widgets").joinpath("data", "imagenet_classes.json").read_text(
        encoding="utf-8")
    return {int(k): (v[0], v[1]) for k, v in json.loads(text).items()}


def imagenet_class_names() -> tuple[str, ...]:
    """The 1000 ImageNet class names for display, in class order ("sports_car" reads "sports car")."""
    index = imagenet_class_index()
    return tuple(index[i][1].replace("_", " ") for i in range(IMAGENET_CLASSES))


@dataclass(frozen=True)
class Classifier:
    """What a model's class output is.

    layer : name of the output layer in the `ModelGraph`.
    n_classes : length of the output vector.
    names : one display name per class.
    names_source : "ImageNet" (1000 classes), "given" (by the user) or "index" ("class 7").
    activation : the output layer's activation: "softmax" (probabilities), "sigmoid" (one probability per
        class, independent) or anything else (scores; probabilities are then a softmax computed here).
    logit : how a class's logit is reached, for gradients: "dense" (recomputed from the output Dense layer's
        input), "activation" (the input of a final softmax layer), "output" (the output is the logit), or ""
        (not reachable: gradients are taken of the probability).
    """

    layer: str
    n_classes: int
    names: tuple[str, ...]
    names_source: str
    activation: str
    logit: str

    @property
    def probability_words(self) -> str:
        """How the shown probabilities relate to the model's output, in words."""
        if self.activation == "softmax":
            return "the model's softmax output"
        if self.activation == "sigmoid":
            return "the model's sigmoid outputs (one per class, independent: they need not sum to 1)"
        return f"a softmax of the model's {self.activation or 'linear'} outputs (the model has no softmax)"


def layer_activation_name(layer: Any) -> str:
    try:
        value = layer.get_config().get("activation", "")
    except Exception:  # a custom layer without get_config: its activation is unknown
        return ""
    if isinstance(value, dict):  # a serialised activation object
        value = value.get("config", {}).get("name", "") or value.get("class_name", "")
    return str(value or "").lower()


def output_node(graph: ModelGraph) -> Any:
    outputs = graph.output_tensors
    if len(outputs) != 1:
        raise ModelError(f"{graph.model.name} has {len(outputs)} outputs; predictions are shown for models "
                         "with one class output")
    for node in reversed(graph.nodes.values()):
        if node.tensor is outputs[0]:
            return node
    raise ModelError(f"cannot find the output layer of {graph.model.name}")


def find_classifier(graph: ModelGraph, class_names: Sequence[str] | None = None) -> Classifier:
    """The model's classifier output, or ModelError saying why it has none.

    class_names : one name per class (default: ImageNet's for 1000 classes, "class i" otherwise).
    """
    node = output_node(graph)
    shape = tuple(node.output_shape)
    if len(shape) != 2:
        what = (f"{shape[-1]} maps" if len(shape) == 4 and shape[-1] else "maps") + ", not one score per class"
        vgg = ("The offline VGG16 weights (the HED edge detector's) keep only its 13 conv layers; load VGG16 with "
               "its ImageNet weights for the classifier. " if graph.model.name.lower().startswith("vgg16") else "")
        raise ModelError(
            f"{graph.model.name} has no classifier: its output is {what}, so there are no class predictions. "
            f"{vgg}Grad-CAM and saliency of one filter's mean activation work without a classifier.")
    n = shape[1]
    if n is None or n < 2:
        raise ModelError(f"{graph.model.name}'s output {shape} has {n} value(s) per image; predictions are shown "
                         "for classifiers with at least 2 classes")
    if class_names is not None:
        names = tuple(str(name) for name in class_names)
        if len(names) != n:
            raise ModelError(f"class_names has {len(names)} names; {graph.model.name} has {n} classes")
        source = "given"
    elif n == IMAGENET_CLASSES:
        names, source = imagenet_class_names(), "ImageNet"
    else:
        names, source = tuple(f"class {i}" for i in range(n)), "index"
    activation = layer_activation_name(node.layer)
    if node.class_name == "Softmax":
        activation = "softmax"
    if node.class_name == "Dense":
        logit = "dense" if activation not in ("", "linear") else "output"
    elif node.class_name in ("Softmax", "Activation") and len(node.inputs) == 1:
        logit = "activation"
    else:
        logit = "output" if activation in ("", "linear") else ""
    return Classifier(node.name, int(n), names, source, activation, logit)


@dataclass(frozen=True, eq=False)  # eq=False: an ndarray field makes a generated __eq__ meaningless
class TopClasses:
    """The top classes for one input, most likely first.

    indices : class indices. probabilities : (k,) float64, see `note`. names : display names.
    outputs : (n_classes,) float32, the model's raw output vector. note : how the probabilities were had.
    """

    indices: tuple[int, ...]
    probabilities: np.ndarray
    names: tuple[str, ...]
    outputs: np.ndarray
    note: str


@dataclass(frozen=True)
class Target:
    """What an explanation explains: a class's score, or one filter's mean activation in a layer.

    kind : "class" or "filter". index : the class, or the filter (output channel) of `layer`.
    layer : the filter's layer ("" for a class).
    """

    kind: str
    index: int
    layer: str = ""

    def words(self, classifier: Classifier | None = None) -> str:
        if self.kind == "class":
            name = classifier.names[self.index] if classifier is not None else ""
            return f"class {self.index}" + (f" ({name})" if name and name != f"class {self.index}" else "")
        return f"{self.layer} filter {self.index}"
