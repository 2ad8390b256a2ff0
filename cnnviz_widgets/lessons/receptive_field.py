"""Which pixels of the input image can change one output value of a layer.

`receptive_field` / `receptive_box` compose the kernels, strides, paddings and dilations of every conv and
pooling layer on the paths from the input to a layer (through any graph: merges take the union); a layer that
mixes all positions (global pooling, flatten, dense) sees the whole image.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from cnnviz_widgets.errors import CnnvizError
from cnnviz_widgets.lessons.arithmetic import conv_geometry, pair
from cnnviz_widgets.lessons.pixel_breakdown import SLIDING_CONVS, check_position

if TYPE_CHECKING:
    from cnnviz_widgets.network.graph import LayerNode, ModelGraph


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
        row, col = check_position(row, col, self.output_size, f"{self.layer}'s output")
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
            kernel, strides = pair(config["kernel_size"], "kernel_size"), pair(config["strides"], "strides")
            dilation = pair(config.get("dilation_rate", 1), "dilation_rate")
        else:
            kernel = pair(config["pool_size"], "pool_size")
            strides, dilation = pair(config.get("strides") or kernel, "strides"), (1, 1)
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
