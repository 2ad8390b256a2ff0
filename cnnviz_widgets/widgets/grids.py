"""`WeightGrid` and `ActivationGrid`: one layer's filters or activation maps as one clickable, paged mosaic.

Both views take a `ModelState`, observe only the traits that change their picture, and draw through
`MosaicFigure` on the `PagedMosaicView` skeleton (paging that follows the selection, a mosaic drawn only when its
key changed). Beside the mosaic, the selected filter whole (its kernel for every input channel), or the selected
map large and the photo fed.
"""

from __future__ import annotations

import html
import math
from typing import Any

import ipywidgets
import numpy as np
import traitlets

from cnnviz_widgets.errors import CnnvizError
from cnnviz_widgets.lru import LruCache
from cnnviz_widgets.pictures import render
from cnnviz_widgets.widgets.mosaic import MosaicFigure
from cnnviz_widgets.widgets.paged import PagedMosaicView, full_rows
from cnnviz_widgets.widgets.parts import format_number

_KERNEL_TILE_PX = 24  # a 3×3 kernel is sent as 24×24 px of crisp cells rather than blurred by the browser
_WEIGHT_PAD, _WEIGHT_PAD_GREY = 2, 64  # dark gaps: white is a zero weight in coolwarm, mid grey in RGB view
_WEIGHT_CMAP = "coolwarm"  # diverging: negative blue, zero white, positive red
ROBUST_PERCENTILE, ROBUST_FACTOR = 99.0, 3.0
"""A layer's weights are scaled to the 99th percentile of |w| when their largest |w| is over 3 times it."""
RECENT_PICTURES = 6
"""How many recent (image, layer, page, look) pictures a view keeps, so going back to them draws at once."""
DETAIL_SIDE = 256
"""Longest side, in pixels, of the large view of the selected activation map (larger maps are pooled)."""


