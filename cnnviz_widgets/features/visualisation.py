"""Feature visualisation: the picture that excites a filter most (activation maximisation, as in Lucid).

`maximize` climbs the gradient of the filter's mean PRE-activation over its map (the layer's convolution and
bias without the ReLU), so a filter that is dead on the starting noise still gets a gradient. The picture is
parametrised as Lucid does: a Fourier spectrum scaled by 1/frequency, with decorrelated colours, squashed
by a sigmoid into 0..1. Every step sees it through random transforms (padding, jitter, scale, rotation), which
keeps the high-frequency noise that fools a single view out of the result. A pixel parametrisation with a
Gaussian blur every few steps is available too (``param="pixel"``). Several filters of one layer are
optimised together as one batch. Results are cached on disk like scans (weights + every setting).

Pure TensorFlow/Keras and numpy: no widgets. `state` is a `ModelState` (duck-typed).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cnnviz_widgets.checks import check_filter, check_int, check_positive, is_int
from cnnviz_widgets.errors import CnnvizError, LayerError
from cnnviz_widgets.features.examples import cache_dir, weights_key
from cnnviz_widgets.lessons.receptive_field import receptive_field
from cnnviz_widgets.network.feed import ModelFeed
from cnnviz_widgets.pictures.preprocessing import preprocess_name, scale_rgb
from cnnviz_widgets.progress import cancelled, progress_bar

OBJECTIVES = ("channel", "neuron")
"""What is maximised: "channel", the filter's mean pre-activation over its whole map (Lucid's channel objective,
tf-keras-vis' score for a filter), or "neuron", the pre-activation of the unit at the centre of the map. For
the first conv layer the channel mean of a linear map is the kernel's sum times the picture's mean (its
gradient carries no pattern): use "neuron" there; "auto" does."""
PARAMETRISATIONS = ("fourier", "pixel")
"""How the picture is parametrised: "fourier" (decorrelated colours, 1/f spectrum: Lucid's default) or "pixel"
(raw pixels, blurred every few steps)."""

# Lucid's colour decorrelation (square root of ImageNet's colour covariance), columns scaled to norm <= 1.
_COLOR_SQRT = np.array([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]], np.float32)
_COLOR = _COLOR_SQRT / np.max(np.linalg.norm(_COLOR_SQRT, axis=0))


@dataclass(frozen=True, eq=False)
class FeatureVisualization:
    """The optimised picture for one filter.

    image : (H, W, 3) uint8. trace : (steps done,) float32, the objective (the filter's mean pre-activation over
    its map, or its centre unit's: `objective_kind`, on that step's transformed view) per step. objective : the
    same, on `image` itself, untransformed.
    start : the objective on the starting noise. complete : False when cancelled before `steps`.
    """

    layer: str
    filter: int
    image: np.ndarray
    trace: np.ndarray
    objective: float
    start: float
    steps: int
    seconds: float
    complete: bool = True
    from_cache: bool = False
    objective_kind: str = "channel"


def maximize(state: ModelFeed, layer: str, filter: int | Sequence[int], steps: int = 256, *, size: int = 128,
             lr: float = 0.05, param: str = "fourier", jitter: int | None = None, scale: float = 0.1,
             rotate: float = 10.0, blur_every: int = 4, seed: int = 0, objective: str = "auto",
             progress: bool | Callable[[int, int], None] = True, cancel: Any = None,
             cache: bool | str | os.PathLike = True) -> FeatureVisualization | list[FeatureVisualization]:
    """The picture that maximises `filter` of `layer` (a list of filters: optimised together, a list back).

    steps : Adam steps of rate `lr`. size : side of the square picture for a model that takes any size (a
    fixed-size model gets its own size). param : one of `PARAMETRISATIONS`. jitter : pixels of random shift;
    None: 8 for a channel, a quarter of the receptive field for a neuron (a shifted neuron sees another place).
    scale : random zoom in 1 ± scale. rotate : random rotation in ± degrees. objective : one of `OBJECTIVES`,
    or "auto": "neuron" for a conv layer fed by the input, "channel" otherwise. blur_every : for "pixel", a
    Gaussian blur of the pixels every so many steps. seed : the random start and transforms.
    progress : a tqdm.auto bar (True, where installed), a callable progress(done, total) or False.
    cancel : a threading.Event (or a callable) checked every step: the picture so far comes back with
    ``complete=False``. cache : True, a folder or False (see `examples.cache_dir`).
    """
    filters = [filter] if is_int(filter) else list(filter)
    single = len(filters) == 1 and not isinstance(filter, (list, tuple, np.ndarray))
    name = _check(state, layer, filters, steps, size, param)
    if objective == "auto":
        first = state.layer_kind(name) == "conv" and state.previous_layer(name) == state.input_layer
        objective = "neuron" if first else "channel"
    if objective not in OBJECTIVES:
        raise CnnvizError(f"objective must be one of {', '.join(OBJECTIVES)} or 'auto'; got {objective!r}")
    if jitter is None:
        field = min(receptive_field(state.graph, name, (int(size), int(size))).size)
        jitter = 8 if objective == "channel" else max(1, field // 4)
    height, width = state.graph.input_shape[:2]
    side = (int(height), int(width)) if height and width else (int(size), int(size))
    settings = dict(layer=name, filters=[int(f) for f in filters], steps=int(steps), side=side, lr=float(lr),
                    param=param, jitter=int(jitter), scale=float(scale), rotate=float(rotate),
                    blur_every=int(blur_every), seed=int(seed), objective=objective,
                    preprocess=preprocess_name(state.preprocessing))
    folder = cache_dir(cache)
    path = None
    if folder is not None:
        key = hashlib.blake2b(weights_key(state.model, json.dumps(settings, sort_keys=True)).encode(), digest_size=16)
        path = folder / "maximize" / f"{key.hexdigest()}.npz"
        if path.exists():
            try:
                found = _load(path, name, filters, objective)
            except (OSError, ValueError, KeyError):
                found = None
            if found is not None:
                return found[0] if single else found
    results = _quietly(_optimise, state, name, filters, objective, int(steps), side, float(lr), param, int(jitter),
                       float(scale), float(rotate), int(blur_every), int(seed), progress, cancel)
    if path is not None and all(r.complete for r in results):
        _save(path, results)
    return results[0] if single else results


def _quietly(function: Callable, *args: Any) -> Any:
    """Run without TensorFlow's retracing warning: every call builds its own step function on purpose."""
    import tensorflow as tf

    logger = tf.get_logger()
    level = logger.level
    logger.setLevel("ERROR")
    try:
        return function(*args)
    finally:
        logger.setLevel(level)


def _check(state: ModelFeed, layer: str, filters: list, steps: int, size: int, param: str) -> str:
    if layer not in state.layers or layer == state.input_layer:
        state.graph.node(layer)  # unknown: LayerError with the list
        raise LayerError(f"{layer} cannot be maximised: pick a conv or pooling layer among "
                         f"{', '.join(state.layers[1:])}")
    node = state.graph.node(layer)
    if node.class_name == "Conv2DTranspose":
        raise LayerError(f"{layer} is a transposed convolution: pick a conv layer that slides a kernel")
    n = state.n_filters(layer)
    if not filters:
        raise CnnvizError("filter must be an int or a non-empty list of ints")
    for f in filters:
        check_filter(f, layer, n)
    check_positive(steps, "steps")
    check_int(size, "size", 16, message=f"size must be an int of at least 16 pixels; got {size!r}")
    if param not in PARAMETRISATIONS:
        raise CnnvizError(f"param must be one of {', '.join(PARAMETRISATIONS)}; got {param!r}")
    if callable(state.preprocessing):
        raise CnnvizError("maximize needs a named preprocessing (caffe, tf, torch, unit, none) to stay "
                          "differentiable; this state uses a custom function")
    return layer


def _objective_model(state: ModelFeed, name: str, filters: list[int], what: str) -> Callable:
    """x (N, H, W, C) fed -> (N,) the mean pre-activation of filters[i] for batch item i (or its centre unit)."""
    import tensorflow as tf

    graph = state.graph
    node = graph.node(name)
    index = tf.constant(filters, tf.int32)

    def reduce(maps: Any) -> Any:  # (N, H, W) -> (N,)
        if what == "neuron":
            return maps[:, tf.shape(maps)[1] // 2, tf.shape(maps)[2] // 2]
        return tf.reduce_mean(maps, axis=(1, 2))
    if node.kind != "conv":  # pooling: the layer's own output
        model = graph.segments.model(None, name)

        def pooled(x: Any) -> Any:
            out = tf.transpose(model(x, training=False), (0, 3, 1, 2))
            return reduce(tf.gather(out, index, axis=1, batch_dims=1))

        return pooled
    previous = graph.previous_layer(name)
    feed = (lambda x: x) if previous == graph.input_name else graph.segments.model(None, previous)
    kernel, bias = state.weights(name)
    config = node.layer.get_config()
    strides = config.get("strides", 1)
    dilation = config.get("dilation_rate", 1)
    padding = str(config.get("padding", "valid")).upper()
    kernel_t = tf.constant(kernel[..., filters])  # only the asked filters: the last layer costs little
    bias_t = tf.constant(bias[filters])

    def pre_activation(x: Any) -> Any:
        before = feed(x, training=False) if previous != graph.input_name else x
        out = tf.nn.conv2d(before, kernel_t, strides=strides, padding=padding, dilations=dilation) + bias_t
        out = tf.transpose(out, (0, 3, 1, 2))  # (N, F, H, W): item i takes its own filter i
        return reduce(tf.gather(out, tf.range(len(filters)), axis=1, batch_dims=1))

    return pre_activation


def _to_fed(tf: Any, rgb01: Any, mode: str, channels: int) -> Any:
    """Pictures in 0..1 (N, H, W, 3) -> what the model is fed (`preprocessing.apply_preprocessing`, differentiably)."""
    x = rgb01 * 255.0
    if channels == 1:
        x = tf.reduce_sum(x * tf.constant([0.299, 0.587, 0.114]), axis=-1, keepdims=True)
        return x / 255.0 if mode == "unit" else x
    return scale_rgb(x, mode) if mode in ("caffe", "tf", "torch", "unit") else x


def _optimise(state: ModelFeed, name: str, filters: list[int], what: str, steps: int, side: tuple[int, int], lr: float,
              param: str, jitter: int, scale: float, rotate: float, blur_every: int, seed: int, progress: Any,
              cancel: Any) -> list[FeatureVisualization]:
    import tensorflow as tf

    from cnnviz_widgets.network.backend import keras

    objective = _objective_model(state, name, filters, what)
    mode = preprocess_name(state.preprocessing)
    channels = int(state.graph.input_shape[-1])
    n, (h, w) = len(filters), side
    rng = np.random.default_rng(seed)
    if param == "fourier":
        fy, fx = np.fft.fftfreq(h)[:, None], np.fft.rfftfreq(w)[None, :]
        freqs = np.sqrt(fx * fx + fy * fy)
        spectrum_scale = tf.constant((1.0 / np.maximum(freqs, 1.0 / max(h, w))) * np.sqrt(h * w), tf.complex64)
        variable = tf.Variable(rng.normal(0, 0.01, (n, 3, h, w // 2 + 1, 2)).astype(np.float32))

        def picture() -> Any:
            spectrum = tf.complex(variable[..., 0], variable[..., 1]) * spectrum_scale
            image = tf.transpose(tf.signal.irfft2d(spectrum, fft_length=[h, w]), (0, 2, 3, 1)) / 4.0
            return tf.sigmoid(tf.tensordot(image, tf.constant(_COLOR.T), axes=1))
    else:
        variable = tf.Variable(rng.normal(0, 0.01, (n, h, w, 3)).astype(np.float32))

        def picture() -> Any:
            return tf.sigmoid(variable)

    generator = tf.random.Generator.from_seed(seed)
    pad = jitter + int(np.ceil(max(h, w) * (scale + abs(np.sin(np.radians(rotate))) / 2)))

    def transformed(image: Any) -> Any:
        x = tf.pad(image, [[0, 0], [pad, pad], [pad, pad], [0, 0]], mode="REFLECT")
        big_h, big_w = h + 2 * pad, w + 2 * pad
        shift = generator.uniform([2], -jitter, jitter + 1, tf.int32) if jitter else tf.zeros([2], tf.int32)
        zoom = generator.uniform([], 1.0 - scale, 1.0 + scale) if scale else tf.constant(1.0)
        angle = generator.uniform([], -rotate, rotate) * (np.pi / 180.0) if rotate else tf.constant(0.0)
        # One projective transform: rotate and zoom about the centre, then shift; output back at (h, w).
        cos, sin = tf.cos(angle) / zoom, tf.sin(angle) / zoom
        cy, cx = (big_h - 1) / 2.0, (big_w - 1) / 2.0
        oy, ox = (h - 1) / 2.0, (w - 1) / 2.0
        dy, dx = tf.cast(shift[0], tf.float32), tf.cast(shift[1], tf.float32)
        a0, a1, b0, b1 = cos, -sin, sin, cos
        a2 = cx - a0 * (ox + dx) - a1 * (oy + dy)
        b2 = cy - b0 * (ox + dx) - b1 * (oy + dy)
        matrix = tf.stack([a0, a1, a2, b0, b1, b2, 0.0, 0.0])[None]
        return tf.raw_ops.ImageProjectiveTransformV3(
            images=x, transforms=tf.tile(matrix, [n, 1]), output_shape=tf.constant([h, w]),
            fill_value=0.0, interpolation="BILINEAR", fill_mode="REFLECT")

    optimizer = keras().optimizers.Adam(learning_rate=lr)
    optimizer.build([variable])  # its slots made here, not inside the traced step

    @tf.function
    def step() -> Any:
        with tf.GradientTape() as tape:
            values = objective(_to_fed(tf, transformed(picture()), mode, channels))
            loss = -tf.reduce_sum(values)
        optimizer.apply_gradients([(tape.gradient(loss, variable), variable)])
        return values

    @tf.function
    def evaluate() -> Any:
        return objective(_to_fed(tf, picture(), mode, channels))

    kernel = np.exp(-0.5 * (np.arange(-2, 3) / 1.0) ** 2)
    blur = tf.constant(np.tile((np.outer(kernel, kernel) / np.outer(kernel, kernel).sum())[:, :, None, None],
                               (1, 1, 3, 1)).astype(np.float32))
    start_values = np.asarray(evaluate())
    trace = np.zeros((steps, n), np.float32)
    update, close = progress_bar(progress, steps, 0)
    started = time.perf_counter()
    done = 0
    try:
        for done in range(1, steps + 1):
            trace[done - 1] = np.asarray(step())
            if param == "pixel" and blur_every and done % blur_every == 0:
                variable.assign(tf.nn.depthwise_conv2d(variable, blur, [1, 1, 1, 1], "SAME"))
            update(done)
            if cancelled(cancel):
                break
    finally:
        close()
    seconds = time.perf_counter() - started
    final = np.asarray(evaluate())
    pictures = np.clip(np.asarray(picture()) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return [FeatureVisualization(layer=name, filter=int(f), image=pictures[i], trace=trace[:done, i].copy(),
                                 objective=float(final[i]), start=float(start_values[i]), steps=done,
                                 seconds=seconds, complete=done == steps, objective_kind=what)
            for i, f in enumerate(filters)]


def _save(path: Path, results: list[FeatureVisualization]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for i, r in enumerate(results):
        arrays[f"image_{i}"], arrays[f"trace_{i}"] = r.image, r.trace
        arrays[f"numbers_{i}"] = np.array([r.objective, r.start, r.steps, r.seconds], np.float64)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as fp:
        np.savez(fp, **arrays)
    os.replace(tmp, path)


def _load(path: Path, name: str, filters: list[int], what: str) -> list[FeatureVisualization]:
    with np.load(path) as data:
        out = []
        for i, f in enumerate(filters):
            objective, start, steps, seconds = data[f"numbers_{i}"]
            out.append(FeatureVisualization(layer=name, filter=int(f), image=data[f"image_{i}"],
                                            trace=data[f"trace_{i}"], objective=float(objective),
                                            start=float(start), steps=int(steps), seconds=float(seconds),
                                            from_cache=True, objective_kind=what))
    return out
