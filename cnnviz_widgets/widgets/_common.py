"""Small helpers shared by the views."""

from __future__ import annotations

import contextlib
import contextvars
import functools
import html
import logging
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import ipywidgets
import traitlets

from cnnviz_widgets.errors import CnnvizError
from cnnviz_widgets.state.model_state import ModelState

_log = logging.getLogger("cnnviz_widgets")

# The look of every view, in one place. Colours come from JupyterLab's theme variables, so light and dark
# themes need no code of their own; the fallbacks serve front ends without them (Voila's plain template).
THEME_CSS = """
.cnnviz-explorer, .cnnviz-explorer .widget-label, .cnnviz-explorer .widget-readout,
.cnnviz-mosaic-title, .cnnviz-view-message, .cnnviz-header { color: var(--jp-ui-font-color1, #212121); }
.cnnviz-status { color: var(--jp-ui-font-color2, #616161); }
.cnnviz-tabs .lm-TabBar-content { flex-wrap: wrap; }
.cnnviz-tabs .lm-TabBar-tab { flex: 0 0 auto !important; min-width: max-content !important;
                              max-width: none !important; }
.cnnviz-tabs > .lm-TabBar, .cnnviz-tabs > .p-TabBar { height: auto !important; overflow: visible !important; }
.cnnviz-index-controls, .cnnviz-display-controls, .cnnviz-view-controls { flex-wrap: wrap; column-gap: 16px;
                                                                          row-gap: 4px; }
.cnnviz-explorer .widget-readout { overflow: visible; min-width: max-content; }
.cnnviz-index-controls > .widget-slider { flex: 1 1 280px; width: auto; min-width: 240px; max-width: 560px; }
.cnnviz-display-controls > .widget-dropdown { flex: 1 1 200px; width: auto; min-width: 180px; max-width: 320px; }
.cnnviz-explorer .jupyter-button, .cnnviz-explorer .widget-upload { width: auto; min-width: max-content;
                                                                    padding: 0 10px; }
.cnnviz-mosaic-title .widget-html-content { white-space: normal; line-height: 1.35; }
.cnnviz-lines { min-height: 26px; justify-content: space-between; column-gap: 16px; }
.cnnviz-status { margin-left: auto; }
.cnnviz-busy .cnnviz-mosaic-figure, .cnnviz-busy img { opacity: 0.45; transition: opacity 0.1s; }
.cnnviz-busy { cursor: progress; }
.cnnviz-tabs .widget-tab-contents { min-height: 60vh; }
.cnnviz-download { color: var(--jp-content-link-color, #1976d2); }
.cnnviz-controls { padding: 0 8px; box-sizing: border-box; }
.cnnviz-index-controls > .widget-slider { padding-right: 8px; }
/* bqplot's own dark-theme colours paint captions orange: take the notebook's text colours instead */
.bqplot[class*="cnnviz-"] { --bq-axislabel-fill: var(--jp-ui-font-color1, #212121) !important;
                            --bq-axis-tick-text-fill: var(--jp-ui-font-color2, #616161) !important;
                            --bq-axis-path-stroke: var(--jp-ui-font-color2, #616161) !important;
                            --bq-axis-tick-stroke: var(--jp-ui-font-color2, #616161) !important; }
.cnnviz-compare-sides, .cnnviz-grid-body, .cnnviz-pixel-top { column-gap: 24px; }
/* pictures side by side start level: each title keeps room for two lines */
.cnnviz-compare-sides .cnnviz-mosaic-title, .cnnviz-pixel-top .cnnviz-mosaic-title { min-height: 2.8em; }
.cnnviz-pixel-top, .cnnviz-compare-sides { flex-wrap: wrap; row-gap: 12px; }
.cnnviz-pixel-top > .widget-vbox { max-width: calc(50% - 12px); }  /* wrapped alone, a figure stays half wide */
/* BusyFrame: the picture stays, dimmed, with a note floating over its top while its update computes */
.cnnviz-busy-frame { position: relative; }
.cnnviz-busy-note { position: absolute !important; top: 64px; left: 50%; transform: translateX(-50%); z-index: 3;
                    width: auto !important; max-width: 90%; padding: 6px 16px; border-radius: 4px;
                    background: var(--jp-layout-color1, #fff); color: var(--jp-ui-font-color1, #212121);
                    border: 1px solid var(--jp-border-color1, #bdbdbd); box-shadow: 0 1px 6px rgba(0, 0, 0, 0.35);
                    font-weight: bold; pointer-events: none; }
.cnnviz-busy-note .widget-html-content::before { content: ""; display: inline-block; width: 10px; height: 10px;
    margin-right: 8px; border: 2px solid currentColor; border-right-color: transparent; border-radius: 50%;
    animation: cnnviz-spin 0.8s linear infinite; vertical-align: -1px; }
@keyframes cnnviz-spin { to { transform: rotate(360deg); } }
"""


