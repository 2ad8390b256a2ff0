"""`Explorer`: every control and view of cnnviz_widgets on one `ModelState`, in one notebook cell.

The controls are linked both ways to the state's traits, so moving a slider, clicking a tile or setting
`explorer.state.layer = "block3_conv1"` from code all move every view. The views never talk to each other.
On a `TrainingState` (a `TrainingMonitor`'s `state`) every view follows the weights as the network trains, or
the kept step shown, and the status line says which.
"""

from __future__ import annotations

import base64
import contextlib
import html
import io
import re
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ipywidgets
import PIL.Image
import traitlets

from cnnviz_widgets.errors import CnnvizError, CnnvizWarning
from cnnviz_widgets.export.panels import figures_of
from cnnviz_widgets.export.saving import export_png
from cnnviz_widgets.pictures import images, render
from cnnviz_widgets.state.model_state import ModelState
from cnnviz_widgets.state.training_state import TrainingState
from cnnviz_widgets.widgets.about import model_header
from cnnviz_widgets.widgets.attribution import ClassActivationMap, CompareImages, Predictions
from cnnviz_widgets.widgets.effect import FilterEffect
from cnnviz_widgets.widgets.grids import ActivationGrid, WeightGrid
from cnnviz_widgets.widgets.looksfor import WhatItLooksFor
from cnnviz_widgets.widgets.parts import close_all
from cnnviz_widgets.widgets.pixel import ConvolutionAtPixel
from cnnviz_widgets.widgets.stats import ChannelStats
from cnnviz_widgets.widgets.summary import LayerSummary
from cnnviz_widgets.widgets.theme import LINK_COLOR, colored, stylesheet
from cnnviz_widgets.widgets.view import WEIGHTS_TRAIT, starting_hidden

MAX_UPLOAD_BYTES = 20 * 2**20
"""Largest accepted upload (20 MiB): bigger files are refused with a message before decoding."""

_BUSY_TEXT = "running the network…"


