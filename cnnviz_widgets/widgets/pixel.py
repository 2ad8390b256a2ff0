"""`ConvolutionAtPixel`: click one value of a filter's output map and see how the layer computed it.

Left, the current filter's output map (click a pixel to pick it); next to it, for a map too large to click
one value in, a zoomed crop around the pick (click a value there to refine the pick); right, the input
picture with the pixel's receptive field outlined. Below, for the input channels that move this value most:
the patch of the previous layer's output under the kernel window (zero-padding in grey), the filter's kernel
slice, their element-wise products (each tile captioned with its channel), and a table whose numbers add up
to the layer's own output. The arithmetic is `ModelState.pixel_breakdown` and `ModelState.receptive_box` (see
`cnnviz_widgets.analysis`).
"""

from __future__ import annotations

import html
import math
from typing import Any

import bqplot
import ipywidgets
import numpy as np
import traitlets

from cnnviz_widgets.errors import CnnvizError, LayerError
from cnnviz_widgets.lessons.pixel_breakdown import PixelBreakdown
from cnnviz_widgets.lessons.receptive_field import ReceptiveField
from cnnviz_widgets.pictures import render
from cnnviz_widgets.widgets.mosaic import MosaicFigure
from cnnviz_widgets.widgets.parts import format_number, message_line, show_child
from cnnviz_widgets.widgets.theme import HIGHLIGHT_COLOR, PAD_RGB
from cnnviz_widgets.widgets.view import WEIGHTS_TRAIT, View, as_state

MAP_SIDE = 256
"""Longest side, in pixels, of the output map as sent (larger maps are average-pooled; clicks still pick the
map's own pixels)."""
TILE_PX = 72
"""Patches, kernels and products are scaled up (nearest neighbour) to tiles of about this many pixels, so
each tap is a crisp cell."""
SIGNED_CMAP = "coolwarm"
"""Patches, kernels and products are signed: diverging map, white = 0, one symmetric range per row."""
MAX_TOP_K = 16
ZOOM_SIDE = 24
"""A map with more values than this on a side also gets a zoomed crop of ZOOM_SIDE × ZOOM_SIDE values around the
pick: on a 256-wide map drawn a few hundred pixels wide, one value is a pixel or two, too small to click."""
_TILE_MAX_PX = 180  # a row of few tiles stops growing here: three 3×3 kernels need not be 500 px each
_ZOOM_MARGIN = 3  # the crop moves only when the pick comes this close to its edge, so it stays under the mouse
_VALUES_UP_TO = 25  # kernels with at most this many taps (5×5) get their numbers in the tooltips


