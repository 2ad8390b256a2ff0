"""The gradient CAMs: a conv layer's maps weighed by the gradient of a score, summed, negatives dropped.

Grad-CAM (Selvaraju et al. 2017) weighs each map by its mean gradient. Grad-CAM++ (Chattopadhay et al. 2018)
by its positive gradients, each scaled by the paper's alpha, so that several instances (or small parts) of what
raises the score all show. LayerCAM (Jiang et al. 2021) weighs each position of each map by its own positive
gradient, which stays sharp in early layers. All three start from the layer's cached maps
(`gradients.GradientPaths`): one short gradient pass from the layer to the score.
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
    return Explanation("grad-cam", target, score, value, layer, raw, unit_heatmap(raw, x.shape[:2]),
                       weights.astype(np.float32), _zero_note(raw, layer))


def grad_cam_plus_plus(paths: GradientPaths, x: np.ndarray, target: Target, layer: str, score: str,
                       key: str | None = None) -> Explanation:
    """Grad-CAM++ of `target`'s `score` on the maps of `layer` for the prepared input `x` (H, W, C).

    With g = d score / d A_k (h, w, C), the paper's closed form for the exponential of the score:
    alpha_k(i, j) = g^2 / (2 g^2 + sum_ab A_k(a, b) g^3) (0 where g = 0), w_k = sum_ij alpha_k(i, j) relu(g),
    raw = relu(sum_k w_k A_k). exp(score), a positive factor of every first derivative that cancels in alpha,
    is left out of w_k (it only scales the map, and a logit above 88 overflows float32).

    tf-keras-vis (and the authors' code) keep exp(score) and also divide each map's alphas by their sum over
    the map, which the paper does not: their raw map is exp(score) * relu(sum_k w_k / sum_ij alpha_k A_k).
    """
    maps, grads, value = paths.gradients(x, target, score, layer, key)
    a, g = maps.astype(np.float64), grads.astype(np.float64)
    g2 = g * g
    denominator = 2.0 * g2 + a.sum(axis=(0, 1)) * g2 * g
    alphas = np.divide(g2, denominator, out=np.zeros_like(g2), where=(g != 0) & (denominator != 0))
    weights = (alphas * np.maximum(g, 0.0)).sum(axis=(0, 1))
    raw = np.maximum(np.tensordot(a, weights, axes=([2], [0])), 0.0).astype(np.float32)
    return Explanation("grad-cam++", target, score, value, layer, raw, unit_heatmap(raw, x.shape[:2]),
                       weights.astype(np.float32), _zero_note(raw, layer))


def layer_cam(paths: GradientPaths, x: np.ndarray, target: Target, layer: str, score: str,
              key: str | None = None) -> Explanation:
    """LayerCAM of `target`'s `score` on the maps of `layer` for the prepared input `x` (H, W, C).

    raw = relu(sum_k relu(d score / d A_k) * A_k), position by position (Jiang et al. 2021;
    tf-keras-vis' `Layercam` computes the same). No per-map weights: `weights` is None.
    """
    maps, grads, value = paths.gradients(x, target, score, layer, key)
    raw = np.maximum(np.einsum("ijk,ijk->ij", maps, np.maximum(grads, 0.0)), 0.0).astype(np.float32)
    note = "" if raw.max() > 0 else f"all zero: no position of {layer} has a map whose gradient is positive there"
    return Explanation("layer-cam", target, score, value, layer, raw, unit_heatmap(raw, x.shape[:2]), None, note)


def _zero_note(raw: np.ndarray, layer: str) -> str:
    return "" if raw.max() > 0 else (f"all zero: no map of {layer} raises this score (every weighted sum "
                                     "is negative)")


GRAD_CAM = Method("grad-cam", "cam", "Where the chosen conv layer sees what raises the score: its maps weighed by "
                  "the mean gradient of the score over each, summed, negatives dropped.", grad_cam)
GRAD_CAM_PLUS_PLUS = Method("grad-cam++", "cam", "Like Grad-CAM, but each map is weighed by its positive gradients, "
                            "each scaled so that several objects of a class, or small parts of one, all show.",
                            grad_cam_plus_plus)
LAYER_CAM = Method("layer-cam", "cam", "Like Grad-CAM, but pixel by pixel: each map times its own positive gradient "
                   "at each position, summed, which stays sharp even in early layers.", layer_cam)
