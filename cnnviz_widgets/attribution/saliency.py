"""Gradient saliency (Simonyan et al. 2013): |d score / d input|, the largest over the fed channels."""

from __future__ import annotations

import numpy as np

from cnnviz_widgets.attribution.classes import Target
from cnnviz_widgets.attribution.explanation import Explanation
from cnnviz_widgets.attribution.gradients import GradientPaths
from cnnviz_widgets.attribution.heatmaps import unit_heatmap
from cnnviz_widgets.attribution.methods import Method


def saliency(paths: GradientPaths, x: np.ndarray, target: Target, layer: str | None, score: str,
             key: str | None = None) -> Explanation:
    """The saliency map of `target`'s `score` for the prepared input `x` (H, W, C), at the input's resolution."""
    _, grads, value = paths.gradients(x, target, score, None, key)
    raw = np.abs(grads).max(axis=2).astype(np.float32)
    note = "" if raw.max() > 0 else "all zero: this score does not change with any input pixel"
    return Explanation("saliency", target, score, value, paths.graph.input_name, raw, unit_heatmap(raw, raw.shape),
                       None, note, attributions=grads.astype(np.float32))


SALIENCY = Method("saliency", "gradient", "Which input pixels the score is most sensitive to: the size of the "
                  "score's gradient at each pixel, the largest over the colour channels.", saliency)