class Explorer(ipywidgets.VBox):
    """Layer, channel, filter, image and display controls plus the four views, bound to one `ModelState`.

    Parameters
    ----------
    model_or_state
        A `ModelState` to drive (shared with other views), a `keras.Model`, or a preset name ("vgg16").
    image
        Anything `load_image` takes, or a sample name; default: the state's image (the astronaut sample).

    Attributes
    ----------
    state : ModelState
        What every control and view is bound to; set its traits from code to drive the explorer.
    """

    def __init__(self, model_or_state: Any = "vgg16", image: Any = None):
        if isinstance(model_or_state, ModelState):
            self.state = model_or_state
            if image is not None:
                self.state.set_image(image)
        else:
            self.state = ModelState(model_or_state, image=image)
        state = self.state
        self._links: list[Any] = []
        self._setting_picker = False  # True while the picker follows the state, so it does not load again
        self._state_handlers: list[tuple[Any, list[str]]] = []
        self._said: tuple[str, ...] = ()  # what the status line says of the state's last pass (see _draw_status)

        self.header = _with_class(ipywidgets.HTML(""), "cnnviz-header")
        self.layer_slider = _with_class(ipywidgets.SelectionSlider(
            options=state.layers, value=state.layer, description="layer", continuous_update=True,
            style={"description_width": "initial"}), "cnnviz-layer-slider")
        self.channel_slider = _index_slider("channel", state.channel, state.n_channels() - 1)
        self.filter_slider = _index_slider("filter", state.filter, state.n_filters() - 1)
        self.image_picker = _with_class(ipywidgets.Dropdown(
            options=images.sample_names(), value=None, description="image"), "cnnviz-image-picker")
        self.upload = _with_class(ipywidgets.FileUpload(
            accept="image/*", multiple=False, description="upload image"), "cnnviz-upload")
        self.colormap_picker = _with_class(ipywidgets.Dropdown(
            options=list(render.COLORMAPS), value=state.colormap, description="colours"), "cnnviz-colormap-picker")
        self.normalization_picker = _with_class(ipywidgets.Dropdown(
            options=[(mode.replace("_", " "), mode) for mode in render.NORMALIZATIONS], value=state.normalization,
            description="scaling"), "cnnviz-normalization-picker")
        self.message = _with_class(ipywidgets.HTML(""), "cnnviz-message")
        self.status = _with_class(ipywidgets.HTML(""), "cnnviz-status")

        # Each tab's view is made when its tab first opens (the others never cost their widgets, computing or
        # pictures: opening the Explorer sends only the first tab's). A view made while its tab is closed (by
        # reading e.g. `explorer.filter_effect`) starts inactive and draws when the tab opens.
        self._view_makers: dict[str, Callable[[], ipywidgets.Widget]] = {
            "Activations": lambda: ActivationGrid(state), "Weights": lambda: WeightGrid(state),
            "Filter effect": lambda: FilterEffect(state), "One value": lambda: ConvolutionAtPixel(state),
            "Channel stats": lambda: ChannelStats(state), "Layers": lambda: LayerSummary(state),
            "Predictions": lambda: Predictions(state), "Why (Grad-CAM)": lambda: ClassActivationMap(state),
            "Compare images": lambda: _compare_images(state), "What it looks for": lambda: WhatItLooksFor(state)}
        self._built_views: dict[int, ipywidgets.Widget] = {}
        # A tab holds its view only while it is open: a bqplot figure laid out in a hidden tab measures 0 px
        # (and the browser logs negative sizes for its shapes).
        self._tab_pages = [ipywidgets.Box(layout=ipywidgets.Layout(display="block")) for _ in self._view_makers]
        self.tabs = _with_class(ipywidgets.Tab(children=self._tab_pages, titles=tuple(self._view_makers)),
                                "cnnviz-tabs")
        self.export_button = _with_class(ipywidgets.Button(
            description="Export PNG", icon="download",
            tooltip="make a PNG of the open tab's pictures, large enough for slides, and offer it for download"),
            "cnnviz-export-button")
        self.exported: bytes | None = None  # the last PNG made by the export button
        self.export_button.on_click(self._on_export)

        for trait, control in (("layer", self.layer_slider), ("channel", self.channel_slider),
                               ("filter", self.filter_slider), ("colormap", self.colormap_picker),
                               ("normalization", self.normalization_picker)):
            self._links.append(ipywidgets.link((state, trait), (control, "value")))
        self._observe_state(self._on_layer_change, ["layer"])
        self._observe_state(self._on_image_change, ["image"])
        self._observe_state(self._on_busy_change, ["busy", "status"])
        if state.has_trait(WEIGHTS_TRAIT):  # a TrainingState: the status line names the step shown
            self._observe_state(self._on_weights_change, [WEIGHTS_TRAIT])
        self.tabs.observe(self._on_tab_change, "selected_index")
        self.image_picker.observe(self._on_image_picked, "value")
        self.upload.observe(self._on_upload, "value")

        self.controls = ipywidgets.VBox([
            _with_class(ipywidgets.HBox([self.layer_slider, self.channel_slider, self.filter_slider]),
                        "cnnviz-index-controls"),
            _with_class(ipywidgets.HBox([self.image_picker, self.upload, self.colormap_picker,
                                         self.normalization_picker, self.export_button]), "cnnviz-display-controls"),
        ])
        self.controls.add_class("cnnviz-controls")
        self.stylesheet = stylesheet()
        # message and status share one row of fixed height above the tabs: in sight, and nothing jumps
        self.lines = _with_class(ipywidgets.HBox([self.message, self.status]), "cnnviz-lines")
        super().__init__(children=[self.stylesheet, self.header, self.controls, self.lines, self.tabs])
        self.add_class("cnnviz-explorer")
        self._on_tab_change(None)
        self._on_layer_change(None)
        self._on_image_change(None)
        self._on_busy_change(None)

    # -- state -> controls -----------------------------------------------------------------------------

    def _observe_state(self, handler: Any, names: list[str]) -> None:
        self.state.observe(handler, names)
        self._state_handlers.append((handler, names))

    def _on_layer_change(self, _change: traitlets.Bunch | None) -> None:
        state = self.state
        for trait, highest in (("channel", state.n_channels() - 1), ("filter", state.n_filters() - 1)):
            if getattr(self, f"{trait}_slider").max != highest:
                self._replace_slider(trait, highest)
        with self.channel_slider.hold_sync(), self.filter_slider.hold_sync():
            # the state has already clamped channel and filter to the new layer, so the values stay valid
            self.channel_slider.max = state.n_channels() - 1
            self.filter_slider.max = state.n_filters() - 1
            self.channel_slider.value, self.filter_slider.value = state.channel, state.filter
            self.channel_slider.disabled = state.layer_kind() != "conv"  # only a conv filter has input channels

    def _on_image_change(self, _change: traitlets.Bunch | None) -> None:
        self.header.value = model_header(self.state)  # plain words: Python names only in its hover help
        name = self.state.image_name
        self._setting_picker = True
        try:  # a picture that is not a sample leaves the picker empty rather than naming the wrong one
            self.image_picker.value = name if name in images.SAMPLE_IMAGES else None
        finally:
            self._setting_picker = False

    def _on_busy_change(self, _change: traitlets.Bunch | None) -> None:
        # where the eye is: the open tab's pictures dim while the network runs (CSS, see THEME_CSS)
        if self.state.busy:
            self.tabs.add_class("cnnviz-busy")
        else:
            self.tabs.remove_class("cnnviz-busy")
        note = self.state.cache_note  # a smaller cache than usual explains why an old image runs again
        self._said = tuple(text for text in (self.state.status, note) if text)
        self._draw_status()

    def _on_weights_change(self, _change: traitlets.Bunch) -> None:
        self._draw_status()  # (from the training thread too: the monitor refreshes the state there)

    def _draw_status(self) -> None:
        """The status line: which weights a TrainingState shows, then what the state's last pass said."""
        if self.state.busy:
            self.status.value = _BUSY_TEXT
            return
        self.status.value = html.escape(" · ".join(text for text in (weights_words(self.state), *self._said)
                                                   if text))

    def _on_tab_change(self, _change: traitlets.Bunch | None) -> None:
        # Grids in background tabs skip their redraws (the activation mosaic costs tens of ms a frame while a
        # slider is dragged) and catch up when their tab is opened.
        # Only the open tab holds its view (see __init__): the others are emptied, so no figure is ever laid
        # out hidden; a reopened tab draws its view afresh.
        selected = self.tabs.selected_index or 0
        self.view_at(selected)  # made on first opening
        for index, page in enumerate(self._tab_pages):
            view = self._built_views.get(index)
            if view is None:
                continue
            page.children = (view,) if index == selected else ()
            if hasattr(view, "active"):
                view.active = index == selected
        # what the message and status lines said was about the tab left behind
        self.message.value = ""
        self._said = ()
        self._draw_status()
        self.export_button.disabled = not figures_of(self.view_at(selected))

    def _replace_slider(self, trait: str, highest: int) -> None:
        """A new slider for `trait` with maximum `highest`, in place of the old one.

        A slider's maximum raised after it is displayed is not seen by its End and PageUp keys (ipywidgets 8:
        End stops at the old maximum), so a layer with another count gets a slider made with its own.
        """
        old = getattr(self, f"{trait}_slider")
        for link in [link for link in self._links if link.target[0] is old]:
            link.unlink()
            self._links.remove(link)
        new = _index_slider(trait, getattr(self.state, trait), highest)
        new.disabled = old.disabled
        setattr(self, f"{trait}_slider", new)
        self._links.append(ipywidgets.link((self.state, trait), (new, "value")))
        row = getattr(self, "controls", None)
        if row is not None:
            boxes = row.children[0]
            boxes.children = tuple(new if child is old else child for child in boxes.children)
        close_all(old)  # its Layout and SliderStyle too, or each layer change would leave two widgets behind

    @property
    def current_view(self) -> ipywidgets.Widget:
        """The view in the open tab."""
        return self.view_at(self.tabs.selected_index or 0)

    def view_at(self, index: int) -> ipywidgets.Widget:
        """The view of tab `index`, made now if its tab has not been opened yet."""
        view = self._built_views.get(index)
        if view is None:
            make = list(self._view_makers.values())[index]
            shown = index == (self.tabs.selected_index or 0)
            with contextlib.nullcontext() if shown else starting_hidden():
                view = make()
            self._built_views[index] = view
        return view

    @property
    def views(self) -> list[ipywidgets.Widget]:
        """Every tab's view, in tab order (this makes those not made yet)."""
        return [self.view_at(index) for index in range(len(self._view_makers))]

    activation_grid = property(lambda self: self.view_at(0), doc="The Activations tab's `ActivationGrid`.")
    weight_grid = property(lambda self: self.view_at(1), doc="The Weights tab's `WeightGrid`.")
    filter_effect = property(lambda self: self.view_at(2), doc="The Filter effect tab's `FilterEffect`.")
    convolution_at_pixel = property(lambda self: self.view_at(3), doc="The One value tab's `ConvolutionAtPixel`.")
    channel_stats = property(lambda self: self.view_at(4), doc="The Channel stats tab's `ChannelStats`.")
    layer_summary = property(lambda self: self.view_at(5), doc="The Layers tab's `LayerSummary`.")
    predictions = property(lambda self: self.view_at(6), doc="The Predictions tab's `Predictions`.")
    class_activation_map = property(lambda self: self.view_at(7), doc="The Why (Grad-CAM) tab's view.")
    compare_images = property(lambda self: self.view_at(8), doc="The Compare images tab's `CompareImages`.")
    what_it_looks_for = property(lambda self: self.view_at(9), doc="The What it looks for tab's view.")

    # -- controls -> state -----------------------------------------------------------------------------

    def _on_image_picked(self, change: traitlets.Bunch) -> None:
        if self._setting_picker or change["new"] is None:
            return
        self._set_image(change["new"], name=change["new"])

    def _on_upload(self, change: traitlets.Bunch) -> None:
        files = change["new"]
        if not files:
            return
        upload = files[0]
        content = upload["content"]
        # The bytes received rule, not only the size the front end claims (a client could understate it).
        received = content.nbytes if isinstance(content, memoryview) else len(content)
        name, size = upload.get("name", "upload"), max(int(upload.get("size", 0)), received)
        if size > MAX_UPLOAD_BYTES:
            self._show_error(f"{name} is {size / 2**20:.1f} MiB; uploads up to {MAX_UPLOAD_BYTES // 2**20} MiB "
                             "are accepted. The previous image stays.")
        else:
            self._set_image(bytes(content), name=name)
        self.upload.value = ()  # so the same file can be chosen again

    def _set_image(self, source: Any, name: str) -> None:
        # What load_image did on the user's behalf (first frame of an animation, channels-first array...) is
        # said in the message line: a warning raised in a widget callback only reaches the browser's log.
        error: CnnvizError | None = None
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", CnnvizWarning)
            try:
                self.state.set_image(source, name=name)
            except CnnvizError as err:
                error = err
        notes = []
        for caught_warning in caught:
            if issubclass(caught_warning.category, CnnvizWarning):
                notes.append(str(caught_warning.message))
            else:  # not ours to show: passed on as if it had not been caught
                warnings.warn_explicit(caught_warning.message, caught_warning.category, caught_warning.filename,
                                       caught_warning.lineno, source=caught_warning.source)
        if error is not None:
            text = _plain(str(error), name)
            self._show_error(f"{text}{'' if text.endswith('.') else '.'} The previous image stays.")
        elif notes:
            self.message.value = colored(" ".join(notes))
        else:
            self.message.value = ""

    def _on_export(self, _button: ipywidgets.Button) -> None:
        view = self.current_view
        tab = self.tabs.titles[self.tabs.selected_index or 0]
        name = re.sub(r"[^A-Za-z0-9]+", "_", f"cnnviz {tab} {self.state.layer}").strip("_") + ".png"
        try:
            with tempfile.TemporaryDirectory() as folder:  # the browser gets the file, the server keeps none
                data = export_png(view, Path(folder) / name, state=self.state).read_bytes()
        except CnnvizError as error:
            self._show_error(str(error))
            return
        self.exported = data
        width, height = PIL.Image.open(io.BytesIO(data)).size
        href = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
        # A link with `download` saves the file in the browser: the kernel's folder may be on another machine.
        self.message.value = (f'<a download="{name}" href="{href}" class="cnnviz-download" style="color: '
                              f'{LINK_COLOR}; text-decoration: underline">Download '
                              f'{html.escape(name)}</a> ({width}×{height} px; the Python that rebuilds it is in '
                              "its metadata)")

    def _show_error(self, text: str) -> None:
        self.message.value = colored(text, "error")

    # -- lifetime --------------------------------------------------------------------------------------

    def close(self) -> None:
        """Unlink the controls, stop observing the state and close every child widget."""
        for link in getattr(self, "_links", []):
            link.unlink()
        for handler, names in getattr(self, "_state_handlers", []):
            self.state.unobserve(handler, names)
        self._links, self._state_handlers = [], []
        # getattr: close() also runs (from __del__) on an explorer whose __init__ failed half way
        controls = getattr(self, "controls", None)
        names = ("tabs", "header",
                 "export_button",
                 "layer_slider", "channel_slider", "filter_slider", "image_picker", "upload", "colormap_picker",
                 "normalization_picker", "message", "status", "lines", "stylesheet")
        parts = [*getattr(self, "_built_views", {}).values(), *(getattr(self, name, None) for name in names)]
        parts += [*controls.children, controls] if controls is not None else []
        for part in parts:
            if part is not None:
                part.close()
        super().close()
        close_all(self)


