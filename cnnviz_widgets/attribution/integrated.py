"""Integrated Gradients (Sundararajan et al. 2017): the gradient summed along a straight path from a baseline to the
input, times the difference between them.

attributions = (x - b) * integral over a in 0..1 of d score / d input at b + a (x - b), per fed pixel and
channel (signed). The integral is Gauss-Legendre quadrature with `steps` points, as Captum's default
("gausslegendre"); the path's points run in batches through the whole network (`gradients.input_batches`),
sized from the memory budget. Completeness: the attributions sum to f(x) - f(b); `Explanation.delta` is how far
they are from it, |sum - (f(x) - f(b))| (Captum's convergence delta), and more steps bring it down. `raw` is the
sum over the channels (signed: positive where the pixel raises the score compared with the baseline), and the
heat map scales it by its own min..max.

The baseline says what "absent" means, and it is fed to the model, so it is in the model's input space:
- "black" (default): the fed value of a black picture, i.e. the preprocessing of RGB (0, 0, 0)
  (`GradientPaths.preprocessing`). For "caffe" (VGG16, ResNet50) that is minus the ImageNet mean, for "tf" -1,
  for "torch" -mean/std; 0 only where the input is the raw values or scaled to 0..1. A fed 0 would be the mean
  colour for caffe, a grey picture, not an absent one.
- "blur": the input blurred (Gaussian, sigma a tenth of its shorter side, edges reflected): the shapes gone,
  the colours kept (Sturmfels et al. 2020, "Visualizing the Impact of Feature Attribution Baselines").
- "noise": the fed value of a picture of uniform random pixels 0..255 (`seed`).
- an array (H, W, C), or anything that broadcasts to it (a number, one value per channel), already fed.
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
from cnnviz_widgets.pictures.preprocessing import apply_preprocessing

BASELINES = ("black", "blur", "noise")
"""The baselines given by name; an array is the other way."""


def baseline_for(paths: GradientPaths, x: np.ndarray, baseline: Any, seed: int | None = 0) -> np.ndarray:
    """The baseline (H, W, C) float32 for the prepared input `x`, in the model's input space (see the module)."""
    fed = np.asarray(x, dtype=np.float32)
    if isinstance(baseline, str):
        if baseline == "black":
            return apply_preprocessing(np.zeros(fed.shape, np.uint8), paths.preprocessing)
        if baseline == "blur":
            return gaussian_blur(fed, max(1.0, min(fed.shape[:2]) / 10.0))
        if baseline == "noise":
            pixels = np.random.default_rng(seed).integers(0, 256, fed.shape, dtype=np.uint8)
            return apply_preprocessing(pixels, paths.preprocessing)
        raise CnnvizError(f"unknown baseline {baseline!r}; expected one of {', '.join(BASELINES)} or an array of the "
                          f"input's shape {fed.shape}")
    try:
        return np.ascontiguousarray(np.broadcast_to(np.asarray(baseline, dtype=np.float32), fed.shape))
    except (ValueError, TypeError):
        shape = getattr(baseline, "shape", type(baseline).__name__)
        raise CnnvizError(f"baseline must be one of {', '.join(BASELINES)} or an array that broadcasts to the input's "
                          f"shape {fed.shape}; got {shape}") from None


def gaussian_blur(x: np.ndarray, sigma: float) -> np.ndarray:
    """(H, W, C) float32 blurred by a Gaussian of `sigma` pixels along each axis (edges reflected)."""
    radius = int(np.ceil(3 * sigma))
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    taps /= taps.sum()
    out = np.asarray(x, dtype=np.float64)
    for axis in (0, 1):
        pad = [(0, 0)] * out.ndim
        pad[axis] = (radius, radius)
        padded = np.pad(out, pad, mode="symmetric")
        windows = np.lib.stride_tricks.sliding_window_view(padded, 2 * radius + 1, axis=axis)
        out = windows @ taps
    return out.astype(np.float32)


def integrated_gradients(paths: GradientPaths, x: np.ndarray, target: Target, layer: str | None, score: str,
                         key: str | None = None, steps: int = 50, baseline: Any = "black", seed: int | None = 0,
                         progress: Any = False, cancel: Any = None) -> Explanation:
    """Integrated Gradients of `target`'s `score` for the prepared input `x` (H, W, C) (see the module).

    steps : points on the path (Gauss-Legendre). baseline : "black", "blur", "noise" or an array. seed : the
    "noise" baseline's. progress, cancel : see `gradients.input_batches` (one unit: a point of the path).
    """
    steps = check_positive(steps, "steps")
    fed = np.asarray(x, dtype=np.float32)
    base = baseline_for(paths, fed, baseline, seed)
    nodes, weights = np.polynomial.legendre.leggauss(steps)
    alphas, weights = (nodes + 1.0) / 2.0, weights / 2.0  # from -1..1 to the path's 0..1
    difference = fed - base
    total = np.zeros(fed.shape, np.float64)

    def make(start: int, stop: int) -> np.ndarray:
        return base[np.newaxis] + alphas[start:stop, None, None, None].astype(np.float32) * difference[np.newaxis]

    for start, grads, _ in input_batches(paths, fed.shape, steps, make, target, score, "Integrated Gradients",
                                         unit="step", progress=progress, cancel=cancel):
        total += np.tensordot(weights[start : start + len(grads)], grads.astype(np.float64), axes=1)
    attributions = difference.astype(np.float64) * total
    f_base, f_x = paths.input_scores(np.stack([base, fed]), target, score)
    expected = f_x - f_base
    delta = abs(float(attributions.sum()) - expected)
    raw = attributions.sum(axis=2).astype(np.float32)
    note = ""
    if delta > 0.01 * max(abs(expected), 1e-12):
        note = (f"the attributions sum to {attributions.sum():.4g} but the score changes by {expected:.4g} from the "
                f"baseline: more steps bring them closer")
    if not np.any(raw):
        note = "all zero: the input equals the baseline, or the score does not change along the path"
    return Explanation("integrated-gradients", target, score, float(f_x), paths.graph.input_name, raw,
                       unit_heatmap(raw, raw.shape), None, note, attributions=attributions.astype(np.float32),
                       delta=delta)


INTEGRATED_GRADIENTS = Method(
    "integrated-gradients", "gradient", "How much each pixel adds to the score compared with a black picture: "
    "the gradients along a fade from black to the picture, summed, times the change.", integrated_gradients,
    {"steps": 50, "baseline": "black", "seed": 0, "progress": False, "cancel": None})
