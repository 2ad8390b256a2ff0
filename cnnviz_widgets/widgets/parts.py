"""The small parts every view shares: `BusyFrame`, the message line, showing and hiding a child, closing a whole
widget tree, CSS classes, and the number format of labels."""

from __future__ import annotations

import contextlib
import html
from collections.abc import Iterator
from typing import Any

import ipywidgets


def message_line() -> ipywidgets.HTML:
    """A view's one-line message (empty until something is worth saying); see `View.show_message`."""
    message = ipywidgets.HTML("")
    message.add_class("cnnviz-view-message")
    return message


class BusyFrame(ipywidgets.VBox):
    """`content` (a figure, or a row of them) with a "computing …" note floating over its top.

    While work for the content runs (`with frame.busy("computing Grad-CAM…"):`), the old picture stays in
    place, dimmed (THEME_CSS), and the note says what runs: the eye is on the picture, so that is where the
    wait is shown. The note is sent before the work starts, so the browser paints it while the kernel computes.
    """

    def __init__(self, content: ipywidgets.Widget, **kwargs: Any):
        self.note = ipywidgets.HTML("", layout=ipywidgets.Layout(display="none"))
        self.note.add_class("cnnviz-busy-note")
        self.content = content
        super().__init__([content, self.note], **kwargs)
        self.add_class("cnnviz-busy-frame")
        self._depth = 0

    @property
    def is_busy(self) -> bool:
        return self._depth > 0

    def start(self, text: str) -> None:
        """Show the note (`text`, plain) and dim the content until as many `stop()` calls."""
        self._depth += 1
        self.note.value = html.escape(text)
        if self._depth == 1:
            self.add_class("cnnviz-busy")
            self.note.layout.display = None

    def stop(self) -> None:
        if self._depth == 0:
            return
        self._depth -= 1
        if self._depth == 0:
            self.note.layout.display = "none"
            self.remove_class("cnnviz-busy")

    @contextlib.contextmanager
    def busy(self, text: str) -> Iterator[None]:
        """The note and the dimming for the duration of the block, whatever it raises."""
        self.start(text)
        try:
            yield
        finally:
            self.stop()


def with_classes(widget: Any, *names: str) -> Any:
    """`widget` with the CSS classes `names` added (browser tests find parts by them); returns the widget."""
    for name in names:
        widget.add_class(name)
    return widget


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
    with the kernel; closing what a view made, all of it, keeps a long session from accumulating them. Children
    that `show_child` put away are reached too.
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
        pending.extend(hidden_children(widget))
        ipywidgets.Widget.close(widget)


def _widgets_in(value: Any) -> list[ipywidgets.Widget]:
    if isinstance(value, ipywidgets.Widget):
        return [value]
    if isinstance(value, (list, tuple)):
        return [w for item in value for w in _widgets_in(item)]
    if isinstance(value, dict):
        return [w for item in value.values() for w in _widgets_in(item)]
    return []


def hidden_children(parent: ipywidgets.Widget) -> list[ipywidgets.Widget]:
    """The children `show_child` took out of `parent.children` (they are still `parent`'s to close)."""
    order = parent.__dict__.get("_cnnviz_child_order", ())
    shown = {id(c) for c in getattr(parent, "children", ())}
    return [child for child in order if id(child) not in shown]


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
