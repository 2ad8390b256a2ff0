"""Gradients of a score through the model's own layers, by the shortest way the activation cache allows.

`GradientPaths.gradients` gives a layer's maps and d score / d maps (the input and its gradient for a
saliency map), computed with `tf.GradientTape` through the graph's layers (`network.graph`), nothing copied.
Three paths, tried in this order: from the layer's cached maps through the layers between it and the score
(`network.segments`); for the input, back through cached plain conv and pooling layers with TensorFlow's own
gradient ops (`back_through`), without a forward pass; and the whole network from the input. A filter target
on a plain Conv2D layer computes that one filter, not the whole layer. The methods (`gradcam`, `saliency`)
turn these gradients into maps. The methods of many inputs (SmoothGrad's noisy copies, Integrated Gradients'
path, occlusion's occluded copies) run them as batches through the whole network (`input_gradients`,
`input_scores`, `input_batches`), each batch sized from the memory budget (`batch_size`, `network.memory`).
TensorFlow is imported inside functions, after `network.backend.keras()`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from cnnviz_widgets.attribution.classes import SCORES, Classifier, Target, layer_activation_name
from cnnviz_widgets.errors import CnnvizError, LayerError
from cnnviz_widgets.network import memory
from cnnviz_widgets.network.backend import keras
from cnnviz_widgets.network.graph import ModelGraph
from cnnviz_widgets.pictures.preprocessing import Preprocess
from cnnviz_widgets.progress import cancelled, progress_bar

MAX_BATCH = 32
"""The most inputs one batched pass runs at once (more gains nothing on a CPU and only holds memory)."""

Activations = Callable[[np.ndarray, str | None, str], np.ndarray | None]
"""(x, key, layer) -> that layer's (H, W, C) output for the input, or None where it is not at hand."""


