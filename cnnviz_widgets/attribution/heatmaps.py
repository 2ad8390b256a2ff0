"""Heat maps made to sit on the picture: resized as TensorFlow resizes, scaled, overlaid.

`upsample` is bilinear resizing with TensorFlow's half-pixel centres (or aligned corners); `unit_heatmap`
scales a map by its own min..max to [0, 1]; `overlay` blends a coloured heat map over the picture.
"""

from __future__ import annotations

import numpy as np

from cnnviz_widgets.errors import CnnvizError
from cnnviz_widgets.pictures import render


def upsample(values: np.ndarray, size: tuple[int, int], align_corners: bool = False) -> np.ndarray:
    """Bilinear resize of an (h, w) map to size = (H, W), float32.

    align_corners False (default): pixel centres line up (a cell of a stride-16 map covers 16 input pixels),
    as OpenCV's and Pillow's bilinear resize and the Grad-CAM authors' code do; edges are clamped.
    True: the corner pixels line up, as `scipy.ndimage.zoom(order=1)` (and so tf-keras-vis) does.
    """
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 2 or arr.size == 0:
        raise CnnvizError(f"values must be a non-empty (h, w) map; got shape {arr.shape}")
    height, width = (int(s) for s in size)
    if height < 1 or width < 1:
        raise CnnvizError(f"size must be two positive integers (height, width); got {size!r}")
    y0, y1, wy = _linear_taps(arr.shape[0], height, align_corners)
    x0, x1, wx = _linear_taps(arr.shape[1], width, align_corners)
    rows = arr[y0] * (1 - wy)[:, None] + arr[y1] * wy[:, None]
    return (rows[:, x0] * (1 - wx) + rows[:, x1] * wx).astype(np.float32)


def _linear_taps(n_in: int, n_out: int, align_corners: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each output position: the two input indices it lies between and the weight of the second."""
    if align_corners:
        pos = np.arange(n_out) * ((n_in - 1) / (n_out - 1)) if n_out > 1 else np.zeros(1)
    else:
        pos = (np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5
    pos = np.clip(pos, 0, n_in - 1)
    low = np.minimum(np.floor(pos).astype(int), n_in - 1)
    return low, np.minimum(low + 1, n_in - 1), pos - low


def overlay(picture: np.ndarray, heatmap: np.ndarray, cmap: str = "magma", opacity: float = 0.5,
            weighted: bool = False) -> np.ndarray:
    """The picture with a coloured heat map over it: (1 - a) * picture + a * colour(heatmap).

    picture : (H, W, 3) uint8. heatmap : (H, W) values in [0, 1]. opacity : 0 (the picture) .. 1 (the map).
    weighted : False, a = opacity everywhere; True, a = min(1, 2 * opacity * heatmap), so where the map is weak
    the picture stays clear, and at the default opacity 0.5 the peak is drawn in full colour (a sparse map's few
    hot spots must stand out, not sit half-blended into the photo). Returns (H, W, 3) uint8.
    """
    pic = np.asarray(picture)
    heat = np.asarray(heatmap)
    if pic.dtype != np.uint8 or pic.ndim != 3 or pic.shape[2] != 3:
        raise CnnvizError(f"picture must be (H, W, 3) uint8; got shape {pic.shape}, dtype {pic.dtype}")
    if heat.shape != pic.shape[:2]:
        raise CnnvizError(f"heatmap must be (H, W) = {pic.shape[:2]} like the picture; got {heat.shape}")
    if not (isinstance(opacity, (int, float)) and 0.0 <= float(opacity) <= 1.0):
        raise CnnvizError(f"opacity must be a number in 0..1; got {opacity!r}")
    colour = render.apply_colormap(heat, cmap)
    if colour.ndim == 2:  # grey gives one channel
        colour = np.repeat(colour[..., None], 3, axis=2)
    alpha = (np.minimum(1.0, 2.0 * float(opacity) * heat.astype(np.float32))[..., None] if weighted
             else np.float32(opacity))
    blend = (1.0 - alpha) * pic.astype(np.float32) + alpha * colour.astype(np.float32)
    return np.clip(np.rint(blend), 0, 255).astype(np.uint8)


def unit_heatmap(raw: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """`raw` at `size`, scaled by its min..max to [0, 1] (a flat map is all zero)."""
    big = raw if raw.shape == tuple(size) else upsample(raw, size)
    return render.normalize(big[..., None], "per_map")[0][..., 0]
