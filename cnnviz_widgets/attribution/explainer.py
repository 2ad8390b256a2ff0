"""Why the network decides: its top predictions, Grad-CAM and plain gradient saliency maps.

`Explainer.predict` gives the top classes. `Explainer.grad_cam` (Selvaraju et al. 2017) weighs a conv layer's
maps by the mean gradient of a score over each map, sums them and keeps the positive part;
`Explainer.saliency` (Simonyan et al. 2013) is |d score / d input|, the largest over the fed channels.

Gradients are taken with `tf.GradientTape` through the model's own layers (the `ModelGraph`), so nothing is
copied. Given the activation cache (`network.extractor`), only the layers that matter run: Grad-CAM on layer E
of a score computed at layer L starts from E's cached maps and runs E → L; a filter target on a Conv2D layer
computes that one filter, not the whole layer; predictions continue from the deepest cached layer instead of
running the network again. TensorFlow is imported inside functions, after `network.backend.keras()`.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from cnnviz_widgets.attribution.classes import (
    SCORES,
    Classifier,
    Target,
    TopClasses,
    find_classifier,
    layer_activation_name,
    output_node,
)
from cnnviz_widgets.attribution.heatmaps import unit_heatmap
from cnnviz_widgets.checks import check_filter, check_int
from cnnviz_widgets.errors import CnnvizError, LayerError, ModelError
from cnnviz_widgets.network.backend import keras
from cnnviz_widgets.network.extractor import input_key
from cnnviz_widgets.network.graph import ModelGraph

METHODS = ("grad-cam", "saliency")


_CACHED_RESULTS = 16  # explanations kept per Explainer (small: a heat map is one (H, W) float32 array)


@dataclass(frozen=True, eq=False)
class Explanation:
    """A map of where in the picture a score comes from.

    method : "grad-cam" or "saliency".
    target : what is explained; score : "logit", "probability" or "mean activation"; score_value : its value.
    layer : the conv layer whose maps Grad-CAM weighs (saliency: the model input).
    raw : (h, w) float32 >= 0. Grad-CAM: relu(sum_k weights_k A_k) at the layer's resolution; saliency:
        max over the fed channels of |d score / d input|, at the input's resolution.
    heatmap : (H, W) float32 in [0, 1]: `raw` brought to the fed input's size (bilinear, half-pixel centres)
        and scaled by its min..max (all zero when `raw` is flat).
    weights : (C,) float32, Grad-CAM's per-map weights (mean gradient over each map); None for saliency.
    note : what the user should know (e.g. the map is all zero).
    """

    method: str
    target: Target
    score: str
    score_value: float
    layer: str
    raw: np.ndarray
    heatmap: np.ndarray
    weights: np.ndarray | None
    note: str = ""


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

    Inputs `x` are prepared model inputs (H, W, C) float32, as `inputs.prepare_input` makes them; `key`
    (e.g. `activations.input_key(x)`) lets results be reused for the same input.
    """

    def __init__(self, graph: ModelGraph, class_names: Sequence[str] | None = None,
                 activations: Callable[[np.ndarray, str | None, str], np.ndarray | None] | None = None):
        self.graph = graph
        self.activations = activations
        self.reuse = activations is not None  # False: the whole network every time (benchmarks compare)
        self._between: dict[tuple, Any] = {}
        self._prediction_start: str | bool | None = False  # False: not looked for yet; None: none works
        self._class_names = None if class_names is None else tuple(class_names)
        self._classifier: Classifier | ModelError | None = None
        self._models: dict[tuple, Any] = {}
        self._outputs: OrderedDict[str, np.ndarray] = OrderedDict()
        self._results: OrderedDict[tuple, Explanation] = OrderedDict()
        self.forward_passes = 0  # the whole model run from the input
        self.partial_passes = 0  # the model run on from a cached layer to its output
        self.gradient_passes = 0
        self.last_seconds = 0.0

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
        if key not in self._outputs:
            start = time.perf_counter()
            out = self._outputs_from_cache(x, key)
            if out is None:
                out = self.graph.model(x[np.newaxis], training=False)
                out = out[0] if isinstance(out, (list, tuple)) else out
                self.forward_passes += 1
            self.last_seconds = time.perf_counter() - start
            self._outputs[key] = np.asarray(out, dtype=np.float32)[0]
            while len(self._outputs) > 4:
                self._outputs.popitem(last=False)
        self._outputs.move_to_end(key)
        return self._outputs[key]

    def _outputs_from_cache(self, x: np.ndarray, key: str) -> Any:
        """The model's output computed on from the deepest cached layer that alone determines it, or None."""
        if not self.reuse:
            return None
        output = output_node(self.graph).name
        if self._prediction_start is False:
            self._prediction_start = None
            for node in reversed(list(self.graph.nodes.values())):  # deepest first
                if node.is_map and node.name != output and self._model_between(node.name, output) is not None:
                    self._prediction_start = node.name
                    break
        start = self._prediction_start
        if not isinstance(start, str):
            return None
        maps = self.activations(x, key, start) if self.activations is not None else None
        if maps is None:
            return None
        self.partial_passes += 1
        return self._model_between(start, output)(maps[np.newaxis], training=False)

    def _model_between(self, start: str | None, end: str) -> Any:
        """A Keras model from `start`'s output (None: the model input) to `end`'s output, built once; None
        where `end` needs more than `start` (a skip connection from before it) or `start` is `end`."""
        key = (start, end)
        if key not in self._between:
            first = self.graph.input_tensor if start is None else self.graph.node(start).tensor
            model = None
            if start != end:
                try:
                    model = keras().Model(first, self.graph.node(end).tensor, name="cnnviz_between")
                except (ValueError, KeyError, TypeError):  # Keras: "graph disconnected"
                    model = None
            self._between[key] = model
        return self._between[key]

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

    def grad_cam(self, x: np.ndarray, target: Target, layer: str | None = None, score: str | None = None,
                 key: str | None = None) -> Explanation:
        """Grad-CAM of `target` on the conv `layer` (default: the last conv layer before the target).

        score : for a class target, "logit" (default where the model's logit can be reached) or "probability".
        """
        layer = self.default_layer(target) if layer is None else layer
        node = self.graph.node(layer)
        if not node.is_map:
            raise LayerError(f"{layer} ({node.class_name}) has no maps for Grad-CAM to weigh; use a conv layer")
        score = self._score_kind(target, score)
        cache_key = ("grad-cam", key or _key(x), target, node.name, score)
        if cache_key in self._results:
            self._results.move_to_end(cache_key)
            return self._results[cache_key]
        maps, grads, value = self._gradients(x, target, score, node.name, key)
        weights = grads.mean(axis=(0, 1))  # one weight per map: its mean gradient (the paper's alpha_k)
        raw = np.maximum(np.tensordot(maps, weights, axes=([2], [0])), 0.0).astype(np.float32)
        note = "" if raw.max() > 0 else (f"all zero: no map of {node.name} raises this score (every weighted sum "
                                         "is negative)")
        result = Explanation("grad-cam", target, score, value, node.name, raw,
                             unit_heatmap(raw, x.shape[:2]), weights.astype(np.float32), note)
        return self._remember(cache_key, result)

    def saliency(self, x: np.ndarray, target: Target, score: str | None = None,
                 key: str | None = None) -> Explanation:
        """max over channels of |d score / d input| for the prepared input `x` (H, W, C)."""
        score = self._score_kind(target, score)
        cache_key = ("saliency", key or _key(x), target, score)
        if cache_key in self._results:
            self._results.move_to_end(cache_key)
            return self._results[cache_key]
        _, grads, value = self._gradients(x, target, score, None, key)
        raw = np.abs(grads).max(axis=2).astype(np.float32)
        note = "" if raw.max() > 0 else "all zero: this score does not change with any input pixel"
        result = Explanation("saliency", target, score, value, self.graph.input_name, raw, unit_heatmap(raw, raw.shape),
                             None, note)
        return self._remember(cache_key, result)

    def explain(self, x: np.ndarray, target: Target, method: str = "grad-cam", layer: str | None = None,
                score: str | None = None, key: str | None = None) -> Explanation:
        """`grad_cam` or `saliency` by name (METHODS)."""
        if method == "grad-cam":
            return self.grad_cam(x, target, layer=layer, score=score, key=key)
        if method == "saliency":
            return self.saliency(x, target, score=score, key=key)
        raise CnnvizError(f"unknown method {method!r}; expected one of {METHODS}")

    # -- the gradient pass --------------------------------------------------------------------------------

    def _score_kind(self, target: Target, score: str | None) -> str:
        if target.kind == "filter":
            if score not in (None, "mean activation"):
                raise CnnvizError(f"a filter target's score is its mean activation; got score={score!r}")
            return "mean activation"
        if target.kind != "class":
            raise CnnvizError(f"unknown target kind {target.kind!r}; expected 'class' or 'filter'")
        classifier = self.classifier
        if score is None:
            return "logit" if classifier.logit else "probability"
        if score not in SCORES:
            raise CnnvizError(f"unknown score {score!r}; expected one of {SCORES}")
        if score == "logit" and not classifier.logit:
            raise CnnvizError(f"the logit of {classifier.layer} ({self.graph.node(classifier.layer).class_name}, "
                              f"activation {classifier.activation!r}) cannot be reached; use score='probability'")
        return score

    def _source(self, target: Target, score: str) -> str:
        """The layer whose output the score is computed from."""
        if target.kind == "filter":
            return target.layer
        classifier = self.classifier
        if score == "logit" and classifier.logit in ("dense", "activation"):
            return self.graph.node(classifier.layer).inputs[0]
        return classifier.layer

    def _model(self, layer: str | None, source: str) -> Any:
        """A Keras model from the input to [layer's output (or the input), source's output], built once."""
        key = (layer, source)
        if key not in self._models:
            first = self.graph.input_tensor if layer is None else self.graph.node(layer).tensor
            self._models[key] = keras().Model(self.graph.input_tensor, [first, self.graph.node(source).tensor],
                                              name="cnnviz_gradients")
        return self._models[key]

    def _gradients(self, x: np.ndarray, target: Target, score: str, layer: str | None,
                   key: str | None = None) -> tuple[np.ndarray, np.ndarray, float]:
        """(maps (h, w, C), d score / d maps (h, w, C), score value); layer None: the input and its gradient."""
        if self.reuse:
            found = self._short_gradients(x, target, score, layer, key)
            if found is not None:
                return found
        return self._full_gradients(x, target, score, layer)

    def _score_end(self, target: Target, score: str) -> tuple[str, Callable[[Any], Any]]:
        """(the layer a score's computation can stop at, what turns that layer's output into the score).

        A filter of a plain Conv2D layer: its input, then that one filter's convolution (1/F of the layer).
        """
        source = self._source(target, score)
        if target.kind != "filter":
            return source, lambda values: self._score(values, target, score)
        node = self.graph.node(source)
        layer = node.layer
        config = layer.get_config() if node.class_name == "Conv2D" else {}
        if (not config or config.get("groups", 1) != 1 or config.get("data_format") != "channels_last"
                or len(node.inputs) != 1):
            return source, lambda values: self._score(values, target, score)
        ops, f = keras().ops, target.index
        kernel = layer.kernel[:, :, :, f : f + 1]
        bias = layer.bias[f] if layer.use_bias else None

        def one_filter(values: Any) -> Any:
            out = ops.conv(values, kernel, strides=config["strides"], padding=config["padding"],
                           dilation_rate=config["dilation_rate"])
            out = layer.activation(out if bias is None else out + bias)
            return ops.mean(out[0, ..., 0])

        return node.inputs[0], one_filter

    def _short_gradients(self, x: np.ndarray, target: Target, score: str, layer: str | None,
                         key: str | None) -> tuple[np.ndarray, np.ndarray, float] | None:
        """`_gradients` running only the layers between `layer`'s cached maps (or the input) and the score."""
        import tensorflow as tf

        end, finish = self._score_end(target, score)
        if layer is None:
            found = self._saliency_backwards(x, key, end, finish)
            if found is not None:
                return found
            maps = np.asarray(x, dtype=np.float32)
        else:
            cached = self.activations(x, key, layer) if self.activations is not None else None
            if cached is None:
                return None
            maps = cached
        same = (layer or self.graph.input_name) == end  # the score is computed straight from these maps
        between = None if same else self._model_between(layer, end)
        if between is None and not same:
            return None
        start = time.perf_counter()
        fed = tf.constant(maps[np.newaxis])
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(fed)
            values = fed if between is None else between(fed, training=False)
            value = finish(values)
        grads = tape.gradient(value, fed)
        self.gradient_passes += 1
        self.last_seconds = time.perf_counter() - start
        if grads is None:
            return None  # the full pass says why
        return maps, np.asarray(grads)[0], float(value)

    def _saliency_backwards(self, x: np.ndarray, key: str | None, end: str,
                            finish: Callable[[Any], Any]) -> tuple[np.ndarray, np.ndarray, float] | None:
        """d score / d input without a forward pass: the score's gradient at `end` (or at the deepest cached
        layer before it), then back through the cached layers to the input, each layer's gradient op fed
        with its cached input and output (the ops a tape would run). None where a layer on the way is not a
        plain conv or pooling layer, or not cached."""
        import tensorflow as tf

        start_at = end if self.graph.node(end).is_map else self._deepest_cached_start(end)
        if start_at is None or self.activations is None:
            return None
        chain = self._plain_chain(start_at)
        if chain is None:
            return None
        started = time.perf_counter()
        outputs = {name: self.activations(x, key, name) for name in chain}
        if any(value is None for value in outputs.values()):
            return None
        outputs[self.graph.input_name] = np.asarray(x, dtype=np.float32)
        fed = tf.constant(outputs[start_at][np.newaxis])
        between = None if start_at == end else self._model_between(start_at, end)
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(fed)
            value = finish(fed if between is None else between(fed, training=False))
        grad = tape.gradient(value, fed)
        if grad is None:
            return None
        for name in chain:  # from start_at down to the layer after the input
            grad = self._back_through(self.graph.node(name), outputs, grad)
        self.gradient_passes += 1
        self.last_seconds = time.perf_counter() - started
        return outputs[self.graph.input_name], np.asarray(grad)[0], float(value)

    def _deepest_cached_start(self, end: str) -> str | None:
        """The deepest layer with maps from which `end` is computed alone (a classifier's last pooling)."""
        for node in reversed(list(self.graph.nodes.values())):
            if node.is_map and node.name != end and self._model_between(node.name, end) is not None:
                return node.name
        return None

    _PLAIN = ("Conv2D", "MaxPooling2D", "AveragePooling2D")

    def _plain_chain(self, start: str) -> list[str] | None:
        """The layers from `start` down to the input (input excluded), if each is a one-input channels-last
        Conv2D (linear or ReLU, one group) or 2-D pooling layer; None otherwise."""
        chain, name = [], start
        while name != self.graph.input_name:
            node = self.graph.node(name)
            if node.class_name not in self._PLAIN or len(node.inputs) != 1:
                return None
            config = node.layer.get_config()
            if config.get("data_format", "channels_last") != "channels_last":
                return None
            if node.class_name == "Conv2D" and (config.get("groups", 1) != 1 or layer_activation_name(node.layer)
                                                not in ("relu", "linear", "")):
                return None
            chain.append(name)
            name = node.inputs[0]
        return chain

    @staticmethod
    def _back_through(node: Any, outputs: dict[str, np.ndarray], grad: Any) -> Any:
        """d score / d (node's input) from d score / d (node's output), with TensorFlow's own gradient ops."""
        import tensorflow as tf

        config = node.layer.get_config()
        out = outputs[node.name][np.newaxis]
        inp = outputs[node.inputs[0]][np.newaxis]
        padding = config["padding"].upper()
        if node.class_name == "Conv2D":
            if layer_activation_name(node.layer) == "relu":
                grad = tf.raw_ops.ReluGrad(gradients=grad, features=out)
            kh, kw = node.layer.kernel.shape[:2]
            if (tuple(config["strides"]) == (1, 1) and tuple(config["dilation_rate"]) == (1, 1)
                    and (padding == "VALID" or kh % 2 == kw % 2 == 1)):
                # A stride-1 correlation's input gradient is the output gradient correlated with the kernel
                # turned by 180° and its channels swapped ("same" with an odd kernel pads alike on both sides;
                # "valid" needs the full padding). TensorFlow's forward convolution runs this several times
                # faster on a CPU than its Conv2DBackpropInput op.
                turned = tf.transpose(tf.reverse(tf.convert_to_tensor(node.layer.kernel), axis=[0, 1]), [0, 1, 3, 2])
                if padding == "VALID":
                    grad = tf.pad(grad, [[0, 0], [kh - 1, kh - 1], [kw - 1, kw - 1], [0, 0]])
                return tf.nn.conv2d(grad, turned, strides=1, padding=padding)
            return tf.raw_ops.Conv2DBackpropInput(
                input_sizes=inp.shape, filter=tf.convert_to_tensor(node.layer.kernel), out_backprop=grad,
                strides=[1, *config["strides"], 1], padding=padding,
                dilations=[1, *config["dilation_rate"], 1])
        ksize, strides = [1, *config["pool_size"], 1], [1, *config["strides"], 1]
        if node.class_name == "MaxPooling2D":
            return tf.raw_ops.MaxPoolGrad(orig_input=inp, orig_output=out, grad=grad, ksize=ksize, strides=strides,
                                          padding=padding)
        return tf.raw_ops.AvgPoolGrad(orig_input_shape=inp.shape, grad=grad, ksize=ksize, strides=strides,
                                      padding=padding)

    def _full_gradients(self, x: np.ndarray, target: Target, score: str,
                        layer: str | None) -> tuple[np.ndarray, np.ndarray, float]:
        """The network from its input to the score, maps and score in one pass (no cache needed)."""
        import tensorflow as tf

        source = self._source(target, score)
        model = self._model(layer, source)
        fed = tf.constant(np.asarray(x, dtype=np.float32)[np.newaxis])
        start = time.perf_counter()
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(fed)
            maps, values = model(fed, training=False)
            if layer is None:
                maps = fed
            value = self._score(values, target, score)
        grads = tape.gradient(value, maps)
        self.gradient_passes += 1
        self.last_seconds = time.perf_counter() - start
        if grads is None:
            what = target.words(self.classifier if target.kind == "class" else None)
            raise LayerError(f"the score of {what} does not depend on {layer}: pick a layer before it")
        return np.asarray(maps)[0], np.asarray(grads)[0], float(value)

    def _score(self, values: Any, target: Target, score: str) -> Any:
        import tensorflow as tf

        if target.kind == "filter":
            return tf.reduce_mean(values[0, ..., target.index])
        classifier = self.classifier
        if score == "logit" and classifier.logit == "dense":
            dense = self.graph.node(classifier.layer).layer
            column = tf.convert_to_tensor(dense.kernel)[:, target.index]
            logit = tf.tensordot(values[0], column, axes=1)
            return logit + tf.convert_to_tensor(dense.bias)[target.index] if dense.use_bias else logit
        if score == "probability" and classifier.activation not in ("softmax", "sigmoid"):
            return tf.nn.softmax(values[0])[target.index]
        return values[0, target.index]

    def _remember(self, cache_key: tuple, result: Explanation) -> Explanation:
        self._results[cache_key] = result
        while len(self._results) > _CACHED_RESULTS:
            self._results.popitem(last=False)
        return result


def _key(x: np.ndarray) -> str:
    return input_key(np.asarray(x))
