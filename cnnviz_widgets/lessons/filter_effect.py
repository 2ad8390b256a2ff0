"""What one filter does to its input, channel by channel: the arithmetic behind a conv layer's output map.

A conv filter's output map is the sum, over every channel of the previous layer's output, of that channel
cross-correlated with the filter's kernel slice for it, plus the bias, through the layer's activation.
`break_down_filter` computes those per-channel partial sums exactly as Keras does (strides, "same"/"valid"
padding with TensorFlow's extra pad at the end, dilation, transposed convolutions), ranks the channels by
how much they contribute and keeps the few worth showing. Pure numpy: no Keras, no widgets.

Ranking without computing every channel: a channel's mean |partial sum| is at most the sum over kernel taps of
|weight| × the mean of |input| over the pixels that tap reads (box sums, the same for every filter of a layer,
so computed once per input). Channels are computed exactly in the order of that bound until the k-th best
exact value exceeds every bound left, so the top k are exactly those of the full computation, with the same
values; the total over all channels is one matrix product.
"""

from __future__ import annotations

import re
import sys
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from cnnviz_widgets.checks import check_int, check_positive
from cnnviz_widgets.errors import CnnvizError
from cnnviz_widgets.lessons.arithmetic import (
    activation_name,
    apply_activation,
    check_padding,
    conv_geometry,
    pair,
    tap_positions,
    transposed_geometry,
)
from cnnviz_widgets.network.backend import keras

RANKING = "mean |partial sum|"
"""How channels are ranked: the mean absolute value of a channel's partial sum over the output map, i.e. how
far that channel moves the filter's total, whichever the sign. (A mean of signed values would let a channel
that adds a lot in one place and removes it elsewhere look idle.)"""


_CHUNK_BYTES = 16 * 2**20  # partial sums computed for this many bytes of channels at a time (bounds memory)




@dataclass(frozen=True, eq=False)  # eq=False: ndarray fields make a generated __eq__ meaningless
class FilterBreakdown:
    """One filter's output map taken apart by input channel.

    Arrays: the previous layer's output is (H, W, C); the filter's output map is (H', W'); k channels shown.

    filter : the output channel taken apart.
    channels : the k input channels shown, in order (the top contributors, or the ones asked for).
    previous_maps : (H, W, k) float32, the previous layer's output at `channels`.
    kernels : (kh, kw, k) float32, the filter's kernel slice for each of `channels`.
    partials : (H', W', k) float32, each shown channel cross-correlated with its kernel slice.
    rest : (H', W') float32, the sum of the partials of all channels NOT shown.
    bias : the filter's bias.
    pre_activation : (H', W') float32, partials summed over ALL channels, plus bias.
    activation : name of the layer's own activation ('relu', 'linear', ...).
    activation_reproduced : True when `output` is `pre_activation` through that activation computed here;
        False when the activation is not reproduced (see `note`) and `output` is the layer's own output.
    output : (H', W') float32, the filter's output map.
    n_channels : C, the number of input channels the filter sums over.
    shown_contribution : (k,) float64, each shown channel's mean |partial sum| (see `RANKING`), exact.
    shown_rank : each shown channel's rank among all C by that measure (1 = largest; ties by index), exact.
    layer, layer_type, previous_layer, channel_labels, note : words for the picture (filled by ModelState).

    `contribution` and `ranking` (every channel's value and the full order) are computed on first use: a
    slider step needs only the shown channels', which `break_down_filter` finds without computing the rest.
    """

    filter: int
    channels: tuple[int, ...]
    previous_maps: np.ndarray
    kernels: np.ndarray
    partials: np.ndarray
    rest: np.ndarray
    bias: float
    pre_activation: np.ndarray
    activation: str
    activation_reproduced: bool
    output: np.ndarray
    n_channels: int
    shown_contribution: np.ndarray
    shown_rank: tuple[int, ...]
    layer: str = ""
    layer_type: str = ""
    previous_layer: str = ""
    channel_labels: tuple[str, ...] = ()
    note: str = ""
    ranking_rule: str = field(default=RANKING)
    every_contribution: Callable[[], np.ndarray] | None = field(default=None, repr=False)
    _computed: dict = field(default_factory=dict, repr=False)

    @property
    def contribution(self) -> np.ndarray:
        """(C,) float64, every input channel's mean |partial sum| (computed for all channels on first use)."""
        if "contribution" not in self._computed:
            if self.every_contribution is None:
                raise CnnvizError("this breakdown was made without its inputs: every channel's contribution "
                                  "cannot be computed")
            self._computed["contribution"] = self.every_contribution()
        return self._computed["contribution"]

    @property
    def ranking(self) -> tuple[int, ...]:
        """All C input channels, largest contribution first (ties by index); computed on first use."""
        if "ranking" not in self._computed:
            self._computed["ranking"] = tuple(int(i) for i in np.argsort(-self.contribution, kind="stable"))
        return self._computed["ranking"]

    @property
    def shown_share(self) -> float:
        """Fraction of the summed contributions (mean |partial|) that comes from the channels shown, in [0, 1].

        Needs every channel's contribution (see `contribution`).
        """
        total = float(self.contribution.sum())
        return float(self.contribution[list(self.channels)].sum()) / total if total > 0 else 1.0


