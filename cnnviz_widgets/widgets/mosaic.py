"""`MosaicFigure`: one bqplot Figure showing one mosaic picture, with hover labels, clicks and a colour bar.

A grid of N maps is drawn as ONE `bqplot.Image` mark (not N figures, not a HeatMap: both are many times slower
in the browser). The mark's scales run over grid cells, x in [0, cols] and y in [0, rows], so a click in data
coordinates names its cell directly. Views (WeightGrid, ActivationGrid, FilterEffect) render the mosaic with
`cnnviz_widgets.render` and hand it here; this module only ships pictures and events.
"""

from __future__ import annotations

import contextlib
import html
import itertools
from collections.abc import Callable, Sequence
from typing import Any

import bqplot
import ipywidgets
import numpy as np

from cnnviz_widgets.errors import CnnvizError
from cnnviz_widgets.lru import LruCache
from cnnviz_widgets.pictures import render
from cnnviz_widgets.widgets.parts import close_all
from cnnviz_widgets.widgets.theme import CAPTIONS_CSS, HIGHLIGHT_COLOR, THEME_CSS

_MARGIN = dict(top=2, bottom=2, left=2, right=2)  # no axes on the mosaic: keep the picture edge to edge
_COLORBAR_HEIGHT_PX = 74  # strip + tick labels + caption underneath
_COLORBAR_MARGIN = dict(top=4, bottom=48, left=40, right=40)  # room for end labels ("tile max") and the caption
_COLORBAR_LABEL_OFFSET = "36px"  # the caption below the tick labels, not on them
_MAX_HEIGHT = "72vh"  # a tall picture stops growing here, so the whole of it fits on the screen
_figure_ids = itertools.count()
_KEPT_ENCODINGS = 6  # encodings kept by picture identity (views keep as many recent pictures)


