"""What every attribution method gives back: an `Explanation`, a map of where in the picture a score comes from."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cnnviz_widgets.attribution.classes import Target

METHODS = ("grad-cam", "saliency")
"""The attribution methods, by name (`gradcam`, `saliency`)."""


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