def check_conv_inputs(previous: object, kernel: object, filter: object) -> tuple[np.ndarray, np.ndarray, int]:
    prev = np.asarray(previous)
    if prev.ndim != 3 or prev.dtype.kind not in "fiu" or prev.size == 0:
        raise CnnvizError(f"previous must be a non-empty (H, W, C) array of real numbers (channels last); "
                          f"got shape {prev.shape}, dtype {prev.dtype}")
    ker = np.asarray(kernel)
    if ker.ndim != 4 or ker.dtype.kind not in "fiu" or ker.size == 0:
        raise CnnvizError(f"kernel must be a (kh, kw, c_in, c_out) array; got shape {ker.shape}")
    if ker.shape[2] != prev.shape[2]:
        raise CnnvizError(f"the kernel takes {ker.shape[2]} input channels but previous has {prev.shape[2]} "
                          f"(kernel {ker.shape}, previous {prev.shape})")
    f = check_int(filter, "filter", 0, ker.shape[3] - 1,
                  message=f"filter must be an int in 0..{ker.shape[3] - 1}; got {filter!r}")
    return prev.astype(np.float32, copy=False), ker.astype(np.float32, copy=False), f


def channel_contributions(previous: np.ndarray, kernel: np.ndarray, filter: int, *,
                          strides: int | Sequence[int] = 1, padding: str = "same",
                          dilation: int | Sequence[int] = 1, backend: str = "auto") -> np.ndarray:
    """Each input channel's share of one filter's pre-activation output.

    previous : (H, W, C) the layer's input, channels last. kernel : (kh, kw, C, F). filter : index in 0..F-1.
    backend : "numpy", "keras" (one depthwise convolution: about 5× faster on block1 maps) or "auto" (Keras
    when it is already loaded and supports the geometry: it has no strides > 1 together with dilation > 1).

    Returns (H', W', C) float32: channel c cross-correlated with kernel[:, :, c, filter] with the layer's
    strides, padding ("same" or "valid", Keras/TensorFlow semantics) and dilation. Summed over C, plus the
    bias, it is the layer's pre-activation output for the filter.
    """
    prev, ker, f = check_conv_inputs(previous, kernel, filter)
    (sy, sx), (dy, dx) = pair(strides, "strides"), pair(dilation, "dilation")
    (h, w, c), (kh, kw) = prev.shape, ker.shape[:2]
    out_h, top, bottom = conv_geometry(h, kh, sy, dy, padding)
    out_w, left, right = conv_geometry(w, kw, sx, dx, padding)
    if backend not in ("auto", "numpy", "keras"):
        raise CnnvizError(f"backend must be 'auto', 'numpy' or 'keras'; got {backend!r}")
    # TensorFlow's depthwise convolution takes neither strides > 1 with dilation > 1 nor unequal strides.
    keras_can = sy == sx and (sy == 1 or max(dy, dx) == 1)
    if backend == "keras" or (backend == "auto" and keras_can and "keras" in sys.modules):
        if not keras_can:
            raise CnnvizError("Keras' depthwise convolution has no strides > 1 with dilation > 1 and no unequal "
                              f"strides (got strides {(sy, sx)}, dilation {(dy, dx)}): use backend='numpy'")
        depthwise = keras().ops.depthwise_conv(prev[np.newaxis], ker[:, :, :, f : f + 1], strides=(sy, sx),
                                               padding=padding.lower(), dilation_rate=(dy, dx))
        return np.asarray(depthwise, dtype=np.float32)[0]
    taps = ker[:, :, :, f]
    out = np.zeros((out_h, out_w, c), np.float32)
    # Channels whose kernel slice is all zero add nothing (a depthwise filter sees one channel): skip them.
    active = np.flatnonzero(np.any(taps != 0, axis=(0, 1)))
    if active.size == 0:
        return out
    some = active.size < c
    src = np.take(prev, active, axis=2) if some else prev
    taps = taps[:, :, active] if some else taps
    if top or bottom or left or right:
        src = np.pad(src, ((top, bottom), (left, right), (0, 0)))
    acc = np.zeros((out_h, out_w, src.shape[2]), np.float32)
    product = np.empty_like(acc)
    # One pass per kernel tap over the whole (H', W', C) stack: kh * kw vectorised multiply-adds.
    for i in range(kh):
        for j in range(kw):
            window = src[i * dy : i * dy + (out_h - 1) * sy + 1 : sy, j * dx : j * dx + (out_w - 1) * sx + 1 : sx]
            np.multiply(window, taps[i, j], out=product)
            acc += product
    if some:
        out[:, :, active] = acc
        return out
    return acc


