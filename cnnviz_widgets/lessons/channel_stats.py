"""What each channel of a layer does on this image: its max, mean and fraction of zeros.

A channel that is zero everywhere is a dead ReLU unit for this picture; `order_channels` puts the strongest
channels first, so a grid of 512 maps can start with the ones worth reading.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from cnnviz_widgets.errors import CnnvizError

if TYPE_CHECKING:
    pass


STATISTICS = ("max", "mean", "zeros")
"""Per-channel statistics of a layer's maps: the largest value, the mean, the fraction of exact zeros."""


CHANNEL_ORDERS = ("index", "max", "mean", "zeros")
"""How a layer's channels can be ordered: by index, or strongest first by one of `STATISTICS` ("zeros":
fewest zeros first, so the dead channels of a ReLU layer come last)."""


def channel_statistics(maps: np.ndarray) -> dict[str, np.ndarray]:
    """Per channel of a layer's output: "max", "mean" (float64 (C,)) and "zeros" (fraction of values == 0).

    maps : (H, W, C) real numbers, all finite. A channel with "zeros" 1.0 is dead for this image: its ReLU
    never fired.
    """
    arr = np.asarray(maps)
    if arr.ndim != 3 or arr.dtype.kind not in "fiu" or arr.size == 0:
        raise CnnvizError(f"maps must be a non-empty (H, W, C) array of real numbers; got shape {arr.shape}, "
                          f"dtype {arr.dtype}")
    # rows first, then columns: both reductions run over contiguous memory (much faster than axis=(0, 1))
    highest = arr.max(axis=0).max(axis=0).astype(np.float64)
    mean = arr.sum(axis=0, dtype=np.float64).sum(axis=0) / (arr.shape[0] * arr.shape[1])
    if not (np.isfinite(highest).all() and np.isfinite(mean).all()):  # NaN and inf reach the max or the mean
        raise CnnvizError("maps contain non-finite values (NaN or inf)")
    zeros = np.count_nonzero(arr == 0, axis=0).sum(axis=0) / (arr.shape[0] * arr.shape[1])
    return {"max": highest, "mean": mean, "zeros": zeros.astype(np.float64)}


def order_channels(statistics: dict[str, np.ndarray], by: str) -> np.ndarray:
    """Channel indices (C,) in the order `by` (one of `CHANNEL_ORDERS`): strongest first, ties by index.

    "max", "mean": largest first. "zeros": fewest zeros first (dead channels last). "index": 0..C-1.
    """
    if by not in CHANNEL_ORDERS:
        raise CnnvizError(f"channel order must be one of {CHANNEL_ORDERS}; got {by!r}")
    n = len(next(iter(statistics.values())))
    if by == "index":
        return np.arange(n)
    values = np.asarray(statistics[by], dtype=np.float64)
    return np.argsort(values if by == "zeros" else -values, kind="stable")
