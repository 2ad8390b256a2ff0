"""`FilterEffect`: what the current filter does to its input, channel by channel, as four aligned rows.

Row 1 shows some channels of the previous layer's output, row 2 the filter's kernel slices for them, row 3 each
channel cross-correlated with its slice (its partial sum), row 4 the total over ALL channels plus the bias,
and the output after the layer's activation. Column i of rows 1-3 is one input channel. The arithmetic is
`ModelState.filter_effect` (see `cnnviz_widgets.effects`); this view renders it and handles the controls.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable
from typing import Any

import ipywidgets
import numpy as np
import traitlets

from cnnviz_widgets.errors import CnnvizError, LayerError
from cnnviz_widgets.lessons.filter_effect import FilterBreakdown, parse_channels
from cnnviz_widgets.pictures import render
from cnnviz_widgets.widgets.mosaic import MosaicFigure
from cnnviz_widgets.widgets.parts import format_number, message_line, show_child
from cnnviz_widgets.widgets.theme import HIGHLIGHT_COLOR
from cnnviz_widgets.widgets.view import View, as_state

MAP_SIDE = 192
"""Longest side, in pixels, of a map tile as sent (larger maps are average-pooled first)."""
KERNEL_TILE_PX = 96
"""Kernel slices are scaled up (nearest neighbour) to about this many pixels, so each weight is a crisp cell."""
SIGNED_CMAP = "coolwarm"
"""Kernels and partial sums are signed: diverging map, white = 0, symmetric range shared by the row."""
MAX_TOP_K = 16
_VALUES_UP_TO = 25  # kernels with at most this many taps (5×5) get their weights printed
_MODE_WORDS = {
    "per_map": "each map scaled to its own min..max",
    "per_layer": "one min..max shared by the maps of this row",
    "symmetric": "symmetric: ±max |value| of this row, 0 in the middle",
}


class FilterEffect(View):
    """The current filter of the current layer taken apart by input channel.

    Parameters
    ----------
    state_or_model
        A `ModelState` (shared with other views), or anything `ModelState` takes as a model.
    top_k
        How many of the largest contributing input channels to show by default.
    css_class
        Added to the root box; the rows get "<css_class>-inputs", "-kernels", "-partials", "-result".

    Follows the state's layer, filter, image, colour map and normalisation (and the weights of a `TrainingState`,
    its `version`); a click on a tile of rows 1-3
    makes that input channel `state.channel`. For input and pooling layers it shows why there is nothing to
    take apart.
    """

    said_errors = (LayerError,)  # an input or pooling layer: said instead of the rows

    def __init__(self, state_or_model: Any, *, top_k: int = 3, css_class: str = "cnnviz-filter-effect",
                 width_px: int = 420):
        if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= MAX_TOP_K:
            raise CnnvizError(f"top_k must be an int in 1..{MAX_TOP_K}; got {top_k!r}")
        self.state = as_state(state_or_model)
        self.breakdown: FilterBreakdown | None = None

        self.heading = ipywidgets.HTML("")
        self.mode = ipywidgets.ToggleButtons(options=[("top contributors", "top"), ("pick channels", "pick")],
                                             value="top", tooltips=["the input channels that move this filter's "
                                                                    "output most (mean |partial sum|)",
                                                                    "the input channels typed on the right"],
                                             style={"button_width": "auto"})
        self.top_k = ipywidgets.BoundedIntText(value=top_k, min=1, max=MAX_TOP_K, description="top k",
                                               layout=ipywidgets.Layout(width="130px"))
        self.channels = ipywidgets.Text(value="", placeholder="e.g. 0, 5, 17 or 0-3", description="channels",
                                        continuous_update=False, layout=ipywidgets.Layout(width="260px"))
        self.controls = ipywidgets.HBox([self.mode, self.top_k, self.channels])
        self.message = message_line()
        self.inputs_figure = MosaicFigure(css_class=f"{css_class}-inputs", width_px=width_px)
        self.kernels_figure = MosaicFigure(css_class=f"{css_class}-kernels", width_px=width_px)
        self.partials_figure = MosaicFigure(css_class=f"{css_class}-partials", width_px=width_px)
        self.result_figure = MosaicFigure(css_class=f"{css_class}-result", width_px=width_px)
        self.figures = ipywidgets.VBox([self.inputs_figure, self.kernels_figure, self.partials_figure,
                                        self.result_figure])
        super().__init__([self.heading, self.controls, self.message, self.figures], css_class=css_class)

        for figure in (self.inputs_figure, self.kernels_figure, self.partials_figure):
            self.on_tile_click(figure, self._on_tile_click)
        self.watch(self.mode, self._on_control_change)
        self.watch(self.top_k, self._on_control_change)
        self.watch(self.channels, self._on_channels_typed)
        self.follow_state(["layer", "filter", "image", "colormap", "normalization"])
        self.observe_state(self._on_channel_change, ["channel"])
        self.redraw()

    # -- drawing ---------------------------------------------------------------------------------------

    def _key(self) -> tuple:
        s = self.state
        picks = self.channels.value.strip() if self.mode.value == "pick" else ""
        # id of the prepared input: a new image gives a new ModelInput object
        return (s.layer, s.filter, id(s.model_input), s.colormap, s.normalization, self.mode.value,
                self.top_k.value, picks, self._weights_version)

    def _draw(self) -> None:
        self.top_k.disabled = self.mode.value != "top"
        channels, problem = None, ""
        if self.mode.value == "pick":
            try:
                channels = parse_channels(self.channels.value, self.state.n_channels())
            except CnnvizError as err:
                problem = f"{err}. Showing the top contributors instead."
        breakdown = self.state.filter_effect(channels=channels, top_k=self.top_k.value)  # LayerError: said
        self.breakdown = breakdown
        self.show_message(problem, "error")
        self._hide(False)
        self.heading.value = self._heading(breakdown, picked=channels is not None)
        self._draw_rows(breakdown)

    def _hide(self, hidden: bool) -> None:
        show_child(self, self.figures, not hidden)
        if hidden:
            self.breakdown = None
            self.heading.value = ""

    def _draw_rows(self, b: FilterBreakdown) -> None:
        s, k = self.state, len(b.channels)
        highlight = b.channels.index(s.channel) if s.channel in b.channels else None
        cols = list(b.channels)
        fed = b.previous_layer == s.input_layer
        names = [f"channel {c}" for c in cols]

        mosaic, ranges = render.render_mosaic(b.previous_maps, s.normalization, s.colormap, max_side=MAP_SIDE, cols=k)
        tips = [f"channel {c} · {label} · values {format_number(lo)}..{format_number(hi)} · "
                f"rank {rank} of {b.n_channels} (mean |partial| {format_number(value)})"
                for c, label, (lo, hi), rank, value in zip(cols, b.channel_labels, ranges, b.shown_rank,
                                                           b.shown_contribution, strict=True)]
        # the fed image's channels carry what they are (B − 103.9); a layer's channels are just numbered
        captions = ([f"{name}: {html.escape(label)}" for name, label in zip(names, b.channel_labels, strict=True)]
                    if fed else names)
        what = "the fed image's channels" if fed else f"{b.previous_layer}'s output"
        title = f"1 · Input: {what} · {_MODE_WORDS[s.normalization]}"
        self.inputs_figure.show(mosaic, title=title, tooltips=tips, highlight=highlight, captions=captions,
                                **self._bar(s.colormap, s.normalization, ranges))

        kh, kw = b.kernels.shape[:2]
        factor = max(1, math.ceil(KERNEL_TILE_PX / max(kh, kw)))
        mosaic, ranges = render.render_mosaic(render.scale_up(b.kernels, factor), "symmetric", SIGNED_CMAP,
                                              cols=k, pad=2)
        number = uniform_format(b.kernels)
        tips = [f"channel {c} kernel: " + " / ".join(" ".join(number(v) for v in row) for row in b.kernels[:, :, i])
                for i, c in enumerate(cols)]
        captions = ([f"{name}{_kernel_table(b.kernels[:, :, i], number)}" for i, name in enumerate(names)]
                    if kh * kw <= _VALUES_UP_TO else names)
        title = (f"2 · Filter {b.filter}'s {kh}×{kw} weights for these channels · blue < 0, white = 0, red > 0, "
                 f"one scale for the row")
        self.kernels_figure.show(mosaic, title=title, tooltips=tips, highlight=highlight, captions=captions,
                                 colorbar=(SIGNED_CMAP, ranges[0, 0], ranges[0, 1]), colorbar_label="weight")

        mosaic, ranges = render.render_mosaic(b.partials, "symmetric", SIGNED_CMAP, max_side=MAP_SIDE, cols=k)
        tips = [f"channel {c} ⋆ its weights: {format_number(b.partials[..., i].min())}.."
                f"{format_number(b.partials[..., i].max())}, mean |·| {format_number(b.shown_contribution[i])}"
                for i, c in enumerate(cols)]
        captions = [f"{name} · rank {rank} · mean |·| {format_number(value)}"
                    for name, rank, value in zip(names, b.shown_rank, b.shown_contribution, strict=True)]
        title = "3 · Each channel cross-correlated with its weights (its partial sum) · one symmetric scale for the row"
        self.partials_figure.show(mosaic, title=title, tooltips=tips, highlight=highlight, captions=captions,
                                  colorbar=(SIGNED_CMAP, ranges[0, 0], ranges[0, 1]), colorbar_label="partial sum")

        maps, labels = self.result_maps(b)
        # one row, like rows 1–3 (a 2×2 grid left an empty slot), each tile captioned underneath
        mosaic, ranges = render.render_mosaic(maps, s.normalization, s.colormap, max_side=MAP_SIDE,
                                              cols=maps.shape[2])
        tips = [f"{label}: {format_number(lo)}..{format_number(hi)}" for label, (lo, hi) in zip(labels, ranges,
                                                                                               strict=True)]
        title = (f"4 · {b.layer} filter {b.filter}: sum over all {b.n_channels} channels + bias "
                 f"({format_number(b.bias)}) → {b.activation} · {_MODE_WORDS[s.normalization]}")
        self.result_figure.show(mosaic, title=title, tooltips=tips, captions=[html.escape(t) for t in labels],
                                **self._bar(s.colormap, s.normalization, ranges))

    @staticmethod
    def result_maps(b: FilterBreakdown) -> tuple[np.ndarray, list[str]]:
        """Row 4's maps (H', W', 2 or 3) and their labels: [the channels not shown,] sum + bias, output."""
        maps, labels = [b.pre_activation, b.output], ["sum of all channels + bias",
                                                      f"after {b.activation}: the layer's output"]
        hidden = b.n_channels - len(b.channels)
        if hidden:
            maps.insert(0, b.rest)
            labels.insert(0, f"the other {hidden} channels together")
        return np.stack(maps, axis=-1), labels

    @staticmethod
    def _bar(cmap: str, mode: str, ranges: np.ndarray) -> dict:
        if mode == "per_map":  # every tile has its own range: the bar shows the colours, not values
            return dict(colorbar=(cmap, 0.0, 1.0), colorbar_ends=("tile min", "tile max"))
        return dict(colorbar=(cmap, float(ranges[0, 0]), float(ranges[0, 1])))

    def _heading(self, b: FilterBreakdown, picked: bool) -> str:
        shown = len(b.channels)
        # Ranks, not a share of the total: a share needs every channel's partial sum, which a step skips.
        ranks = ", ".join(map(str, b.shown_rank))
        if shown == b.n_channels:
            which = "all its input channels"
        elif picked:
            which = f"the channels you picked (their ranks by mean |partial sum|: {ranks})"
        else:
            which = f"the {shown} that contribute most, by mean |partial sum| (ranks {ranks})"
        rest = f" The other {b.n_channels - shown} are added up in row 4." if shown < b.n_channels else ""
        # said always, not only while the selected channel is shown: the outline moves without a redraw
        outline = (f' An <span style="color: {HIGHLIGHT_COLOR}; font-weight: bold">orange outline</span> marks the '
                   "selected input channel when it is shown (input channel slider, or click a tile).")
        note = f"<br><small>{html.escape(b.note)}</small>" if b.note else ""
        return (f"<b>{html.escape(b.layer)} ({html.escape(b.layer_type)}), filter {b.filter}</b> of "
                f"{self.state.n_filters()}, on {html.escape(b.previous_layer)}'s {b.n_channels} channels. "
                f"Shown: {which}.{rest}{outline}{note}")

    # -- events ----------------------------------------------------------------------------------------

    def _on_control_change(self, _change: traitlets.Bunch) -> None:
        self.redraw()

    def _on_channels_typed(self, change: traitlets.Bunch) -> None:
        if change["new"].strip() and self.mode.value != "pick":
            self.mode.value = "pick"  # typing channels means picking them (redraws via the mode)
        else:
            self.redraw()

    def _on_tile_click(self, index: int) -> None:
        if self.breakdown is not None:
            self.state.channel = self.breakdown.channels[index]

    def _on_channel_change(self, change: traitlets.Bunch) -> None:
        b = self.breakdown
        index = b.channels.index(change["new"]) if b is not None and change["new"] in b.channels else None
        for figure in (self.inputs_figure, self.kernels_figure, self.partials_figure):
            figure.highlight(index)


def uniform_format(values: np.ndarray) -> Callable[[float], str]:
    """One number format for a set of values: the same decimals for all, 3 significant digits for the largest,
    so a table of weights lines up and compares at a glance (0.122, -0.030, 0.004)."""
    largest = float(np.abs(values).max()) if np.size(values) else 0.0
    decimals = 0 if largest == 0 else int(np.clip(2 - math.floor(math.log10(largest)), 0, 8))
    return lambda value: f"{float(value):.{decimals}f}"


def _kernel_table(kernel: np.ndarray, number: Callable[[float], str]) -> str:
    """A (kh, kw) slice of weights as a small right-aligned table (rows and columns as in the tile above)."""
    rows = "".join("<tr>" + "".join(f"<td>{number(v)}</td>" for v in row) + "</tr>" for row in kernel)
    return (f'<table class="cnnviz-kernel-values" style="margin: 2px auto 0; font-family: monospace; '
            f'font-size: 11px; border-spacing: 6px 0; text-align: right">{rows}</table>')
