"""Which input channels move one filter's output most, found without computing every channel.

A channel's contribution is its mean |partial sum| over the filter's output map (`filter_effect.RANKING`).
It is at most the sum over kernel taps of |weight| × the mean of |input| over the pixels that tap reads (box
sums, the same for every filter of a layer, so computed once per input: `PreparedInput`). `ChannelRanker`
computes channels exactly in the order of that bound until the k-th best exact value exceeds every bound left,
so the top k are exactly those of the full computation, with the same values; `filter_total`, the sum over all
channels, is one matrix product. `all_contributions` computes every channel, in chunks that bound memory.
Pure numpy.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from typing import ClassVar

import numpy as np

from cnnviz_widgets.lessons.arithmetic import check_padding, conv_geometry, pair, tap_positions

CHUNK_BYTES = 16 * 2**20
"""`all_contributions` computes partial sums for this many bytes of channels at a time (bounds memory)."""


def mean_abs(part: np.ndarray) -> np.ndarray:
    """(C,) float64 mean |value| of each map of an (H', W', C) float32 stack."""
    # Sums as float32 matrix-vector products: BLAS accumulates in blocks, so a mean of 250k values keeps
    # about 6 digits (a plain float32 running sum drifts in the 4th), at a fraction of float64's cost.
    flat = part.reshape(-1, part.shape[2])
    return (np.ones(flat.shape[0], np.float32) @ np.abs(flat) / flat.shape[0]).astype(np.float64)


def all_contributions(prev: np.ndarray, ker: np.ndarray, f: int, compute: Callable,
                       geometry: dict) -> tuple[np.ndarray, np.ndarray]:
    """Every channel's mean |partial sum| (C,) and the (H', W') float64 total, computed channel by channel."""
    n = prev.shape[2]
    total: np.ndarray | None = None
    contribution = np.zeros(n, np.float64)
    step = max(1, CHUNK_BYTES // max(prev.shape[0] * prev.shape[1] * 4, 1))  # bounds memory
    for start in range(0, n, step):
        part = compute(prev[:, :, start : start + step], ker[:, :, start : start + step, :], f, **geometry)
        contribution[start : start + step] = mean_abs(part)
        flat = part.reshape(-1, part.shape[2])
        chunk_sum = (flat @ np.ones(flat.shape[1], np.float32)).reshape(part.shape[:2]).astype(np.float64)
        total = chunk_sum if total is None else total + chunk_sum
    assert total is not None
    return contribution, total


class PreparedInput:
    """What every filter of a layer shares for one input: its channels-first copy and its box sums.

    Kept for the last input only, by identity (an activation from the cache is the same array object each
    time, and a weak reference notices when it is gone). The copy costs one more previous-layer output
    (64 MB for VGG16's block1 at 512×512) while the breakdown is in use; it makes every later step read only
    the channels it needs.
    """

    _recent: ClassVar[list[PreparedInput]] = []

    def __init__(self, prev: np.ndarray):
        self.ref = weakref.ref(prev)
        self.first = np.ascontiguousarray(np.moveaxis(prev, 2, 0))  # (C, H, W): one channel is one block
        self.nonnegative = not (self.first < 0).any()
        self.box: dict[tuple, np.ndarray] = {}

    @classmethod
    def of(cls, prev: np.ndarray) -> PreparedInput:
        for entry in cls._recent:
            if entry.ref() is prev:
                return entry
        entry = cls(prev)
        cls._recent[:] = [entry]  # one copy at most: a step looks at one layer's input
        weakref.finalize(prev, cls._forget, entry)  # the copy goes when the cache drops the activation
        return entry

    @classmethod
    def _forget(cls, entry: PreparedInput) -> None:
        cls._recent[:] = [e for e in cls._recent if e is not entry]

    def box_sums(self, kh: int, kw: int, geometry: dict) -> np.ndarray:
        """(kh, kw, C) float64: for each kernel tap, the sum over the output map of the |input| that tap reads."""
        (sy, sx), (dy, dx) = pair(geometry["strides"], "strides"), pair(geometry["dilation"], "dilation")
        padding = check_padding(geometry["padding"])
        key = (kh, kw, sy, sx, dy, dx, padding)
        if key not in self.box:
            c, h, w = self.first.shape
            rows = tap_positions(h, kh, sy, dy, padding)
            cols = tap_positions(w, kw, sx, dx, padding)
            magnitude = self.first if self.nonnegative else np.abs(self.first)
            # Column sums of each tap first (one pass over the input), then the rows: two matrix products.
            by_cols = (magnitude.reshape(c * h, w) @ cols.T).reshape(c, h, kw).astype(np.float64)
            self.box[key] = np.einsum("ih,chj->ijc", rows.astype(np.float64), by_cols)
        return self.box[key]


def filter_total(first: np.ndarray, ker: np.ndarray, f: int, geometry: dict) -> np.ndarray:
    """(H', W') float32: the filter's pre-activation output without bias, i.e. every partial sum added up.

    first : the input channels-first (C, H, W). One matrix product gives each pixel's kh*kw tap values;
    shifting and adding them is the convolution.
    """
    (sy, sx), (dy, dx) = pair(geometry["strides"], "strides"), pair(geometry["dilation"], "dilation")
    padding = check_padding(geometry["padding"])
    (c, h, w), (kh, kw) = first.shape, ker.shape[:2]
    out_h, top, bottom = conv_geometry(h, kh, sy, dy, padding)
    out_w, left, right = conv_geometry(w, kw, sx, dx, padding)
    taps = np.ascontiguousarray(ker[:, :, :, f].reshape(kh * kw, c))  # (kh*kw, C)
    values = (taps @ first.reshape(c, h * w)).reshape(kh * kw, h, w)
    return shift_add(values, kh, kw, (sy, sx), (dy, dx), (top, bottom, left, right), (out_h, out_w))


def shift_add(values: np.ndarray, kh: int, kw: int, strides: tuple[int, int], dilation: tuple[int, int],
               pads: tuple[int, int, int, int], out: tuple[int, int]) -> np.ndarray:
    """Correlation from per-tap planes: values (kh*kw, H, W) -> (H', W'), tap (i, j) read at its offset."""
    (sy, sx), (dy, dx), (top, bottom, left, right), (out_h, out_w) = strides, dilation, pads, out
    if top or bottom or left or right:
        values = np.pad(values, ((0, 0), (top, bottom), (left, right)))
    total = np.zeros((out_h, out_w), np.float32)
    for i in range(kh):
        for j in range(kw):
            total += values[i * kw + j, i * dy : i * dy + (out_h - 1) * sy + 1 : sy,
                            j * dx : j * dx + (out_w - 1) * sx + 1 : sx]
    return total


def partials_first(stack: np.ndarray, taps: np.ndarray, geometry: dict) -> np.ndarray:
    """(k, H', W') float32: each channel of a channels-first stack (k, H, W) correlated with its (kh, kw, k) taps.

    Channels-first so that each multiply-add runs over whole contiguous maps (channels-last with a few
    channels makes numpy's inner loop a few elements long).
    """
    (sy, sx), (dy, dx) = pair(geometry["strides"], "strides"), pair(geometry["dilation"], "dilation")
    padding = check_padding(geometry["padding"])
    (k, h, w), (kh, kw) = stack.shape, taps.shape[:2]
    out_h, top, bottom = conv_geometry(h, kh, sy, dy, padding)
    out_w, left, right = conv_geometry(w, kw, sx, dx, padding)
    src = np.pad(stack, ((0, 0), (top, bottom), (left, right))) if top or bottom or left or right else stack
    acc = np.zeros((k, out_h, out_w), np.float32)
    product = np.empty_like(acc)
    for i in range(kh):
        for j in range(kw):
            window = src[:, i * dy : i * dy + (out_h - 1) * sy + 1 : sy, j * dx : j * dx + (out_w - 1) * sx + 1 : sx]
            np.multiply(window, taps[i, j][:, None, None], out=product)
            acc += product
    return acc


class ChannelRanker:
    """Exact mean |partial sum| of the channels that matter, bounded for the rest (see the module docstring)."""

    _SLACK = 1e-3  # bounds widened by this share: float32 sums must never put a bound under its exact value

    def __init__(self, prev: np.ndarray, ker: np.ndarray, f: int, geometry: dict):
        self.prev, self.ker, self.f, self.geometry = prev, ker, f, geometry
        (h, w, n), (kh, kw) = prev.shape, ker.shape[:2]
        self.prepared = PreparedInput.of(prev)
        sums = self.prepared.box_sums(kh, kw, geometry)
        (sy, sx), (dy, dx) = pair(geometry["strides"], "strides"), pair(geometry["dilation"], "dilation")
        out_h = conv_geometry(h, kh, sy, dy, geometry["padding"])[0]
        out_w = conv_geometry(w, kw, sx, dx, geometry["padding"])[0]
        bound = np.einsum("ijc,ijc->c", np.abs(ker[:, :, :, f]).astype(np.float64), sums) / (out_h * out_w)
        self.bound = bound * (1 + self._SLACK) + 1e-30 * (bound > 0)
        self.values = np.full(n, np.nan)
        self.values[bound == 0] = 0.0  # every tap reads zeros or has weight 0: the partial sum is all zero
        self._maps: dict[int, np.ndarray] = {}
        self.computed = 0  # channels whose partial sum was computed (tests and benchmarks read it)

    def _compute(self, picked: Sequence[int]) -> None:
        todo = [int(c) for c in dict.fromkeys(picked) if int(c) not in self._maps]
        if not todo:
            return
        part = partials_first(self.prepared.first[todo], self.ker[:, :, todo, self.f], self.geometry)
        flat = part.reshape(len(todo), -1)
        self.values[todo] = np.abs(flat) @ np.ones(flat.shape[1], np.float32) / flat.shape[1]
        for i, c in enumerate(todo):
            self._maps[c] = part[i]
        self.computed += len(todo)

    def exact(self, c: int) -> float:
        if np.isnan(self.values[c]):
            self._compute([c])
        return float(self.values[c])

    def partial(self, c: int) -> np.ndarray:
        self._compute([c])
        return self._maps[c]

    def top(self, k: int) -> tuple[int, ...]:
        """The k largest channels by exact mean |partial sum|, ties by index: as a full argsort would give."""
        order = np.argsort(-self.bound, kind="stable")
        # A few channels at a time, not a doubling batch: a stack of 4 maps stays in the CPU's cache, and the loop
        # stops within 4 channels of where it must (block1_conv2 at 224: p95 of a filter step 45 -> 16 ms).
        batch = max(k, 4)
        while True:
            unknown = order[np.isnan(self.values[order])]
            known = np.flatnonzero(~np.isnan(self.values))
            if known.size >= k:
                kth = np.sort(self.values[known])[::-1][k - 1]
                # Every unknown channel is at most its bound: when all bounds are below the k-th exact value,
                # none of them can enter the top k.
                if unknown.size == 0 or kth > self.bound[unknown].max():
                    break
            elif unknown.size == 0:
                break
            self._compute(unknown[:batch])
        best = known[np.lexsort((known, -self.values[known]))][:k]
        return tuple(int(c) for c in best)

    def rank(self, c: int) -> int:
        """Channel c's 1-based place among all channels by exact mean |partial sum| (ties by index)."""
        value = self.exact(c)
        # Only channels whose bound reaches c's value could be above it: compute those, then count exactly.
        self._compute([int(o) for o in np.flatnonzero(np.isnan(self.values) & (self.bound >= value))])
        others = np.nan_to_num(self.values, nan=-1.0)  # the rest are below their bound, below `value`
        index = np.arange(others.size)
        return int(np.count_nonzero((others > value) | ((others == value) & (index < c)))) + 1
