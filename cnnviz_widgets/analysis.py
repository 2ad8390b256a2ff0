"""One output value taken apart, the input region it can see, and what each channel of a layer does.

Three questions a learner asks once an activation map is on screen:

- `pixel_breakdown`: how is THIS number computed? The kernel window over every input channel, each
  channel's partial sum (patch · kernel slice), their total, the bias and the activation, ranked so that a
  filter with 512 input channels can still be read (the top k, and what the rest add together). It uses the
  geometry rules of `effects` (TensorFlow's "same" padding, strides, dilation), so the value equals the
  layer's own output.
- `receptive_field` / `receptive_box`: which pixels of the INPUT image can change it? Composed from the
  kernels, strides, paddings and dilations of every conv and pooling layer on the way from the input.
- `channel_statistics` / `order_channels`: per channel of a layer, its max, mean and fraction of zeros (dead
  ReLU units), and an order that shows the strongest channels first.

Pure numpy plus the layer configs of a `models.ModelGraph`: no widgets, no Keras calls.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .effects import _check_inputs, _pair, activation_name, apply_activation, conv_geometry
from .errors import CnnvizError

if TYPE_CHECKING:
    from .models import LayerNode, ModelGraph

STATISTICS = ("max", "mean", "zeros")
"""Per-channel statistics of a layer's maps: the largest value, the mean, the fraction of exact zeros."""

CHANNEL_ORDERS = ("index", "max", "mean", "zeros")
"""How a layer's channels can be ordered: by index, or strongest first by one of `STATISTICS` ("zeros":
fewest zeros first, so the dead channels of a ReLU layer come last)."""

SLIDING_CONVS = ("Conv2D", "DepthwiseConv2D", "SeparableConv2D")
"""Conv layers that slide a kernel over their input (a transposed convolution scatters instead)."""
_FIELD_POOL = ("MaxPooling2D", "AveragePooling2D")
# Layers and raw ops (`keras.ops.mean(x, axis=(1, 2), keepdims=True)`) that mix every position: after them
# each pixel sees the whole input, even where the output keeps its (1, 1) map (keepdims=True).
_GLOBAL_POOL = frozenset({"GlobalAveragePooling2D", "GlobalMaxPooling2D", "GlobalAvgPool2D", "GlobalMaxPool2D"})
_REDUCTIONS = frozenset({"Mean", "Max", "Min", "Sum", "Prod", "Std", "Var", "Amax", "Amin", "Logsumexp",
                         "Median", "Argmax", "Argmin", "All", "Any"})
# Layers that act on each pixel on its own (or only mix channels): the field passes through them unchanged.
_PER_PIXEL = frozenset({
    "Activation", "ReLU", "LeakyReLU", "PReLU", "ELU", "Softmax", "BatchNormalization", "LayerNormalization",
    "GroupNormalization", "UnitNormalization", "Dropout", "SpatialDropout2D", "GaussianNoise", "GaussianDropout",
    "AlphaDropout", "ActivityRegularization", "Rescaling", "Normalization", "Identity", "Add", "Subtract",
    "Multiply", "Average", "Maximum", "Minimum", "Concatenate",
})