def transposed_channel_contributions(previous: np.ndarray, kernel: np.ndarray, filter: int, *,
                                     strides: int | Sequence[int] = 1, padding: str = "same",
                                     dilation: int | Sequence[int] = 1,
                                     output_padding: int | Sequence[int] | None = None) -> np.ndarray:
    """Like `channel_contributions`, for a transposed convolution (Keras' Conv2DTranspose).

    kernel : (kh, kw, C, F) with C the INPUT channels (as `ModelState.weights` gives it; Keras stores it as
    (kh, kw, F, C)). Each input value scatters its kernel slice into the output, `strides` pixels apart.
    Returns (H', W', C) float32.
    """
    prev, ker, f = check_conv_inputs(previous, kernel, filter)
    (sy, sx), (dy, dx) = pair(strides, "strides"), pair(dilation, "dilation")
    pad_y = pad_x = None
    if output_padding is not None:
        pad_y, pad_x = (output_padding, output_padding) if isinstance(output_padding, int) else output_padding
    (h, w, c), (kh, kw) = prev.shape, ker.shape[:2]
    out_h, crop_y = transposed_geometry(h, kh, sy, dy, padding, pad_y)
    out_w, crop_x = transposed_geometry(w, kw, sx, dx, padding, pad_x)
    full_h, full_w = (h - 1) * sy + (kh - 1) * dy + 1, (w - 1) * sx + (kw - 1) * dx + 1
    full = np.zeros((max(full_h, crop_y + out_h), max(full_w, crop_x + out_w), c), np.float32)
    taps = ker[:, :, :, f]
    for i in range(kh):
        for j in range(kw):
            full[i * dy : i * dy + (h - 1) * sy + 1 : sy, j * dx : j * dx + (w - 1) * sx + 1 : sx] += prev * taps[i, j]
    return np.ascontiguousarray(full[crop_y : crop_y + out_h, crop_x : crop_x + out_w])