def stylesheet() -> ipywidgets.HTML:
    """A hidden widget carrying `THEME_CSS` (a <style> applies wherever it sits in the page)."""
    style = ipywidgets.HTML(f"<style>{THEME_CSS}</style>", layout=ipywidgets.Layout(display="none"))
    style.add_class("cnnviz-stylesheet")
    return style


def message_line() -> ipywidgets.HTML:
    """A view's one-line message (empty until something is worth saying); see `colored` for its text."""
    message = ipywidgets.HTML("")
    message.add_class("cnnviz-view-message")
    return message


def colored(text: str, kind: str = "note") -> str:
    """`text` as HTML in the theme's colour for `kind`: "note" (muted) or "error"."""
    colour = {"note": "var(--jp-ui-font-color2, #555)", "error": "var(--jp-error-color1, #c62828)"}[kind]
    return f'<span style="color: {colour}">{html.escape(text)}</span>'


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


class View(ipywidgets.VBox):
    """A view that can be hidden: while `active` is False (a background tab) state changes are not drawn,
    and `redraw()` catches up when it is made active again.

    A view never raises out of a control change: `redraw` and every ``_on_*`` handler of a subclass are
    guarded. What fails is shown inside the view, in one sentence (`problem`), in place of its picture;
    the next update that draws takes it away. A library error (`CnnvizError`) is the reason itself; any
    other exception is a bug, logged with its traceback on the ``cnnviz_widgets`` logger.

    A view on a state whose weights change (a `TrainingState`, which trains or shows another kept step) follows
    them: the state traits it observes go through `_state_traits`, which adds `version`; the keys of whatever it
    drew or cached from the weights hold `_weights_version`; and `redraw` and the handlers run holding the
    state's lock (`_computing`), since the training thread refreshes the state.
    """

    active = traitlets.Bool(True, help="False while the view is hidden (e.g. a background tab): state changes "
                                       "are not drawn until it is active again.")
    problem = traitlets.Unicode("", help="Why the view shows no picture after its last update (the sentence shown "
                                         "in it); empty when it drew.")
    failure = traitlets.Unicode("", help="Like `problem`, but only for an unexpected error (a bug): empty when the "
                                         "last update drew or was refused with the library's own explanation.")

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name, value in list(vars(cls).items()):
            if name != "redraw" and not name.startswith("_on_"):
                continue
            if isinstance(value, traitlets.EventHandler):  # @observe: guard the function it holds
                value.func = _guarded(value.func)
            elif callable(value) and not isinstance(value, (staticmethod, classmethod, type)):
                setattr(cls, name, _guarded(value))

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.active  # noqa: B018  the default is read now: a view made inside starting_hidden() stays hidden after it

    @traitlets.default("active")
    def _default_active(self) -> bool:
        return not _STARTING_HIDDEN.get()

    def redraw(self) -> None:
        raise NotImplementedError

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

    # -- problems shown inside the view ----------------------------------------------------------------

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
        message = self._problem_line()
        message.value = colored(text, "error")
        self._problem_html = message.value
        controls = getattr(self, "controls", None)
        for child in tuple(self.children):
            if child is not message and child is not controls:
                show_child(self, child, False)
                self._hidden_by_problem.append(child)
        self.failure = failure
        self.problem = text

    def _problem_line(self) -> ipywidgets.HTML:
        message = getattr(self, "message", None)
        if not isinstance(message, ipywidgets.HTML):  # a view without a message line gets one, on top
            message = ipywidgets.HTML("")
            message.add_class("cnnviz-view-message")
            self.message = message
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
        if message is not None and message.value == getattr(self, "_problem_html", None):
            message.value = ""
        self.problem = self.failure = ""

    @property
    def _hidden_by_problem(self) -> list:
        return self.__dict__.setdefault("_cnnviz_hidden_by_problem", [])


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
        if "_drawn_key" in view.__dict__:
            view._drawn_key = None  # the next update draws afresh rather than trusting a half-drawn picture
        try:
            view.show_problem(error)
        except Exception:  # a view too broken to show its problem must not raise either
            _log.exception("%s could not show its problem", type(view).__name__)
        return None


def as_state(state_or_model: Any) -> ModelState:
    """The ModelState a view observes: the one given, or a new one for a model or preset name."""
    return state_or_model if isinstance(state_or_model, ModelState) else ModelState(state_or_model)


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