# ------------------------------------------------------------------------------------ one output value


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
    row, col : a position in the filter's output map (H', W'), as `effects.conv_geometry` sizes it.
    strides, padding, dilation : the layer's geometry (Keras / TensorFlow rules, see `effects`).
    activation : the layer's activation name (`effects.ACTIVATIONS` are reproduced).
    top_k : how many channels to show, by |partial sum| at this position.

    Sums are formed in float64, so they match the layer's float32 output to float32 rounding.
    """
    prev, ker, f = _check_inputs(previous, kernel, filter)
    if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 1:
        raise CnnvizError(f"top_k must be a positive int; got {top_k!r}")
    (sy, sx), (dy, dx) = _pair(strides, "strides"), _pair(dilation, "dilation")
    (h, w, n), (kh, kw) = prev.shape, ker.shape[:2]
    out_h, top, _ = conv_geometry(h, kh, sy, dy, padding)
    out_w, left, _ = conv_geometry(w, kw, sx, dx, padding)
    row, col = _check_position(row, col, (out_h, out_w), "the filter's output map")

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


def _check_position(row: object, col: object, shape: tuple[int | None, int | None], what: str) -> tuple[int, int]:
    for value, size, name in ((row, shape[0], "row"), (col, shape[1], "col")):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0 or (
                size is not None and value >= size):
            accepted = f"0..{size - 1}" if size is not None else "0 or more"
            raise CnnvizError(f"{name} must be an int in {accepted} ({what} is {shape[0]}×{shape[1]}); got {value!r}")
    return int(row), int(col)  # type: ignore[call-overload]


# ------------------------------------------------------------------------------------ receptive field


@dataclass(frozen=True)
class AxisField:
    """The receptive field along one axis: output pixel i sees input pixels offset + i * jump ... + size - 1.

    size : input pixels one output pixel spans (the padding included). jump : input pixels between the fields
    of neighbouring output pixels (the product of the strides). offset : where output pixel 0's field starts;
    negative when it starts in the padding.
    """

    size: int
    jump: int
    offset: int

    def span(self, index: int) -> tuple[int, int]:
        """(start, stop), end-exclusive, of output pixel `index`'s field, not clipped to the input."""
        start = self.offset + index * self.jump
        return start, start + self.size


@dataclass(frozen=True)
class ReceptiveField:
    """Which input pixels can change an output pixel of `layer`.

    y, x : the field along rows and columns (`AxisField`). input_size : (H, W) of the input it was computed
    for (None where the model takes any size and none was given). output_size : (H', W') of the layer's maps.
    whole : True when a layer on the way mixes every position (global pooling, Dense, Flatten): then every
    output pixel sees the whole input and `y`, `x` span it. mixed_by : that layer (the first on the way).
    """

    layer: str
    y: AxisField
    x: AxisField
    input_size: tuple[int | None, int | None]
    output_size: tuple[int | None, int | None]
    whole: bool = False
    mixed_by: str = ""

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) of one output pixel's field, before clipping to the input."""
        return self.y.size, self.x.size

    def box(self, row: int, col: int) -> tuple[int, int, int, int]:
        """(y0, x0, y1, x1), end-exclusive box of the input seen by output pixel (row, col), clipped to it."""
        row, col = _check_position(row, col, self.output_size, f"{self.layer}'s output")
        h, w = self.input_size
        if h is None or w is None:
            raise CnnvizError(f"the input size is needed to clip {self.layer}'s receptive field: the model takes "
                              "any size, so pass input_size=(height, width)")
        if self.whole:
            return 0, 0, h, w
        (y0, y1), (x0, x1) = self.y.span(row), self.x.span(col)
        return max(y0, 0), max(x0, 0), min(y1, h), min(x1, w)


_WHOLE = "whole"  # marker for a path through a layer that mixes all positions


def receptive_field(graph: ModelGraph, layer: str,
                    input_size: tuple[int, int] | None = None) -> ReceptiveField:
    """The receptive field of `layer`'s output pixels in the model input.

    Walks the graph from the input: a conv or pooling layer with kernel k (dilated span s_k = (k - 1) d + 1),
    stride s and padding p before widens the field by (s_k - 1) · jump, moves its start by -p · jump, and
    multiplies the jump by s. Zero-padding and cropping layers move the start; per-pixel layers (activations,
    normalisation, Add, Concatenate, ...) leave it. Where paths join (ResNet's Add, Inception's Concatenate)
    the field is the box around the UNION over the paths. The box is exact: it is the smallest one holding
    every input pixel that can change the output. Inside it, every pixel counts for a plain chain of convs and
    pools (VGG16); a dilated kernel skips pixels, and joined paths can reach an L-shaped region. A global
    pooling (``keepdims=True`` too), a reduction over rows or columns (``keras.ops.mean(x, axis=(1, 2))``),
    Flatten or Dense on the way makes the field the whole input (`ReceptiveField.whole`).

    input_size : (H, W) of the fed input. Needed when the model takes any size and a "same"-padded layer has
    a stride above 1 (TensorFlow then pads by the parity of the size), and to know the output size.
    CnnvizError for layers whose field is not a window of the input (transposed convolution, upsampling).
    """
    target = graph.node(layer)
    size = _input_size(graph, input_size)
    memo: dict[str, tuple] = {}
    found = _field(graph, target.name, size, memo)
    if found[0] == _WHOLE:
        h, w = size
        y, x = AxisField(h or 1, 0, 0), AxisField(w or 1, 0, 0)
        out = tuple(target.output_shape[1:3]) if target.is_map else (None, None)
        return ReceptiveField(target.name, y, x, size, out, whole=True, mixed_by=found[1])  # type: ignore[arg-type]
    y, x, out_h, out_w = found
    return ReceptiveField(target.name, y, x, size, (out_h, out_w))


