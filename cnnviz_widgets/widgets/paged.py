"""`PagedMosaicView`: the skeleton of the grid views, one layer's maps or filters as one clickable mosaic.

Layers with more tiles than a page holds are paged; the page follows `state.filter` when the selection changes,
so a newly selected tile is on screen. Picking another page only turns the page: the selection stays (the page
label says where it is), so paging through a layer never changes what other views show. The mosaic is drawn
only when its inputs changed (its key, `_picture_key`, and the page); moving the selection within a page only
moves the outline. On a state whose weights change (a `TrainingState`), its `version` is part of every key and
cache key of what is drawn from the weights, and a change of it redraws (see `View._state_traits`).
"""

from __future__ import annotations

import math
from typing import Any

import ipywidgets
import traitlets

from cnnviz_widgets.errors import CnnvizError
from cnnviz_widgets.widgets.mosaic import MosaicFigure
from cnnviz_widgets.widgets.parts import message_line, show_child
from cnnviz_widgets.widgets.view import View, as_state


class PagedMosaicView(View):
    """A layer's maps or filters as one paged, clickable mosaic (`figure`), beside what a subclass shows of the
    selection; the page follows `state.filter` when the selection changes. A subclass names its tiles
    (`_tile_count`, `_order`), what its mosaic depends on (`_picture_key`) and draws a page (`_draw`)."""

    page = traitlets.Int(0, help="Page shown, 0-based: tiles page * page_size .. (page + 1) * page_size - 1.")
    _observed_traits: tuple[str, ...] = ()
    _tile_word = "map"

    def __init__(self, state_or_model: Any, *, page_size: int, css_class: str, width_px: int = 420):
        if isinstance(page_size, bool) or not isinstance(page_size, int) or page_size < 1:
            raise CnnvizError(f"page_size must be an integer >= 1; got {page_size!r}")
        self.state = as_state(state_or_model)
        self.page_size = page_size
        self._syncing = False
        self._followed: tuple | None = None  # (layer, filter, order) the page last followed

        self.figure = MosaicFigure(css_class=f"{css_class}-mosaic", width_px=width_px)
        self.message = message_line()
        self.page_slider = ipywidgets.IntSlider(value=1, min=1, max=1, description="page",
                                                continuous_update=True, layout=ipywidgets.Layout(width="220px"))
        self.page_slider.add_class("cnnviz-page-slider")
        self.page_label = ipywidgets.HTML("")
        self.page_label.add_class("cnnviz-page-label")
        self.controls = ipywidgets.HBox([self.page_slider, self.page_label, *self._extra_controls()])
        self.controls.add_class("cnnviz-view-controls")
        # the mosaic and, beside it, what a subclass shows of the selection (see `_side_parts`)
        self.body = ipywidgets.HBox([self.figure, *self._side_parts(css_class)],
                                    layout=ipywidgets.Layout(width="100%", align_items="flex-start"))
        self.body.add_class("cnnviz-grid-body")
        super().__init__([self.controls, self.message, self.body], css_class=css_class)
        self.on_tile_click(self.figure, self._on_tile_click)
        self.watch(self.page_slider, self._on_page_slider)
        self.follow_state(self._observed_traits)
        with self._computing():
            self._sync()

    # -- hooks for the subclasses ----------------------------------------------------------------------

    def _extra_controls(self) -> list[ipywidgets.Widget]:
        return []

    def _side_parts(self, css_class: str) -> list[ipywidgets.Widget]:
        """Widgets shown to the right of the mosaic (none here)."""
        return []

    def _draw_side(self, picture_key: tuple) -> None:
        """Bring the side parts up to date with the selection (called after each sync that shows the mosaic, with
        the key the mosaic was drawn for)."""

    def _tile_count(self) -> int | None:
        """How many tiles the current layer has, or None when there is nothing to draw (see `_message`)."""
        raise NotImplementedError

    def _message(self) -> str:
        return ""

    def _order(self) -> list[int] | None:
        """The map indices in the order they are tiled, or None for index order."""
        return None

    def _picture_key(self) -> tuple:
        """Everything the picture depends on (besides the page); a redraw happens when it changes."""
        raise NotImplementedError

    def _draw(self, shown: list[int]) -> None:
        """Render tiles `shown` (map indices of one page) into `self.figure`."""
        raise NotImplementedError

    # -- state and paging ------------------------------------------------------------------------------

    @property
    def redraws(self) -> int:
        """How many times this view's picture was actually redrawn."""
        return self.figure.redraws

    @property
    def pages(self) -> int:
        """How many pages the current layer needs (1 when it has nothing to draw)."""
        count = self._tile_count()
        return 1 if count is None else math.ceil(count / self.page_size)

    @property
    def shown(self) -> list[int]:
        """Map indices on the current page."""
        count = self._tile_count() or 0
        order = self._order() if count else None
        first, stop = self.page * self.page_size, min(count, (self.page + 1) * self.page_size)
        return list(range(first, stop)) if order is None else order[first:stop]

    def _place(self, index: int) -> int:
        """Where map `index` is in the tiling order (its index itself, unless `_order` sorts the maps)."""
        order = self._order()
        return index if order is None else order.index(index)

    @traitlets.validate("page")
    def _validate_page(self, proposal: traitlets.Bunch) -> int:
        return max(0, min(int(proposal["value"]), self.pages - 1))

    @traitlets.observe("page")
    def _on_page_change(self, change: traitlets.Bunch) -> None:
        if self._syncing:
            return
        self._sync()  # the user turned the page: the selection stays where it is

    def _on_page_slider(self, change: traitlets.Bunch) -> None:
        if not self._syncing:
            self.page = change["new"] - 1

    def _on_state_change(self, _change: traitlets.Bunch) -> None:
        self._sync()

    def _on_tile_click(self, index: int) -> None:
        self.state.filter = index

    def redraw(self) -> None:
        """Bring the picture up to date with the state (nothing is drawn if it did not change)."""
        self._sync()

    def _sync(self) -> None:
        """Bring page, controls and picture up to date with the state; draw only if the picture changed."""
        if self._syncing or not self.active:
            return
        self._syncing = True
        try:
            count = self._tile_count()
            if count is None:
                self._show_message_only()
                return
            pages = math.ceil(count / self.page_size)
            followed = (self.state.layer, self.state.filter, self._order_key())
            if followed != self._followed:  # a new selection (or layer, or order): show its page
                self.page = self._place(self.state.filter) // self.page_size
                self._followed = followed
            shown = self.shown
            first = self.page * self.page_size
            which = (f"{shown[0]}–{shown[-1]} of {count}" if self._order() is None
                     else f"ranked {first + 1}–{first + len(shown)} of {count}")
            if pages > 1 and self.state.filter not in shown:
                page_of_selection = self._place(self.state.filter) // self.page_size + 1
                which += f" · {self._tile_word} {self.state.filter} is on page {page_of_selection}"
            with self.page_slider.hold_sync(), self.page_label.hold_sync():
                self.page_slider.max = pages
                self.page_slider.value = self.page + 1
                self.page_slider.layout.display = None if pages > 1 else "none"
                self.page_label.value = f"{self._tile_word}s {which}" if pages > 1 else ""
            self.show_message(self._message(), "text")
            show_child(self, self.body, True)
            key = (*self._picture_key(), self.page)
            if self.part_changed("mosaic", key):
                self._draw(shown)
            self.figure.highlight(self.state.filter)
            self._draw_side(key)
        finally:
            self._syncing = False

    def _order_key(self) -> Any:
        """What the tiling order depends on (None: index order); a new order re-follows the selection."""
        return None

    def _show_message_only(self) -> None:
        self.page = 0
        self.page_slider.layout.display = "none"
        self.page_label.value = ""
        show_child(self, self.body, False)
        self.show_message(self._message())
        self._forget_drawn()


def full_rows(n: int) -> int | None:
    """Tiles per row that leave no empty slot for `n` tiles, if a not too wide one exists (8 -> 4, 3 -> 3, 64 -> 8);
    None (near-square, the last row part empty) otherwise, e.g. for 7."""
    for cols in range(math.isqrt(n - 1) + 1 if n > 1 else 1, n + 1):
        if n % cols == 0:
            return cols if cols <= 2 * math.sqrt(n) else None
    return None