class WeightGrid(PagedMosaicView):
    """The filters of `state.layer` at input channel `state.channel`: one tile per filter.

    Parameters
    ----------
    state_or_model
        A `ModelState` to follow (shared with other views), or a model / preset name to make one.
    page_size
        Filters per page; a layer with more is paged (the page follows `state.filter`).
    css_class
        Class of the root widget, for browser tests and styling.

    Each tile is the (kh, kw) kernel slice `kernel[:, :, channel, filter]`, upscaled so 3×3 cells stay crisp,
    coloured with a diverging map symmetric around 0 over ALL of the layer's kernels (every channel and page
    shares one scale, so tiles can be compared). For layers fed 3 channels, `rgb = True` shows each filter's
    three channel slices as one colour tile. Clicking a tile selects that filter.
    """

    rgb = traitlets.Bool(False, help="Show each filter's 3 input-channel kernels as one colour tile.")
    _observed_traits = ("layer", "channel", "filter")
    _tile_word = "filter"

    def __init__(self, state_or_model: Any, *, page_size: int = 64, css_class: str = "cnnviz-weight-grid",
                 width_px: int = 420):
        # ((layer, weights version), kernel, bias, max |w|, max |w| per input channel)
        self._kernel_cache: tuple[tuple, np.ndarray, np.ndarray, float, np.ndarray] | None = None
        super().__init__(state_or_model, page_size=page_size, css_class=css_class, width_px=width_px)

    def _extra_controls(self) -> list[ipywidgets.Widget]:
        self.rgb_toggle = ipywidgets.ToggleButton(value=False, description="RGB view",
                                                  tooltip="the filter's 3 input-channel kernels as one colour tile")
        self.rgb_toggle.add_class("cnnviz-rgb-toggle")
        self.link((self.rgb_toggle, "value"), (self, "rgb"))
        return [self.rgb_toggle]

    @traitlets.observe("rgb")
    def _on_rgb_change(self, _change: traitlets.Bunch) -> None:
        self._sync()

    # -- what to draw ----------------------------------------------------------------------------------

    def _tile_count(self) -> int | None:
        return self.state.n_filters() if self.state.layer_kind() == "conv" else None

    def _can_rgb(self) -> bool:
        return self.state.layer_kind() == "conv" and self.state.n_channels() == 3

    def _rgb_shown(self) -> bool:
        return self.rgb and self._can_rgb()

    def _message(self) -> str:
        layer = self.state.layer
        if self.state.layer_kind() != "conv":
            node = self.state.graph.node(layer)
            return f"{layer} ({node.class_name}) has no weights: pick a convolution layer to see its filters."
        note = self.state.weights_note()
        return "" if note == "Conv2D kernel" else note

    def _picture_key(self) -> tuple:
        rgb = self._rgb_shown()
        self.rgb_toggle.layout.display = None if self._can_rgb() else "none"
        return (self.state.layer, None if rgb else self.state.channel, rgb, self._weights_version)

    def _kernel(self) -> tuple[np.ndarray, np.ndarray, float, np.ndarray]:
        """(kernel (kh, kw, c_in, c_out), bias (c_out,), max |w| over the layer, max |w| per input channel)."""
        layer = self.state.layer
        key = (layer, self._weights_version)
        if self._kernel_cache is None or self._kernel_cache[0] != key:
            kernel, bias = self.state.weights(layer)
            magnitude = np.abs(kernel)
            per_channel = magnitude.max(axis=(0, 1, 3))  # for the RGB view: each colour scaled on its own
            self._kernel_cache = (key, kernel, bias, float(per_channel.max()), per_channel)
            self._robust = float(np.percentile(magnitude, ROBUST_PERCENTILE))
        return self._kernel_cache[1:]

    def weight_scale(self) -> tuple[float, str]:
        """Half width of the symmetric colour range of the current layer's weights, and that said in words.

        The largest |w| unless a few weights are much larger than the rest (max > `ROBUST_FACTOR` × the
        `ROBUST_PERCENTILE`th percentile of |w|, typical of deep layers, whose tiles would otherwise look
        blank): then that percentile, and the few larger weights show at full colour.
        """
        _, _, magnitude, _ = self._kernel()
        if self._robust > 0 and magnitude > ROBUST_FACTOR * self._robust:
            return self._robust, (f"symmetric, ±{format_number(self._robust)} = the {ROBUST_PERCENTILE:g}th "
                                  f"percentile of |w| (the largest, {format_number(magnitude)}, would leave "
                                  "the tiles blank; larger weights show at full colour)")
        return _nonzero(magnitude), f"symmetric over all {self.state.layer} kernels"

    def channel_meaning(self, channel: int | None = None) -> str:
        """Words for input channel `channel` (default `state.channel`) of the current layer's filters."""
        channel = self.state.channel if channel is None else channel
        previous = self.state.previous_layer()
        if previous != self.state.input_layer:
            return f"map {channel} of {previous}"
        names = self.state.fed_channel_names()
        mode = self.state.model_input.preprocess
        if names is None:
            return f"channel {channel} of the fed input ({mode} preprocessing)"
        if names == ("B", "G", "R"):  # worth saying: channel 0 is not red
            return f"{names[channel]} of the fed input: {mode} preprocessing feeds {', '.join(names)}"
        return f"{names[channel]} of the input image"

    def rgb_mapping(self) -> tuple[list[int], str]:
        """Which fed channel goes to red, green and blue in the RGB view, and that said in words."""
        names = self.state.fed_channel_names() if self.state.previous_layer() == self.state.input_layer else None
        if names is None or len(names) != 3:
            return [0, 1, 2], "red = input channel 0, green = 1, blue = 2"
        order = [names.index(colour) for colour in "RGB"]
        words = ", ".join(f"{colour} = fed channel {c} ({names[c]})"
                          for colour, c in zip(("red", "green", "blue"), order, strict=True))
        return order, words

    def _draw(self, shown: list[int]) -> None:
        kernel, bias, _, per_channel = self._kernel()
        first, last = shown[0], shown[-1] + 1
        layer, n = self.state.layer, kernel.shape[3]
        factor = max(1, math.ceil(_KERNEL_TILE_PX / max(kernel.shape[:2])))
        page_words = f"filters {first}–{last - 1} of {n}"
        if self._rgb_shown():
            order, words = self.rgb_mapping()
            units = [render.normalize(kernel[:, :, c, first:last], "symmetric",
                                      value_range=(-_nonzero(per_channel[c]), _nonzero(per_channel[c])))[0]
                     for c in order]
            tiles = render.apply_colormap(np.stack(units, axis=-1), "grey")  # grey's table: unit -> uint8 as is
            slices = kernel[:, :, :, first:last]
            title = f"{layer} filters, RGB view ({words}; each colour symmetric, grey = 0) · {page_words}"
            colorbar = None
        else:
            channel = self.state.channel
            scale, scale_words = self.weight_scale()
            unit, _ = render.normalize(kernel[:, :, channel, first:last], "symmetric", value_range=(-scale, scale))
            tiles = render.apply_colormap(unit, _WEIGHT_CMAP)
            slices = kernel[:, :, channel, first:last]
            title = (f"{layer} filters at input channel {channel} ({self.channel_meaning(channel)}) · "
                     f"{page_words} · {scale_words}")
            colorbar = (_WEIGHT_CMAP, -scale, scale)
        mosaic = render.tile_maps(render.scale_up(tiles, factor), indices=shown, pad=_WEIGHT_PAD,
                                  pad_value=_WEIGHT_PAD_GREY, cols=full_rows(len(shown)))
        flat = slices.reshape(-1, last - first)
        lows, highs = flat.min(axis=0), flat.max(axis=0)
        tooltips = [f"filter {i}: min {format_number(lo)}, max {format_number(hi)}, bias {format_number(bias[i])}"
                    for i, lo, hi in zip(shown, lows, highs, strict=True)]
        self.figure.show(mosaic, title=title, tooltips=tooltips, colorbar=colorbar, colorbar_label="weight",
                         highlight=self.state.filter)

    def _side_parts(self, css_class: str) -> list[ipywidgets.Widget]:
        # Beside the grid: the selected filter whole, its kernel for every input channel; a click there picks
        # that input channel.
        self.detail = MosaicFigure(css_class=f"{css_class}-detail", width_px=200, colorbar=False)
        self.on_tile_click(self.detail, self._on_channel_click)
        self.detail.layout.flex = "2 1 0%"
        self.figure.layout.flex = "3 1 0%"
        return [self.detail]

    def _on_channel_click(self, channel: int) -> None:
        self.state.channel = channel

    def _draw_side(self, picture_key: tuple) -> None:
        state = self.state
        if not self.part_changed("side", (state.layer, state.filter, state.channel, self._rgb_shown(),
                                          self._weights_version)):
            return
        kernel, _, _, _ = self._kernel()
        f, n_in = state.filter, kernel.shape[2]
        shown = list(range(min(n_in, self.page_size)))
        scale, _ = self.weight_scale()
        factor = max(1, math.ceil(_KERNEL_TILE_PX / max(kernel.shape[:2])))
        unit, _ = render.normalize(kernel[:, :, shown, f], "symmetric", value_range=(-scale, scale))
        tiles = render.scale_up(render.apply_colormap(unit, _WEIGHT_CMAP), factor)
        # no empty slot where the count allows (3 fed channels: one row; 8: 4 × 2), as in the grid beside it
        mosaic = render.tile_maps(tiles, indices=shown, cols=full_rows(len(shown)), pad=_WEIGHT_PAD,
                                  pad_value=_WEIGHT_PAD_GREY)
        which = f"all {n_in}" if len(shown) == n_in else f"the first {len(shown)} of {n_in}"
        tooltips = [f"input channel {c}: min {format_number(float(kernel[:, :, c, f].min()))}, "
                    f"max {format_number(float(kernel[:, :, c, f].max()))}" for c in shown]
        self.detail.show(mosaic, title=f"filter {f} whole: its kernel for {which} input channels "
                                       "(click one to pick it)", tooltips=tooltips,
                         highlight=state.channel)