def receptive_box(graph: ModelGraph, layer: str, row: int, col: int,
                  input_size: tuple[int, int] | None = None) -> tuple[int, int, int, int]:
    """(y0, x0, y1, x1), end-exclusive box of the model input that can change `layer`'s output at (row, col).

    Clipped to the input (the padding is not part of the picture). See `receptive_field`.
    """
    return receptive_field(graph, layer, input_size).box(row, col)


def _input_size(graph: ModelGraph, input_size: tuple[int, int] | None) -> tuple[int | None, int | None]:
    if input_size is None:
        h, w = graph.input_shape[:2]
        return (None if h is None else int(h)), (None if w is None else int(w))
    try:
        h, w = (int(v) for v in input_size)
        ok = h >= 1 and w >= 1 and len(tuple(input_size)) == 2
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise CnnvizError(f"input_size must be (height, width) in pixels, both >= 1; got {input_size!r}")
    return h, w


def _field(graph: ModelGraph, name: str, input_size: tuple, memo: dict) -> tuple:
    """(AxisField y, AxisField x, output height, output width) of node `name`, or (_WHOLE, the mixing layer).

    Only the layers that feed `name` are visited, in graph order, without recursion: a model can be a
    thousand layers deep (NASNetLarge, EfficientNetB7).
    """
    if name in memo:
        return memo[name]
    needed, pending = set(), [graph.node(name).name]
    while pending:
        current = pending.pop()
        if current not in needed and current not in memo:
            needed.add(current)
            pending.extend(graph.node(current).inputs)
    for current in [n for n in graph.nodes if n in needed]:  # graph order: a node's inputs come before it
        memo[current] = _field_of(graph.node(current), [memo[source] for source in graph.node(current).inputs],
                                  input_size)
    return memo[name]


def _field_of(node: LayerNode, upstream: list[tuple], input_size: tuple) -> tuple:
    """The field of `node` given the fields of its inputs."""
    if node.kind == "input":
        return (AxisField(1, 1, 0), AxisField(1, 1, 0), *input_size)
    mixed = [found for found in upstream if found[0] == _WHOLE]
    if mixed:
        return mixed[0]  # fed by a layer that mixes all positions: it says which one
    if not node.is_map:
        return (_WHOLE, node.name)  # Flatten, Dense on vectors, ...: mixes all positions
    if not upstream:
        raise CnnvizError(f"{node.name} ({node.class_name}) has no input in the graph: no receptive field")
    return _through(node, upstream)


