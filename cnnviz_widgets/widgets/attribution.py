"""Why the network decides: `Predictions`, `ClassActivationMap` and `CompareImages`.

`Predictions` lists the model's top classes for the current image (or says that the model has no classifier);
a click on a class makes it `state.explained_class`. `ClassActivationMap` draws the heat map of any method of
`attribution.catalogue` (Grad-CAM by default) for that class (or, without a classifier, for the current filter)
over the input picture, the method's one-line summary under its menu.
`CompareImages` (in `compare.py`, importable from here too) shows the current layer's current channel for
the state's image and a second image side by side, on one shared value range. The arithmetic is in
`cnnviz_widgets.explain` and `ModelState`.
"""

from __future__ import annotations

import html
from typing import Any

import ipywidgets
import numpy as np
import traitlets

from cnnviz_widgets.attribution import catalogue
from cnnviz_widgets.attribution.catalogue import METHODS
from cnnviz_widgets.attribution.classes import Target, TopClasses
from cnnviz_widgets.attribution.explanation import Explanation
from cnnviz_widgets.attribution.heatmaps import overlay
from cnnviz_widgets.errors import CnnvizError, LayerError
from cnnviz_widgets.pictures import render
from cnnviz_widgets.widgets.compare import COMPARE_SIDE, CompareImages
from cnnviz_widgets.widgets.mosaic import MosaicFigure
from cnnviz_widgets.widgets.parts import BusyFrame, close_all, format_number, message_line
from cnnviz_widgets.widgets.view import View, as_state

__all__ = ["COMPARE_SIDE", "HEAT_CMAP", "ClassActivationMap", "CompareImages", "Predictions"]

HEAT_CMAP = "magma"
"""Colour map of heat maps: dark where nothing drives the score, bright yellow where most does."""


def method_title(name: str) -> str:
    """How menus and titles name attribution method `name` ("Grad-CAM++")."""
    return catalogue.method(name).title


def method_summary(name: str) -> str:
    """The method's one sentence for students, as HTML under its menu: its title in bold, then the summary."""
    chosen = catalogue.method(name)
    return (f'<span class="cnnviz-method-summary-text"><b>{html.escape(chosen.title)}</b>: '
            f"{html.escape(chosen.summary)}</span>")


# --------------------------------------------------------------------------------------------- Predictions


class Predictions(View):
    """The model's top classes for the current image, with their probabilities; click one to explain it.

    Parameters
    ----------
    state_or_model
        A `ModelState` (shared with other views), or anything `ModelState` takes as a model.
    top
        How many classes to list.
    active
        False builds the view without drawing (a background tab); it draws when `active` is set True. None:
        active, unless made inside `starting_hidden()`.

    A model without a classifier (VGG16 with the offline bsds500 weights) gets a sentence saying so. The row of
    the class that `ClassActivationMap` explains (`state.explained_class`, else the top one) is highlighted.
    """

    said_errors = (CnnvizError,)  # e.g. a model without a classifier: said instead of the list

    def __init__(self, state_or_model: Any, *, top: int = 5, css_class: str = "cnnviz-predictions",
                 active: bool | None = None):
        if isinstance(top, bool) or not isinstance(top, int) or not 1 <= top <= 20:
            raise CnnvizError(f"top must be an int in 1..20; got {top!r}")
        self.state = as_state(state_or_model)
        self.top = top
        self.predictions: TopClasses | None = None
        self.heading = ipywidgets.HTML("")
        self.rows = ipywidgets.VBox([])
        self.buttons: list[ipywidgets.Button] = []
        self.frame = BusyFrame(self.rows)  # a new image's prediction runs the network: said over the old list
        self.message = message_line()
        super().__init__([self.heading, self.message, self.frame], css_class=css_class, active=active)
        self.follow_state(["image", "explained_class", "class_names"])
        self.redraw()

    def _busy_words(self) -> str:
        return "computing the predictions …"

    def _key(self) -> tuple:
        state = self.state
        state.explainer.classifier  # noqa: B018  (raises, with the reason, for a model without a classifier)
        return (id(state.model_input), state.explained_class, state.explainer.classifier.names, self._weights_version)

    def _hide(self, hidden: bool) -> None:
        self.rows.layout.display = "none" if hidden else None
        if hidden:
            self.heading.value = ""
            self.predictions = None

    def _draw(self) -> None:
        state = self.state
        p = state.predictions(self.top)
        self.predictions = p
        chosen = p.indices[0] if state.explained_class is None else state.explained_class
        if len(self.buttons) != len(p.indices):
            self._build_rows(len(p.indices))
        for row, button, index, name, probability in zip(self.rows.children, self.buttons, p.indices, p.names,
                                                         p.probabilities, strict=True):
            button.description = f"{index}: {name}"
            button.tooltip = f"explain class {index} ({name}) in the class activation map"
            button.button_style = "info" if index == chosen else ""
            bar, label = row.children[1], row.children[2]
            bar.value = float(np.clip(probability, 0.0, 1.0))
            label.value = f"{probability:.1%}" if probability >= 0.001 else f"{probability:.2g}"
        info = state.describe()
        classifier = state.explainer.classifier
        words = {"ImageNet": "ImageNet class names", "given": "your class names",
                 "index": "class indices (no names given: ModelState.set_class_names names them)"}
        warning = (" The weights are random: these guesses mean nothing."
                   if info["weights"].startswith("random") else "")
        self.heading.value = (
            f"<b>Top {len(p.indices)} of {classifier.n_classes} classes</b> for "
            f"{html.escape(state.image_name or 'the image')} · probabilities: {html.escape(p.note)} · "
            f"{words[classifier.names_source]}.{warning} Click a class to explain it.")
        self.show_message("")
        self._hide(False)

    def _build_rows(self, n: int) -> None:
        old_rows = self.rows.children
        self.buttons = []
        rows = []
        for rank in range(n):
            button = ipywidgets.Button(layout=ipywidgets.Layout(width="260px"))
            button.add_class("cnnviz-prediction-row")
            button.on_click(lambda _button, rank=rank: self.click(rank))
            bar = ipywidgets.FloatProgress(value=0.0, min=0.0, max=1.0, layout=ipywidgets.Layout(width="200px"))
            rows.append(ipywidgets.HBox([button, bar, ipywidgets.HTML("")]))
            self.buttons.append(button)
        self.rows.children = rows
        for row in old_rows:
            close_all(row)

    def click(self, rank: int) -> None:
        """What a click on row `rank` (0 = the most likely class) does: explain that class."""
        if self.predictions is not None and 0 <= rank < len(self.predictions.indices):
            self.state.explained_class = self.predictions.indices[rank]



