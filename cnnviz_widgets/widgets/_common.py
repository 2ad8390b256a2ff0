"""Small helpers shared by the views."""

from __future__ import annotations

from typing import Any

import ipywidgets
import traitlets

from ..state import ModelState


class View(ipywidgets.VBox):
    """A view that can be hidden: while `active` is False (a background tab) state changes are not drawn,
    and `redraw()` catches up when it is made active again."""

    active = traitlets.Bool(True, help="False while the view is hidden (e.g. a background tab): state changes "
                                       "are not drawn until it is active again.")

    def redraw(self) -> None:
        raise NotImplementedError

    @traitlets.observe("active")
    def _on_active_change(self, change: traitlets.Bunch) -> None:
        if change["new"]:
            self.redraw()  # catch up with whatever changed while hidden


def as_state(state_or_model: Any) -> ModelState:
    """The ModelState a view observes: the one given, or a new one for a model or preset name."""
    return state_or_model if isinstance(state_or_model, ModelState) else ModelState(state_or_model)


def format_number(value: float) -> str:
    """Short readable number for labels and tooltips: 0.00, 0.215, 35.1, 1234."""
    size = abs(value)
    if size >= 100:
        return f"{value:.0f}"
    if size >= 10:
        return f"{value:.1f}"
    if size >= 0.01 or size == 0:
        return f"{value:.2f}"
    return f"{value:.2g}"


def close_all(root: ipywidgets.Widget) -> None:
    """Close `root` and every widget reachable through its traits (layouts, styles, bqplot scales included).

    A plain `close()` leaves a widget's Layout, Style and the default scales of a bqplot Figure registered
    with the kernel; closing what a view made, all of it, keeps a long session from accumulating them.
    """
    seen: set[int] = set()
    pending = [root]
    while pending:
        widget = pending.pop()
        if id(widget) in seen:
            continue
        seen.add(id(widget))
        for name in widget.keys:
            pending.extend(_widgets_in(getattr(widget, name, None)))
        ipywidgets.Widget.close(widget)


def _widgets_in(value: Any) -> list[ipywidgets.Widget]:
    if isinstance(value, ipywidgets.Widget):
        return [value]
    if isinstance(value, (list, tuple)):
        return [w for item in value for w in _widgets_in(item)]
    if isinstance(value, dict):
        return [w for item in value.values() for w in _widgets_in(item)]
    return []


def show_child(parent: ipywidgets.Box, child: ipywidgets.Widget, visible: bool) -> None:
    """Show or hide `child` by putting it in or out of `parent.children`, keeping the first order.

    Used instead of ``display: none`` for parts that hold bqplot figures: a figure laid out while hidden
    measures 0 px, and the browser then logs negative sizes for its shapes.
    """
    order = parent.__dict__.setdefault("_cnnviz_child_order", tuple(parent.children))
    shown = {id(c) for c in parent.children}
    if visible:
        shown.add(id(child))
    else:
        shown.discard(id(child))
    children = tuple(c for c in order if id(c) in shown)
    if children != tuple(parent.children):
        parent.children = children
