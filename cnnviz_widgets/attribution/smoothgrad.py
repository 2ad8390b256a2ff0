"""SmoothGrad and VarGrad: the gradient of the score, averaged (or its spread measured) over noisy copies of the input.

SmoothGrad (Smilkov et al. 2017) adds Gaussian noise to the fed input `samples` times and averages the gradients,
so that the speckle of a single gradient (which changes from pixel to pixel) averages out and what stays is what
the score is sensitive to around the picture. VarGrad (Adebayo et al. 2018) keeps the variance of those
gradients instead of their mean. The noise's standard deviation is `noise` times the fed input's range
(max - min over every pixel and channel), as tf-keras-vis' `smooth_noise` is; the draws come from
`numpy.random.default_rng(seed)` (`noise_draws`), so the same seed gives the same map. The noisy copies run in
batches through the whole network (`gradients.input_batches`), sized from the memory budget.

What each result holds, per fed pixel and channel (g: the gradient of one noisy copy; E: the mean over copies):
- SmoothGrad: `attributions` = E[g] (signed, Captum's NoiseTunnel "smoothgrad" over plain gradients);
  `raw` = max over the channels of E[|g|], the map of the paper's figures and of tf-keras-vis'
  `Saliency(smooth_samples=...)` (its default takes |g| of each copy, averages, then the channel maximum).
- VarGrad: `attributions` = E[g^2] - E[g]^2 (the variance of the signed gradient, >= 0; Captum's NoiseTunnel
  "vargrad" over its default `Saliency(abs=True)` takes the variance of |g| instead); `raw` = its max over the
  channels.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cnnviz_widgets.attribution.classes import Target
from cnnviz_widgets.attribution.explanation import Explanation
from cnnviz_widgets.attribution.gradients import GradientPaths, input_batches
from cnnviz_widgets.attribution.heatmaps import unit_heatmap
from cnnviz_widgets.attribution.methods import Method
from cnnviz_widgets.checks import check_positive
from cnnviz_widgets.errors import CnnvizError


def noise_draws(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Standard normal draws of `shape` (float32): the noise before it is scaled (tests replace this to share
    the draws with another library)."""
    return rng.standard_normal(shape, dtype=np.float32)


def noisy_gradients(paths: GradientPaths, x: np.ndarray, target: Target, score: str, what: str, samples: int,
                    noise: float, seed: int | None, progress: Any,
                    cancel: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(sum of g, sum of |g|, sum of g^2), each (H, W, C) float64, over `samples` noisy copies of `x`."""
    samples = check_positive(samples, "samples")
    if isinstance(noise, bool) or not isinstance(noise, (int, float, np.floating)) or not 0 <= noise < np.inf:
        raise CnnvizError(f"noise must be a number >= 0 (a fraction of the input's range, e.g. 0.2); got {noise!r}")
    fed = np.asarray(x, dtype=np.float32)
    sigma = np.float32(float(noise) * float(fed.max() - fed.min()))
    rng = np.random.default_rng(seed)
    total, total_abs, total_sq = (np.zeros(fed.shape, np.float64) for _ in range(3))

    def make(start: int, stop: int) -> np.ndarray:
        return fed[np.newaxis] + sigma * noise_draws(rng, (stop - start, *fed.shape))

    for _, grads, _ in input_batches(paths, fed.shape, samples, make, target, score, what, unit="sample",
                                     progress=progress, cancel=cancel):
        g = grads.astype(np.float64)
        total += g.sum(axis=0)
        total_abs += np.abs(g).sum(axis=0)
        total_sq += (g * g).sum(axis=0)
    return total, total_abs, total_sq


def smoothgrad(paths: GradientPaths, x: np.ndarray, target: Target, layer: str | None, score: str,
               key: str | None = None, samples: int = 20, noise: float = 0.2, seed: int | None = 0,
               progress: Any = False, cancel: Any = None) -> Explanation:
    """SmoothGrad of `target`'s `score` for the prepared input `x` (H, W, C) (see the module's docstring).

    samples : noisy copies. noise : the noise's standard deviation as a fraction of the input's range. seed :
    the random generator's seed (None: fresh noise each time). progress, cancel : see `gradients.input_batches`.
    """
    total, total_abs, _ = noisy_gradients(paths, x, target, score, "SmoothGrad", samples, noise, seed, progress,
                                          cancel)
    raw = (total_abs / samples).max(axis=2).astype(np.float32)
    value = float(paths.input_scores(np.asarray(x, np.float32)[np.newaxis], target, score)[0])
    note = "" if raw.max() > 0 else "all zero: the score does not change with any input pixel, even with noise"
    return Explanation("smoothgrad", target, score, value, paths.graph.input_name, raw, unit_heatmap(raw, raw.shape),
                       None, note, attributions=(total / samples).astype(np.float32))


def vargrad(paths: GradientPaths, x: np.ndarray, target: Target, layer: str | None, score: str,
            key: str | None = None, samples: int = 20, noise: float = 0.2, seed: int | None = 0,
            progress: Any = False, cancel: Any = None) -> Explanation:
    """VarGrad of `target`'s `score` for the prepared input `x` (H, W, C): the options are SmoothGrad's."""
    total, _, total_sq = noisy_gradients(paths, x, target, score, "VarGrad", samples, noise, seed, progress,
                                         cancel)
    mean = total / samples
    variance = np.maximum(total_sq / samples - mean * mean, 0.0)  # float64 sums: no cancellation to speak of
    raw = variance.max(axis=2).astype(np.float32)
    value = float(paths.input_scores(np.asarray(x, np.float32)[np.newaxis], target, score)[0])
    note = "" if raw.max() > 0 else "all zero: the gradient is the same for every noisy copy"
    return Explanation("vargrad", target, score, value, paths.graph.input_name, raw, unit_heatmap(raw, raw.shape),
                       None, note, attributions=variance.astype(np.float32))


_NOISE_OPTIONS = {"samples": 20, "noise": 0.2, "seed": 0, "progress": False, "cancel": None}

SMOOTHGRAD = Method("smoothgrad", "gradient", "Like saliency, but averaged over many copies of the picture with a "
                    "little random noise added, so the speckle fades and the steady shape stays.", smoothgrad,
                    _NOISE_OPTIONS)
VARGRAD = Method("vargrad", "gradient", "Where the gradient changes most when a little random noise is added to "
                 "the picture: the variance of the gradient over many noisy copies.", vargrad, _NOISE_OPTIONS)
