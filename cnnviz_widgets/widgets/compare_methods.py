"""`CompareMethods`: one target explained by several attribution methods, side by side (the Explorer shows it in
its "Why" tab, under `ClassActivationMap`).

Each chosen method (`methods`, a multi-select over `attribution.catalogue.METHODS`) gets its own `MosaicFigure`:
its heat map over the input picture, titled with the method's name and how long it took. Every heat map is
scaled to its own min..max (`Explanation.heatmap`), so the view says so in a sentence: equal colours in two
pictures do not mean equal values. The slow methods (Score-CAM, occlusion, ...) are left out by default; the
user adds them in the menu, and a "computing …" note names the method that runs.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

import ipywidgets
import traitlets

from cnnviz_widgets.attribution import catalogue
from cnnviz_widgets.attribution.classes import Target
from cnnviz_widgets.attribution.explanation import Explanation
from cnnviz_widgets.attribution.heatmaps import overlay
from cnnviz_widgets.errors import CnnvizError
from cnnviz_widgets.pictures import render
from cnnviz_widgets.widgets.attribution import HEAT_CMAP, method_title
from cnnviz_widgets.widgets.mosaic import MosaicFigure
from cnnviz_widgets.widgets.parts import BusyFrame, close_all, format_number, message_line, with_classes
from cnnviz_widgets.widgets.view import View, as_state

__all__ = ["COMPARED_BY_DEFAULT", "COMPARE_OPACITY", "SCALE_NOTE", "CompareMethods"]

# One gradient pass each from the cached maps: the tab opens in about a second on VGG16 at 224. SmoothGrad and
# Integrated Gradients (16 s and 32 s there) are one click away in the multi-select.
COMPARED_BY_DEFAULT = ("grad-cam", "grad-cam++", "layer-cam", "saliency", "input-x-gradient", "guided-backprop")
"""The methods compared when none are given: the fast ones of each family (a few gradient passes each)."""
COMPARE_OPACITY = 0.6
"""Weight of each heat map over the picture (the hot spots weigh most, see `heatmaps.overlay(weighted=True)`)."""
SCALE_NOTE = ("Each heat map is scaled to its own range: its weakest point is dark, its strongest bright yellow. "
              "Equal colours in two pictures do not mean equal values: compare where the methods look, not how "
              "strongly.")


class CompareMethods(View):
    """The same target explained by several attribution methods, one picture each, side by side.

    Parameters
    ----------
    state_or_model
        A `ModelState` (shared with other views), or anything `ModelState` takes as a model.
    methods
        Names of `attribution.catalogue.METHODS` to show, in any order (shown in the catalogue's); default
        `COMPARED_BY_DEFAULT`. The multi-select `methods` changes them.
    width_px
        Smallest width of each picture.
    active
        False builds the view without computing anything (a background tab) until `active` is set True.

    The target is the one `ClassActivationMap` explains: `state.explained_class` (None: the top prediction), or,
    without a classifier, the current filter of the current layer. Each method runs with its default options on
    its default layer; one that cannot explain this target says why in its own title. `explanations` holds what
    is shown, by method name.
    """

    said_errors = (CnnvizError,)  # e.g. the input layer chosen on a model without a classifier: said instead

    def __init__(self, state_or_model: Any, methods: Sequence[str] | None = None, *, width_px: int = 240,
                 css_class: str = "cnnviz-compare-methods", active: bool | None = None):
        chosen = COMPARED_BY_DEFAULT if methods is None else tuple(methods)
        for name in chosen:
            catalogue.method(name)  # CnnvizError naming every method for an unknown one
        self.state = as_state(state_or_model)
        self.width_px = int(width_px)
        self.explanations: dict[str, Explanation] = {}
        self.failures: dict[str, str] = {}  # method -> why it shows no map
        self.figures: dict[str, MosaicFigure] = {}
        self.methods = ipywidgets.SelectMultiple(
            options=[(method_title(name), name) for name in catalogue.METHODS],
            value=[name for name in catalogue.METHODS if name in chosen], rows=len(catalogue.METHODS),
            description="methods", layout=ipywidgets.Layout(width="300px"),
            tooltip="the methods shown side by side: Ctrl-click (Cmd-click) or Shift+arrows to choose several")
        self.methods.add_class("cnnviz-compare-methods-picker")
        self.heading = with_classes(ipywidgets.HTML(""), "cnnviz-compare-methods-heading")
        self.scale_note = with_classes(ipywidgets.HTML(f"<i>{html.escape(SCALE_NOTE)}</i>",
                                                       layout=ipywidgets.Layout(max_width="760px")),
                                       "cnnviz-compare-methods-scale")
        self.grid = with_classes(ipywidgets.HBox([], layout=ipywidgets.Layout(flex_flow="row wrap", width="100%")),
                                 "cnnviz-compare-methods-grid", "cnnviz-compare-sides")
        self.frame = BusyFrame(self.grid, layout=ipywidgets.Layout(width="100%"))
        self._running = ""  # the title of the method computing now, for the busy note
        self.message = message_line()
        controls = with_classes(ipywidgets.HBox([self.methods, ipywidgets.VBox([self.heading, self.scale_note])]),
                                "cnnviz-view-controls")  # wraps, with a gap (THEME_CSS)
        super().__init__([controls, self.message, self.frame], css_class=css_class, active=active)
        self.follow_state(["image", "explained_class", "class_names", "layer", "filter"])
        self.watch(self.methods, self._on_methods_change)
        self.redraw()

    @property
    def shown(self) -> tuple[str, ...]:
        """The methods shown, in catalogue order."""
        return tuple(self.methods.value)

    def figure(self, method: str) -> MosaicFigure:
        """The picture of `method` (KeyError if it is not shown)."""
        return self.figures[method]

    # -- what to draw ----------------------------------------------------------------------------------

    def _target(self) -> Target:
        return self.state.explain_target(self.state.explained_class if self.state.has_classifier() else None)

    def _key(self) -> tuple:
        return (id(self.state.model_input), self.shown, self._target(), self._weights_version)

    def _busy_words(self) -> str:
        return f"computing {self._running or 'the heat maps'} …"

    def _hide(self, hidden: bool) -> None:
        self.frame.layout.display = "none" if hidden else None
        if hidden:
            self.explanations.clear()
            self.failures.clear()
            self.heading.value = ""
            self._forget_drawn()

    def _draw(self) -> None:
        state = self.state
        target = self._target()
        self._sync_figures()
        classifier = state.explainer.classifier if target.kind == "class" else None
        what = target.words(classifier)
        self.heading.value = (f"<b>{html.escape(what)}</b> explained by {len(self.shown)} methods, over "
                              f"{html.escape(state.image_name or 'the image')}, each with its default options.")
        self.show_message("")
        self._hide(False)
        for name in self.shown:  # never an empty panel: a new one shows the picture until its turn comes
            if self.figures[name].mosaic is None:
                self._show_plain(name, "", waiting=True)
        for name in self.shown:
            if not self.part_changed(name, (id(state.model_input), target, self._weights_version)):
                continue
            self._running = method_title(name)
            if self.frame.is_busy:  # the note already shows: it names the method that runs now
                self.frame.note.value = html.escape(self._busy_words())
            try:
                with self._computing():
                    result = state.explanation(name, class_index=target.index if target.kind == "class" else None,
                                               of=target.kind)
            except CnnvizError as error:
                self.explanations.pop(name, None)
                self.failures[name] = str(error)
                self._show_plain(name, str(error))
                continue
            finally:
                self._running = ""
            self.failures.pop(name, None)
            self.explanations[name] = result
            self._show(name, result)

    def _sync_figures(self) -> None:
        """One figure per shown method, in catalogue order; the figures of methods no longer shown are closed."""
        for name in [name for name in self.figures if name not in self.shown]:
            close_all(self.figures.pop(name))
            self.explanations.pop(name, None)
            self.failures.pop(name, None)
            self.__dict__.get("_cnnviz_part_keys", {}).pop(name, None)
        for name in self.shown:
            if name not in self.figures:
                slug = name.replace("+", "-plus")
                self.figures[name] = MosaicFigure(css_class=f"cnnviz-compare-method-{slug}", width_px=self.width_px,
                                                  colorbar=False)
                self.figures[name].add_class("cnnviz-compare-method")
                # three to a row (the grid's gap is 24 px): one left alone on its row keeps its size
                self.figures[name].layout.max_width = "calc(33.3% - 16px)"
        children = tuple(self.figures[name] for name in self.shown)
        if self.grid.children != children:
            self.grid.children = children

    def _show(self, name: str, result: Explanation) -> None:
        picture = overlay(self.state.model_input.picture, result.heatmap, HEAT_CMAP, COMPARE_OPACITY, weighted=True)
        where = f" on {result.layer}" if catalogue.method(name).uses_layer else ""
        title = f"{method_title(name)}{where} · {result.seconds * 1000:.0f} ms"  # plain text: the figure escapes it
        if result.note:
            title += f" · {result.note}"
        tip = (f"{method_title(name)}: {result.score} {format_number(result.score_value)}, peak "
               f"{format_number(float(result.raw.max()))} (scaled to this map's own min..max)")
        self.figures[name].show(render.tile_maps(picture[:, :, None, :], pad=0), title=title, tooltips=[tip])

    def _show_plain(self, name: str, why: str, waiting: bool = False) -> None:
        """The input picture, with a title saying why `name` has no map for this target (or that it waits its turn)."""
        title = f"{method_title(name)} · " + ("computed after the ones before it …" if waiting else f"no map: {why}")
        self.figures[name].show(render.tile_maps(self.state.model_input.picture[:, :, None, :], pad=0),
                                title=title, tooltips=["the input picture: this method has no map for this target"])

    # -- events ----------------------------------------------------------------------------------------

    def _on_methods_change(self, _change: traitlets.Bunch) -> None:
        self.redraw()