def break_down_filter(previous: np.ndarray, kernel: np.ndarray, bias: np.ndarray | float, filter: int, *,
                      channels: Sequence[int] | None = None, top_k: int = 3,
                      strides: int | Sequence[int] = 1, padding: str = "same",
                      dilation: int | Sequence[int] = 1, activation: str = "linear",
                      transposed: bool = False,
                      output_padding: int | Sequence[int] | None = None,
                      method: str = "bounded") -> FilterBreakdown:
    """Take one filter's output apart by input channel.

    previous : (H, W, C) the layer's input. kernel : (kh, kw, C, F). bias : (F,) or the filter's bias.
    channels : the input channels to show, in order; None shows the `top_k` largest contributors.
    strides, padding, dilation, output_padding, transposed : the layer's geometry (see `channel_contributions`).
    activation : the layer's own activation name (`ACTIVATIONS`); others give `activation_reproduced` False
    and `output` equal to `pre_activation` (the caller may substitute the layer's real output).

    method : "bounded" (default) skips the channels that cannot rank high enough (see the module docstring);
    "exhaustive" computes every channel's partial sum, as this function did before the bounds (the reference
    the tests and benchmarks compare with; transposed convolutions always take it). Both give the same
    channels, ranks and values.
    """
    if method not in ("bounded", "exhaustive"):
        raise CnnvizError(f"method must be 'bounded' or 'exhaustive'; got {method!r}")
    prev, ker, f = check_conv_inputs(previous, kernel, filter)
    n = prev.shape[2]
    if channels is not None:
        shown = _check_channels(channels, n)
    else:
        check_positive(top_k, "top_k")
    bias_arr = np.asarray(bias, dtype=np.float32).reshape(-1)
    b = float(bias_arr[f] if bias_arr.size > 1 else bias_arr[0]) if bias_arr.size else 0.0
    compute = transposed_channel_contributions if transposed else channel_contributions
    geometry: dict = dict(strides=strides, padding=padding, dilation=dilation)
    if transposed:
        geometry["output_padding"] = output_padding

    def every_contribution() -> np.ndarray:
        return _all_contributions(prev, ker, f, compute, geometry)[0]

    computed: dict = {}
    if transposed or method == "exhaustive":  # no bound here for a scatter: every channel is computed
        contribution, total = _all_contributions(prev, ker, f, compute, geometry)
        computed["contribution"] = contribution
        ranking = np.argsort(-contribution, kind="stable")
        shown = tuple(int(c) for c in ranking[: min(int(top_k), n)]) if channels is None else shown
        position = np.empty(n, np.int64)
        position[ranking] = np.arange(1, n + 1)
        values = contribution[list(shown)]
        ranks = tuple(int(position[c]) for c in shown)
        partials = compute(np.take(prev, list(shown), axis=2), np.take(ker, list(shown), axis=2), f, **geometry)
    else:
        ranker = _Ranker(prev, ker, f, geometry)
        if channels is None:
            shown = ranker.top(min(int(top_k), n))
        values = np.array([ranker.exact(c) for c in shown], np.float64)
        ranks = tuple(ranker.rank(c) for c in shown)
        partials = np.stack([ranker.partial(c) for c in shown], axis=-1)
        total = _total(ranker.prepared.first, ker, f, geometry)
    picked = list(shown)
    rest = (total - partials.sum(axis=2, dtype=np.float64)).astype(np.float32)
    pre = (total + b).astype(np.float32)
    act = activation_name(activation)
    out = apply_activation(pre, act)
    return FilterBreakdown(
        filter=f, channels=tuple(shown), previous_maps=np.take(prev, picked, axis=2),
        kernels=np.ascontiguousarray(np.take(ker[:, :, :, f], picked, axis=2)), partials=partials, rest=rest,
        bias=b, pre_activation=pre, activation=act, activation_reproduced=out is not None,
        output=pre if out is None else out, n_channels=n, shown_contribution=values, shown_rank=ranks,
        every_contribution=every_contribution, _computed=computed,
    )


def _mean_abs(part: np.ndarray) -> np.ndarray:
    """(C,) float64 mean |value| of each map of an (H', W', C) float32 stack."""
    # Sums as float32 matrix-vector products: BLAS accumulates in blocks, so a mean of 250k values keeps
    # about 6 digits (a plain float32 running sum drifts in the 4th), at a fraction of float64's cost.
    flat = part.reshape(-1, part.shape[2])
    return (np.ones(flat.shape[0], np.float32) @ np.abs(flat) / flat.shape[0]).astype(np.float64)