class MosaicFigure(ipywidgets.VBox):
    """One bqplot Figure showing one mosaic picture (a single bqplot Image mark), a title, an optional colour bar.

    Parameters
    ----------
    css_class
        Added to the root box (browser tests find the view by it); the parts get "cnnviz-mosaic-title",
        "cnnviz-mosaic-figure" and "cnnviz-colorbar".
    width_px
        Smallest width of the figure in the page. It grows with its container (the notebook cell, the tab, its
        share of a row) as long as the whole picture fits in ~3/4 of the window's height; its height always
        follows the picture's aspect ratio (one CSS rule, see `aspect_ratio`).
    colorbar
        Whether a colour bar may be shown (it is drawn only when `show` gets one).
    """

    def __init__(self, *, css_class: str | None = None, width_px: int = 420, colorbar: bool = True,
                 hover_labels: bool = True):
        self.width_px = int(width_px)
        self.hover_labels = bool(hover_labels)  # an export writes the labels under the tiles only where they hover
        self.mosaic: render.Mosaic | None = None
        self.redraws = 0
        self._click_callbacks: list[Callable[[int], None]] = []
        self._last_drawn: tuple | None = None  # what the browser shows now, to skip identical redraws
        self._last_pixels: tuple[np.ndarray, str, bytes] | None = None  # (picture, format, its encoding)
        # (id of a picture, format) -> (the picture, its encoding); holding the array keeps its id from reuse
        self._encodings: LruCache[tuple[np.ndarray, bytes]] = LruCache(_KEPT_ENCODINGS)
        self.aspect_ratio = 1.0
        self._size_class = f"cnnviz-fig-{next(_figure_ids)}"
        # The figure's size lives in one CSS rule: width of its container, height from the picture's aspect
        # ratio, no taller than _MAX_HEIGHT. An ipywidgets Layout has no aspect-ratio, a <style> can.
        self._size_style = ipywidgets.HTML("", layout=ipywidgets.Layout(display="none"))
        self._size_style.add_class("cnnviz-size-style")

        self._picture_layout = ipywidgets.Layout()
        self.title = ipywidgets.HTML("")
        self.title.add_class("cnnviz-mosaic-title")
        self._x_scale = bqplot.LinearScale(min=0.0, max=1.0, allow_padding=False)
        self._y_scale = bqplot.LinearScale(min=0.0, max=1.0, allow_padding=False)
        scales = {"x": self._x_scale, "y": self._y_scale}
        self.image_mark = bqplot.Image(image=_blank_image(), x=[0, 1], y=[0, 1], scales=scales)
        # The Image mark has no tooltips and no hover events (bqplot issue 1293): an invisible square marker
        # per tile carries the hover label, and its clicks select like clicks on the picture.
        self._hover_marks = bqplot.Scatter(
            x=[], y=[], names=[], display_names=False, marker="square", opacities=[0.0], scales=scales,
            tooltip=bqplot.Tooltip(fields=["name"]), interactions={"hover": "tooltip"},
            selected_style={}, unselected_style={},
        )
        self.image_mark.on_element_click(self._on_image_click)
        self._hover_marks.on_element_click(self._on_marker_click)
        self._highlighted: int | None = None
        self._outline = bqplot.Lines(x=[0.0], y=[0.0], scales=scales, colors=[HIGHLIGHT_COLOR], stroke_width=3,
                                     visible=False, interactions={}, apply_clip=False)
        self.figure = bqplot.Figure(
            marks=[self.image_mark, self._outline, *([self._hover_marks] if hover_labels else [])], axes=[],
            fig_margin=dict(_MARGIN), display_toolbar=False,  # its pan/zoom would take over tile clicks
            padding_x=0.0, padding_y=0.0, min_aspect_ratio=0.01, max_aspect_ratio=100.0,
            layout=ipywidgets.Layout(width="100%", min_width=f"{self.width_px}px"),
        )
        self.figure.add_class("cnnviz-mosaic-figure")
        self.figure.add_class(self._size_class)
        self._set_aspect(1.0)

        self._colorbar_figure: bqplot.Figure | None = None
        self._colorbar_cmap: str | None = None
        self.captions = ipywidgets.HTML("", layout=ipywidgets.Layout(display="none"))
        self.captions.add_class("cnnviz-mosaic-captions")
        self.captions.add_class(self._size_class)
        children: list[ipywidgets.Widget] = [self._size_style, self.title, self.figure, self.captions]
        if colorbar:
            self._bar_scale = bqplot.LinearScale(min=0.0, max=1.0, allow_padding=False)
            self._bar_mark = bqplot.Image(image=_blank_image(), x=[0, 1], y=[0, 1],
                                          scales={"x": self._bar_scale, "y": bqplot.LinearScale(min=0, max=1)})
            self._bar_axis = bqplot.Axis(scale=self._bar_scale, side="bottom",
                                         grid_lines="none", tick_format=".3~g", label_offset=_COLORBAR_LABEL_OFFSET)
            self._colorbar_figure = bqplot.Figure(
                marks=[self._bar_mark], axes=[self._bar_axis], fig_margin=dict(_COLORBAR_MARGIN),
                display_toolbar=False,
                padding_x=0.0, padding_y=0.0, min_aspect_ratio=0.01, max_aspect_ratio=100.0,
                layout=ipywidgets.Layout(width="100%", max_width=f"calc({_MAX_HEIGHT} * 2)",
                                         min_width=f"{self.width_px}px", height=f"{_COLORBAR_HEIGHT_PX}px"),
            )
            self._colorbar_figure.add_class("cnnviz-colorbar")
            # Shown only once it has values: a bqplot figure laid out while hidden measures 0 px, and the
            # browser then logs negative widths for its shapes.
        super().__init__(children=children, layout=ipywidgets.Layout(width="100%", flex="1 1 0%",
                                                                       min_width=f"{self.width_px}px"))
        if css_class:
            self.add_class(css_class)

    # -- drawing ---------------------------------------------------------------------------------------

    def show(self, mosaic: render.Mosaic, *, title: str, tooltips: Sequence[str] | None = None,
             colorbar: tuple[str, float, float] | None = None, fmt: str = "png",
             colorbar_label: str = "", colorbar_ends: tuple[str, str] | None = None,
             highlight: int | None = None, captions: Sequence[str] | None = None) -> None:
        """Draw `mosaic.image`, set the title, hover labels, captions and colour bar, in one synced update.

        Parameters
        ----------
        mosaic
            What to draw; its grid (rows, cols, indices) maps clicks back to map indices.
        title
            Plain text (escaped) shown above the figure.
        tooltips
            One hover label per shown tile, in tile order (len(mosaic.indices)); default "map <index>".
        colorbar
            (colour map name, value shown at 0, value shown at 1), or None for no colour bar.
        fmt
            "png" (lossless, compress level 1: fast) or "jpeg" (smaller, for photos).
        colorbar_label
            Caption under the colour bar (e.g. "weight value").
        colorbar_ends
            Words for the two ends instead of numbers, e.g. ("tile min", "tile max") when every tile has its
            own range.
        highlight
            Map index to outline (see `highlight`); None keeps the current one if this mosaic still shows it.
        captions
            For a one-row mosaic: one piece of HTML per tile (the caller escapes text), shown under its tile,
            so what a hover label says is also on the page (and in screenshots). None: no captions.
        """
        labels = [f"map {i}" for i in mosaic.indices] if tooltips is None else [str(t) for t in tooltips]
        if len(labels) != len(mosaic.indices):
            raise CnnvizError(f"tooltips must have one label per tile ({len(mosaic.indices)}); "
                                     f"got {len(labels)}")
        if fmt not in ("png", "jpeg"):
            raise CnnvizError(f"fmt must be 'png' or 'jpeg'; got {fmt!r}")
        if captions is not None and (mosaic.rows != 1 or len(captions) != len(mosaic.indices)):
            raise CnnvizError(f"captions need a one-row mosaic and one caption per tile ({len(mosaic.indices)} "
                              f"tiles in {mosaic.rows} rows); got {len(captions)}")
        encoded = self._encoded(mosaic.image, fmt)
        bar = None if colorbar is None else (str(colorbar[0]), float(colorbar[1]), float(colorbar[2]))
        ends = None if colorbar_ends is None else (str(colorbar_ends[0]), str(colorbar_ends[1]))
        notes = None if captions is None else tuple(str(c) for c in captions)
        drawn = (encoded, title, tuple(labels), bar, mosaic.rows, mosaic.cols, colorbar_label, ends, notes)
        self.mosaic = mosaic  # clicks use the newest grid even when the picture is unchanged
        wanted = self._highlighted if highlight is None else highlight
        if drawn == self._last_drawn:
            if wanted != self._highlighted:  # same picture and grid: only the outline may move
                self.highlight(wanted)
            return
        self._last_drawn = drawn
        widgets = [self.image_mark, self._hover_marks, self._outline, self._x_scale, self._y_scale, self.figure,
                   self.title, self._size_style, self.captions]
        if self._colorbar_figure is not None:
            widgets += [self._bar_mark, self._bar_scale, self._bar_axis, self._colorbar_figure]
        with contextlib.ExitStack() as stack:
            for widget in widgets:
                stack.enter_context(widget.hold_sync())
            self._draw_picture(mosaic, encoded, fmt)
            self._draw_hover_marks(mosaic, labels)
            self.title.value = f"<b>{html.escape(title)}</b>"
            self._draw_captions(notes, mosaic.cols)
            self._draw_colorbar(bar, colorbar_label, ends)
            self._draw_outline(wanted)
        self.redraws += 1

    def _encoded(self, picture: np.ndarray, fmt: str) -> bytes:
        """`picture` encoded as `fmt`, reusing an earlier encoding where possible (encoding is most of a redraw):
        the same picture object as one of the last few shown (a view showing a picture it kept, e.g. for an
        image the user comes back to: views never change a picture once rendered), or the same pixels as the
        last one (a view re-sending one of its pictures unchanged next to a changed one)."""
        kept = self._encodings.peek((id(picture), fmt))
        if kept is not None and kept[0] is picture:
            self._encodings.touch((id(picture), fmt))
            return kept[1]
        last = self._last_pixels
        if last is not None and last[1] == fmt and last[0].shape == picture.shape and np.array_equal(last[0], picture):
            return last[2]
        encoded = render.encode_png(picture) if fmt == "png" else render.encode_jpeg(picture)
        self._last_pixels = (picture.copy(), fmt, encoded)
        self._encodings.put((id(picture), fmt), (picture, encoded))
        return encoded

    def _set_aspect(self, aspect: float) -> None:
        """Width / height of the figure: the one place its shape is decided (CSS rule and bqplot's own limits)."""
        self.aspect_ratio = aspect
        # bqplot keeps the picture's shape inside its box even if the browser gives it another one
        if aspect > self.figure.max_aspect_ratio:  # bqplot refuses min > max even for a moment
            self.figure.max_aspect_ratio = self.figure.min_aspect_ratio = aspect
        else:
            self.figure.min_aspect_ratio = self.figure.max_aspect_ratio = aspect
        rule = (f".{self._size_class}.cnnviz-mosaic-figure {{ aspect-ratio: {aspect:.5f}; height: auto; "
                f"max-width: calc({_MAX_HEIGHT} * {aspect:.5f}); }}")
        rule += f" .{self._size_class}.cnnviz-mosaic-captions {{ max-width: calc({_MAX_HEIGHT} * {aspect:.5f}); }}"
        self._size_style.value = f"<style>{THEME_CSS}{CAPTIONS_CSS}{rule}</style>"

    def highlight(self, index: int | None) -> None:
        """Outline the tile of map `index` (None, or a map this mosaic does not show: no outline).

        The outline is a separate line mark over the picture, so moving the selection inside a page sends a
        few numbers instead of a new picture.
        """
        with self._outline.hold_sync():
            self._draw_outline(index)

    @property
    def highlighted(self) -> int | None:
        """The map index whose tile is outlined, or None."""
        return self._highlighted if self._outline.visible else None

    def _draw_outline(self, index: int | None) -> None:
        self._highlighted = index
        mosaic = self.mosaic
        if index is None or mosaic is None or index not in mosaic.indices:
            self._outline.visible = False
            return
        y0, x0, y1, x1 = mosaic.tile_box(index)
        height, width = mosaic.image.shape[:2]
        # pixel box -> data coordinates (x over [0, cols], y over [0, rows] upwards), widened by the padding
        half = mosaic.pad / 2
        left, right = (x0 - half) * mosaic.cols / width, (x1 + half) * mosaic.cols / width
        top, bottom = mosaic.rows - (y0 - half) * mosaic.rows / height, mosaic.rows - (y1 + half) * mosaic.rows / height
        left, right = max(left, 0.0), min(right, float(mosaic.cols))  # on the figure's edge, not beyond it
        bottom, top = max(bottom, 0.0), min(top, float(mosaic.rows))
        self._outline.x = [left, right, right, left, left]
        self._outline.y = [top, top, bottom, bottom, top]
        self._outline.visible = True

    def _draw_picture(self, mosaic: render.Mosaic, encoded: bytes, fmt: str) -> None:
        # A new ipywidgets.Image each time: changing .value of the shown one does not redraw the mark. The mark
        # never reads the Image's layout, so all of a figure's pictures share one (a new Layout widget per
        # picture was a third of a redraw's widget traffic).
        old = self.image_mark.image
        self.image_mark.image = ipywidgets.Image(value=encoded, format=fmt, layout=self._picture_layout)
        if old.layout is not self._picture_layout:
            old.layout.close()  # the placeholder brought its own
        old.close()
        self._x_scale.min, self._x_scale.max = 0.0, float(mosaic.cols)
        self._y_scale.min, self._y_scale.max = 0.0, float(mosaic.rows)
        self.image_mark.x, self.image_mark.y = [0, mosaic.cols], [0, mosaic.rows]
        height, width = mosaic.image.shape[:2]
        plot_width = self.width_px - _MARGIN["left"] - _MARGIN["right"]
        plot_height = max(1, round(plot_width * height / width))  # keep the picture's aspect ratio
        aspect = self.width_px / (plot_height + _MARGIN["top"] + _MARGIN["bottom"])
        if aspect != self.aspect_ratio:
            self._set_aspect(aspect)
        # enlarged pictures (kernels) keep crisp cells; pictures shrunk to fit are smoothed, not aliased
        self.image_mark.pixelated = width <= plot_width

    def _draw_hover_marks(self, mosaic: render.Mosaic, labels: list[str]) -> None:
        rows, cols = np.divmod(np.arange(len(mosaic.indices)), mosaic.cols)
        plot_width = self.width_px - _MARGIN["left"] - _MARGIN["right"]
        cell_px = plot_width / mosaic.cols * min(1.0, mosaic.tile_height / max(mosaic.tile_width, 1))
        self._hover_marks.x = cols + 0.5
        self._hover_marks.y = mosaic.rows - 1 - rows + 0.5  # row 0 is at the top, y grows upwards
        self._hover_marks.names = np.array(labels, dtype=object)
        self._hover_marks.default_size = max(1, int(cell_px * 0.9) ** 2)  # marker size is an area in px²

    def _draw_captions(self, notes: tuple[str, ...] | None, cols: int) -> None:
        if not notes:
            self.captions.layout.display = "none"
            self.captions.value = ""
            return
        cells = "".join(f"<div>{note}</div>" for note in notes)
        self.captions.value = (f'<div class="cnnviz-caption-grid" style="grid-template-columns: '
                               f'repeat({cols}, minmax(0, 1fr))">{cells}</div>')
        self.captions.layout.display = None

    @property
    def caption_texts(self) -> list[str]:
        """The HTML under each tile, in tile order ([] when none)."""
        notes = None if self._last_drawn is None else self._last_drawn[8]
        return list(notes or ())

    def _draw_colorbar(self, bar: tuple[str, float, float] | None, label: str,
                       ends: tuple[str, str] | None) -> None:
        if self._colorbar_figure is None:
            return
        if bar is None:
            self.children = [child for child in self.children if child is not self._colorbar_figure]
            return
        cmap, lo, hi = bar
        if cmap != self._colorbar_cmap:
            strip = np.repeat(render.colormap_lut(cmap)[None, :, :], 8, axis=0)  # (8, 256, 3)
            old = self._bar_mark.image
            self._bar_mark.image = ipywidgets.Image(value=render.encode_png(strip), format="png")
            old.layout.close()  # an Image brings its own Layout widget
            old.close()
            self._colorbar_cmap = cmap
        if not hi > lo:  # a flat stack: still a readable axis
            hi = lo + 1.0
        self._bar_scale.min, self._bar_scale.max = lo, hi
        self._bar_mark.x = [lo, hi]
        ticks = [lo, hi] if ends is not None or not lo < 0 < hi else [lo, 0.0, hi]
        self._bar_axis.tick_values = np.array(ticks, dtype=float)
        # the front end looks tick labels up by the tick value as JavaScript prints it
        self._bar_axis.tick_labels = {} if ends is None else {_js_number(lo): ends[0], _js_number(hi): ends[1]}
        self._bar_axis.label = label
        if self._colorbar_figure not in self.children:
            self.children = [*self.children, self._colorbar_figure]

    @property
    def colorbar_values(self) -> tuple[str, float, float] | None:
        """(colour map, value at its low end, value at its high end) of the shown colour bar, or None."""
        return None if self._last_drawn is None else self._last_drawn[3]

    @property
    def colorbar_label(self) -> str:
        """The caption under the shown colour bar ("" when none)."""
        return "" if self._last_drawn is None else self._last_drawn[6]

    @property
    def colorbar_ends(self) -> tuple[str, str] | None:
        """Words shown at the colour bar's ends instead of numbers (e.g. "tile min", "tile max"), or None."""
        return None if self._last_drawn is None else self._last_drawn[7]

    @property
    def tooltips(self) -> list[str]:
        """The hover label of each shown tile, in tile order."""
        names = self._hover_marks.names
        return [] if names is None else [str(n) for n in names]

    # -- clicks ----------------------------------------------------------------------------------------

    def on_tile_click(self, callback: Callable[[int], None], remove: bool = False) -> None:
        """Call `callback(map index)` when a tile is clicked (its index from `mosaic.indices`); `remove=True`
        stops calling it."""
        if not remove:
            self._click_callbacks.append(callback)
        elif callback in self._click_callbacks:
            self._click_callbacks.remove(callback)

    def click_tile(self, row: int, col: int) -> None:
        """What a click in grid cell (row, col) does: call the tile-click callbacks, if a tile is there."""
        index = None if self.mosaic is None else self.mosaic.tile_index(int(row), int(col))
        if index is None:
            return
        for callback in list(self._click_callbacks):
            callback(index)

    def _on_image_click(self, _mark: Any, content: dict) -> None:
        data = content.get("data") or {}
        if self.mosaic is None or "click_x" not in data or "click_y" not in data:
            return
        x, y = float(data["click_x"]), float(data["click_y"])
        if not (0 <= x < self.mosaic.cols and 0 <= y < self.mosaic.rows):
            return
        self.click_tile(self.mosaic.rows - 1 - int(y), int(x))

    def _on_marker_click(self, _mark: Any, content: dict) -> None:
        data = content.get("data") or {}
        if self.mosaic is None or data.get("index") is None:
            return
        row, col = divmod(int(data["index"]), self.mosaic.cols)  # markers are in tile order
        self.click_tile(row, col)

    # -- lifetime --------------------------------------------------------------------------------------

    def close(self) -> None:
        """Close the figure, its marks, scales and pictures; forget the click callbacks."""
        self._click_callbacks.clear()
        super().close()
        # The colour bar (until first shown) and the hover marks (with hover_labels=False) may be out of the
        # widget tree, so they are closed on their own.
        for root in (self, self._colorbar_figure, self._hover_marks, self._picture_layout):
            if root is not None:
                close_all(root)


def _js_number(value: float) -> str:
    """How JavaScript's String() prints a number (1.0 -> "1"), for the axis' tick-label lookup."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _blank_image() -> ipywidgets.Image:
    """A 1×1 white PNG: the mark needs a picture before the first `show`."""
    return ipywidgets.Image(value=render.encode_png(np.full((1, 1), 255, np.uint8)), format="png")