def _through(node: LayerNode, upstream: list[tuple]) -> tuple:
    """The field after `node`, given the fields of its inputs."""
    try:
        config = node.layer.get_config() if node.layer is not None else {}
    except Exception:  # a custom layer or op without a config: judged by its shapes below
        config = {}
    if config.get("data_format", "channels_last") != "channels_last":
        raise CnnvizError(f"{node.name} is channels_first; receptive fields are computed for channels_last layers")
    cls = node.class_name
    if cls in _GLOBAL_POOL or (cls in _REDUCTIONS and _reduces_positions(config.get("axis", "none"))):
        return (_WHOLE, node.name)
    if node.kind == "conv" and cls not in SLIDING_CONVS:
        raise CnnvizError(f"{node.name} ({cls}) scatters each input pixel over a window of its output: its "
                          "receptive field is not a window of the input and is not computed")
    if cls in SLIDING_CONVS or cls in _FIELD_POOL:
        y, x, h, w = upstream[0]
        if cls in SLIDING_CONVS:
            kernel, strides = _pair(config["kernel_size"], "kernel_size"), _pair(config["strides"], "strides")
            dilation = _pair(config.get("dilation_rate", 1), "dilation_rate")
        else:
            kernel = _pair(config["pool_size"], "pool_size")
            strides, dilation = _pair(config.get("strides") or kernel, "strides"), (1, 1)
        padding = str(config.get("padding", "valid")).lower()
        y, h = _window(y, h, kernel[0], strides[0], dilation[0], padding, node.name)
        x, w = _window(x, w, kernel[1], strides[1], dilation[1], padding, node.name)
        return y, x, h, w
    if cls in ("ZeroPadding2D", "Cropping2D"):
        y, x, h, w = upstream[0]
        (top, bottom), (left, right) = config["padding" if cls == "ZeroPadding2D" else "cropping"]
        sign = -1 if cls == "ZeroPadding2D" else 1  # padding moves the start back, cropping forward
        y = AxisField(y.size, y.jump, y.offset + sign * top * y.jump)
        x = AxisField(x.size, x.jump, x.offset + sign * left * x.jump)
        h = None if h is None else h - sign * (top + bottom)
        w = None if w is None else w - sign * (left + right)
        return y, x, h, w
    same_shape = all(tuple(node.output_shape[1:3]) == (h, w) and h is not None for _, _, h, w in upstream)
    if cls in _PER_PIXEL or same_shape:
        return _union(node, upstream)
    raise CnnvizError(f"{node.name} ({cls}) changes the map geometry in a way the receptive field is not "
                      f"computed for; it is computed through conv ({', '.join(SLIDING_CONVS)}), pooling, "
                      "ZeroPadding2D, Cropping2D and per-pixel layers")


def _reduces_positions(axis: object) -> bool:
    """True when a reduction over `axis` of a (batch, H, W, C) tensor mixes rows or columns (None: all axes)."""
    if axis is None:
        return True
    if axis == "none":  # no axis in the config: not a reduction we can read
        return False
    axes = axis if isinstance(axis, (list, tuple)) else [axis]
    return any(isinstance(a, int) and a % 4 in (1, 2) for a in axes)


def _window(field: AxisField, size: int | None, kernel: int, stride: int, dilation: int, padding: str,
            name: str) -> tuple[AxisField, int | None]:
    """One axis through a sliding window: the new field and output size."""
    span = (kernel - 1) * dilation + 1
    if size is not None:
        out, before, _ = conv_geometry(size, kernel, stride, dilation, padding)
    elif padding == "valid" or stride == 1:
        out, before = None, 0 if padding == "valid" else (span - 1) // 2
    else:
        raise CnnvizError(f"{name} pads 'same' with stride {stride}, which depends on the input size: pass "
                          "input_size=(height, width)")
    widened = AxisField(field.size + (span - 1) * field.jump, field.jump * stride, field.offset - before * field.jump)
    return widened, out


def _union(node: LayerNode, upstream: list[tuple]) -> tuple:
    """Where paths join, every input pixel any path reaches: the smallest field holding all of them."""
    y, x, h, w = upstream[0]
    for other_y, other_x, *_ in upstream[1:]:
        if (other_y.jump, other_x.jump) != (y.jump, x.jump):
            raise CnnvizError(f"{node.name} ({node.class_name}) joins paths whose pixels lie on different input "
                              f"grids (jumps {(y.jump, x.jump)} and {(other_y.jump, other_x.jump)}): "
                              "no single receptive field")
        y, x = _cover(y, other_y), _cover(x, other_x)
    return y, x, h, w


def _cover(a: AxisField, b: AxisField) -> AxisField:
    start = min(a.offset, b.offset)
    return AxisField(max(a.offset + a.size, b.offset + b.size) - start, a.jump, start)


# ------------------------------------------------------------------------------------ channel statistics


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