class ActivationGrid(PagedMosaicView):
    """The current layer's activation maps for the current image, as one mosaic.

    Parameters
    ----------
    state_or_model
        A `ModelState` to follow (shared with other views), or a model / preset name to make one.
    page_size
        Maps per page; a layer with more is paged (the page follows `state.filter`).
    max_tile_px
        Maps are average-pooled (by a whole factor) to at most this many pixels a side before they are
        normalised and sent: 8 columns of 80 px are about 1.5 screen pixels per picture pixel in a 420 px
        figure, and a 64-map page of block1 stays under 300 KB of PNG.
    css_class
        Class of the root widget.

    Uses `state.normalization` and `state.colormap`. The input layer shows the fed channels (after
    preprocessing); pooling layers show their output maps. Clicking a tile selects that channel as the filter.
    """

    _observed_traits = ("layer", "image", "normalization", "colormap", "filter", "channel_order")
    _tile_word = "channel"

    def __init__(self, state_or_model: Any, *, page_size: int = 64, max_tile_px: int = 80,
                 css_class: str = "cnnviz-activation-grid", width_px: int = 420):
        if isinstance(max_tile_px, bool) or not isinstance(max_tile_px, int) or max_tile_px < 1:
            raise CnnvizError(f"max_tile_px must be an integer >= 1; got {max_tile_px!r}")
        self.max_tile_px = max_tile_px
        # What was drawn for the last few (image, layer, page, look)s: going back to a recent image redraws
        # from these instead of pooling, colouring and encoding again (the encodings live on in MosaicFigure).
        self._extremes: LruCache[tuple[np.ndarray, np.ndarray]] = LruCache(64)  # (image, layer) -> min, max
        self._mosaics: LruCache[tuple[render.Mosaic, np.ndarray]] = LruCache(RECENT_PICTURES)
        self._details: LruCache[tuple[render.Mosaic, np.ndarray]] = LruCache(RECENT_PICTURES)
        self._photos: LruCache[bytes] = LruCache(RECENT_PICTURES)
        super().__init__(state_or_model, page_size=page_size, css_class=css_class, width_px=width_px)

    def _tile_count(self) -> int | None:
        return self.state.n_filters()

    def _message(self) -> str:
        """A word where the colour map and the scaling do not pair well (the picture would mislead)."""
        state = self.state
        cmap, mode = state.colormap, state.normalization
        if cmap == "coolwarm" and mode != "symmetric":
            return ("coolwarm is a two-sided map: with this scaling its blue end is the lowest value (often 0 after "
                    "a ReLU), not a negative one. Pick “symmetric” scaling to make white = 0, or a one-sided map.")
        if mode == "symmetric":
            lows, _ = self._map_extremes(state.activation())
            if float(lows.min()) >= 0:
                return ("Every value of this layer is ≥ 0 (after a ReLU), so symmetric scaling leaves the lower "
                        "half of the colours unused; “per layer” or “per map” shows more detail.")
        return ""

    def _side_parts(self, css_class: str) -> list[ipywidgets.Widget]:
        # What CNN Explainer and TensorBoard give beside the grid: the selected map large, and the photo fed.
        self._photo_input: Any = None
        self._page_range: tuple[float, float] | None = None
        self.detail = MosaicFigure(css_class=f"{css_class}-detail", width_px=200, colorbar=False,
                                   hover_labels=False)
        self.photo_caption = ipywidgets.HTML("")
        self.photo_caption.add_class("cnnviz-mosaic-title")
        self.photo = ipywidgets.Image(value=render.encode_png(np.full((1, 1, 3), 255, np.uint8)), format="png",
                                      layout=ipywidgets.Layout(width="100%", max_height="32vh", object_fit="contain",
                                                               object_position="left top"))
        self.photo.add_class(f"{css_class}-photo")
        self.side = ipywidgets.VBox([self.detail, self.photo_caption, self.photo],
                                    layout=ipywidgets.Layout(flex="2 1 0%", min_width="200px"))
        self.figure.layout.flex = "3 1 0%"
        return [self.side]

    def _draw_side(self, picture_key: tuple) -> None:
        state = self.state
        f = state.filter
        if not self.part_changed("side", (picture_key, f)):
            return
        maps = state.activation()
        mode = state.normalization
        # the page's range where the whole layer shares one (the tile and the large view then match); per map
        # the large view takes its own map's range, like its tile
        value_range = None if mode == "per_map" else self._page_range
        fits = max(maps.shape[:2]) <= DETAIL_SIDE  # then no pooling pass at all (it is most of a step's cost)
        mosaic, ranges = self._details.get(
            (*self._maps_key(), f, mode, state.colormap, value_range),
            lambda: render.render_mosaic(maps, "per_map" if value_range is None else mode, state.colormap,
                                         max_side=None if fits else DETAIL_SIDE, indices=[f], pad=0,
                                         value_range=value_range))
        height, width = maps.shape[:2]
        lo, hi = float(ranges[0, 0]), float(ranges[0, 1])
        self.detail.show(mosaic, title=f"{self.channel_label(f)} of {state.layer}, large ({width}×{height}; "
                                       f"{format_number(lo)} .. {format_number(hi)})",
                         tooltips=[f"{self.channel_label(f)}: {format_number(lo)} .. {format_number(hi)}"])
        if self._photo_input is not state.model_input:
            self._photo_input = state.model_input
            picture = state.model_input.picture
            self.photo.value = self._photos.get(state.image_key, lambda: render.encode_png(picture))
            self.photo_caption.value = (f"<b>the input: {html.escape(state.image_name or 'the image')} "
                                        f"({picture.shape[1]}×{picture.shape[0]} as fed)</b>")

    def _picture_key(self) -> tuple:
        # id() of the prepared input names the image; holding the object keeps that id from being reused
        self._drawn_input = self.state.model_input
        return (self.state.layer, id(self._drawn_input), self.state.normalization, self.state.colormap,
                self.state.channel_order, self._weights_version)

    def _order(self) -> list[int] | None:
        # state.channel_order sorts the tiles (strongest first); tiles and tooltips keep the true indices
        return None if self.state.channel_order == "index" else self.state.channel_ranking()

    def _order_key(self) -> Any:
        order = self.state.channel_order
        return None if order == "index" else (order, id(self.state.model_input))

    def _on_state_change(self, change: traitlets.Bunch) -> None:
        order = self._order()
        if change["name"] == "channel_order" and order is not None and self.active and (
                order.index(self.state.filter) >= self.page_size):
            # sorting shows the strongest first: the selection, which must stay on screen, moves to the top
            self.state.filter = order[0]
        self._sync()

    def channel_label(self, index: int) -> str:
        """"channel 5", or "channel 0 (B)" for the model input, whose channel meanings are known."""
        if self.state.layer == self.state.input_layer:
            names = self.state.fed_channel_names()
            if names is not None and index < len(names):
                return f"channel {index} ({names[index]})"
        return f"channel {index}"

    def _maps_key(self) -> tuple:
        """What the shown layer's maps are a function of: the kept pictures and ranges are found by it."""
        return (self.state.image_key, self.state.layer, self._weights_version)

    def _map_extremes(self, maps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Unpooled min and max of every map of the layer, once per (layer, image): the tooltips' values."""
        # rows first, then columns: both reductions run over contiguous memory (4x faster than axis=(0, 1))
        return self._extremes.get(self._maps_key(),
                                  lambda: (maps.min(axis=0).min(axis=0), maps.max(axis=0).max(axis=0)))

    def _draw(self, shown: list[int]) -> None:
        state = self.state
        maps = state.activation()
        mode, cmap = state.normalization, state.colormap
        # no empty slot where the count allows (3 fed channels: one row, named in the title; 8 maps: 4 × 2)
        mosaic, ranges = self._mosaics.get(
            (*self._maps_key(), mode, cmap, tuple(shown), self.max_tile_px),
            lambda: render.render_mosaic(maps, mode, cmap, max_side=self.max_tile_px, indices=shown,
                                         cols=full_rows(len(shown))))
        self._page_range = (float(ranges[0, 0]), float(ranges[0, 1]))
        lows, highs = self._map_extremes(maps)
        tooltips = [f"{self.channel_label(i)}: min {format_number(lows[i])}, max {format_number(highs[i])}"
                    for i in shown]
        layer, n = state.layer, maps.shape[2]
        what = "fed input (after preprocessing)" if layer == state.input_layer else "activations"
        height, width = maps.shape[:2]
        which = (f"channels {shown[0]}–{shown[-1]} of {n}" if state.channel_order == "index" else
                 f"{n} channels by {state.channel_order} (strongest first), ranks {self.page * self.page_size + 1}–"
                 f"{self.page * self.page_size + len(shown)}")
        title = (f"{layer} {what} for {state.image_name or 'the image'} · {width}×{height} maps · "
                 f"{which} · {mode.replace('_', ' ')}")
        if layer == state.input_layer:  # say which colour each tile is: channel 0 is not red after caffe
            title += " · tiles: " + ", ".join(self.channel_label(i) for i in shown)
        if mode == "per_map":
            self.figure.show(mosaic, title=title, tooltips=tooltips, colorbar=(cmap, 0.0, 1.0),
                             colorbar_ends=("tile min", "tile max"),
                             colorbar_label="each tile its own range (hover one)",
                             highlight=state.filter)
        else:
            lo, hi = float(ranges[0, 0]), float(ranges[0, 1])
            label = ("activation, one range for the whole layer" if mode == "per_layer"
                     else "activation, symmetric around 0")
            self.figure.show(mosaic, title=title, tooltips=tooltips, colorbar=(cmap, lo, hi),
                             colorbar_label=label, highlight=state.filter)


def _nonzero(magnitude: float) -> float:
    """A symmetric range's half width; 1 for an all-zero kernel so the range stays valid (it shows as 0)."""
    return float(magnitude) if magnitude > 0 else 1.0