def weights_words(state: ModelState) -> str:
    """Which weights the views show, for the status line: "weights: live, training" or "weights: step 120 of
    training" on a `TrainingState`; "" on a state whose weights do not change."""
    if not isinstance(state, TrainingState):
        return ""
    return "weights: live, training" if state.step is None else f"weights: step {state.step} of training"


def _compare_images(state: ModelState) -> CompareImages:
    try:
        return CompareImages(state, "cat")
    except CnnvizError:  # e.g. the cat is too small for this model at this max_side: start on the same image
        return CompareImages(state, state.image)


# The loader's message names the bytes it got ("19 bytes (starts with b'hello, t')"), which helps in code; in
# the Explorer the reader knows the file by its name.
_UNREADABLE = re.compile(r"^could not read an image from [\d,]+ bytes(?: \(starts with .*?\))?: ")


def _plain(text: str, name: str) -> str:
    """An image error as a sentence for the Explorer's message line: the file's name, capitals after stops."""
    text = _UNREADABLE.sub(f"The file {name} is not a picture that can be read: ", text.strip())
    text = re.sub(r"; (accepted\b)", lambda m: ". " + m.group(1).capitalize(), text)
    return text[:1].upper() + text[1:]


def _index_slider(trait: str, value: int, highest: int) -> ipywidgets.IntSlider:
    """The input-channel or filter slider, built with its layer's maximum (see `Explorer._replace_slider`)."""
    words = {"channel": "input channel", "filter": "filter"}[trait]
    slider = ipywidgets.IntSlider(
        value=value, min=0, max=highest, description=words, continuous_update=True,
        style={"description_width": "initial"},
        tooltip=f"{words}: drag the handle, or click it and use the arrow keys, PageUp/PageDown and Home/End "
                "(Notebook 7 keeps the arrow keys for moving between cells: there, drag or click on the track)")
    return _with_class(slider, f"cnnviz-{trait}-slider")


def _with_class(widget: ipywidgets.DOMWidget, css_class: str) -> Any:
    widget.add_class(css_class)
    return widget
