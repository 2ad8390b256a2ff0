"""Why the network decides, for one model: its top predictions, and each attribution method by name.

`Explainer.predict` gives the top classes; `Explainer.explain` (or `grad_cam`, `saliency`) the heat map of a
target, computed by the method's module (`gradcam`, `saliency`) from `gradients.GradientPaths`. Given the
activation cache (`network.extractor`), only the layers that matter run: Grad-CAM on layer E of a score
computed at layer L starts from E's cached maps and runs E → L (see `gradients`), and predictions continue from
the deepest cached layer instead of running the network again (`network.segments`). The last few outputs and
explanations are kept per input (`lru.LruCache`).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from cnnviz_widgets.attribution import catalogue
from cnnviz_widgets.attribution.classes import Classifier, Target, TopClasses, find_classifier, output_node
from cnnviz_widgets.attribution.explanation import Explanation
from cnnviz_widgets.attribution.gradients import Activations, GradientPaths
from cnnviz_widgets.attribution.methods import Method, options_key
from cnnviz_widgets.checks import check_filter, check_int
from cnnviz_widgets.errors import CnnvizError, LayerError, ModelError
from cnnviz_widgets.lru import LruCache
from cnnviz_widgets.network.extractor import input_key
from cnnviz_widgets.network.graph import ModelGraph

_CACHED_RESULTS = 16  # explanations kept per Explainer (small: a heat map is one (H, W) float32 array)
_CACHED_OUTPUTS = 4  # the model's outputs kept per Explainer, for the last few inputs


class Explainer:
    """Predictions, Grad-CAM and saliency for the model of a `ModelGraph`.

    Parameters
    ----------
    graph
        The flattened model (its layers are the model's own: nothing is copied).
    class_names
        One name per class of the model's output; default ImageNet's for 1000 classes, else "class i".

    activations
        (x, key, layer) -> that layer's (H, W, C) output for the input, or None where it is not at hand: the
        activation cache (`ModelState` passes its extractor). Without it every gradient runs from the input.

    Inputs `x` are prepared model inputs (H, W, C) float32, as `preprocessing.prepare_input` makes them; `key`
    (e.g. `extractor.input_key(x)`) lets results be reused for the same input.
    """

    def __init__(self, graph: ModelGraph, class_names: Sequence[str] | None = None,
                 activations: Activations | None = None):
        self.graph = graph
        self.activations = activations
        self.paths = GradientPaths(graph, activations, lambda: self.classifier)
        """The gradients every method is computed from (`gradients.GradientPaths`)."""
        self._prediction_start: str | bool | None = False  # False: not looked for yet; None: none works
        self._class_names = None if class_names is None else tuple(class_names)
        self._classifier: Classifier | ModelError | None = None
        self._outputs: LruCache[np.ndarray] = LruCache(_CACHED_OUTPUTS)
        self._results: LruCache[Explanation] = LruCache(_CACHED_RESULTS)
        self.forward_passes = 0  # the whole model run from the input
        self.partial_passes = 0  # the model run on from a cached layer to its output
        self.last_seconds = 0.0

    @property
    def reuse(self) -> bool:
        """False: the whole network from the input every time (benchmarks compare); default True with a cache."""
        return self.paths.reuse

    @reuse.setter
    def reuse(self, value: bool) -> None:
        self.paths.reuse = bool(value)

    @property
    def gradient_passes(self) -> int:
        """Gradient passes run (`gradients.GradientPaths.passes`)."""
        return self.paths.passes

    @property
    def gradient_passes_from_input(self) -> int:
        """Gradient passes that ran the network from its input: none where the cache had the layers."""
        return self.paths.passes_from_input

    # -- the classifier ---------------------------------------------------------------------------------

    @property
    def classifier(self) -> Classifier:
        """The model's classifier; ModelError (saying why) for a model without one."""
        found = self._find_classifier()
        if isinstance(found, ModelError):
            raise ModelError(str(found))  # a fresh error each time: no traceback piles up on a shared one
        return found

    @property
    def has_classifier(self) -> bool:
        return isinstance(self._find_classifier(), Classifier)

    def _find_classifier(self) -> Classifier | ModelError:
        if self._classifier is None:
            try:
                self._classifier = find_classifier(self.graph, self._class_names)
            except ModelError as err:
                self._classifier = err
        return self._classifier

    def set_class_names(self, class_names: Sequence[str] | None) -> None:
        """Name the classes (None: the default names). ModelError if the count does not match."""
        names = None if class_names is None else tuple(class_names)
        classifier = find_classifier(self.graph, names)  # raises before anything changes
        self._class_names, self._classifier = names, classifier

    # -- predictions ------------------------------------------------------------------------------------

    def outputs(self, x: np.ndarray, key: str | None = None) -> np.ndarray:
        """(n_classes,) float32: the model's output for the prepared input `x` (H, W, C)."""
        self.classifier  # noqa: B018  (raises for a model without a classifier)
        key = key or _key(x)

        def run() -> np.ndarray:
            start = time.perf_counter()
            out = self._outputs_from_cache(x, key)
            if out is None:
                out = self.graph.model(x[np.newaxis], training=False)
                out = out[0] if isinstance(out, (list, tuple)) else out
                self.forward_passes += 1
            self.last_seconds = time.perf_counter() - start
            return np.asarray(out, dtype=np.float32)[0]

        return self._outputs.get(key, run)

    def _outputs_from_cache(self, x: np.ndarray, key: str) -> Any:
        """The model's output computed on from the deepest cached layer that alone determines it, or None."""
        if not self.reuse:
            return None
        output = output_node(self.graph).name
        if self._prediction_start is False:
            self._prediction_start = None
            for node in reversed(list(self.graph.nodes.values())):  # deepest first
                if node.is_map and node.name != output and self.graph.segments.between(node.name, output) is not None:
                    self._prediction_start = node.name
                    break
        start = self._prediction_start
        if not isinstance(start, str):
            return None
        maps = self.activations(x, key, start) if self.activations is not None else None
        if maps is None:
            return None
        self.partial_passes += 1
        return self.graph.segments.between(start, output)(maps[np.newaxis], training=False)

    def probabilities(self, outputs: np.ndarray) -> np.ndarray:
        """(n_classes,) float64 probabilities from the model's outputs (see `Classifier.probability_words`)."""
        out = np.asarray(outputs, dtype=np.float64)
        if self.classifier.activation in ("softmax", "sigmoid"):
            return out
        shifted = np.exp(out - out.max())
        return shifted / shifted.sum()

    def predict(self, x: np.ndarray, top: int = 5, key: str | None = None) -> TopClasses:
        """The `top` most likely classes for the prepared input `x` (H, W, C)."""
        classifier = self.classifier
        top = check_int(top, "top", 1)
        outputs = self.outputs(x, key)
        order = np.argsort(-outputs, kind="stable")[: min(top, classifier.n_classes)]
        probabilities = self.probabilities(outputs)[order]
        return TopClasses(tuple(int(i) for i in order), probabilities,
                           tuple(classifier.names[i] for i in order), outputs, classifier.probability_words)

    def top_class(self, x: np.ndarray, key: str | None = None) -> int:
        return int(np.argmax(self.outputs(x, key)))

    # -- what can be explained --------------------------------------------------------------------------

    def conv_layers(self, before: str | None = None) -> list[str]:
        """Conv layers with (batch, H, W, C) output in network order; with `before`, only those ahead of it."""
        names = [n.name for n in self.graph.nodes.values() if n.kind == "conv" and n.is_map]
        if before is None:
            return names
        order = list(self.graph.nodes)
        position = order.index(self.graph.node(before).name)
        return [n for n in names if order.index(n) < position]

    def default_layer(self, target: Target) -> str:
        """The layer Grad-CAM weighs by default: the last conv layer (before the target's layer)."""
        convs = self.conv_layers(before=target.layer if target.kind == "filter" else None)
        if not convs:
            where = f" before {target.layer}" if target.kind == "filter" else ""
            raise LayerError(f"{self.graph.model.name} has no conv layer{where} for Grad-CAM to weigh; "
                             "the saliency map works on the input instead")
        return convs[-1]

    def class_target(self, x: np.ndarray, class_index: int | None = None, key: str | None = None) -> Target:
        """A class target: `class_index`, or the top prediction for `x`."""
        classifier = self.classifier
        if class_index is None:
            return Target("class", self.top_class(x, key))
        return Target("class", check_int(class_index, "class_index", 0, classifier.n_classes - 1))

    def filter_target(self, layer: str, filter: int) -> Target:
        """A filter target: the mean activation of output channel `filter` of `layer` (a layer with maps)."""
        node = self.graph.node(layer)
        if not node.is_map:
            raise LayerError(f"{layer} ({node.class_name}) has no maps: a filter target needs a layer with "
                             "(batch, height, width, channels) output")
        n = int(node.output_shape[-1])
        return Target("filter", check_filter(filter, layer, n, error=CnnvizError), node.name)

    # -- explanations -----------------------------------------------------------------------------------

    def explain(self, x: np.ndarray, target: Target, method: str = "grad-cam", layer: str | None = None,
                score: str | None = None, key: str | None = None, **options: Any) -> Explanation:
        """`method` (a name of `catalogue.METHODS`) on `target` for the prepared input `x` (H, W, C).

        layer : for the CAM methods, the conv layer whose maps are weighed (default: the last conv layer before
        the target); ignored by the others. score : for a class target, "logit" (default where the model's logit
        can be reached) or "probability". options : the method's own (`catalogue.method(name).options`).
        Results are kept per input, target, layer, score and options.
        """
        chosen = catalogue.method(method)
        given = chosen.with_options(options)
        if chosen.uses_layer:
            layer = self.default_layer(target) if layer is None else layer
            node = self.graph.node(layer)
            if not node.is_map:
                raise LayerError(f"{layer} ({node.class_name}) has no maps for {chosen.name} to weigh; use a conv "
                                 "layer")
            layer = node.name
        else:
            layer = None
        score = self.paths.score_kind(target, score)
        cache_key = (chosen.name, key or _key(x), target, layer, score, options_key(given))
        return self._results.get(cache_key, lambda: self._timed(chosen, x, target, layer, score, key, given))

    def grad_cam(self, x: np.ndarray, target: Target, layer: str | None = None, score: str | None = None,
                 key: str | None = None) -> Explanation:
        """`explain(..., method="grad-cam")`."""
        return self.explain(x, target, "grad-cam", layer=layer, score=score, key=key)

    def saliency(self, x: np.ndarray, target: Target, score: str | None = None,
                 key: str | None = None) -> Explanation:
        """`explain(..., method="saliency")`: max over channels of |d score / d input|."""
        return self.explain(x, target, "saliency", score=score, key=key)

    def _timed(self, chosen: Method, x: np.ndarray, target: Target, layer: str | None, score: str,
               key: str | None, options: dict) -> Explanation:
        start = time.perf_counter()
        result = chosen.compute(self.paths, x, target, layer, score, key, **options)
        self.last_seconds = time.perf_counter() - start
        return dataclasses.replace(result, seconds=self.last_seconds, options=options)

    # -- the gradient pass --------------------------------------------------------------------------------


def _key(x: np.ndarray) -> str:
    return input_key(np.asarray(x))
