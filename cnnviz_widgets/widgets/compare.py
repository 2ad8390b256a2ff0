"""`CompareImages`: the current layer's current channel for the state's image and a second image, side by side,
on one shared value range, drawn at one scale."""

from __future__ import annotations

from typing import Any

import ipywidgets
import numpy as np
import traitlets

from cnnviz_widgets.errors import CnnvizError
from cnnviz_widgets.pictures import images, render
from cnnviz_widgets.pictures.preprocessing import ModelInput
from cnnviz_widgets.widgets.mosaic import MosaicFigure
from cnnviz_widgets.widgets.parts import BusyFrame, format_number, message_line, show_child
from cnnviz_widgets.widgets.view import View, as_state

COMPARE_SIDE = 224
"""Longest side, in pixels, of each compared map as sent (larger maps are average-pooled first)."""
_THUMB_PX = 160
_RANGE_WORDS = {
    "per_map": "one range for both maps: the lower min .. the higher max of the two",
    "per_layer": "one range for both: min .. max over both images' whole layer",
    "symmetric": "one range for both: ±max |value| of the two maps, 0 in the middle",
}


# --------------------------------------------------------------------------------------------- CompareImages


class CompareImages(View):
    """The current layer's current channel for two images, side by side, on one value range.

    Parameters
    ----------
    state_or_model
        A `ModelState` (shared with other views): its image is on the left. Or anything `ModelState` takes.
    other_image
        The image on the right: anything `load_image` takes, or a sample name.
    active
        False builds the view without running the second image (a background tab) until `active` is True. None:
        active, unless made inside `starting_hidden()`.

    Each image has its own forward pass (both share the state's activation cache, which holds two images'
    worth); both maps are scaled on one range (see `value_range`), so equal colours mean equal activations.
    """

    said_errors = (CnnvizError,)

    def __init__(self, state_or_model: Any, other_image: Any = "cat", *, css_class: str = "cnnviz-compare-images",
                 width_px: int = 280, active: bool | None = None):
        state = self.state = as_state(state_or_model)
        first = state.prepare_image(other_image)  # bad input fails here, before anything observes the state
        self.other_input: ModelInput | None = None
        self.other_name = ""
        self.value_range: tuple[float, float] | None = None
        self.picker = ipywidgets.Dropdown(options=images.sample_names(), value=None, description="other image")
        self.picker.add_class("cnnviz-compare-picker")
        # Both thumbnails in boxes of one height, so the maps below them start level; never empty (an empty
        # Image shows the browser's broken-image icon while the other image runs).
        self.thumbs = [ipywidgets.Image(value=render.encode_png(state.model_input.picture), format="png",
                                        layout=ipywidgets.Layout(height=f"{_THUMB_PX}px", width="auto",
                                                                 max_width="100%", object_fit="contain",
                                                                 object_position="left"))
                       for _ in range(2)]
        self.figures = [MosaicFigure(css_class=f"{css_class}-{side}", width_px=width_px) for side in ("left", "right")]
        self.sides = ipywidgets.HBox([ipywidgets.VBox([thumb, figure], layout=ipywidgets.Layout(flex="1 1 0%"))
                                      for thumb, figure in zip(self.thumbs, self.figures, strict=True)],
                                     layout=ipywidgets.Layout(width="100%"))
        self.sides.add_class("cnnviz-compare-sides")
        self.frame = BusyFrame(self.sides, layout=ipywidgets.Layout(width="100%"))
        self.message = message_line()
        super().__init__([self.picker, self.message, self.frame], css_class=css_class, active=active)
        self.follow_state(["image", "layer", "filter", "normalization", "colormap"])
        self._setting_picker = False
        self.watch(self.picker, self._on_picked)
        self._use_other(first, other_image if isinstance(other_image, str) else None, other_image)

    def set_other_image(self, source: Any, name: str | None = None) -> None:
        """Show `source` (anything `load_image` takes, or a sample name) on the right. Bad input raises the
        library's error and keeps the previous image."""
        self._use_other(self.state.prepare_image(source), name, source)

    def _use_other(self, prepared: ModelInput, name: str | None, source: Any) -> None:
        if name is None:
            name = source if isinstance(source, str) else str(getattr(source, "name", "") or "other image")
        self.other_input, self.other_name = prepared, name
        self._setting_picker = True
        try:
            self.picker.value = name if name in images.SAMPLE_IMAGES else None
        finally:
            self._setting_picker = False
        self.thumbs[1].value = render.encode_png(prepared.picture)
        self.redraw()

    def _key(self) -> tuple:
        s = self.state
        return (id(s.model_input), id(self.other_input), s.layer, s.filter, s.normalization, s.colormap,
                self._weights_version)

    def _hide(self, hidden: bool) -> None:
        show_child(self, self.frame, not hidden)

    def _busy_words(self) -> str:
        return f"running the network on {self.other_name or 'the other image'} …"

    def maps(self) -> tuple[np.ndarray, np.ndarray]:
        """(H, W) float32 maps of the current layer and channel (`state.filter`) for the two images."""
        s = self.state
        if self.other_input is None:
            raise CnnvizError("no second image yet: call set_other_image")
        return (s.activation()[..., s.filter], s.activation_for(self.other_input)[..., s.filter])

    def shared_range(self) -> tuple[float, float]:
        """The one (lo, hi) both maps are scaled on, following `state.normalization` (see `_RANGE_WORDS`)."""
        s = self.state
        left, right = self.maps()
        if s.normalization == "per_layer":
            stacks = (s.activation(), s.activation_for(self.other_input))
            lo, hi = min(float(a.min()) for a in stacks), max(float(a.max()) for a in stacks)
        elif s.normalization == "symmetric":
            hi = max(float(np.abs(left).max()), float(np.abs(right).max()))
            lo = -hi
        else:
            lo, hi = min(float(left.min()), float(right.min())), max(float(left.max()), float(right.max()))
        return (lo, hi) if hi > lo else (lo, lo + 1.0)  # two flat maps: any valid range shows them flat

    def _draw(self) -> None:
        s = self.state
        left, right = self.maps()
        lo, hi = self.value_range = self.shared_range()
        self.thumbs[0].value = render.encode_png(s.model_input.picture)
        what = ("fed channel" if s.layer == s.input_layer else "channel")
        # one scale for both: each side's share of the row follows its map's width, so a value of either map
        # is drawn at the same size (equal widths would enlarge the narrower map)
        for side, values in zip(self.sides.children, (left, right), strict=True):
            side.layout.flex = f"{values.shape[1]} 1 0%"
        for figure, values, name in zip(self.figures, (left, right), (s.image_name or "the image", self.other_name),
                                        strict=True):
            mosaic, _ = render.render_mosaic(values[..., None], cmap=s.colormap, max_side=COMPARE_SIDE, pad=0,
                                             value_range=(lo, hi))
            h, w = values.shape
            values_words = f"{format_number(float(values.min()))}..{format_number(float(values.max()))}"
            tip = f"{name}: {s.layer} {what} {s.filter}, {w}×{h}, {values_words}"
            figure.show(mosaic, title=f"{name} · {s.layer} {what} {s.filter} ({w}×{h})", tooltips=[tip],
                        colorbar=(s.colormap, lo, hi), colorbar_label="activation, same range on both sides")
        words = _RANGE_WORDS[s.normalization]
        self.show_message(f"Same layer and {what} for two images. {words[:1].upper()}{words[1:]}: "
                          f"{format_number(lo)} .. {format_number(hi)}, so equal colours mean equal values.", "text")
        self._hide(False)

    def _on_picked(self, change: traitlets.Bunch) -> None:
        if self._setting_picker or change["new"] is None:
            return
        try:
            self.set_other_image(change["new"])
        except CnnvizError as err:  # the previous image stays, and so does its picture
            self.show_message(f"{err} The previous image stays.", "error")
