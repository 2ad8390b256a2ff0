"""Guided Backpropagation (Springenberg et al. 2015) and Guided Grad-CAM (Selvaraju et al. 2017).

Guided Backpropagation is the input gradient with every ReLU's gradient changed: a ReLU passes back only the
positive part of the gradient that reaches it, and only where its input was positive (plain backpropagation
keeps the negative part too). What is left are the input details that raise the score through every layer on the
way: sharp, picture-like edges. It is computed by running the model's own layers with guided ReLUs
(`guided_relus`): for the length of one gradient pass each ReLU (a layer whose activation is "relu", a `ReLU`
layer) is replaced by a function that gives the same values and, on the way back, differentiates the original
activation against the positive part of the incoming gradient, relu(dy) (tf.custom_gradient; for a plain ReLU
that is tf-keras-vis' rule dy * (dy > 0) * (x > 0)). The originals are put back as soon as the pass ends, and
one guided pass runs at a time (a lock). The forward values never change, so a forward pass running beside it
(the extractor's) reads the same numbers; a gradient pass of another thread at that moment would be guided too.
tf-keras-vis does the same on a clone of the model (its `GuidedBackpropagation` modifier: a second copy of the
weights), Captum with backward hooks on `nn.ReLU` modules. A ReLU written as a raw op (keras.ops.relu between
layers) is not a layer and stays plain; so do other activations (Captum and tf-keras-vis guide ReLUs only).

Guided Grad-CAM (Captum's definition) = Guided Backpropagation x Grad-CAM brought to the input's size, per
pixel and channel. Grad-CAM is upsampled bilinearly with half-pixel centres, as the paper's authors and this
package's heat maps do (Captum interpolates "nearest" by default).

Both give `attributions` (H, W, C) signed, and `raw` = the max over the channels of |attributions|, as saliency.
Guided Backpropagation is known to pass sanity checks badly: it barely changes when the weights are randomised
(Adebayo et al. 2018), since it mostly reconstructs the picture's edges.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from cnnviz_widgets.attribution.classes import Target, layer_activation_name
from cnnviz_widgets.attribution.explanation import Explanation
from cnnviz_widgets.attribution.gradcam import grad_cam
from cnnviz_widgets.attribution.gradients import GradientPaths
from cnnviz_widgets.attribution.heatmaps import unit_heatmap, upsample
from cnnviz_widgets.attribution.methods import Method
from cnnviz_widgets.errors import LayerError
from cnnviz_widgets.network.graph import ModelGraph

_SWAP_LOCK = threading.Lock()  # one guided pass at a time changes the layers


def guided(function: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """`function` (an activation) with the same values and a guided gradient: its own gradient taken against
    relu(dy) instead of dy."""
    import tensorflow as tf

    @tf.custom_gradient
    def guided_function(x: Any) -> Any:
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(x)
            y = function(x)

        def backward(dy: Any) -> Any:
            return tape.gradient(y, x, output_gradients=tf.nn.relu(dy))

        return y, backward

    return guided_function


def relu_layers(graph: ModelGraph) -> list[tuple[Any, str]]:
    """(layer, the attribute that computes its ReLU: "activation" or "call") for every ReLU layer of `graph`."""
    found, seen = [], set()
    for node in graph.nodes.values():
        layer = node.layer
        if id(layer) in seen:
            continue
        if node.class_name == "ReLU":
            found.append((layer, "call"))
        elif hasattr(layer, "activation") and layer_activation_name(layer) == "relu":
            found.append((layer, "activation"))
        else:
            continue
        seen.add(id(layer))
    return found


@contextlib.contextmanager
def guided_relus(graph: ModelGraph) -> Iterator[int]:
    """Within: every ReLU layer of `graph` computes a guided ReLU (see `guided`). Yields how many were changed."""
    with _SWAP_LOCK:
        changed = []
        try:
            for layer, attribute in relu_layers(graph):
                original = getattr(layer, attribute)
                in_instance = attribute in vars(layer)
                object.__setattr__(layer, attribute, guided(original))
                changed.append((layer, attribute, original, in_instance))
            yield len(changed)
        finally:
            for layer, attribute, original, in_instance in reversed(changed):
                if in_instance:
                    object.__setattr__(layer, attribute, original)
                else:
                    object.__delattr__(layer, attribute)


def guided_gradient(paths: GradientPaths, x: np.ndarray, target: Target, score: str) -> tuple[np.ndarray, float]:
    """(the guided gradient (H, W, C) float32, the score) for the prepared input `x`: one pass from the input."""
    with guided_relus(paths.graph):
        grads, values = paths.input_gradients(np.asarray(x, dtype=np.float32)[np.newaxis], target, score)
    return grads[0], float(values[0])


def guided_backprop(paths: GradientPaths, x: np.ndarray, target: Target, layer: str | None, score: str,
                    key: str | None = None) -> Explanation:
    """Guided Backpropagation of `target`'s `score` for the prepared input `x` (H, W, C) (see the module)."""
    attributions, value = guided_gradient(paths, x, target, score)
    raw = np.abs(attributions).max(axis=2).astype(np.float32)
    note = "" if raw.max() > 0 else "all zero: no path through positive ReLUs raises this score"
    return Explanation("guided-backprop", target, score, value, paths.graph.input_name, raw,
                       unit_heatmap(raw, raw.shape), None, note, attributions=attributions)


def guided_grad_cam(paths: GradientPaths, x: np.ndarray, target: Target, layer: str | None, score: str,
                    key: str | None = None, cam_layer: str | None = None) -> Explanation:
    """Guided Grad-CAM of `target`'s `score` for the prepared input `x` (H, W, C) (see the module).

    cam_layer : the conv layer Grad-CAM weighs; default the last conv layer (before a filter target's layer).
    """
    cam_layer = _cam_layer(paths.graph, target, cam_layer)
    cam = grad_cam(paths, x, target, cam_layer, score, key)
    backprop, _ = guided_gradient(paths, x, target, score)
    attributions = (backprop * upsample(cam.raw, x.shape[:2])[..., np.newaxis]).astype(np.float32)
    raw = np.abs(attributions).max(axis=2).astype(np.float32)
    note = cam.note or ("" if raw.max() > 0 else "all zero: Guided Backpropagation is zero where Grad-CAM is not")
    return Explanation("guided-grad-cam", target, score, cam.score_value, cam_layer, raw, unit_heatmap(raw, raw.shape),
                       cam.weights, note, attributions=attributions)


def _cam_layer(graph: ModelGraph, target: Target, name: str | None) -> str:
    if name is not None:
        node = graph.node(name)
        if not node.is_map:
            raise LayerError(f"{name} ({node.class_name}) has no maps for Grad-CAM to weigh; use a conv layer")
        return node.name
    order = list(graph.nodes)
    end = order.index(graph.node(target.layer).name) if target.kind == "filter" else len(order)
    convs = [n.name for n in list(graph.nodes.values())[:end] if n.kind == "conv" and n.is_map]
    if not convs:
        raise LayerError(f"{graph.model.name} has no conv layer for Grad-CAM to weigh; Guided Backpropagation "
                         "works on the input alone")
    return convs[-1]


GUIDED_BACKPROP = Method("guided-backprop", "gradient", "The input details that raise the score through every "
                         "layer: the gradient, with only positive signals let back through each ReLU.",
                         guided_backprop)
GUIDED_GRAD_CAM = Method("guided-grad-cam", "gradient", "Guided Backpropagation's sharp details, kept only where "
                         "Grad-CAM says the class is: the two multiplied pixel by pixel.", guided_grad_cam,
                         {"cam_layer": None})
