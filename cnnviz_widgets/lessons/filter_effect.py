"""What one filter does to its input, channel by channel: the arithmetic behind a conv layer's output map.

A conv filter's output map is the sum, over every channel of the previous layer's output, of that channel
cross-correlated with the filter's kernel slice for it, plus the bias, through the layer's activation.
`break_down_filter` computes those per-channel partial sums exactly as Keras does (strides, "same"/"valid"
padding with TensorFlow's extra pad at the end, dilation, transposed convolutions), ranks the channels by
how much they contribute and keeps the few worth showing, without computing every channel
(`channel_ranking`). Pure numpy (Keras' depthwise convolution where it is loaded and faster); no widgets.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from cnnviz_widgets.checks import check_int, check_positive
from cnnviz_widgets.errors import CnnvizError
from cnnviz_widgets.lessons.arithmetic import (
    activation_name,
    apply_activation,
    conv_geometry,
    pair,
    transposed_geometry,
)
from cnnviz_widgets.lessons.channel_ranking import ChannelRanker, all_contributions, filter_total
from cnnviz_widgets.network.backend import keras

RANKING = "mean |partial sum|"
"""How channels are ranked: the mean absolute value of a channel's partial sum over the output map, i.e. how
far that channel moves the filter's total, whichever the sign. (A mean of signed values would let a channel
that adds a lot in one place and removes it elsewhere look idle.)"""


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
        return all_contributions(prev, ker, f, compute, geometry)[0]

    computed: dict = {}
    if transposed or method == "exhaustive":  # no bound here for a scatter: every channel is computed
        contribution, total = all_contributions(prev, ker, f, compute, geometry)
        computed["contribution"] = contribution
        ranking = np.argsort(-contribution, kind="stable")
        shown = tuple(int(c) for c in ranking[: min(int(top_k), n)]) if channels is None else shown
        position = np.empty(n, np.int64)
        position[ranking] = np.arange(1, n + 1)
        values = contribution[list(shown)]
        ranks = tuple(int(position[c]) for c in shown)
        partials = compute(np.take(prev, list(shown), axis=2), np.take(ker, list(shown), axis=2), f, **geometry)
        previous_maps = np.take(prev, list(shown), axis=2)
    else:
        ranker = ChannelRanker(prev, ker, f, geometry)
        if channels is None:
            shown = ranker.top(min(int(top_k), n))
        values = np.array([ranker.exact(c) for c in shown], np.float64)
        ranks = tuple(ranker.rank(c) for c in shown)
        partials = np.stack([ranker.partial(c) for c in shown], axis=-1)
        total = filter_total(ranker.prepared.first, ker, f, geometry)
        # The ranker's channels-first copy gives the shown maps without a strided gather over every channel.
        previous_maps = np.moveaxis(ranker.prepared.first[list(shown)], 0, -1)
    picked = list(shown)
    rest = (total - partials.sum(axis=2, dtype=np.float64)).astype(np.float32)
    pre = (total + b).astype(np.float32)
    act = activation_name(activation)
    out = apply_activation(pre, act)
    return FilterBreakdown(
        filter=f, channels=tuple(shown), previous_maps=previous_maps,
        kernels=np.ascontiguousarray(np.take(ker[:, :, :, f], picked, axis=2)), partials=partials, rest=rest,
        bias=b, pre_activation=pre, activation=act, activation_reproduced=out is not None,
        output=pre if out is None else out, n_channels=n, shown_contribution=values, shown_rank=ranks,
        every_contribution=every_contribution, _computed=computed,
    )


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
