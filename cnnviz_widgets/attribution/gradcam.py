"""Grad-CAM (Selvaraju et al. 2017): a conv layer's maps weighed by the mean gradient of a score over each.

The weighted maps are summed and only the positive part is kept: where the layer sees what raises the score.
"""

from __future__ import annotations

import numpy as np

from cnnviz_widgets.attribution.classes import Target
from cnnviz_widgets.attribution.explanation import Explanation
from cnnviz_widgets.attribution.gradients import GradientPaths
from cnnviz_widgets.attribution.heatmaps import unit_heatmap
from cnnviz_widgets.attribution.methods import Method


def grad_cam(paths: GradientPaths, x: np.ndarray, target: Target, layer: str, score: str,
             key: str | None = None) -> Explanation:
    """Grad-CAM of `target`'s `score` on the maps of `layer` for the prepared input `x` (H, W, C)."""
    maps, grads, value = paths.gradients(x, target, score, layer, key)
    weights = grads.mean(axis=(0, 1))  # one weight per map: its mean gradient (the paper's alpha_k)
    raw = np.maximum(np.tensordot(maps, weights, axes=([2], [0])), 0.0).astype(np.float32)
    note = "" if raw.max() > 0 else (f"all zero: no map of {layer} raises this score (every weighted sum "
                                     "is negative)")
    return Explanation("grad-cam", target, score, value, layer, raw, unit_heatmap(raw, x.shape[:2]),
                       weights.astype(np.float32), note)


GRAD_CAM = Method("grad-cam", "cam", "Where the chosen conv layer sees what raises the score: its maps weighed by "
                  "the mean gradient of the score over each, summed, negatives dropped.", grad_cam)
