"""Occlusion (Zeiler and Fergus 2014): hide a patch of the picture, see how much the score drops, slide the patch.

Each window of `patch` pixels, `stride` apart (the last row and column of windows moved in to end at the edge,
so every pixel is covered), is replaced in all channels by the baseline's values there (`integrated.baseline_for`:
"black" by default, the fed value of a black picture); the drop f(x) - f(occluded) is credited to every pixel of
the window, and each pixel's attribution is the mean of its windows' drops (Captum's `Occlusion`, with a window
over all channels). No gradient: the occluded copies run forward only through the whole network, in batches
sized from the memory budget (`gradients.input_batches`), with `progress`/`cancel` as Score-CAM has them.

`attributions` (H, W, C) holds that mean drop, the same in every channel (a window hides all of them); `raw` is it
once per pixel (signed: positive where hiding the pixel lowers the score, negative where it raises it).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cnnviz_widgets.attribution.classes import Target
from cnnviz_widgets.attribution.explanation import Explanation
from cnnviz_widgets.attribution.gradients import GradientPaths, input_batches
from cnnviz_widgets.attribution.heatmaps import unit_heatmap
from cnnviz_widgets.attribution.integrated import baseline_for
from cnnviz_widgets.attribution.methods import Method
from cnnviz_widgets.checks import is_int
from cnnviz_widgets.errors import CnnvizError


def window_starts(size: int, patch: int, stride: int) -> list[int]:
    """Where windows of `patch` start along an axis of `size`, `stride` apart; the last one ends at the edge."""
    starts = list(range(0, size - patch + 1, stride))
    if starts[-1] != size - patch:
        starts.append(size - patch)
    return starts


def _pair(value: Any, name: str, default: tuple[int, int], size: tuple[int, int]) -> tuple[int, int]:
    if value is None:
        return default
    pair = (value, value) if is_int(value) else tuple(value) if isinstance(value, (tuple, list)) else ()
    if len(pair) != 2 or not all(is_int(v) and 1 <= v <= s for v, s in zip(pair, size, strict=True)):
        raise CnnvizError(f"{name} must be None, an integer or (height, width) integers in 1..{size[0]}×1..{size[1]} "
                          f"(the input's size); got {value!r}")
    return int(pair[0]), int(pair[1])


def occlusion(paths: GradientPaths, x: np.ndarray, target: Target, layer: str | None, score: str,
              key: str | None = None, patch: Any = None, stride: Any = None, baseline: Any = "black",
              seed: int | None = 0, progress: Any = False, cancel: Any = None) -> Explanation:
    """Occlusion of `target`'s `score` for the prepared input `x` (H, W, C) (see the module).

    patch : the window's size, an int or (height, width); None: an eighth of the input's shorter side (at least
    1). stride : the step between windows; None: half the patch (at least 1). baseline, seed : what fills the
    window (see `integrated.baseline_for`). progress, cancel : see `gradients.input_batches` (unit: a window).
    """
    fed = np.asarray(x, dtype=np.float32)
    height, width, channels = fed.shape
    side = max(1, min(height, width) // 8)
    patch = _pair(patch, "patch", (side, side), (height, width))
    stride = _pair(stride, "stride", (max(1, patch[0] // 2), max(1, patch[1] // 2)), (height, width))
    base = baseline_for(paths, fed, baseline, seed)
    windows = [(r, c) for r in window_starts(height, patch[0], stride[0])
               for c in window_starts(width, patch[1], stride[1])]

    def make(start: int, stop: int) -> np.ndarray:
        batch = np.repeat(fed[np.newaxis], stop - start, axis=0)
        for i, (r, c) in enumerate(windows[start:stop]):
            batch[i, r : r + patch[0], c : c + patch[1]] = base[r : r + patch[0], c : c + patch[1]]
        return batch

    total = np.zeros((height, width), np.float64)  # the occluded scores, summed per pixel
    count = np.zeros((height, width), np.int64)
    for start, _, scores in input_batches(paths, fed.shape, len(windows), make, target, score, "Occlusion",
                                          unit="window", gradients=False, progress=progress, cancel=cancel):
        for (r, c), occluded in zip(windows[start : start + len(scores)], scores, strict=True):
            total[r : r + patch[0], c : c + patch[1]] += occluded
            count[r : r + patch[0], c : c + patch[1]] += 1
    value = float(paths.input_scores(fed[np.newaxis], target, score)[0])
    raw = (value - total / count).astype(np.float32)
    note = "" if np.any(raw) else "all zero: hiding any patch leaves the score as it is"
    attributions = np.repeat(raw[..., np.newaxis], channels, axis=2)
    return Explanation("occlusion", target, score, value, paths.graph.input_name, raw, unit_heatmap(raw, raw.shape),
                       None, note, attributions=attributions)


OCCLUSION = Method("occlusion", "perturbation", "How much the score drops when a patch of the picture is hidden: "
                   "a black square (by default) slid over the picture, each pixel given its patches' mean drop.",
                   occlusion, {"patch": None, "stride": None, "baseline": "black", "seed": 0, "progress": False,
                               "cancel": None})
