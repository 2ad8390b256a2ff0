"""One output value of a layer taken apart: how THIS number is computed.

`pixel_breakdown` shows the kernel window over every input channel, each channel's partial sum (patch ·
kernel slice), their total, the bias and the activation, ranked so that a filter with 512 input channels can
still be read (the top k, and what the rest add together). It uses the convolution arithmetic of `arithmetic`
(TensorFlow's "same" padding, strides, dilation), so the value equals the layer's own output.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from cnnviz_widgets.checks import check_int, check_positive
from cnnviz_widgets.lessons.arithmetic import activation_name, apply_activation, conv_geometry, pair
from cnnviz_widgets.lessons.filter_effect import check_conv_inputs

if TYPE_CHECKING:
    pass


SLIDING_CONVS = ("Conv2D", "DepthwiseConv2D", "SeparableConv2D")
"""Conv layers that slide a kernel over their input (a transposed convolution scatters instead)."""


@dataclass(frozen=True, eq=False)  # eq=False: ndarray fields make a generated __eq__ meaningless
class PixelBreakdown:
    """One value of one filter's output map, taken apart by input channel.

    The layer's input (the previous layer's output) is (H, W, C); the kernel window is kh × kw; k channels
    are shown.

    filter, row, col : the output value taken apart: ``output_map[row, col, filter]``.
    channels : the k input channels shown, largest |partial sum| first.
    patches : (kh, kw, k) float32, the input values under the kernel window, per shown channel; taps that
        fall in the zero padding hold 0 (see `padded`).
    kernels : (kh, kw, k) float32, the filter's kernel slice for each shown channel.
    padded : (kh, kw) bool, True for taps in the zero padding ("same" padding at the border).
    taps_y, taps_x : input rows (kh,) and columns (kw,) of the taps; outside 0..H-1 / 0..W-1 is padding.
    partials : (C,) float64, EVERY input channel's partial sum ``sum(patch * kernel slice)``, channel order.
    ranking : all C input channels, largest |partial sum| first (ties by index).
    shown_sum, rest : the partial sums of the shown channels added up, and of all the others.
    total : sum of all C partial sums. bias : the filter's bias. pre_activation : total + bias.
    activation : the layer's activation name. activation_reproduced : False when the activation is not an
        element-wise one computed here; `output` is then `pre_activation` (the caller may substitute the
        layer's own value).
    output : the value after the activation, equal to the layer's output at (row, col, filter).
    layer, previous_layer, channel_labels, note : words for the picture (filled by ModelState).
    """

    filter: int
    row: int
    col: int
    channels: tuple[int, ...]
    patches: np.ndarray
    kernels: np.ndarray
    padded: np.ndarray
    taps_y: tuple[int, ...]
    taps_x: tuple[int, ...]
    partials: np.ndarray
    ranking: tuple[int, ...]
    shown_sum: float
    rest: float
    total: float
    bias: float
    pre_activation: float
    activation: str
    activation_reproduced: bool
    output: float
    layer: str = ""
    previous_layer: str = ""
    channel_labels: tuple[str, ...] = ()
    note: str = ""

    @property
    def n_channels(self) -> int:
        return int(self.partials.size)

    @property
    def window(self) -> tuple[int, int, int, int]:
        """(y0, x0, y1, x1), end-exclusive span of the (dilated) window in the layer's input, padding included."""
        return self.taps_y[0], self.taps_x[0], self.taps_y[-1] + 1, self.taps_x[-1] + 1


def pixel_breakdown(previous: np.ndarray, kernel: np.ndarray, bias: np.ndarray | float, filter: int,
                    row: int, col: int, *, strides: int | Sequence[int] = 1, padding: str = "same",
                    dilation: int | Sequence[int] = 1, activation: str = "linear",
                    top_k: int = 8) -> PixelBreakdown:
    """Take the output value at (row, col) of `filter` apart by input channel.

    previous : (H, W, C) the layer's input. kernel : (kh, kw, C, F). bias : (F,) or the filter's bias.
    row, col : a position in the filter's output map (H', W'), as `arithmetic.conv_geometry` sizes it.
    strides, padding, dilation : the layer's geometry (Keras / TensorFlow rules, see `effects`).
    activation : the layer's activation name (`arithmetic.ACTIVATIONS` are reproduced).
    top_k : how many channels to show, by |partial sum| at this position.

    Sums are formed in float64, so they match the layer's float32 output to float32 rounding.
    """
    prev, ker, f = check_conv_inputs(previous, kernel, filter)
    check_positive(top_k, "top_k")
    (sy, sx), (dy, dx) = pair(strides, "strides"), pair(dilation, "dilation")
    (h, w, n), (kh, kw) = prev.shape, ker.shape[:2]
    out_h, top, _ = conv_geometry(h, kh, sy, dy, padding)
    out_w, left, _ = conv_geometry(w, kw, sx, dx, padding)
    row, col = check_position(row, col, (out_h, out_w), "the filter's output map")

    ys = row * sy - top + dy * np.arange(kh)
    xs = col * sx - left + dx * np.arange(kw)
    inside_y, inside_x = (ys >= 0) & (ys < h), (xs >= 0) & (xs < w)
    patch = np.zeros((kh, kw, n), np.float64)
    patch[np.ix_(inside_y, inside_x)] = prev[np.ix_(ys[inside_y], xs[inside_x])]
    taps = ker[:, :, :, f].astype(np.float64)
    partials = np.einsum("ijc,ijc->c", patch, taps)

    ranking = np.argsort(-np.abs(partials), kind="stable")
    shown = ranking[: min(int(top_k), n)]
    bias_arr = np.asarray(bias, dtype=np.float64).reshape(-1)
    b = float(bias_arr[f] if bias_arr.size > 1 else bias_arr[0]) if bias_arr.size else 0.0
    total = float(partials.sum())
    shown_sum = float(partials[shown].sum())
    act = activation_name(activation)
    pre = total + b
    out = apply_activation(np.array([pre]), act)
    return PixelBreakdown(
        filter=f, row=row, col=col, channels=tuple(int(c) for c in shown),
        patches=patch[:, :, shown].astype(np.float32), kernels=np.ascontiguousarray(ker[:, :, shown, f]),
        padded=~np.outer(inside_y, inside_x), taps_y=tuple(int(y) for y in ys), taps_x=tuple(int(x) for x in xs),
        partials=partials, ranking=tuple(int(c) for c in ranking), shown_sum=shown_sum,
        rest=total - shown_sum, total=total, bias=b, pre_activation=pre, activation=act,
        activation_reproduced=out is not None, output=pre if out is None else float(out[0]),
    )


def check_position(row: object, col: object, shape: tuple[int | None, int | None], what: str) -> tuple[int, int]:
    for value, size, name in ((row, shape[0], "row"), (col, shape[1], "col")):
        accepted = f"0..{size - 1}" if size is not None else "0 or more"
        check_int(value, name, 0, None if size is None else size - 1,
                  message=f"{name} must be an int in {accepted} ({what} is {shape[0]}×{shape[1]}); got {value!r}")
    return int(row), int(col)  # type: ignore[call-overload]
