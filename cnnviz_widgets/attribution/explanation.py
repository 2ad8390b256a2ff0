"""What every attribution method gives back: an `Explanation`, a map of where in the picture a score comes from."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cnnviz_widgets.attribution.classes import Target


@dataclass(frozen=True, eq=False)
class Explanation:
    """A map of where in the picture a score comes from.

    method : the method's name (`catalogue.METHODS`).
    target : what is explained; score : "logit", "probability" or "mean activation"; score_value : its value.
    layer : the conv layer whose maps Grad-CAM weighs (saliency: the model input).
    raw : (h, w) float32, the method's own map. The CAMs: >= 0 at the layer's resolution (Grad-CAM:
        relu(sum_k weights_k A_k)); saliency, SmoothGrad, VarGrad, Guided Backprop: >= 0, the largest over the fed
        channels of |.|; input x gradient, Integrated Gradients, occlusion: signed (their sum over channels, or
        the score's drop), at the input's resolution. Each method's docstring says which.
    heatmap : (H, W) float32 in [0, 1]: `raw` brought to the fed input's size (bilinear, half-pixel centres)
        and scaled by its min..max (all zero when `raw` is flat).
    weights : (C,) float32, a CAM's per-map weights (Grad-CAM: the mean gradient over each map); None otherwise.
    note : what the user should know (e.g. the map is all zero).
    attributions : (H, W, C_in) float32, signed, per fed pixel and channel, for the gradient and perturbation
        methods (saliency: d score / d input); None for the CAMs.
    delta : a method's own error measure where it has one (Integrated Gradients: how far the attributions'
        sum is from f(x) - f(baseline)); None otherwise.
    options : the options the method ran with, defaults included. seconds : how long it took.
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
    attributions: np.ndarray | None = None
    delta: float | None = None
    options: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