def _all_contributions(prev: np.ndarray, ker: np.ndarray, f: int, compute: Callable,
                       geometry: dict) -> tuple[np.ndarray, np.ndarray]:
    """Every channel's mean |partial sum| (C,) and the (H', W') float64 total, computed channel by channel."""
    n = prev.shape[2]
    total: np.ndarray | None = None
    contribution = np.zeros(n, np.float64)
    step = max(1, _CHUNK_BYTES // max(prev.shape[0] * prev.shape[1] * 4, 1))  # bounds memory
    for start in range(0, n, step):
        part = compute(prev[:, :, start : start + step], ker[:, :, start : start + step, :], f, **geometry)
        contribution[start : start + step] = _mean_abs(part)
        flat = part.reshape(-1, part.shape[2])
        chunk_sum = (flat @ np.ones(flat.shape[1], np.float32)).reshape(part.shape[:2]).astype(np.float64)
        total = chunk_sum if total is None else total + chunk_sum
    assert total is not None
    return contribution, total


class _Prepared:
    """What every filter of a layer shares for one input: its channels-first copy and its box sums.

    Kept for the last input only, by identity (an activation from the cache is the same array object each
    time, and a weak reference notices when it is gone). The copy costs one more previous-layer output
    (64 MB for VGG16's block1 at 512×512) while the breakdown is in use; it makes every later step read only
    the channels it needs.
    """

    _recent: ClassVar[list[_Prepared]] = []

    def __init__(self, prev: np.ndarray):
        self.ref = weakref.ref(prev)
        self.first = np.ascontiguousarray(np.moveaxis(prev, 2, 0))  # (C, H, W): one channel is one block
        self.nonnegative = not (self.first < 0).any()
        self.box: dict[tuple, np.ndarray] = {}

    @classmethod
    def of(cls, prev: np.ndarray) -> _Prepared:
        for entry in cls._recent:
            if entry.ref() is prev:
                return entry
        entry = cls(prev)
        cls._recent[:] = [entry]  # one copy at most: a step looks at one layer's input
        weakref.finalize(prev, cls._forget, entry)  # the copy goes when the cache drops the activation
        return entry

    @classmethod
    def _forget(cls, entry: _Prepared) -> None:
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


def _total(first: np.ndarray, ker: np.ndarray, f: int, geometry: dict) -> np.ndarray:
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
    return _shift_add(values, kh, kw, (sy, sx), (dy, dx), (top, bottom, left, right), (out_h, out_w))


def _shift_add(values: np.ndarray, kh: int, kw: int, strides: tuple[int, int], dilation: tuple[int, int],
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


def _partials_first(stack: np.ndarray, taps: np.ndarray, geometry: dict) -> np.ndarray:
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


class _Ranker:
    """Exact mean |partial sum| of the channels that matter, bounded for the rest (see the module docstring)."""

    _SLACK = 1e-3  # bounds widened by this share: float32 sums must never put a bound under its exact value

    def __init__(self, prev: np.ndarray, ker: np.ndarray, f: int, geometry: dict):
        self.prev, self.ker, self.f, self.geometry = prev, ker, f, geometry
        (h, w, n), (kh, kw) = prev.shape, ker.shape[:2]
        self.prepared = _Prepared.of(prev)
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
        part = _partials_first(self.prepared.first[todo], self.ker[:, :, todo, self.f], self.geometry)
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
            batch *= 2
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


def _check_channels(channels: Sequence[int], n: int) -> tuple[int, ...]:
    try:
        picked = [int(c) for c in channels if not isinstance(c, bool) and int(c) == c]
        ok = len(picked) == len(list(channels))
    except (TypeError, ValueError):
        ok = False
    if not ok or not picked or any(not 0 <= c < n for c in picked):
        raise CnnvizError(f"channels must be a non-empty list of input channel indices in 0..{n - 1}; "
                          f"got {channels!r}")
    return tuple(dict.fromkeys(picked))  # duplicates dropped, order kept


_CHANNEL_TOKEN = re.compile(r"^(\d+)(?:-(\d+))?$")


def parse_channels(text: str, n_channels: int) -> tuple[int, ...]:
    """Channel indices from text a user typed: "0, 5, 17", "3 4 5", or ranges "0-3" / "0..3" (inclusive).

    Returns the indices in the order typed, without duplicates; CnnvizError naming the bad part otherwise.
    """
    accepted = f'channel indices in 0..{n_channels - 1}, separated by commas or spaces, e.g. "0, 5, 17" or "0-3"'
    ranges_joined = re.sub(r"\s*(?:-|\.\.|:)\s*", "-", str(text).strip())  # "0 .. 3" -> "0-3"
    parts = [p for p in re.split(r"[,;\s]+", ranges_joined) if p]
    if not parts:
        raise CnnvizError(f"no channels given; expected {accepted}")
    picked: list[int] = []
    for part in parts:
        match = _CHANNEL_TOKEN.match(part)
        if match is None:
            raise CnnvizError(f"{part!r} is not a channel index; expected {accepted}")
        lo = int(match.group(1))
        hi = int(match.group(2)) if match.group(2) is not None else lo
        if lo > hi or hi >= n_channels:
            problem = "runs backwards" if lo > hi else "is out of range"
            raise CnnvizError(f"{part!r} {problem}; expected {accepted}")
        picked.extend(range(lo, hi + 1))
    return tuple(dict.fromkeys(picked))
