"""`View`: the one skeleton every view stands on, so that each view keeps only what it draws.

- **Observers, released in one place.** `observe_state(handler, names)`, `watch(control, handler)`,
  `link(source, target)`, `on_click(button, handler)`, `on_element_click(mark, handler)` and
  `on_tile_click(figure, handler)` register what they connect (`unwatch` undoes one early); `close()` undoes all
  of it, then closes every widget the view holds, hidden parts included (a second call does nothing).
- **Key → draw.** `redraw()` asks `_key()` what the view would show and calls `_draw()` only when that changed
  (`redraws` counts the draws). A view with several pictures asks `part_changed(name, key)` before each, so a
  picture whose own key did not change is not sent again.
- **One way to say something.** `show_message(text, kind)` ("note", "error" or "text") in the view's message line;
  an error the view expects (`said_errors`) is said there, its picture put away by `_hide(True)`.
- **Errors caught the same way everywhere.** `redraw` and every ``_on_*`` handler are guarded: any other error is
  shown inside the view (`problem`, `failure`) instead of raised into the control that moved.
- **Hidden views wait.** While `active` is False (a background tab) nothing is drawn; `redraw()` catches up when it
  is made active again. Views made inside `starting_hidden()` start inactive.
- **Weights that change.** On a `TrainingState` the traits a view observes include `version` (`_state_traits`),
  keys hold `_weights_version`, and drawing holds the state's lock (`_computing`).
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import functools
import logging
from collections.abc import Callable, Hashable, Iterable, Iterator
from typing import Any

import ipywidgets
import traitlets

from cnnviz_widgets.errors import CnnvizError
from cnnviz_widgets.state.model_state import ModelState
from cnnviz_widgets.widgets.parts import BusyFrame, close_all, hidden_children, message_line, show_child
from cnnviz_widgets.widgets.theme import colored

_log = logging.getLogger("cnnviz_widgets")
_PROBLEM_CHARS = 300  # a reason is one sentence: a longer message (a Keras dump) is cut

WEIGHTS_TRAIT = "version"
"""The state trait that changes whenever the weights a view reads change: a `TrainingState`'s `version` moves while
the network trains and when another kept step is shown. A plain `ModelState` has none: its weights stay."""


def weights_version(state: Any) -> int | None:
    """Which weights `state` shows now (its `version`), or None for a state whose weights do not change."""
    return getattr(state, WEIGHTS_TRAIT) if state.has_trait(WEIGHTS_TRAIT) else None


def state_lock(state: Any) -> contextlib.AbstractContextManager:
    """`state.lock` (a `TrainingState`'s: its training thread refreshes it), to hold while reading from the state;
    nothing to hold for a state without one."""
    lock = getattr(state, "lock", None)
    return contextlib.nullcontext() if lock is None else lock


def as_state(state_or_model: Any) -> ModelState:
    """The ModelState a view observes: the one given, or a new one for a model or preset name."""
    return state_or_model if isinstance(state_or_model, ModelState) else ModelState(state_or_model)


_STARTING_HIDDEN: contextvars.ContextVar[bool] = contextvars.ContextVar("cnnviz_starting_hidden", default=False)


@contextlib.contextmanager
def starting_hidden() -> Iterator[None]:
    """Views made inside start inactive: they draw nothing until shown (e.g. the Explorer's closed tabs, so
    opening it computes and sends only the open tab's pictures)."""
    token = _STARTING_HIDDEN.set(True)
    try:
        yield
    finally:
        _STARTING_HIDDEN.reset(token)


@dataclasses.dataclass(frozen=True)
class _Said:
    """The key of a view that shows a sentence instead of its picture."""

    text: str


class View(ipywidgets.VBox):
    """A view of a state: observers released by one `close()`, a key → draw template, one message line, guarded
    handlers, and `active` for a hidden tab (see the module's docstring).

    A subclass sets `state` (and `frame`, a `BusyFrame` around its pictures, to dim them under a "computing …"
    note while the network runs for them), builds its parts, calls ``super().__init__(children)``, registers its
    observers, and implements `_key` and `_draw` (or overrides `redraw` where drawing is not one picture's).
    """

    active = traitlets.Bool(True, help="False while the view is hidden (e.g. a background tab): state changes "
                                       "are not drawn until it is active again.")
    problem = traitlets.Unicode("", help="Why the view shows no picture after its last update (the sentence shown "
                                         "in it); empty when it drew.")
    failure = traitlets.Unicode("", help="Like `problem`, but only for an unexpected error (a bug): empty when the "
                                         "last update drew or was refused with the library's own explanation.")

    said_errors: tuple[type[Exception], ...] = ()
    """Errors of `_key` or `_draw` that are said in the message line (the picture put away by `_hide`), rather
    than shown as a `problem`: what the view expects, e.g. a model without a classifier."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _guard_handlers(cls)

    def __init__(self, children: Iterable[ipywidgets.Widget] = (), *, css_class: str | None = None,
                 active: bool | None = None, **kwargs: Any):
        self.__dict__.setdefault("redraws", 0)
        self._drawn_key: Hashable = None
        if active is not None:  # before anything is drawn: a hidden view computes nothing (None: the default)
            self.set_trait("active", bool(active))
        super().__init__(list(children), **kwargs)
        self.active  # noqa: B018  the default is read now: a view made inside starting_hidden() stays hidden after it
        if css_class:
            self.add_class(css_class)

    @traitlets.default("active")
    def _default_active(self) -> bool:
        return not _STARTING_HIDDEN.get()

    # -- what the view connects, released by close() ---------------------------------------------------

    def on_close(self, release: Callable[[], Any], tag: Hashable = None) -> None:
        """Call `release()` when the view closes (after the ones registered later); `tag` names it for `unwatch`."""
        self.__dict__.setdefault("_cnnviz_releases", []).append((tag, release))

    def observe_state(self, handler: Callable, names: Iterable[str]) -> None:
        """`state.observe(handler, names)` until the view closes."""
        self.watch(self.state, handler, list(names))

    def follow_state(self, names: Iterable[str]) -> None:
        """Redraw (`_on_state_change`) when state traits `names` change, and `version` where the state has one."""
        self.observe_state(self._on_state_change, self._state_traits(names))

    def _on_state_change(self, _change: traitlets.Bunch) -> None:
        self.redraw()

    def watch(self, owner: traitlets.HasTraits, handler: Callable, name: str | list[str] = "value") -> None:
        """`owner.observe(handler, name)` (a control's value by default) until the view closes."""
        owner.observe(handler, name)
        self.on_close(lambda: _unobserve(owner, handler, name), tag=(id(owner), handler, str(name)))

    def unwatch(self, owner: traitlets.HasTraits, handler: Callable, name: str | list[str] = "value") -> None:
        """Undo `watch(owner, handler, name)` now (e.g. for a control the view replaces)."""
        _unobserve(owner, handler, name)
        tag = (id(owner), handler, str(name))
        releases = self.__dict__.get("_cnnviz_releases", [])
        releases[:] = [(t, release) for t, release in releases if t != tag]

    def link(self, source: tuple, target: tuple) -> ipywidgets.link:
        """`ipywidgets.link(source, target)` until the view closes."""
        link = ipywidgets.link(source, target)
        self.on_close(link.unlink)
        return link

    def on_click(self, button: ipywidgets.Button, handler: Callable) -> None:
        """`button.on_click(handler)` until the view closes."""
        button.on_click(handler)
        self.on_close(lambda: button.on_click(handler, remove=True))

    def on_element_click(self, mark: Any, handler: Callable) -> None:
        """A bqplot mark's `on_element_click(handler)` until the view closes."""
        mark.on_element_click(handler)
        self.on_close(lambda: mark.on_element_click(handler, remove=True))

    def on_tile_click(self, figure: Any, handler: Callable[[int], None]) -> None:
        """A `MosaicFigure`'s `on_tile_click(handler)` until the view closes."""
        figure.on_tile_click(handler)
        self.on_close(lambda: figure.on_tile_click(handler, remove=True))

    @property
    def closed(self) -> bool:
        """True once `close()` ran: the view draws nothing more."""
        return bool(self.__dict__.get("_cnnviz_closed"))

    def close(self) -> None:
        """Release every observer, link and click handler the view registered, then close every widget it holds
        (hidden parts, figures' marks and scales, nested views included). A second call does nothing."""
        if self.closed:
            return
        self.__dict__["_cnnviz_closed"] = True
        releases = self.__dict__.pop("_cnnviz_releases", [])
        for _tag, release in reversed(releases):
            release()
        for part in _parts_with_their_own_close(self):
            part.close()  # a figure's close() reaches marks outside the tree; a nested view releases its own
        super().close()
        close_all(self)  # and every layout, style and scale they brought

    # -- key -> draw -----------------------------------------------------------------------------------

    def _key(self) -> Hashable:
        """Everything the view's picture depends on; `redraw` draws only when it changed."""
        raise NotImplementedError

    def _draw(self) -> None:
        """Draw what `_key` names."""
        raise NotImplementedError

    def _hide(self, hidden: bool) -> None:
        """Put the view's picture away (a sentence stands in for it) or bring it back."""

    def redraw(self) -> None:
        """Bring the view up to date with the state; nothing is drawn if nothing it shows changed.

        A view with a `frame` keeps its old picture, dimmed under a note, while the network runs for it.
        """
        if not self.active or self.closed:
            return
        frame = self.__dict__.get("frame")
        if frame is None:
            self._update()
            return
        self.state.observe(self._on_busy, "busy")
        try:
            self._update()
        finally:
            self.state.unobserve(self._on_busy, "busy")
            while frame.is_busy:
                frame.stop()

    def _update(self) -> None:
        try:
            key = self._key()
        except self.said_errors as err:  # e.g. no classifier, or a layer without filters: say so, draw nothing
            key = _Said(str(err))
        if key == self._drawn_key:
            return
        self._drawn_key = key
        self.redraws += 1
        if isinstance(key, _Said):
            self.say(key.text)
            return
        try:
            self._draw()
        except self.said_errors as err:
            self.say(str(err))

    def part_changed(self, part: str, key: Hashable) -> bool:
        """Whether picture `part` must be drawn: True (and `key` kept) when its key is not the one it was last drawn
        with. A view with several pictures asks before each, so an unchanged one is not sent again."""
        keys = self.__dict__.setdefault("_cnnviz_part_keys", {})
        if part in keys and keys[part] == key:
            return False
        keys[part] = key
        return True

    def _forget_drawn(self) -> None:
        """The next `redraw` draws everything afresh (after something the keys do not see changed)."""
        self._drawn_key = None
        self.__dict__.get("_cnnviz_part_keys", {}).clear()

    def _on_busy(self, change: traitlets.Bunch) -> None:
        # the state is busy only while the network runs (a prediction, a forward or a gradient pass), not
        # for a redraw from cached results: the note shows exactly when there is a wait
        frame: BusyFrame | None = self.__dict__.get("frame")
        if change["new"] and frame is not None and not frame.is_busy:
            show_child(self, frame, True)  # a message may have put the picture away: the old one, dimmed
            frame.start(self._busy_words())

    def _busy_words(self) -> str:
        return "running the network …"

    # -- following the weights -------------------------------------------------------------------------

    def _state_traits(self, names: Iterable[str]) -> list[str]:
        """The state traits to observe for a picture drawn from `names`: those, and `version` where the state has
        one, so a picture drawn from the weights (or the activations they make) is drawn again when they change."""
        names = list(dict.fromkeys(names))
        if self.state.has_trait(WEIGHTS_TRAIT) and WEIGHTS_TRAIT not in names:
            names.append(WEIGHTS_TRAIT)
        return names

    @property
    def _weights_version(self) -> int | None:
        """Part of the key of anything drawn or cached from the weights: the state's `version` (None: they stay)."""
        return weights_version(self.state)

    def _computing(self) -> contextlib.AbstractContextManager:
        """Held while the view reads from its state: the state's lock, where it has one (see `state_lock`)."""
        return state_lock(self.__dict__.get("state"))

    @traitlets.observe("active")
    def _on_active_change(self, change: traitlets.Bunch) -> None:
        if change["new"]:
            self.redraw()  # catch up with whatever changed while hidden

    # -- messages and problems shown inside the view ---------------------------------------------------

    def show_message(self, text: str, kind: str = "note") -> None:
        """Say `text` in the view's message line in the theme's colour for `kind` ("note", "error" or "text");
        an empty `text` clears the line."""
        self._message_line().value = colored(text, kind) if text else ""

    def say(self, text: str) -> None:
        """Say `text` (a note) in place of the picture: the message line, and the picture put away (`_hide`)."""
        self.show_message(text)
        self._hide(True)

    def show_problem(self, error: BaseException | str) -> None:
        """Put the view's picture away and say in one sentence why there is none."""
        if isinstance(error, (str, CnnvizError)):
            text, failure = str(error), ""
        else:
            layer = getattr(getattr(self, "state", None), "layer", "")
            where = f" for {layer}" if layer else ""
            text = f"{type(self).__name__} cannot be drawn{where}: {type(error).__name__}: {error}"
            failure = text
        text = " ".join(text.split())  # one line
        if len(text) > _PROBLEM_CHARS:
            text = text[: _PROBLEM_CHARS - 1].rstrip() + "…"
        self.show_message(text, "error")
        message = self._message_line()
        self.__dict__["_cnnviz_problem_html"] = message.value
        controls = getattr(self, "controls", None)
        for child in tuple(self.children):
            if child is not message and child is not controls:
                show_child(self, child, False)
                self._hidden_by_problem.append(child)
        self.failure = failure
        self.problem = text

    def _message_line(self) -> ipywidgets.HTML:
        message = getattr(self, "message", None)
        if not isinstance(message, ipywidgets.HTML):  # a view without a message line gets one, on top
            message = self.message = message_line()
            order = self.__dict__.get("_cnnviz_child_order")
            if order is not None:
                self.__dict__["_cnnviz_child_order"] = (message, *order)
            self.children = (message, *self.children)
        return message

    def _problem_solved(self) -> None:
        """Bring back what `show_problem` put away and clear its sentence."""
        for child in self._hidden_by_problem:
            show_child(self, child, True)
        self._hidden_by_problem.clear()
        message = getattr(self, "message", None)
        if message is not None and message.value == self.__dict__.get("_cnnviz_problem_html"):
            message.value = ""
        self.problem = self.failure = ""

    @property
    def _hidden_by_problem(self) -> list:
        return self.__dict__.setdefault("_cnnviz_hidden_by_problem", [])


def _unobserve(owner: traitlets.HasTraits, handler: Callable, name: str | list[str]) -> None:
    with contextlib.suppress(ValueError):  # already gone: releasing twice is harmless
        owner.unobserve(handler, name)


def _guard_handlers(cls: type) -> None:
    """Guard `redraw` and every ``_on_*`` handler defined in `cls` (see `_guarded`)."""
    for name, value in list(vars(cls).items()):
        if name != "redraw" and not name.startswith("_on_"):
            continue
        if isinstance(value, traitlets.EventHandler):  # @observe: guard the function it holds
            value.func = _guarded(value.func)
        elif callable(value) and not isinstance(value, (staticmethod, classmethod, type)):
            setattr(cls, name, _guarded(value))


def _parts_with_their_own_close(view: View) -> list[ipywidgets.Widget]:
    """The widgets under `view` (hidden ones included) whose class closes more than the widget itself."""
    found, seen, pending = [], {id(view)}, [*view.children, *hidden_children(view)]
    while pending:
        widget = pending.pop()
        if id(widget) in seen or not isinstance(widget, ipywidgets.Widget):
            continue
        seen.add(id(widget))
        if type(widget).close is not ipywidgets.Widget.close:
            found.append(widget)
        pending.extend([*getattr(widget, "children", ()), *hidden_children(widget)])
    return found


def _guarded(method: Callable) -> Callable:
    """`method` of a View, showing its errors inside the view instead of raising them (outermost call only)."""
    if getattr(method, "_cnnviz_guarded", False):
        return method

    @functools.wraps(method)
    def guarded(self: View, *args: Any, **kwargs: Any) -> Any:
        if self.__dict__.get("_cnnviz_in_guard") or "_trait_values" not in self.__dict__:
            return method(self, *args, **kwargs)  # inside another guarded call, or not built: it decides
        self.__dict__["_cnnviz_in_guard"] = True
        try:
            with self._computing():  # the training thread must not refresh the state half way through
                return _shown_in_view(self, method, args, kwargs)
        finally:
            self.__dict__["_cnnviz_in_guard"] = False

    guarded._cnnviz_guarded = True  # type: ignore[attr-defined]
    return guarded


def _shown_in_view(view: View, method: Callable, args: tuple, kwargs: dict) -> Any:
    """`method(view, *args, **kwargs)`, its error shown in the view (see `View.show_problem`) instead of raised."""
    try:
        retry = bool(view.problem)
        if retry:  # take the problem away first: the update below decides what the view shows
            view._problem_solved()
        result = method(view, *args, **kwargs)
        if retry and method.__name__ != "redraw":
            view.redraw()  # whatever the handler did, the picture must come back (or the problem again)
        return result
    except Exception as error:  # shown in the view: a control change must never raise
        if not isinstance(error, CnnvizError):
            _log.error("%s failed in %s", type(view).__name__, method.__name__, exc_info=error)
        view._forget_drawn()  # the next update draws afresh rather than trusting a half-drawn picture
        try:
            view.show_problem(error)
        except Exception:  # a view too broken to show its problem must not raise either
            _log.exception("%s could not show its problem", type(view).__name__)
        return None


_guard_handlers(View)  # its own redraw and handlers too
