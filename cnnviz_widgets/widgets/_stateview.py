"""`StateView`: what the views of `explain.py` and `compare.py` share (state, observers, `active`, a message line,
the "computing …" note over their pictures while the network runs, `close`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import ipywidgets
import traitlets

from cnnviz_widgets.errors import CnnvizError
from cnnviz_widgets.widgets._common import BusyFrame, View, as_state, close_all, colored, message_line, show_child


class StateView(View):
    """A view drawn from a key: `_key()` names what it shows, `_draw()` draws it only when the key changed, and a
    `CnnvizError` from either is said in the message line (`_show_message`, `_hide`). A subclass that sets
    `frame` (a `BusyFrame` around its pictures) before calling this `__init__` gets the note over them while the
    state is busy during a redraw. What these views show comes from the network, so on a state whose weights
    change (a `TrainingState`) the key holds its `version` and a change of it redraws (see `View._state_traits`)."""

    def __init__(self, state_or_model: Any, children: list[ipywidgets.Widget], css_class: str,
                 observed: list[str], active: bool | None = None):
        self.state = as_state(state_or_model)
        # before anything is drawn: a hidden view computes nothing (None: View's default, see starting_hidden)
        self.set_trait("active", self.active if active is None else bool(active))
        self.redraws = 0
        self._drawn_key: tuple | None = None
        self.frame: BusyFrame | None = getattr(self, "frame", None)  # set by a view with pictures, before this
        self._parts: list[ipywidgets.Widget] = []
        self._control_handlers: list[tuple[ipywidgets.Widget, Callable, str]] = []
        self.message = message_line()
        super().__init__([*children[:1], self.message, *children[1:]])
        self.add_class(css_class)
        self._observed = self._state_traits(observed)
        self.state.observe(self._on_state_change, self._observed)
        self._closed = False

    def _watch(self, control: ipywidgets.Widget, handler: Callable, name: str = "value") -> None:
        control.observe(handler, name)
        self._control_handlers.append((control, handler, name))

    def _key(self) -> tuple:
        raise NotImplementedError

    def _draw(self) -> None:
        raise NotImplementedError

    def redraw(self) -> None:
        """Bring the view up to date with the state; nothing happens if nothing it shows changed.

        A view with a `frame` keeps its old picture, dimmed under a note, while the network runs for it.
        """
        if not self.active or self._closed:
            return
        if self.frame is None:
            self._update()
            return
        self.state.observe(self._on_busy, "busy")
        try:
            self._update()
        finally:
            self.state.unobserve(self._on_busy, "busy")
            while self.frame.is_busy:
                self.frame.stop()

    def _on_busy(self, change: traitlets.Bunch) -> None:
        # the state is busy only while the network runs (a prediction, a forward or a gradient pass), not
        # for a redraw from cached results: the note shows exactly when there is a wait
        if change["new"] and self.frame is not None and not self.frame.is_busy:
            show_child(self, self.frame, True)  # a message may have put the picture away: the old one, dimmed
            self.frame.start(self._busy_words())

    def _busy_words(self) -> str:
        return "running the network …"

    def _update(self) -> None:
        try:
            key = (*self._key(), self._weights_version)  # drawn from the network: its weights are part of it
        except CnnvizError as err:  # e.g. no classifier, or a layer without filters: say so, draw nothing
            key = ("message", str(err))
        if key == self._drawn_key:
            return
        self._drawn_key = key
        self.redraws += 1
        if key[0] == "message":
            self._show_message(key[1])
            return
        try:
            self._draw()
        except CnnvizError as err:
            self._show_message(str(err))

    def _show_message(self, text: str) -> None:
        self.message.value = colored(text)
        self._hide(True)

    def _hide(self, hidden: bool) -> None:
        raise NotImplementedError

    def _on_state_change(self, _change: traitlets.Bunch) -> None:
        self.redraw()

    def close(self) -> None:
        """Stop observing the state and the controls and close every part (a second call does nothing)."""
        if getattr(self, "_closed", True):
            return
        self._closed = True
        self.state.unobserve(self._on_state_change, self._observed)
        for control, handler, name in self._control_handlers:
            control.unobserve(handler, name)
        for part in (*self._parts, self.message):
            part.close()  # the figures' own close() also forgets their click callbacks
        super().close()
        close_all(self)  # and every layout, style and scale they brought
