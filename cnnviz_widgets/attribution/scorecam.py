"""Score-CAM (Wang et al. 2020): each map of a conv layer weighed by the score the picture gets when masked by it.

No gradient: each map is brought to the input's size (bilinear, half-pixel centres, as the authors' code and
`heatmaps.upsample` do), scaled to 0..1, and multiplies the fed input; the masked input's score is the map's
weight, and raw = relu(sum_k w_k A_k) at the layer's resolution. Faster Score-CAM (`max_n`) keeps only the
`max_n` maps with the largest variance. The masked inputs run through one segment (`network.segments`, from the
input to the layer the score is read from) in batches sized from the memory budget (`network.memory`): a
`MemoryBudgetError` is raised before anything runs when not even one masked input fits.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from cnnviz_widgets.attribution.classes import Target
from cnnviz_widgets.attribution.explanation import Explanation
from cnnviz_widgets.attribution.gradients import GradientPaths
from cnnviz_widgets.attribution.heatmaps import unit_heatmap, upsample
from cnnviz_widgets.attribution.methods import Method
from cnnviz_widgets.checks import check_int
from cnnviz_widgets.errors import CnnvizError
from cnnviz_widgets.network import memory
from cnnviz_widgets.progress import cancelled, progress_bar

MAX_BATCH = 32
"""The most masked inputs run at once (more gains nothing on a CPU and only holds memory)."""


def score_cam(paths: GradientPaths, x: np.ndarray, target: Target, layer: str, score: str,
              key: str | None = None, max_n: int | None = None, progress: Any = False, cancel: Any = None,
              align_corners: bool = False) -> Explanation:
    """Score-CAM of `target`'s `score` on the maps of `layer` for the prepared input `x` (H, W, C).

    max_n : None, every map; an int, Faster Score-CAM: the `max_n` maps with the largest variance (ties in
        channel order). Flat maps (one value everywhere) say nothing about where: they are not run and weigh 0,
        as in the authors' code; so do the maps left out by `max_n`.
    progress : True (a tqdm bar), a callable progress(done, total), or False. cancel : a `threading.Event` or
        a function returning True to stop; a stopped run raises CnnvizError (no partial map is kept).
    align_corners : True upsamples as `scipy.ndimage.zoom(order=1)` does (tf-keras-vis; for comparisons).

    The weight of map k is the chosen score of the masked input x * s(Up(A_k)) (the paper's Algorithm 1 reads
    the probability: pass score="probability"); the paper's baseline score f(0) is not subtracted (its
    Algorithm 1 and code do not). `weights` (C,) holds every map's weight. tf-keras-vis reads the softmax of the
    model's output (so of a probability again on a softmax model), runs flat maps too, upsamples with aligned
    corners and adds 1e-7 to each map's range.
    """
    maps, _, value = paths.gradients(x, target, score, layer, key)  # from the cache: the maps and the score
    h, w, n_maps = maps.shape
    chosen = _chosen_maps(maps, max_n)
    source, scores = batch_scores(paths, target, score)
    height, width, channels = x.shape
    facts = memory.memory_facts()
    per_input = _bytes_per_input(paths, source, (height, width, channels))
    budget = min(memory.cache_budget(facts)[0], facts.available)  # the cache's share of what is left
    batch = int(max(1, min(MAX_BATCH, len(chosen), budget // per_input)))
    memory.check_fits(batch * per_input, f"Score-CAM on a {width}×{height} input ({batch} masked input"
                      f"{'s' if batch > 1 else ''} at a time)", "choose a smaller max_side, or a smaller image", facts)
    rows = upsample(np.eye(h), (height, h), align_corners)  # (H, h): Up(A) = rows @ A @ cols.T, map by map
    cols = upsample(np.eye(w), (width, w), align_corners)
    segment = paths.graph.segments.model(None, source, name="cnnviz_score_cam")
    fed = np.asarray(x, dtype=np.float32)
    weights = np.zeros(n_maps, np.float64)
    update, close = progress_bar(progress, len(chosen), 0, unit="map", what="Score-CAM")
    try:
        for start in range(0, len(chosen), batch):
            if cancelled(cancel):
                raise CnnvizError(f"Score-CAM was cancelled after {start} of {len(chosen)} maps; nothing is kept")
            part = chosen[start : start + batch]
            big = np.tensordot(np.tensordot(rows, maps[:, :, part], axes=(1, 0)), cols, axes=(1, 1))  # (H, n, W)
            low, high = big.min(axis=(0, 2), keepdims=True), big.max(axis=(0, 2), keepdims=True)
            masks = np.divide(big - low, high - low, out=np.zeros_like(big), where=high > low)
            masked = fed[np.newaxis] * masks.transpose(1, 0, 2)[..., np.newaxis]
            weights[part] = scores(np.asarray(segment(masked, training=False)))
            update(start + len(part))
    finally:
        close()
    raw = np.maximum(np.tensordot(maps.astype(np.float64), weights, axes=([2], [0])), 0.0).astype(np.float32)
    left_out = n_maps - len(chosen)
    note = f"{len(chosen)} of {n_maps} maps weighed ({left_out} flat or left out by max_n)" if left_out else ""
    if raw.max() <= 0:
        note = f"all zero: no map of {layer} raises this score when it masks the picture" + (
            f"; {note}" if note else "")
    return Explanation("score-cam", target, score, value, layer, raw, unit_heatmap(raw, x.shape[:2]),
                       weights.astype(np.float32), note)


def _chosen_maps(maps: np.ndarray, max_n: int | None) -> np.ndarray:
    """The maps Score-CAM runs: the `max_n` (None: all) of largest variance, then the flat ones dropped."""
    n_maps = maps.shape[2]
    flat = maps.reshape(-1, n_maps)
    if max_n is None:
        order = np.arange(n_maps)
    else:
        max_n = check_int(max_n, "max_n", 1, n_maps, message=f"max_n must be None (every map) or an integer in "
                          f"1..{n_maps} (the layer's maps); got {max_n!r}")
        order = np.sort(np.argsort(-flat.std(axis=0, dtype=np.float64), kind="stable")[:max_n])
    return order[flat[:, order].max(axis=0) > flat[:, order].min(axis=0)]


def batch_scores(paths: GradientPaths, target: Target,
                 score: str) -> tuple[str, Callable[[np.ndarray], np.ndarray]]:
    """(the layer a score is read from, what turns that layer's outputs (n, ...) into n scores (float64)).

    The batched form of the score `gradients.GradientPaths` differentiates: a filter's mean activation; a class's
    logit (recomputed from the output Dense layer's input where the output is a probability) or probability.
    """
    if target.kind == "filter":
        return target.layer, lambda values: values[..., target.index].reshape(len(values), -1).mean(
            axis=1, dtype=np.float64)
    classifier = paths.classifier()
    node = paths.graph.node(classifier.layer)
    c = target.index
    if score == "logit" and classifier.logit == "dense":
        column = np.asarray(node.layer.kernel, dtype=np.float64)[:, c]
        bias = float(np.asarray(node.layer.bias)[c]) if node.layer.use_bias else 0.0
        return node.inputs[0], lambda values: values.reshape(len(values), -1).astype(np.float64) @ column + bias
    if score == "logit" and classifier.logit == "activation":
        return node.inputs[0], lambda values: values[:, c].astype(np.float64)
    if score == "probability" and classifier.activation not in ("softmax", "sigmoid"):
        def softmax(values: np.ndarray) -> np.ndarray:
            logits = values.astype(np.float64)
            shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
            return shifted[:, c] / shifted.sum(axis=1)
        return classifier.layer, softmax
    return classifier.layer, lambda values: values[:, c].astype(np.float64)


def _bytes_per_input(paths: GradientPaths, source: str, shape: tuple[int, int, int]) -> int:
    """Bytes one masked input needs: every layer's output up to `source` (a generous bound on what a forward
    pass holds at once), the input, its mask and the upsampled map."""
    height, width, channels = shape
    pixels = height * width * 4 * (channels + 2)
    outputs = paths.graph.output_shapes(height, width)
    total = 0
    for name, out in outputs.items():
        total += int(np.prod(out, dtype=np.int64)) * 4
        if name == paths.graph.node(source).name:
            break
    return pixels + total


SCORE_CAM = Method("score-cam", "cam", "Which maps raise the score when shown alone: the picture is masked by each "
                   "map in turn, and each map weighs what the masked picture scores.", score_cam,
                   {"max_n": None, "progress": False, "cancel": None})
