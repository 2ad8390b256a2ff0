"""Does the map point at what the score depends on? The deletion and insertion curves (Petsiuk et al. 2018, RISE).

`faithfulness` orders the input pixels by a map, most important first, and watches the target's score while
they are taken away ("deletion": set to the baseline, from the picture to the baseline) or put in ("insertion":
from the baseline to the picture), `steps` times. A faithful map makes the deletion curve fall fast (a small
area under it) and the insertion curve rise fast (a large area). As in Xplique's `Deletion` and `Insertion`,
every channel of a pixel goes at once, and the area is the trapezoid rule over the fraction of pixels changed.

The pixels are ranked by the heat map a user sees (`Explanation.heatmap`, at the input's resolution), ties in
reading order (row by row). The perturbed inputs run in batches sized from this session's memory (a quarter of
what is left, as the activation cache) through the graph's own segment from the input to the score
(`network.segments`): no model is built or copied here, and nothing of the state changes.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from cnnviz_widgets.attribution.classes import Classifier, Target
from cnnviz_widgets.attribution.explainer import Explainer
from cnnviz_widgets.attribution.explanation import Explanation
from cnnviz_widgets.checks import check_positive
from cnnviz_widgets.errors import CnnvizError
from cnnviz_widgets.network.backend import keras
from cnnviz_widgets.network.feed import ExplainedFeed
from cnnviz_widgets.network.graph import ModelGraph
from cnnviz_widgets.network.memory import CACHE_SHARE, check_fits, memory_facts
from cnnviz_widgets.progress import cancelled, progress_bar

METRICS = ("deletion", "insertion")

MOST_BATCH = 64
"""The largest batch of perturbed inputs run at once (more gains little on a CPU)."""


@dataclass(frozen=True, eq=False)
class FaithfulnessCurve:
    """The target's score as pixels are deleted from (or inserted into) the picture in a map's order.

    method : the map's method (or "given" for a map passed as an array). metric : "deletion" or "insertion".
    target, score : what the curve measures ("logit", "probability" or "mean activation").
    fractions : (steps + 1,) float64, the fraction of pixels changed, 0 to 1. scores : (steps + 1,) float64.
    auc : the area under the curve (trapezoid rule over `fractions`): low is good for deletion, high for
        insertion. baseline : what a deleted pixel becomes (insertion: what the picture starts from), in words.
    heatmap : (H, W) the map whose order was followed. batch_size : perturbed inputs per model run.
    seconds : how long it took. complete : False when cancelled (the curve then stops where it was).
    """

    method: str
    metric: str
    target: Target
    score: str
    fractions: np.ndarray
    scores: np.ndarray
    auc: float
    baseline: str
    heatmap: np.ndarray
    batch_size: int
    seconds: float
    complete: bool


def faithfulness(state: ExplainedFeed, method: str | Explanation | np.ndarray = "grad-cam",
                 metric: str = "deletion", steps: int = 20, baseline: Any = None, class_index: int | None = None,
                 *, of: str | None = None, layer: str | None = None, score: str | None = None,
                 batch_size: int | None = None, progress: Any = False, cancel: Any = None,
                 **options: Any) -> FaithfulnessCurve:
    """The deletion or insertion curve of a map on the state's current picture, and its area.

    method : a name of `catalogue.METHODS` (its map from `state.explanation`, with `layer` and `options`), an
        `Explanation` of the current picture, or an (H, W) map of one's own. metric : "deletion" or "insertion".
    steps : the curve has steps + 1 points, from 0 to every pixel changed (evenly spaced, rounded to pixels).
    baseline : what a removed pixel becomes, in the model's input values: a number, one value per channel, an
        (H, W, C) array, "mean" (the picture's mean colour) or "blur" (the picture blurred, σ = side / 45 as
        RISE's 11-pixel σ-5 blur at 224). Default: 0 for deletion (RISE), "blur" for insertion (RISE).
    class_index, of : the target (`state.explain_target`). score : for a class, "probability" (default, as RISE)
        or "logit". batch_size : perturbed inputs per model run (default: what a quarter of the free memory holds,
        at most 64). progress, cancel : see `cnnviz_widgets.progress`.
    """
    started = time.perf_counter()
    if metric not in METRICS:
        raise CnnvizError(f"unknown metric {metric!r}; expected one of {', '.join(METRICS)}")
    steps = check_positive(steps, "steps")
    x = np.asarray(state.model_input.array, dtype=np.float32)
    height, width, channels = x.shape
    name, target, heatmap = _the_map(state, method, class_index, of, layer, options, (height, width))
    explainer = Explainer(state.graph)  # the classifier and the score only: its caches stay empty
    score = _score_kind(explainer, target, score)
    fill, words = make_baseline(x, "blur" if baseline is None and metric == "insertion" else
                                (0.0 if baseline is None else baseline))
    pixels = height * width
    order = np.argsort(-heatmap.ravel(), kind="stable")  # most important first, ties in reading order
    counts = np.rint(np.linspace(0, pixels, steps + 1)).astype(np.int64)
    per_input = 2 * state.extractor.output_bytes(x.shape) + x.nbytes
    size = _batch_size(batch_size, per_input, x.shape)
    start, end = (x, fill) if metric == "deletion" else (fill, x)
    start_flat, end_flat = start.reshape(pixels, channels), end.reshape(pixels, channels)
    run = score_function(state.graph, explainer, target, score)
    scores: list[float] = []
    update, close = progress_bar(progress, len(counts), 0, unit="input", what=metric)
    try:
        for first in range(0, len(counts), size):
            if first and cancelled(cancel):
                break
            batch = np.repeat(start_flat[np.newaxis], min(size, len(counts) - first), axis=0)
            for row, count in enumerate(counts[first : first + len(batch)]):
                changed = order[:count]
                batch[row, changed] = end_flat[changed]
            scores.extend(run(batch.reshape(len(batch), height, width, channels)))
            update(len(scores))
    finally:
        close()
    fractions = counts[: len(scores)] / pixels
    values = np.asarray(scores, dtype=np.float64)
    return FaithfulnessCurve(name, metric, target, score, fractions, values, trapezoid(fractions, values), words,
                             heatmap, size, time.perf_counter() - started, len(scores) == len(counts))


def trapezoid(fractions: np.ndarray, scores: np.ndarray) -> float:
    """The area under the curve by the trapezoid rule (NaN for fewer than two points)."""
    f, s = np.asarray(fractions, dtype=np.float64), np.asarray(scores, dtype=np.float64)
    if f.size < 2:
        return math.nan
    return float(((s[1:] + s[:-1]) / 2 * np.diff(f)).sum())


def _the_map(state: ExplainedFeed, method: Any, class_index: int | None, of: str | None, layer: str | None,
             options: dict, size: tuple[int, int]) -> tuple[str, Target, np.ndarray]:
    """(the method's name, the target, the (H, W) float64 map whose order is followed)."""
    if isinstance(method, str):
        found = state.explanation(method, class_index, layer=layer, of=of, **options)
        return found.method, found.target, np.asarray(found.heatmap, dtype=np.float64)
    if options or layer is not None:
        raise CnnvizError("layer and a method's options apply to a method given by name, not to a computed map")
    if isinstance(method, Explanation):
        given, name, target = method.heatmap, method.method, method.target
    else:
        given, name, target = method, "given", state.explain_target(class_index, of)
    heatmap = np.asarray(given, dtype=np.float64)
    if heatmap.shape != tuple(size):
        raise CnnvizError(f"the map must be (H, W) = {tuple(size)} like the model input; got shape {heatmap.shape}")
    if not np.isfinite(heatmap).all():
        raise CnnvizError("the map has NaN or infinite values: it orders no pixels")
    return name, target, heatmap


def _score_kind(explainer: Explainer, target: Target, score: str | None) -> str:
    if target.kind == "class" and score is None:
        return "probability"
    return explainer.paths.score_kind(target, score)


def make_baseline(x: np.ndarray, baseline: Any) -> tuple[np.ndarray, str]:
    """(the (H, W, C) float32 input a fully removed picture becomes, that in words) for the prepared input `x`."""
    if isinstance(baseline, str):
        if baseline == "mean":
            return np.broadcast_to(x.mean(axis=(0, 1)), x.shape).astype(np.float32), "the picture's mean colour"
        if baseline == "blur":
            sigma = max(1.0, max(x.shape[:2]) / 45)
            return blur(x, sigma), f"the picture blurred (Gaussian, σ = {sigma:.1f} pixels)"
        raise CnnvizError(f"unknown baseline {baseline!r}; expected a number, an array, 'mean' or 'blur'")
    values = np.asarray(baseline, dtype=np.float32)
    if values.ndim == 0:
        return np.full(x.shape, values, dtype=np.float32), f"{float(values):g} in every input channel"
    if values.shape in ((x.shape[2],), x.shape):
        return np.broadcast_to(values, x.shape).astype(np.float32), ("one value per channel" if values.ndim == 1
                                                                     else "the given input")
    raise CnnvizError(f"baseline must be a number, ({x.shape[2]},) per channel or {x.shape} like the input, "
                      f"'mean' or 'blur'; got shape {values.shape}")


def blur(x: np.ndarray, sigma: float) -> np.ndarray:
    """(H, W, C) float32: a Gaussian blur of `x` over its height and width (edges repeated), radius 3σ."""
    radius = max(1, math.ceil(3 * sigma))
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    taps /= taps.sum()
    out = np.asarray(x, dtype=np.float64)
    for axis in (0, 1):
        pad = [(0, 0)] * out.ndim
        pad[axis] = (radius, radius)
        padded = np.pad(out, pad, mode="edge")
        length = out.shape[axis]
        out = sum(w * np.take(padded, np.arange(i, i + length), axis=axis) for i, w in enumerate(taps))
    return np.asarray(out, dtype=np.float32)


def _batch_size(given: int | None, per_input: int, shape: tuple[int, ...]) -> int:
    what = f"{{}} perturbed {shape[1]}×{shape[0]} inputs at once"
    if given is not None:
        size = check_positive(given, "batch_size")
        check_fits(size * per_input, what.format(size), "choose a smaller batch_size")
        return size
    check_fits(per_input, what.format(1), "choose a smaller max_side, or a smaller image")
    return int(min(MOST_BATCH, max(1, memory_facts().available * CACHE_SHARE // max(1, per_input))))


def score_function(graph: ModelGraph, explainer: Explainer, target: Target, score: str) -> Any:
    """inputs (n, H, W, C) -> the target's `score` for each, (n,) float64: one run of the graph's segment from the
    input to the layer the score is read from (for a logit behind a Dense softmax, the Dense layer's input)."""
    ops = keras().ops
    if target.kind == "filter":
        index, source = target.index, target.layer

        def finish(values: np.ndarray) -> np.ndarray:
            return values[..., index].mean(axis=(1, 2))
    else:
        classifier: Classifier = explainer.classifier
        index, source, node = target.index, classifier.layer, graph.node(classifier.layer)
        if score == "logit" and classifier.logit in ("dense", "activation"):
            source = node.inputs[0]
        if score == "logit" and classifier.logit == "dense":
            column = np.asarray(node.layer.kernel, dtype=np.float64)[:, index]
            bias = float(np.asarray(node.layer.bias)[index]) if node.layer.use_bias else 0.0

            def finish(values: np.ndarray) -> np.ndarray:
                return values.reshape(len(values), -1) @ column + bias
        elif score == "probability" and classifier.activation not in ("softmax", "sigmoid"):
            def finish(values: np.ndarray) -> np.ndarray:
                shifted = np.exp(values - values.max(axis=1, keepdims=True))
                return (shifted / shifted.sum(axis=1, keepdims=True))[:, index]
        else:
            def finish(values: np.ndarray) -> np.ndarray:
                return values[:, index]
    model = graph.segments.model(None, source, name="cnnviz_faithfulness")

    def run(inputs: np.ndarray) -> list[float]:
        values = model(ops.convert_to_tensor(inputs), training=False)
        return [float(v) for v in finish(np.asarray(values, dtype=np.float64))]

    return run
