"""What one filter does to its input, channel by channel: the arithmetic behind a conv layer's output map.

A conv filter's output map is the sum, over every channel of the previous layer's output, of that channel
cross-correlated with the filter's kernel slice for it, plus the bias, through the layer's activation.
`break_down_filter` computes those per-channel partial sums exactly as Keras does (strides, "same"/"valid"
padding with TensorFlow's extra pad at the end, dilation, transposed convolutions), ranks the channels by
how much they contribute and keeps the few worth showing. Pure numpy: no Keras, no widgets.
"""

from __future__ import annotations

import math
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from ._keras import keras
from .errors import CnnvizError

PADDINGS = ("same", "valid")

RANKING = "mean |partial sum|"
"""How channels are ranked: the mean absolute value of a channel's partial sum over the output map, i.e. how
far that channel moves the filter's total, whichever the sign. (A mean of signed values would let a channel
that adds a lot in one place and removes it elsewhere look idle.)"""

_CHUNK_BYTES = 16 * 2**20  # partial sums computed for this many bytes of channels at a time (bounds memory)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return np.exp(-np.logaddexp(0.0, -x))  # 1 / (1 + exp(-x)) without overflow for large |x|


def _hard_sigmoid(x: np.ndarray) -> np.ndarray:
    return np.clip(x + 3.0, 0.0, 6.0) / 6.0  # Keras 3: relu6(x + 3) / 6


def _elu(x: np.ndarray) -> np.ndarray:
    return np.where(x > 0, x, np.expm1(np.minimum(x, 0.0)))


_SELU_ALPHA, _SELU_SCALE = 1.6732632423543772848170429916717, 1.0507009873554804934193349852946
_erf = np.vectorize(math.erf, otypes=[np.float64])

ACTIVATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "linear": lambda x: x,
    "relu": lambda x: np.maximum(x, 0.0),
    "relu6": lambda x: np.clip(x, 0.0, 6.0),
    "leaky_relu": lambda x: np.where(x > 0, x, 0.2 * x),  # Keras' default negative_slope
    "elu": _elu,
    "selu": lambda x: _SELU_SCALE * np.where(x > 0, x, _SELU_ALPHA * np.expm1(np.minimum(x, 0.0))),
    "sigmoid": _sigmoid,
    "hard_sigmoid": _hard_sigmoid,
    "tanh": np.tanh,
    "softplus": lambda x: np.logaddexp(0.0, x),
    "softsign": lambda x: x / (1.0 + np.abs(x)),
    "silu": lambda x: x * _sigmoid(x),
    "swish": lambda x: x * _sigmoid(x),
    "hard_silu": lambda x: x * _hard_sigmoid(x),
    "hard_swish": lambda x: x * _hard_sigmoid(x),
    "gelu": lambda x: 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0))),  # Keras' default: exact, not tanh
    "exponential": np.exp,
}
"""Activations reproduced per filter (element-wise ones, with Keras' default arguments). Softmax and the like
mix all filters at each position, so they are not reproduced for one filter."""


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
    contribution : (C,) float64, each input channel's mean |partial sum| (see `RANKING`).
    ranking : all C input channels, largest contribution first.
    layer, layer_type, previous_layer, channel_labels, note : words for the picture (filled by ModelState).
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
    contribution: np.ndarray
    ranking: tuple[int, ...]
    layer: str = ""
    layer_type: str = ""
    previous_layer: str = ""
    channel_labels: tuple[str, ...] = ()
    note: str = ""
    ranking_rule: str = field(default=RANKING)

    @property
    def n_channels(self) -> int:
        """C, the number of input channels the filter sums over."""
        return int(self.contribution.size)

    @property
    def shown_share(self) -> float:
        """Fraction of the summed contributions (mean |partial|) that comes from the channels shown, in [0, 1]."""
        total = float(self.contribution.sum())
        return float(self.contribution[list(self.channels)].sum()) / total if total > 0 else 1.0


# --------------------------------------------------------------------------------------------- checks


def _pair(value: int | Sequence[int], name: str) -> tuple[int, int]:
    """An int or a pair of ints >= 1, as (rows, cols)."""
    items = (value, value) if isinstance(value, (int, np.integer)) else tuple(value)
    if len(items) != 2 or not all(isinstance(v, (int, np.integer)) and v >= 1 for v in items):
        raise CnnvizError(f"{name} must be a positive int or a pair of them; got {value!r}")
    return int(items[0]), int(items[1])


