"""Gradient saliency (Simonyan et al. 2013): |d score / d input|, the largest over the fed channels; and
input x gradient (Shrikumar et al. 2016): the fed input times that gradient, per pixel and channel.

Input x gradient is the first-order share of each fed value in the score, measured from a fed 0: its `raw` is
the sum over the channels (signed; Integrated Gradients with a fed-0 baseline on a linear model gives the same).
A fed 0 is not a black picture under most preprocessings (caffe: the mean colour), which Integrated Gradients'
"black" baseline accounts for.
"""

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


def input_x_gradient(paths: GradientPaths, x: np.ndarray, target: Target, layer: str | None, score: str,
                     key: str | None = None) -> Explanation:
    """x * d score / d x for the prepared input `x` (H, W, C), per pixel and channel; raw: its sum over channels."""
    fed, grads, value = paths.gradients(x, target, score, None, key)
    attributions = (np.asarray(fed, dtype=np.float32) * grads).astype(np.float32)
    raw = attributions.sum(axis=2)
    note = "" if np.any(raw) else "all zero: this score does not change with any input pixel that is not 0"
    return Explanation("input-x-gradient", target, score, value, paths.graph.input_name, raw,
                       unit_heatmap(raw, raw.shape), None, note, attributions=attributions)


INPUT_X_GRADIENT = Method("input-x-gradient", "gradient", "How much each pixel's value pushes the score up or down: "
                          "the value fed to the network times the score's gradient there.", input_x_gradient)