# --------------------------------------------------------------------------------------------- ClassActivationMap


class ClassActivationMap(View):
    """The heat map of an attribution method for a class (or for the current filter) over the input picture.

    Parameters
    ----------
    state_or_model
        A `ModelState` (shared with other views), or anything `ModelState` takes as a model.
    method
        Any name of `attribution.catalogue.METHODS`: "grad-cam" (a conv layer's maps weighted by the mean
        gradient of the score; coarse, class-specific), "saliency" (|d score / d pixel|; fine, noisy), ... The
        menu (`method`) lists them all by title, with the chosen one's summary under it (`summary`); each runs
        with its own default options. The layer menu shows only for the CAM family, which weighs a layer's maps.
    opacity
        Weight of the heat map over the picture, 0..1.
    active
        False builds the view without computing anything (a background tab) until `active` is set True. None:
        active, unless made inside `starting_hidden()`.

    With a classifier the class is `state.explained_class` (None: the top prediction; `Predictions` sets it
    on a click). Without one (VGG16 with the bsds500 weights) the score is the mean activation of the current
    filter of the current layer: what in the picture drives that filter; Grad-CAM then weighs the last conv
    layer before it. The layer menu names the layer "automatic" stands for, and lists only layers that can be
    weighed for the target.

    While a pass computes, the previous picture stays, dimmed, under a "computing …" note (`frame`) naming the
    method (the slow ones, Score-CAM, occlusion or Integrated Gradients on a large input, take seconds); before
    the first one, the input picture stands in.
    """

    said_errors = (CnnvizError,)  # e.g. no conv layer to weigh: said over the plain picture

    def __init__(self, state_or_model: Any, *, method: str = "grad-cam", opacity: float = 0.5,
                 css_class: str = "cnnviz-class-activation-map", width_px: int = 420, active: bool | None = None):
        if method not in METHODS:
            raise CnnvizError(f"unknown method {method!r}; expected one of {', '.join(METHODS)}")
        if not isinstance(opacity, (int, float)) or not 0.0 <= opacity <= 1.0:
            raise CnnvizError(f"opacity must be a number in 0..1; got {opacity!r}")
        state = self.state = as_state(state_or_model)
        self.explanation: Explanation | None = None
        self.method = ipywidgets.Dropdown(options=[(method_title(name), name) for name in METHODS], value=method,
                                          description="method", layout=ipywidgets.Layout(width="300px"),
                                          tooltip="how the map is made (its summary is under the menus); keys: "
                                                  "Alt+Down or Space opens the list, Home/End/PageDown move in it")
        self.method.add_class("cnnviz-method-picker")
        self.summary = ipywidgets.HTML("", layout=ipywidgets.Layout(max_width="760px"))
        self.summary.add_class("cnnviz-method-summary")
        has_classes = state.has_classifier()
        self.of = ipywidgets.Dropdown(options=[("a class", "class"), ("the current filter", "filter")],
                                      value="class" if has_classes else "filter", description="explain",
                                      layout=ipywidgets.Layout(width="220px",
                                                               display=None if has_classes else "none"))
        self.class_picker = ipywidgets.Dropdown(options=[("top prediction", -1)], value=-1, description="class",
                                                layout=ipywidgets.Layout(width="300px",
                                                                         display=None if has_classes else "none"))
        self.class_picker.add_class("cnnviz-class-picker")
        self.layer_picker = ipywidgets.Dropdown(
            options=[("automatic", "")] + [(n, n) for n in state.explainer.conv_layers()], value="",
            description="layer weighed", style={"description_width": "initial"},
            tooltip="whose maps the CAM method weighs; automatic: for a class, the model's last conv layer, for a "
                    "filter, the last conv layer before the filter's own (the menu names it)",
            layout=ipywidgets.Layout(width="360px"))
        self.layer_picker.add_class("cnnviz-gradcam-layer-picker")
        self.opacity = ipywidgets.FloatSlider(value=float(opacity), min=0.0, max=1.0, step=0.05,
                                              description="opacity", readout_format=".2f")
        self.opacity.add_class("cnnviz-opacity-slider")
        self.controls = ipywidgets.VBox([ipywidgets.HBox([self.method, self.of]), self.summary,
                                         ipywidgets.HBox([self.class_picker, self.layer_picker]), self.opacity])
        self.figure = MosaicFigure(css_class=f"{css_class}-figure", width_px=width_px)
        self.frame = BusyFrame(self.figure, layout=ipywidgets.Layout(width="100%"))
        self._picture_key: tuple | None = None
        # never an empty panel: until the first pass is done, the input picture stands in
        self._show_placeholder(state)
        self.message = message_line()
        super().__init__([self.controls, self.message, self.frame], css_class=css_class, active=active)
        self.follow_state(["image", "explained_class", "class_names", "layer", "filter"])
        self._setting_picker = False
        self._setting_layers = False
        self._sync_method()
        for control in (self.method, self.of, self.layer_picker):
            self.watch(control, self._on_control_change)
        self.watch(self.class_picker, self._on_class_picked)
        self.watch(self.opacity, self._on_opacity_change)
        self.redraw()

    # -- what to draw ----------------------------------------------------------------------------------

    def _target(self) -> Target:
        chosen = None if self.of.value == "filter" else self.state.explained_class
        return self.state.explain_target(chosen, of=self.of.value)

    def _key(self) -> tuple:
        target = self._target()  # may run the prediction (once per image) to know the top class
        self._sync_layer_picker(target)
        layer = self.layer_picker.value if catalogue.method(self.method.value).uses_layer else ""
        return (id(self.state.model_input), self.method.value, target, layer, self._weights_version)

    def _busy_words(self) -> str:
        return f"computing {method_title(self.method.value)} …"

    def _show_placeholder(self, state: Any, why_not: bool = False) -> None:
        picture = state.model_input.picture
        method = method_title(self.method.value)
        title = (f"{state.image_name or 'the image'} · " + (f"no {method} map for this choice: see the note above"
                                                            if why_not else f"its {method} map comes over it once "
                                                            "computed"))
        self.figure.show(render.tile_maps(picture[:, :, None, :], pad=0), title=title,
                         tooltips=["the input picture (at the size fed to the model)"])

    def _sync_layer_picker(self, target: Target) -> None:
        """The layer menu offers the conv layers Grad-CAM can weigh for `target`; "automatic" names its pick."""
        explainer = self.state.explainer
        convs = explainer.conv_layers(before=target.layer if target.kind == "filter" else None)
        try:
            automatic = f"automatic: {explainer.default_layer(target)}"
        except LayerError:  # no conv layer to weigh: said in the view when Grad-CAM is asked for
            automatic = "automatic"
        options = [(automatic, ""), *((n, n) for n in convs)]
        if [tuple(o) for o in self.layer_picker.options] == options:
            return
        value = self.layer_picker.value if self.layer_picker.value in convs else ""
        self._setting_layers = True
        try:
            with self.layer_picker.hold_sync():
                self.layer_picker.options = options
                self.layer_picker.value = value
        finally:
            self._setting_layers = False

    def _hide(self, hidden: bool) -> None:
        # no map to show (the note above says why): the plain input picture rather than an empty panel
        self.opacity.layout.display = "none" if hidden else None
        if hidden:
            self.explanation = None
            self._picture_key = None
            self._show_placeholder(self.state, why_not=True)

    def _draw(self) -> None:
        state = self.state
        target = self._target()
        layer = (self.layer_picker.value or None) if catalogue.method(self.method.value).uses_layer else None
        result = state.explanation(self.method.value, class_index=target.index if target.kind == "class" else None,
                                   layer=layer, of=target.kind)
        self.explanation = result
        self._sync_class_picker()
        self.show_message(result.note, "error")
        self._hide(False)
        self._draw_picture()

    def _draw_picture(self) -> None:
        result = self.explanation
        if result is None:
            return
        key = (id(result), self.opacity.value)
        if key == self._picture_key:
            return
        self._picture_key = key
        # weighted: weak areas keep the photo clear, hot spots stand out (a flat tint hides the photo)
        picture = overlay(self.state.model_input.picture, result.heatmap, HEAT_CMAP, self.opacity.value,
                          weighted=True)
        mosaic = render.tile_maps(picture[:, :, None, :], pad=0)
        classifier = self.state.explainer.classifier if result.target.kind == "class" else None
        what = result.target.words(classifier)
        value = format_number(result.score_value)
        image = self.state.image_name or "the image"
        if result.method == "grad-cam":
            h, w = result.raw.shape
            title = (f"Grad-CAM of {what} on {result.layer} ({w}×{h} maps, each weighted by the mean gradient of "
                     f"the {result.score}, {value}) · over {image}")
        elif result.method == "saliency":
            title = f"Saliency of {what}: |d {result.score} / d pixel|, largest over the colours · over {image}"
        else:
            where = f" on {result.layer}" if catalogue.method(result.method).uses_layer else ""
            title = f"{method_title(result.method)} of {what}{where} ({result.score} {value}) · over {image}"
        title += f" · {result.seconds * 1000:.0f} ms"
        peak = format_number(float(result.raw.max()))
        tip = f"{method_title(result.method)} of {what}: {result.score} {value}, peak {peak}"
        caption = f"share of the map's peak (the weaker, the clearer the photo); opacity {self.opacity.value:.2f}"
        self.figure.show(mosaic, title=title, tooltips=[tip], colorbar=(HEAT_CMAP, 0.0, 1.0),
                         colorbar_ends=("none", "most"), colorbar_label=caption)

    def _sync_class_picker(self) -> None:
        """The class picker lists the top predictions (and the explained class) and shows the explained one."""
        state = self.state
        if not state.has_classifier():
            self.class_picker.layout.display = "none"
            return
        self.class_picker.layout.display = None if self.of.value == "class" else "none"
        predictions = state.predictions(5)
        names = state.explainer.classifier.names
        options = [("top prediction", -1)] + [(f"{i}: {n}", i) for i, n in zip(predictions.indices,
                                                                               predictions.names, strict=True)]
        chosen = state.explained_class
        if chosen is not None and chosen not in predictions.indices:
            options.append((f"{chosen}: {names[chosen]}", chosen))
        self._setting_picker = True
        try:
            with self.class_picker.hold_sync():
                self.class_picker.options = options
                self.class_picker.value = -1 if chosen is None else chosen
        finally:
            self._setting_picker = False

    # -- events ----------------------------------------------------------------------------------------

    def _sync_method(self) -> None:
        """The summary names the chosen method; the layer menu shows only for a method that weighs a layer."""
        self.summary.value = method_summary(self.method.value)
        self.layer_picker.layout.display = None if catalogue.method(self.method.value).uses_layer else "none"

    def _on_control_change(self, change: traitlets.Bunch) -> None:
        if change["owner"] is self.method:
            self._sync_method()  # at once: the summary changes before a slow method starts computing
        if not self._setting_layers:
            self.redraw()

    def _on_class_picked(self, change: traitlets.Bunch) -> None:
        if self._setting_picker or change["new"] is None:
            return
        self.state.explained_class = None if change["new"] == -1 else int(change["new"])

    def _on_opacity_change(self, _change: traitlets.Bunch) -> None:
        if self.active:
            self._draw_picture()  # the same explanation, blended anew: no gradient pass