class ConvolutionAtPixel(View):
    """One output value of the current filter taken apart, and the part of the input image it can see.

    Parameters
    ----------
    state_or_model
        A `ModelState` (shared with other views), or anything `ModelState` takes as a model.
    top_k
        How many input channels to show, the largest |patch · kernel| at the pixel first.
    css_class
        Added to the root box; the parts get "<css_class>-map", "-field", "-patches", "-kernels", "-products"
        and "-arithmetic".
    width_px
        Smallest width of the map and the receptive-field figures (the zoomed crop: 3/4 of it); they share the
        row and grow with it.

    `row`, `col` is the picked position in the current layer's output map; a click on the map sets it, and
    it starts on the filter's strongest value. On a map larger than ZOOM_SIDE a side, a click on the zoomed crop
    sets it too. It follows the state's layer and image (scaled to a new map size, so it stays on the same part
    of the image) and filter; where the value there is 0, it moves to the new map's strongest value. New weights
    (a `TrainingState` training, or showing another step) redraw it at the same pick. The
    patch, kernel and product tiles are captioned with their input channel; a click on one makes that input
    channel `state.channel`.
    """

    row = traitlets.Int(0, help="Row of the picked value in the current layer's output map.")
    col = traitlets.Int(0, help="Column of the picked value in the current layer's output map.")

    def __init__(self, state_or_model: Any, *, top_k: int = 8, css_class: str = "cnnviz-pixel",
                 width_px: int = 300):
        if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= MAX_TOP_K:
            raise CnnvizError(f"top_k must be an int in 1..{MAX_TOP_K}; got {top_k!r}")
        self.state = as_state(state_or_model)
        self.breakdown: PixelBreakdown | None = None
        self.box: tuple[int, int, int, int] | None = None
        with self._computing():
            self._map_shape = self.state.activation().shape[:2]
        self._map_range = (0.0, 1.0)  # the value range the map's colours span (the zoom uses the same)
        self._zoom_origin: tuple[int, int] | None = None  # (row, col) of the crop's top-left value

        self.heading = ipywidgets.HTML("")
        self.top_k = ipywidgets.BoundedIntText(value=top_k, min=1, max=MAX_TOP_K, description="top k",
                                               layout=ipywidgets.Layout(width="130px"))
        self.strongest = ipywidgets.Button(description="strongest value", tooltip="pick the largest value of "
                                           "this filter's output map")
        self.strongest.add_class(f"{css_class}-strongest")
        self.controls = ipywidgets.HBox([self.strongest, self.top_k])
        self.message = message_line()
        # The map is one tile, so its Image mark's click coordinates name the pixel; hover markers over the
        # tile would catch those clicks, so this figure has none.
        self.map_figure = MosaicFigure(css_class=f"{css_class}-map", width_px=width_px, hover_labels=False)
        self.zoom_figure = MosaicFigure(css_class=f"{css_class}-zoom", width_px=width_px * 3 // 4,
                                        hover_labels=False, colorbar=False)
        self.field_figure = MosaicFigure(css_class=f"{css_class}-field", width_px=width_px, colorbar=False)
        self.window_mark = _outline_mark(self.map_figure, width=1, style="dashed")  # where the zoom looks
        self.pixel_mark = _outline_mark(self.map_figure)
        self.zoom_mark = _outline_mark(self.zoom_figure)
        self.field_mark = _outline_mark(self.field_figure)
        self.patches_figure = MosaicFigure(css_class=f"{css_class}-patches", width_px=2 * width_px)
        self.kernels_figure = MosaicFigure(css_class=f"{css_class}-kernels", width_px=2 * width_px)
        self.products_figure = MosaicFigure(css_class=f"{css_class}-products", width_px=2 * width_px)
        self.arithmetic = ipywidgets.HTML("")
        self.arithmetic.add_class(f"{css_class}-arithmetic")
        self.top = ipywidgets.HBox([self.map_figure, self.zoom_figure, self.field_figure],
                                   layout=ipywidgets.Layout(width="100%"))
        self.top.add_class(f"{css_class}-top")
        self.details = ipywidgets.VBox([self.patches_figure, self.kernels_figure, self.products_figure,
                                        self.arithmetic])
        super().__init__([self.heading, self.controls, self.message, self.top, self.details], css_class=css_class)

        self.on_element_click(self.map_figure.image_mark, self._on_map_click)
        self.on_element_click(self.zoom_figure.image_mark, self._on_zoom_click)
        for figure in (self.patches_figure, self.kernels_figure, self.products_figure):
            self.on_tile_click(figure, self._on_tile_click)
        self.watch(self.top_k, self._on_control_change)
        self.on_click(self.strongest, self._on_strongest_click)
        self.follow_state(["layer", "filter", "image", "colormap", "normalization"])
        self.observe_state(self._on_channel_change, ["channel"])
        self.pick_strongest()
        self.redraw()  # in case the strongest value is at (0, 0), which sets no trait

    # -- picking a pixel -------------------------------------------------------------------------------

    def select(self, row: int, col: int) -> None:
        """Pick output value (row, col) of the current map (clamped to the map) and redraw once."""
        with self.hold_trait_notifications():
            self.row, self.col = int(row), int(col)

    def pick_strongest(self) -> None:
        """Pick the position of the current filter's largest output value (the first one, on ties)."""
        with self._computing():
            values = self.state.activation()[..., self.state.filter]
            self.select(*np.unravel_index(int(np.argmax(values)), values.shape))

    @traitlets.validate("row", "col")
    def _validate_position(self, proposal: traitlets.Bunch) -> int:
        size = self._map_shape[0 if proposal["trait"].name == "row" else 1]
        return max(0, min(int(proposal["value"]), size - 1))

    @traitlets.observe("row", "col")
    def _on_position_change(self, _change: traitlets.Bunch) -> None:
        self.redraw()

    def _on_map_click(self, _mark: Any, content: dict) -> None:
        data = content.get("data") or {}
        if "click_x" not in data or "click_y" not in data:
            return
        height, width = self._map_shape
        x, y = float(data["click_x"]), float(data["click_y"])  # data coordinates: [0, 1], y upwards
        if 0 <= x < 1 and 0 <= y < 1:
            self.select(math.floor((1 - y) * height), math.floor(x * width))

    def _on_zoom_click(self, _mark: Any, content: dict) -> None:
        data = content.get("data") or {}
        if "click_x" not in data or "click_y" not in data or self._zoom_origin is None:
            return
        (y0, x0), (zh, zw) = self._zoom_origin, self._zoom_shape()
        x, y = float(data["click_x"]), float(data["click_y"])
        if 0 <= x < 1 and 0 <= y < 1:
            self.select(y0 + math.floor((1 - y) * zh), x0 + math.floor(x * zw))

    # -- drawing ---------------------------------------------------------------------------------------

    def _key(self) -> tuple:
        s = self.state
        return (s.layer, s.filter, id(s.model_input), s.colormap, s.normalization, self.row, self.col,
                self.top_k.value, self._weights_version)

    def _draw(self) -> None:
        s = self.state
        self._draw_map()
        self._draw_zoom()
        field = s.receptive_field()
        self.box = field.box(self.row, self.col)
        self._draw_field(field, self.box)
        try:
            breakdown = s.pixel_breakdown(self.row, self.col, top_k=self.top_k.value)
        except LayerError as err:  # the map and the field stay: only the breakdown is said instead
            self.breakdown = None
            show_child(self, self.details, False)
            self.show_message(str(err))
            self.heading.value = self._heading(None)
            return
        self.breakdown = breakdown
        self.show_message("")
        show_child(self, self.details, True)
        self.heading.value = self._heading(breakdown)
        self._draw_breakdown(breakdown)

    def _draw_map(self) -> None:
        s = self.state
        height, width = self._map_shape
        # the pick is not part of the pictures: a click moves the outlines and sends no picture
        key = (s.layer, s.filter, id(s.model_input), s.normalization, s.colormap, self._weights_version)
        if self.part_changed("map", key):
            mosaic, ranges = render.render_mosaic(s.activation(), s.normalization, s.colormap, max_side=MAP_SIDE,
                                                  indices=[s.filter])
            self._map_range = (float(ranges[0, 0]), float(ranges[0, 1]))
            what = "channel" if s.layer_kind() != "conv" else "filter"
            where = ("click a value to take it apart" if not self._zoomed() else
                     "click near a value, then pick it in the zoom")
            title = f"{s.layer} {what} {s.filter}: {width}×{height} output map · {where}"
            self.map_figure.show(mosaic, title=title, tooltips=[f"{what} {s.filter}"],
                                 colorbar=(s.colormap, float(ranges[0, 0]), float(ranges[0, 1])),
                                 colorbar_label="output value")
        # a square around the picked value, never smaller than a few screen pixels
        half_x = max(0.5 / width, 3 / self.map_figure.width_px)
        half_y = max(0.5 / height, 3 / self.map_figure.width_px)
        cx, cy = (self.col + 0.5) / width, 1 - (self.row + 0.5) / height
        _draw_box(self.pixel_mark, cx - half_x, cy + half_y, cx + half_x, cy - half_y)

    def _zoomed(self) -> bool:
        return max(self._map_shape) > ZOOM_SIDE

    def _zoom_shape(self) -> tuple[int, int]:
        height, width = self._map_shape
        return min(ZOOM_SIDE, height), min(ZOOM_SIDE, width)

    def _draw_zoom(self) -> None:
        """The crop of ZOOM_SIDE × ZOOM_SIDE values around the pick, in the map's colours, and its place on the map."""
        if not self._zoomed():
            show_child(self.top, self.zoom_figure, False)
            self.window_mark.visible = False
            self._zoom_origin = None
            return
        show_child(self.top, self.zoom_figure, True)
        s = self.state
        (height, width), (zh, zw) = self._map_shape, self._zoom_shape()
        y0, x0 = self._zoom_origin or (-height, -width)  # none yet: centre it on the pick
        if not (y0 + _ZOOM_MARGIN <= self.row < y0 + zh - _ZOOM_MARGIN
                and x0 + _ZOOM_MARGIN <= self.col < x0 + zw - _ZOOM_MARGIN):
            y0 = max(0, min(self.row - zh // 2, height - zh))
            x0 = max(0, min(self.col - zw // 2, width - zw))
        y0, x0 = max(0, min(y0, height - zh)), max(0, min(x0, width - zw))  # a new map size: inside it
        self._zoom_origin = (y0, x0)
        key = (s.layer, s.filter, id(s.model_input), s.normalization, s.colormap, y0, x0, self._map_range,
               self._weights_version)
        if self.part_changed("zoom", key):
            crop = s.activation()[y0:y0 + zh, x0:x0 + zw, s.filter]
            mosaic, _ = render.render_mosaic(crop[..., None], cmap=s.colormap, pad=0, value_range=self._map_range)
            title = (f"zoom: rows {y0}–{y0 + zh - 1}, columns {x0}–{x0 + zw - 1} (dashed on the map) · "
                     "click a value")
            self.zoom_figure.show(mosaic, title=title, tooltips=["a crop of the map, in the map's colours"])
        _draw_box(self.zoom_mark, (self.col - x0) / zw, 1 - (self.row - y0) / zh, (self.col - x0 + 1) / zw,
                  1 - (self.row - y0 + 1) / zh)
        _draw_box(self.window_mark, x0 / width, 1 - y0 / height, (x0 + zw) / width, 1 - (y0 + zh) / height)

    def _draw_field(self, field: ReceptiveField, box: tuple[int, int, int, int]) -> None:
        picture = self.state.model_input.picture
        height, width = picture.shape[:2]
        y0, x0, y1, x1 = box
        full, seen = f"{field.size[0]}×{field.size[1]}", f"{y1 - y0}×{x1 - x0}"
        if field.whole:
            title = (f"receptive field: the whole {width}×{height} input ({field.mixed_by or 'a layer on the way'} "
                     "mixes all positions)")
        else:
            title = (f"receptive field in the {width}×{height} input: {full} pixels"
                     + ("" if seen == full else f" ({seen} inside the image)"))
        key = (id(self.state.model_input), title)
        if self.part_changed("field", key):
            self.field_figure.show(render.tile_maps(picture[:, :, None, :]), title=title, fmt="jpeg",
                                   tooltips=["the input picture (at the size fed to the model)"])
        _draw_box(self.field_mark, x0 / width, 1 - y0 / height, x1 / width, 1 - y1 / height)

    def _draw_breakdown(self, b: PixelBreakdown) -> None:
        k = len(b.channels)
        kh, kw = b.kernels.shape[:2]
        factor = max(1, math.ceil(TILE_PX / max(kh, kw)))
        highlight = self.state.channel if self.state.channel in b.channels else None  # tiles are labelled by channel
        captions = [html.escape(tile_caption(c, text, k)) for c, text in zip(b.channels, b.channel_labels, strict=True)]
        rows = (
            (self.patches_figure, b.patches, "input value",
             f"1 · the {kh}×{kw} window of {self._source(b)} at input rows {b.taps_y[0]}–{b.taps_y[-1]}, "
             f"columns {b.taps_x[0]}–{b.taps_x[-1]}" + (" (grey: zero padding)" if b.padded.any() else "")),
            (self.kernels_figure, b.kernels, "weight", f"2 · filter {b.filter}'s kernel slices for those channels"),
            (self.products_figure, b.patches * b.kernels, "input × weight",
             "3 · input × weight, tap by tap: each tile adds up to that channel's partial sum"),
        )
        for figure, values, label, title in rows:
            unit, ranges = render.normalize(values, "symmetric")
            tiles = render.apply_colormap(unit, SIGNED_CMAP)
            tiles[b.padded] = PAD_RGB
            mosaic = render.tile_maps(render.scale_up(tiles, factor), indices=list(b.channels), cols=k, pad=2)
            tips = [self._tile_tip(b, i, values[:, :, i], label) for i in range(k)]
            figure.layout.max_width = f"{max(figure.width_px, k * _TILE_MAX_PX)}px"
            figure.show(mosaic, title=f"{title} · symmetric over the row (blue < 0, white = 0, red > 0)",
                        tooltips=tips, colorbar=(SIGNED_CMAP, float(ranges[0, 0]), float(ranges[0, 1])),
                        colorbar_label=label, highlight=highlight, captions=captions)
        self.arithmetic.value = arithmetic_table(b, layer_output=self._layer_value(), source=self._source(b))

    def _tile_tip(self, b: PixelBreakdown, i: int, values: np.ndarray, label: str) -> str:
        c = b.channels[i]
        head = f"channel {c} ({b.channel_labels[i]}) · partial sum {format_number(float(b.partials[c]))}"
        if values.size > _VALUES_UP_TO:
            return head
        cells = [["pad" if b.padded[y, x] else format_number(float(values[y, x])) for x in range(values.shape[1])]
                 for y in range(values.shape[0])]
        return f"{head} · {label}: " + " / ".join(" ".join(row) for row in cells)

    def _source(self, b: PixelBreakdown) -> str:
        """What the window reads, in words: the previous layer's name, or "the fed input" (not "input_layer")."""
        return "the fed input" if b.previous_layer == self.state.input_layer else b.previous_layer

    def _layer_value(self) -> float:
        return float(self.state.activation()[self.row, self.col, self.state.filter])

    def _heading(self, b: PixelBreakdown | None) -> str:
        s = self.state
        value = format_number(self._layer_value())
        where = f"<b>{html.escape(s.layer)}</b>, {'filter' if s.layer_kind() == 'conv' else 'channel'} {s.filter}"
        y0, x0, y1, x1 = self.box or (0, 0, 0, 0)
        field = (f"It can see rows {y0}–{y1 - 1}, columns {x0}–{x1 - 1} of the input (outlined in the "
                 "receptive-field picture).")
        if b is None:
            return f"{where}: the value at ({self.row}, {self.col}) = {value}. {field}"
        shown = len(b.channels)
        which = (f"the {shown} input channels that move it most (largest |partial sum|) of {b.n_channels}"
                 if shown < b.n_channels else f"all {b.n_channels} input channels")
        note = f"<br><small>{html.escape(b.note)}</small>" if b.note else ""
        return (f"{where}: the value at ({b.row}, {b.col}) = {value} is computed from a {b.kernels.shape[0]}×"
                f"{b.kernels.shape[1]} window of {html.escape(self._source(b))} in every channel. {field} Shown: "
                f"{which}.{note}")

    # -- events ----------------------------------------------------------------------------------------

    def _on_state_change(self, change: traitlets.Bunch) -> None:
        if change["name"] == WEIGHTS_TRAIT:  # new weights, same map: the pick stays where the user put it
            self.redraw()
            return
        old_shape, self._map_shape = self._map_shape, self.state.activation().shape[:2]
        if old_shape != self._map_shape:  # another layer, or an image of another size
            # the same place of the image: scale the pick by the change of map size
            self.select(int((self.row + 0.5) * self._map_shape[0] / old_shape[0]),
                        int((self.col + 0.5) * self._map_shape[1] / old_shape[1]))
        values = self.state.activation()[..., self.state.filter]
        if values[self.row, self.col] == 0 and values.max() > 0:
            # a zero (a ReLU that did not fire) explains little: start on the strongest value instead
            self.pick_strongest()
        self.redraw()

    def _on_control_change(self, _change: traitlets.Bunch) -> None:
        self.redraw()

    def _on_strongest_click(self, _button: ipywidgets.Button) -> None:
        self.pick_strongest()

    def _on_tile_click(self, index: int) -> None:
        self.state.channel = index  # tiles are labelled with their input channel

    def _on_channel_change(self, change: traitlets.Bunch) -> None:
        shown = () if self.breakdown is None else self.breakdown.channels
        for figure in (self.patches_figure, self.kernels_figure, self.products_figure):
            figure.highlight(change["new"] if change["new"] in shown else None)


def arithmetic_text(b: PixelBreakdown) -> str:
    """The sum in one line, e.g. "Σ over 64 channels = 12.3 (top 8: 10.0, other 56: 2.29) + bias 0.41 = 12.7
    → relu → 12.7"."""
    hidden = b.n_channels - len(b.channels)
    parts = f" (top {len(b.channels)}: {format_number(b.shown_sum)}, other {hidden}: {format_number(b.rest)})"
    return (f"Σ over {b.n_channels} channels = {format_number(b.total)}{parts if hidden else ''} + bias "
            f"{format_number(b.bias)} = {format_number(b.pre_activation)} → {b.activation} → "
            f"{format_number(b.output)}")


def arithmetic_table(b: PixelBreakdown, layer_output: float | None = None, source: str | None = None) -> str:
    """HTML: one row per shown channel (its partial sum and share of Σ |partial sums|), the rest, the bias, the
    activation, and the one-line sum; `layer_output` (the layer's own value) is printed next to it to compare.
    `source` names what the channels belong to (default: the previous layer's name)."""
    magnitude = float(np.abs(b.partials).sum()) or 1.0
    cell = 'style="padding: 1px 8px; text-align: right"'
    rows = [f"<tr><th {cell}>rank</th><th {cell}>{html.escape(source or b.previous_layer or 'input')} channel</th>"
            f"<th {cell}>partial sum</th>"
            f"<th {cell}>share of Σ|·|</th></tr>"]
    for rank, (c, label) in enumerate(zip(b.channels, b.channel_labels, strict=True), start=1):
        value = float(b.partials[c])
        name = str(c) if label.endswith(f"channel {c}") else f"{c} ({html.escape(label)})"  # B − 103.9 says more
        rows.append(f"<tr><td {cell}>{rank}</td><td {cell}>{name}</td>"
                    f"<td {cell}>{format_number(value)}</td><td {cell}>{abs(value) / magnitude:.0%}</td></tr>")
    hidden = b.n_channels - len(b.channels)
    if hidden:
        rest_share = float(np.abs(b.partials[list(b.ranking[len(b.channels):])]).sum()) / magnitude
        rows.append(f"<tr><td {cell}></td><td {cell}>the other {hidden} channels</td>"
                    f"<td {cell}>{format_number(b.rest)}</td><td {cell}>{rest_share:.0%}</td></tr>")
    rows.append(f"<tr><td {cell}></td><td {cell}><b>Σ all {b.n_channels}</b></td>"
                f"<td {cell}><b>{format_number(b.total)}</b></td><td {cell}></td></tr>")
    table = f'<table style="font-family: monospace; font-size: 12px">{"".join(rows)}</table>'
    check = ("" if layer_output is None else
             f"<br><small>the layer's own output there: {format_number(layer_output)}</small>")
    return (f'<div class="cnnviz-pixel-sum">{table}<b>{html.escape(arithmetic_text(b))}</b>{check}'
            + (f"<br><small>{html.escape(b.note)}</small>" if b.note else "") + "</div>")


def tile_caption(channel: int, label: str, n_tiles: int) -> str:
    """What stands over a patch, kernel or product tile: its input channel, "channel 5" (or "ch 5" where 9 or
    more tiles share the row), with the colour it holds for the model input ("channel 0 (B − 103.9)")."""
    head = f"channel {channel}" if n_tiles <= 8 else f"ch {channel}"
    return head if label.endswith(f"channel {channel}") else f"{head} ({label})"


def _outline_mark(figure: MosaicFigure, width: int = 2, style: str = "solid") -> bqplot.Lines:
    """An orange outline over the figure's picture, in its data coordinates ([0, 1] for a one-tile mosaic)."""
    mark = bqplot.Lines(x=[0.0], y=[0.0], scales=figure.image_mark.scales, colors=[HIGHLIGHT_COLOR], stroke_width=width,
                        line_style=style, visible=False, interactions={})
    figure.figure.marks = [*figure.figure.marks, mark]
    return mark


def _draw_box(mark: bqplot.Lines, left: float, top: float, right: float, bottom: float) -> None:
    with mark.hold_sync():
        mark.x = [left, right, right, left, left]
        mark.y = [top, top, bottom, bottom, top]
        mark.visible = True