class GradientPaths:
    """d score / d maps for the model of `graph`.

    activations : the activation cache's lookup (see `Activations`); None: every gradient from the input.
    classifier : gives the model's `Classifier` (raising ModelError for a model without one); class targets
        need it.

    `passes` counts gradient passes, `passes_from_input` those that ran the network from its input (no cached
    layer used); `last_seconds` is the latest one's time. `reuse` False: always the whole network (benchmarks).
    `preprocessing` is how a picture becomes the model's input (`pictures.preprocessing`), for the baselines
    that are pictures (a black picture's fed value); None: the input is the picture's values as they are.
    """

    def __init__(self, graph: ModelGraph, activations: Activations | None, classifier: Callable[[], Classifier]):
        self.graph = graph
        self.activations = activations
        self.classifier = classifier
        self.reuse = activations is not None
        self.passes = 0
        self.passes_from_input = 0
        self.last_seconds = 0.0
        self.preprocessing: Preprocess = None

    def score_kind(self, target: Target, score: str | None) -> str:
        """The score a target is explained by: `score` checked, or the default for the target."""
        if target.kind == "filter":
            if score not in (None, "mean activation"):
                raise CnnvizError(f"a filter target's score is its mean activation; got score={score!r}")
            return "mean activation"
        if target.kind != "class":
            raise CnnvizError(f"unknown target kind {target.kind!r}; expected 'class' or 'filter'")
        classifier = self.classifier()
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
        classifier = self.classifier()
        if score == "logit" and classifier.logit in ("dense", "activation"):
            return self.graph.node(classifier.layer).inputs[0]
        return classifier.layer

    def gradients(self, x: np.ndarray, target: Target, score: str, layer: str | None,
                  key: str | None = None) -> tuple[np.ndarray, np.ndarray, float]:
        """(maps (h, w, C), d score / d maps (h, w, C), score value) for the prepared input `x` (H, W, C_in).

        layer None: the input and its gradient. `score` as `score_kind` gives it; `key` the input's cache key.
        """
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
        """`gradients` running only the layers between `layer`'s cached maps (or the input) and the score."""
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
        between = None if same else self.graph.segments.between(layer, end)
        if between is None and not same:
            return None
        start = time.perf_counter()
        fed = tf.constant(maps[np.newaxis])
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(fed)
            values = fed if between is None else between(fed, training=False)
            value = finish(values)
        grads = tape.gradient(value, fed)
        self.passes += 1
        self.last_seconds = time.perf_counter() - start
        if grads is None:
            return None  # the full pass says why
        if layer is None and between is not None:
            self.passes_from_input += 1
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
        chain = plain_chain(self.graph, start_at)
        if chain is None:
            return None
        started = time.perf_counter()
        outputs = {name: self.activations(x, key, name) for name in chain}
        if any(value is None for value in outputs.values()):
            return None
        outputs[self.graph.input_name] = np.asarray(x, dtype=np.float32)
        fed = tf.constant(outputs[start_at][np.newaxis])
        between = None if start_at == end else self.graph.segments.between(start_at, end)
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(fed)
            value = finish(fed if between is None else between(fed, training=False))
        grad = tape.gradient(value, fed)
        if grad is None:
            return None
        for name in chain:  # from start_at down to the layer after the input
            grad = back_through(self.graph.node(name), outputs, grad)
        self.passes += 1
        self.last_seconds = time.perf_counter() - started
        return outputs[self.graph.input_name], np.asarray(grad)[0], float(value)

    def _deepest_cached_start(self, end: str) -> str | None:
        """The deepest layer with maps from which `end` is computed alone (a classifier's last pooling)."""
        for node in reversed(list(self.graph.nodes.values())):
            if node.is_map and node.name != end and self.graph.segments.between(node.name, end) is not None:
                return node.name
        return None

    def _full_gradients(self, x: np.ndarray, target: Target, score: str,
                        layer: str | None) -> tuple[np.ndarray, np.ndarray, float]:
        """The network from its input to the score, maps and score in one pass (no cache needed)."""
        import tensorflow as tf

        source = self._source(target, score)
        model = self.graph.segments.model(None, [layer or self.graph.input_name, source], name="cnnviz_gradients")
        fed = tf.constant(np.asarray(x, dtype=np.float32)[np.newaxis])
        start = time.perf_counter()
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(fed)
            maps, values = model(fed, training=False)
            if layer is None:
                maps = fed
            value = self._score(values, target, score)
        grads = tape.gradient(value, maps)
        self.passes += 1
        self.passes_from_input += 1
        self.last_seconds = time.perf_counter() - start
        if grads is None:
            what = target.words(self.classifier() if target.kind == "class" else None)
            raise LayerError(f"the score of {what} does not depend on {layer}: pick a layer before it")
        return np.asarray(maps)[0], np.asarray(grads)[0], float(value)

    def _score(self, values: Any, target: Target, score: str) -> Any:
        return self.scores(values[:1], target, score)[0]

    # -- many inputs at once ----------------------------------------------------------------------------

    def score_source(self, target: Target, score: str) -> str:
        """The layer whose output (n, ...) `scores` turns into the score."""
        return self._source(target, score)

    def scores(self, values: Any, target: Target, score: str) -> Any:
        """(n,) tensor: the score of each of n inputs, from `score_source`'s output (n, ...) for them."""
        import tensorflow as tf

        if target.kind == "filter":
            return tf.reduce_mean(values[..., target.index], axis=(1, 2))
        classifier = self.classifier()
        if score == "logit" and classifier.logit == "dense":
            dense = self.graph.node(classifier.layer).layer
            column = tf.convert_to_tensor(dense.kernel)[:, target.index]
            logit = tf.tensordot(values, column, axes=1)
            return logit + tf.convert_to_tensor(dense.bias)[target.index] if dense.use_bias else logit
        if score == "probability" and classifier.activation not in ("softmax", "sigmoid"):
            return tf.nn.softmax(values)[:, target.index]
        return values[:, target.index]

    def input_gradients(self, xs: np.ndarray, target: Target, score: str) -> tuple[np.ndarray, np.ndarray]:
        """(d score / d input (n, H, W, C) float32, scores (n,) float64) for n prepared inputs `xs`, in one pass
        of the whole network from its input (no cache: these inputs are new). Each input's gradient is its own
        score's (the n scores are summed, and no layer mixes the inputs of a batch at inference)."""
        import tensorflow as tf

        model = self.graph.segments.model(None, self._source(target, score), name="cnnviz_input_gradients")
        fed = tf.constant(np.asarray(xs, dtype=np.float32))
        start = time.perf_counter()
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(fed)
            values = self.scores(model(fed, training=False), target, score)
            total = tf.reduce_sum(values)
        grads = tape.gradient(total, fed)
        self.passes += 1
        self.passes_from_input += 1
        self.last_seconds = time.perf_counter() - start
        if grads is None:
            what = target.words(self.classifier() if target.kind == "class" else None)
            raise LayerError(f"the score of {what} does not depend on the input")
        return np.asarray(grads, dtype=np.float32), np.asarray(values, dtype=np.float64)

    def input_scores(self, xs: np.ndarray, target: Target, score: str) -> np.ndarray:
        """(n,) float64: the score of each of n prepared inputs `xs` (n, H, W, C), forward only."""
        model = self.graph.segments.model(None, self._source(target, score), name="cnnviz_input_gradients")
        values = self.scores(model(np.asarray(xs, dtype=np.float32), training=False), target, score)
        return np.asarray(values, dtype=np.float64)

    def bytes_per_input(self, shape: tuple[int, int, int], gradients: bool = True) -> int:
        """Bytes one input of `shape` (H, W, C) takes in a batched pass: every layer's output (a forward pass
        holds at most these), three times over for a gradient pass (the outputs kept for the way back and a
        gradient of each, as `ModelState.explanation` counts), and the input itself twice."""
        height, width, channels = (int(d) for d in shape)
        outputs = self.graph.output_shapes(height, width)
        total = sum(int(np.prod(out, dtype=np.int64)) * 4 for out in outputs.values())
        return (3 if gradients else 1) * total + 2 * height * width * channels * 4

    def batch_size(self, shape: tuple[int, int, int], wanted: int, what: str, gradients: bool = True) -> int:
        """How many inputs of `shape` to run at once: at most `wanted` and `MAX_BATCH`, and what the share of the
        memory left that the activation cache may take (`memory.CACHE_SHARE`) holds. MemoryBudgetError, before
        anything runs, when that many (at least one) would not fit in the memory left; `what` names the step."""
        facts = memory.memory_facts()
        per_input = self.bytes_per_input(shape, gradients)
        batch = int(max(1, min(wanted, MAX_BATCH, facts.available * memory.CACHE_SHARE // max(1, per_input))))
        height, width = shape[:2]
        memory.check_fits(batch * per_input, f"{what} on a {width}×{height} input ({batch} input"
                          f"{'s' if batch > 1 else ''} at a time)", "choose a smaller max_side, or a smaller image",
                          facts)
        return batch


def input_batches(paths: GradientPaths, shape: tuple[int, int, int], count: int,
                  make: Callable[[int, int], np.ndarray], target: Target, score: str, what: str, *,
                  unit: str = "input", gradients: bool = True, progress: Any = False,
                  cancel: Any = None) -> Iterator[tuple[int, np.ndarray | None, np.ndarray]]:
    """Run `count` inputs of `shape` (H, W, C), made batch by batch by make(start, stop) -> (stop - start, H, W,
    C), in order (a maker may draw random numbers), through the model.

    Yields (start, d score / d inputs (n, H, W, C) float32 or None where `gradients` is False, scores (n,)).
    Batches are sized by `GradientPaths.batch_size` (MemoryBudgetError before the first when none fits).
    progress : True (a tqdm bar), a callable progress(done, total), or False. cancel : a `threading.Event` or a
    function returning True to stop: CnnvizError, saying how far it got (the caller keeps nothing).
    """
    batch = paths.batch_size(shape, count, what, gradients)
    update, close = progress_bar(progress, count, 0, unit=unit, what=what)
    try:
        for start in range(0, count, batch):
            if cancelled(cancel):
                raise CnnvizError(f"{what} was cancelled after {start} of {count} {unit}s; nothing is kept")
            stop = min(count, start + batch)
            xs = make(start, stop)
            if gradients:
                grads, values = paths.input_gradients(xs, target, score)
            else:
                grads, values = None, paths.input_scores(xs, target, score)
            yield start, grads, values
            update(stop)
    finally:
        close()


PLAIN_LAYERS = ("Conv2D", "MaxPooling2D", "AveragePooling2D")
"""The layers a saliency map goes back through with TensorFlow's own gradient ops (see `back_through`)."""


def plain_chain(graph: ModelGraph, start: str) -> list[str] | None:
    """The layers from `start` down to the input (input excluded), if each is a one-input channels-last
    Conv2D (linear or ReLU, one group) or 2-D pooling layer; None otherwise."""
    chain, name = [], start
    while name != graph.input_name:
        node = graph.node(name)
        if node.class_name not in PLAIN_LAYERS or len(node.inputs) != 1:
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

def back_through(node: Any, outputs: dict[str, np.ndarray], grad: Any) -> Any:
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