def _check_inputs(previous: object, kernel: object, filter: object) -> tuple[np.ndarray, np.ndarray, int]:
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
    if isinstance(filter, bool) or not isinstance(filter, (int, np.integer)) or not 0 <= filter < ker.shape[3]:
        raise CnnvizError(f"filter must be an int in 0..{ker.shape[3] - 1}; got {filter!r}")
    return prev.astype(np.float32, copy=False), ker.astype(np.float32, copy=False), int(filter)


def _check_padding(padding: str) -> str:
    mode = padding.lower() if isinstance(padding, str) else padding
    if mode not in PADDINGS:
        raise CnnvizError(f"padding must be one of {PADDINGS}; got {padding!r}")
    return mode


# ------------------------------------------------------------------------------------------ geometry


def conv_geometry(size: int, kernel: int, stride: int, dilation: int, padding: str) -> tuple[int, int, int]:
    """(output size, pad before, pad after) of a convolution along one axis, as Keras on TensorFlow does it.

    "same": output ceil(size / stride), the total padding split with the odd pixel at the END (TensorFlow's
    rule, which is why an even kernel or a stride of 2 is padded asymmetrically). "valid": no padding.
    """
    span = (kernel - 1) * dilation + 1
    if _check_padding(padding) == "same":
        out = -(-size // stride)
        total = max((out - 1) * stride + span - size, 0)
        return out, total // 2, total - total // 2
    out = -(-(size - span + 1) // stride)
    if out < 1:
        raise CnnvizError(f"a {size}-pixel side is smaller than the {span}-pixel (dilated) kernel with "
                          "padding 'valid': the layer has no output")
    return out, 0, 0


def transposed_geometry(size: int, kernel: int, stride: int, dilation: int, padding: str,
                        output_padding: int | None = None) -> tuple[int, int]:
    """(output size, crop before) of a transposed convolution along one axis (Keras' Conv2DTranspose rules).

    The input scatters into a full buffer of (size - 1) * stride + span pixels; the output is the slice
    starting at `crop before`, zero-extended at the end if longer than the buffer.
    """
    span = (kernel - 1) * dilation + 1
    if _check_padding(padding) == "valid":
        extra = max(span, stride) - span if output_padding is None else output_padding
        return (size - 1) * stride + span + extra, 0
    out = size * stride if output_padding is None else (size - 1) * stride + span % 2 + output_padding
    # TensorFlow computes it as the gradient of a "same" convolution from `out` pixels down to `size`.
    return out, max((size - 1) * stride + span - out, 0) // 2


# ------------------------------------------------------------------------------------------ compute


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
    prev, ker, f = _check_inputs(previous, kernel, filter)
    (sy, sx), (dy, dx) = _pair(strides, "strides"), _pair(dilation, "dilation")
    (h, w, c), (kh, kw) = prev.shape, ker.shape[:2]
    out_h, top, bottom = conv_geometry(h, kh, sy, dy, padding)
    out_w, left, right = conv_geometry(w, kw, sx, dx, padding)
    if backend not in ("auto", "numpy", "keras"):
        raise CnnvizError(f"backend must be 'auto', 'numpy' or 'keras'; got {backend!r}")
    keras_can = max(sy, sx) == 1 or max(dy, dx) == 1
    if backend == "keras" or (backend == "auto" and keras_can and "keras" in sys.modules):
        if not keras_can:
            raise CnnvizError("Keras' depthwise convolution has no strides > 1 with dilation > 1: use backend='numpy'")
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
    prev, ker, f = _check_inputs(previous, kernel, filter)
    (sy, sx), (dy, dx) = _pair(strides, "strides"), _pair(dilation, "dilation")
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


def apply_activation(x: np.ndarray, name: str) -> np.ndarray | None:
    """`x` through the named Keras activation, as float32; None when it is not reproduced here (see ACTIVATIONS)."""
    fn = ACTIVATIONS.get(name)
    if fn is None:
        return None
    with np.errstate(over="ignore"):  # exp of a huge value is inf, as in Keras
        return np.asarray(fn(np.asarray(x, dtype=np.float64)), dtype=np.float32)


def activation_name(config_value: object) -> str:
    """The activation's name from a layer's get_config()["activation"] (a name, or a serialised object)."""
    if config_value is None:
        return "linear"
    if isinstance(config_value, str):
        return config_value
    if isinstance(config_value, dict):
        inner = config_value.get("config")
        name = config_value.get("registered_name") or config_value.get("class_name") or ""
        return str(inner if isinstance(inner, str) else name or config_value)
    return str(getattr(config_value, "__name__", config_value))


def break_down_filter(previous: np.ndarray, kernel: np.ndarray, bias: np.ndarray | float, filter: int, *,
                      channels: Sequence[int] | None = None, top_k: int = 3,
                      strides: int | Sequence[int] = 1, padding: str = "same",
                      dilation: int | Sequence[int] = 1, activation: str = "linear",
                      transposed: bool = False,
                      output_padding: int | Sequence[int] | None = None) -> FilterBreakdown:
    """Take one filter's output apart by input channel.

    previous : (H, W, C) the layer's input. kernel : (kh, kw, C, F). bias : (F,) or the filter's bias.
    channels : the input channels to show, in order; None shows the `top_k` largest contributors.
    strides, padding, dilation, output_padding, transposed : the layer's geometry (see `channel_contributions`).
    activation : the layer's own activation name (`ACTIVATIONS`); others give `activation_reproduced` False
    and `output` equal to `pre_activation` (the caller may substitute the layer's real output).

    Every channel's partial sum is computed (in chunks, so memory stays bounded) to rank them and to form the
    exact total; only the shown channels' maps are kept.
    """
    prev, ker, f = _check_inputs(previous, kernel, filter)
    n = prev.shape[2]
    if channels is not None:
        shown = _check_channels(channels, n)
    elif isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 1:
        raise CnnvizError(f"top_k must be a positive int; got {top_k!r}")
    bias_arr = np.asarray(bias, dtype=np.float32).reshape(-1)
    b = float(bias_arr[f] if bias_arr.size > 1 else bias_arr[0]) if bias_arr.size else 0.0
    compute = transposed_channel_contributions if transposed else channel_contributions
    geometry: dict = dict(strides=strides, padding=padding, dilation=dilation)
    if transposed:
        geometry["output_padding"] = output_padding

    total: np.ndarray | None = None
    contribution = np.zeros(n, np.float64)
    per_channel_bytes = max(prev.shape[0] * prev.shape[1] * 4, 1)
    step = max(1, _CHUNK_BYTES // per_channel_bytes)
    for start in range(0, n, step):
        part = compute(prev[:, :, start : start + step], ker[:, :, start : start + step, :], f, **geometry)
        # Sums as float32 matrix-vector products: BLAS accumulates in blocks, so a mean of 250k values keeps
        # about 6 digits (a plain float32 running sum drifts in the 4th), at a fraction of float64's cost.
        flat = part.reshape(-1, part.shape[2])
        contribution[start : start + step] = np.ones(flat.shape[0], np.float32) @ np.abs(flat) / flat.shape[0]
        chunk_sum = (flat @ np.ones(flat.shape[1], np.float32)).reshape(part.shape[:2]).astype(np.float64)
        total = chunk_sum if total is None else total + chunk_sum
    assert total is not None

    ranking = tuple(int(i) for i in np.argsort(-contribution, kind="stable"))
    if channels is None:
        shown = ranking[: min(int(top_k), n)]
    picked = list(shown)
    partials = compute(np.take(prev, picked, axis=2), np.take(ker, picked, axis=2), f, **geometry)
    rest = (total - partials.sum(axis=2, dtype=np.float64)).astype(np.float32)
    pre = (total + b).astype(np.float32)
    act = activation_name(activation)
    out = apply_activation(pre, act)
    return FilterBreakdown(
        filter=f, channels=tuple(shown), previous_maps=np.take(prev, picked, axis=2),
        kernels=np.ascontiguousarray(np.take(ker[:, :, :, f], picked, axis=2)), partials=partials, rest=rest,
        bias=b, pre_activation=pre, activation=act, activation_reproduced=out is not None,
        output=pre if out is None else out, contribution=contribution, ranking=ranking,
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


# ------------------------------------------------------------------------------------------ words


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
