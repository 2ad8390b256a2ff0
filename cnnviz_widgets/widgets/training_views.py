"""The views inside `TrainingMonitor`: grids that follow the training, the curves, how the weights moved.

The grids are the library's `WeightGrid` and `ActivationGrid`, keyed on `TrainingState.version` (so a live
refresh or another step redraws them) and showing an error inside the view instead of raising it into the
training loop. The weight grids of two steps share one colour scale: the largest |w| of the layer over every
kept step and the live weights (`TrainingState.weight_range`). The curves draw each batch's own value
(recovered from Keras' running means, `TrainingHistory.batch_values`) faintly, a smoothed line on top,
validation values as points at the epoch ends, and the epoch boundaries. `StepPicture` draws one value per
(row, kept step): the weight distribution and the dead fraction of each filter over training.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Sequence
from typing import Any

import bqplot
import ipywidgets
import numpy as np

from cnnviz_widgets.state.training_state import TrainingState
from cnnviz_widgets.training.history import TrainingHistory, smooth
from cnnviz_widgets.training.snapshots import rank_by_change
from cnnviz_widgets.widgets.grids import ActivationGrid, WeightGrid
from cnnviz_widgets.widgets.parts import format_number, message_line, show_child, with_classes
from cnnviz_widgets.widgets.theme import (
    BAR_COLOR,
    RULE_COLOR,
    SELECTED_STEP_COLOR,
    TRAIN_COLOR,
    VALIDATION_COLOR,
    VIRIDIS_CSS,
)
from cnnviz_widgets.widgets.view import View

_CURVE_POINTS = 800  # a curve sends at most this many points per redraw
STEP_COLUMNS = 20  # the weight distribution shows at most this many kept steps
DEAD_COLUMNS = 10  # the dead filters: fewer, each is one forward pass (the monitor's cost stays <= 10 % of a fit)
_MAX_BARS = 64
_CHART_MARGIN = dict(top=16, bottom=60, left=64, right=20)

class FollowsTraining:
    """Mixin for the grid views: redraw when the state's `version` moves; an error is shown in the view (as in
    every view) and training goes on.

    The side panels of the Explorer's grids (the selected map large, the photo) stay out: the monitor shows
    three pictures side by side and the selection is outlined in each.
    """

    @property
    def error(self) -> str:
        """Why the picture could not be drawn after the last update ("" when it was): the view's `problem`."""
        return self.problem

    def _picture_key(self) -> tuple:
        return (*super()._picture_key(), self.state.version)

    def _side_parts(self, css_class: str) -> list[ipywidgets.Widget]:
        return []

    def _draw_side(self, picture_key: tuple) -> None:
        pass


class TrainingWeightGrid(FollowsTraining, WeightGrid):
    """The filters of one step, on the colour scale shared by every step of the layer (`scale_source`'s)."""

    _observed_traits = (*WeightGrid._observed_traits, "version")

    def __init__(self, state: TrainingState, *, scale_source: TrainingState | None = None, **kwargs: Any):
        self.scale_source = scale_source or state  # the live state: its weight_range covers every step
        super().__init__(state, **kwargs)

    def _picture_key(self) -> tuple:
        return (*super()._picture_key(), self.weight_scale()[0])

    def _kernel(self) -> tuple:
        if getattr(self, "_kernel_version", None) != self.state.version:  # the parent caches per layer only
            self._kernel_cache = None
            self._kernel_version = self.state.version
        return super()._kernel()

    def weight_scale(self) -> tuple[float, str]:
        scale = self.scale_source.weight_range(self.state.layer)
        return scale, f"one colour scale for every step: ±{format_number(scale)}, the largest |w| of any step"

    def channel_meaning(self, channel: int | None = None) -> str:
        channel = self.state.channel if channel is None else channel
        state = self.state
        if state.previous_layer() == state.input_layer or _only_rescales(state):
            return f"channel {channel} of the input picture"
        return f"map {channel} of {state.previous_layer()}"


def _only_rescales(state: TrainingState) -> bool:
    """True if the layer's input is the model input through preprocessing layers only (Rescaling, ...)."""
    name = state.previous_layer()
    while name != state.input_layer:
        node = state.graph.node(name)
        if node.class_name not in ("Rescaling", "Normalization", "Resizing", "CenterCrop") or len(node.inputs) != 1:
            return False
        name = node.inputs[0]
    return True


class TrainingActivationGrid(FollowsTraining, ActivationGrid):
    _observed_traits = (*ActivationGrid._observed_traits, "version")

    def _maps_key(self) -> tuple:
        return (*super()._maps_key(), self.state.version)  # the maps change as the weights train


# -- curves -------------------------------------------------------------------------------------------------


def _thin(steps: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if len(steps) <= _CURVE_POINTS:
        return steps, values
    pick = np.unique(np.linspace(0, len(steps) - 1, _CURVE_POINTS).round().astype(int))  # the newest stays
    return steps[pick], values[pick]


class Curves(View):
    """One logged quantity against training step.

    Each batch's own value (faint), the same smoothed (exponential moving average, `smooth`), the validation
    value at each epoch end (points), a dotted rule at each epoch boundary and one at the step shown.
    `lines[key]` is the faint per-batch line of a training key, `smoothed[key]` its smoothed line and
    `points[key]` the validation points of a "val_" key.
    """

    def __init__(self, title: str, css_class: str):
        self.quantity = title
        self.x_scale = bqplot.LinearScale(min=0.0, allow_padding=False)
        self.y_scale = bqplot.LinearScale(allow_padding=False)  # no negative tick under a loss that cannot be
        self._rule_scale = bqplot.LinearScale(min=0.0, max=1.0)
        rule_scales = {"x": self.x_scale, "y": self._rule_scale}
        self.epoch_rules = bqplot.Lines(x=[[0.0, 0.0]], y=[[0.0, 1.0]], scales=rule_scales, colors=[RULE_COLOR],
                                        line_style="dotted", stroke_width=1, visible=False)
        self.rule = bqplot.Lines(x=[0.0, 0.0], y=[0.0, 1.0], scales=rule_scales, colors=[SELECTED_STEP_COLOR],
                                 stroke_width=2, visible=False)
        self.lines: dict[str, bqplot.Lines] = {}
        self.smoothed: dict[str, bqplot.Lines] = {}
        self.points: dict[str, bqplot.Scatter] = {}
        self.exact: dict[str, bool] = {}
        self.smoothing = 0.6
        self.x_axis = bqplot.Axis(scale=self.x_scale, label="training step (batches seen)", grid_lines="none",
                                  num_ticks=5, tick_format="d", label_offset="36px")
        self.y_axis = bqplot.Axis(scale=self.y_scale, side="left", tick_format=".3~g", grid_lines="dashed",
                                  num_ticks=4, label=title, label_offset="48px")
        self.figure = bqplot.Figure(
            marks=[self.epoch_rules, self.rule], axes=[self.x_axis, self.y_axis], fig_margin=dict(_CHART_MARGIN),
            layout=ipywidgets.Layout(width="100%", height="240px"), display_toolbar=False)
        self.figure.add_class(css_class)
        self.legend = with_classes(ipywidgets.HTML(""), "cnnviz-chart-caption", f"{css_class}-legend")
        self.note = with_classes(ipywidgets.HTML(""), "cnnviz-chart-caption", f"{css_class}-note")
        super().__init__([self.legend, self.figure, self.note], css_class="cnnviz-training-chart")

    def update(self, history: TrainingHistory, keys: Sequence[str], step: int | None) -> None:
        """Draw `keys` of `history` (training keys per batch, "val_" keys per epoch); a rule at `step`."""
        with self.figure.hold_sync():
            for key in keys:
                if key.startswith("val_"):
                    steps, values = history.series(key)
                    self._point_mark(key).x, self._point_mark(key).y = steps, values
                    continue
                steps, values, exact = history.batch_values(key)
                self.exact[key] = exact
                raw, line = self._line_marks(key)
                shown_steps, shown = _thin(steps, values)
                smooth_steps, smoothed = _thin(steps, smooth(values, self.smoothing)) if len(values) else (steps,
                                                                                                         values)
                with raw.hold_sync(), line.hold_sync():
                    raw.x, raw.y = shown_steps, shown
                    line.x, line.y = smooth_steps, smoothed
            ends = [float(s) for s in history.epoch_ends]
            self.epoch_rules.visible = bool(ends)
            if ends:
                with self.epoch_rules.hold_sync():
                    self.epoch_rules.x = [[s, s] for s in ends]
                    self.epoch_rules.y = [[0.0, 1.0] for _ in ends]
            self.rule.visible = step is not None
            if step is not None:
                self.rule.x = [float(step), float(step)]
        self._draw_words(keys, step)

    def _line_marks(self, key: str) -> tuple[bqplot.Lines, bqplot.Lines]:
        if key not in self.lines:
            scales = {"x": self.x_scale, "y": self.y_scale}
            self.lines[key] = bqplot.Lines(x=[], y=[], scales=scales, colors=[TRAIN_COLOR], opacities=[0.3],
                                           stroke_width=1)
            self.smoothed[key] = bqplot.Lines(x=[], y=[], scales=scales, colors=[TRAIN_COLOR], stroke_width=2.5)
            self.figure.marks = [*self.figure.marks, self.lines[key], self.smoothed[key]]
        return self.lines[key], self.smoothed[key]

    def _point_mark(self, key: str) -> bqplot.Scatter:
        if key not in self.points:
            self.points[key] = bqplot.Scatter(x=[], y=[], scales={"x": self.x_scale, "y": self.y_scale},
                                              colors=[VALIDATION_COLOR], default_size=48, stroke="white",
                                              marker="circle")
            self.figure.marks = [*self.figure.marks, self.points[key]]
        return self.points[key]

    def _draw_words(self, keys: Sequence[str], step: int | None) -> None:
        train = [k for k in keys if not k.startswith("val_")]
        parts = [f'<span class="cnnviz-legend-swatch" style="border-top: 3px solid {TRAIN_COLOR}"></span>'
                 f"training: each batch (faint), smoothed {self.smoothing:.2f}"] if train else []
        if any(k.startswith("val_") for k in keys):
            parts.append(f'<span class="cnnviz-legend-dot" style="background: {VALIDATION_COLOR}"></span>'
                         "validation, at the end of each epoch")
        parts.append(f'<span class="cnnviz-legend-swatch" style="border-top: 2px dotted {RULE_COLOR}"></span>'
                     "epoch ends")
        self.legend.value = f"<b>{html.escape(self.quantity)}</b>" + "".join(parts)
        inexact = [k for k in train if not self.exact.get(k, True)]
        note = ("" if not inexact else f"{', '.join(inexact)} is not an average over samples, so each batch's own "
                "value cannot be recovered from Keras' logs: the line is its running value over the epoch.")
        if step is not None:
            note = f"The orange rule marks step {step}, the one shown in the pictures. {note}"
        self.note.value = html.escape(note.strip())


# -- how each filter moved ----------------------------------------------------------------------------------


class _Chart(View):
    """A chart of the monitor, drawn from the kept steps; until there is something to draw, a sentence says why."""

    def _hide(self, hidden: bool) -> None:
        show_child(self, self.figure, not hidden)

    def _waiting(self) -> str:
        """Why there is nothing to draw yet ("" when there is something)."""
        state = self.state
        if not state.snapshots.steps:
            return "training has not started"
        return "" if state.layer_kind() == "conv" else f"{state.layer} has no filters"


class ChangeBars(_Chart):
    """How much each filter of the current layer moved since the first snapshot, most first; a click selects."""

    def __init__(self, state: TrainingState):
        self.state = state
        self.x_scale = bqplot.OrdinalScale()
        self.y_scale = bqplot.LinearScale(min=0.0)
        self.bars = bqplot.Bars(x=["0"], y=[0.0], scales={"x": self.x_scale, "y": self.y_scale},
                                colors=[BAR_COLOR], padding=0.15, tooltip=bqplot.Tooltip(
                                    fields=["x", "y"], labels=["filter", "relative change"], formats=["", ".3~g"]))
        self.figure = bqplot.Figure(
            marks=[self.bars],
            axes=[bqplot.Axis(scale=self.x_scale, label="filter, most changed first", grid_lines="none",
                              label_offset="36px"),
                  bqplot.Axis(scale=self.y_scale, side="left", tick_format=".2~g", num_ticks=4,
                              label="change ÷ size at first step", grid_lines="dashed", label_offset="48px")],
            fig_margin=dict(_CHART_MARGIN), display_toolbar=False,
            layout=ipywidgets.Layout(width="100%", height="240px"))
        self.figure.add_class("cnnviz-training-change")
        self.title = with_classes(ipywidgets.HTML(""), "cnnviz-chart-caption")
        self.message = message_line()
        self.order: list[int] = []
        super().__init__([self.title, self.message, self.figure], css_class="cnnviz-training-chart")
        self.on_element_click(self.bars, self._on_click)

    def redraw(self) -> None:
        """Draw the bars for the state now (from the training thread too: the guard holds the state's lock)."""
        state = self.state
        if self._waiting():
            self.title.value = ""
            self.say(self._waiting())
            return
        steps = state.snapshots.steps
        change = state.filter_change()
        until = "now" if state.step is None else f"step {state.step}"
        self.order = rank_by_change(change)[:_MAX_BARS]
        names = [str(f) for f in self.order]
        with self.bars.hold_sync(), self.x_scale.hold_sync():
            self.x_scale.domain = names  # the axis follows the ranking, not the first drawing's order
            self.bars.x = names
            self.bars.y = change[self.order]
            self.bars.colors = [SELECTED_STEP_COLOR if f == state.filter else BAR_COLOR for f in self.order]
        self.title.value = (f"<b>How much each {html.escape(state.layer)} filter moved</b> from step {steps[0]} "
                            f"to {until}: the size of the change of its weights divided by their size at step "
                            f"{steps[0]}. Filter {state.filter} is orange; click a bar to pick a filter.")
        self.show_message("")
        self._hide(False)

    def _on_click(self, _mark: Any, content: dict) -> None:
        index = content.get("data", {}).get("index")
        if index is not None and index < len(self.order):
            self.state.filter = self.order[index]


# -- one value per (row, kept step) -------------------------------------------------------------------------


class StepPicture(_Chart):
    """A heat map with the kept training steps along x: the weight distribution, or each filter's dead fraction.

    `compute(state)` returns (steps, row_edges or row indices, values (rows, steps), caption); the picture is
    redrawn only when that changes.
    """

    def __init__(self, state: TrainingState, css_class: str, *, y_label: str, color_label: str,
                 compute: Callable[[TrainingState], tuple[np.ndarray, np.ndarray, np.ndarray, str, str]],
                 color_range: tuple[float, float] | None = None, scheme: str = "viridis", y_format: str = ".2~g"):
        self.state = state
        self.compute = compute
        self.x_scale = bqplot.LinearScale(allow_padding=False)
        self.y_scale = bqplot.LinearScale(allow_padding=False)
        self.color_scale = bqplot.ColorScale(scheme=scheme)
        if color_range is not None:
            self.color_scale.min, self.color_scale.max = color_range
        self.heat = bqplot.HeatMap(x=np.array([0.0, 1.0]), y=np.array([0.0, 1.0]), color=np.zeros((2, 2)),
                                   scales={"x": self.x_scale, "y": self.y_scale, "color": self.color_scale})
        self.figure = bqplot.Figure(
            marks=[self.heat],
            axes=[bqplot.Axis(scale=self.x_scale, label="training step", grid_lines="none", num_ticks=5,
                              tick_format="d", label_offset="36px"),
                  bqplot.Axis(scale=self.y_scale, side="left", label=y_label, grid_lines="none", num_ticks=5,
                              tick_format=y_format, label_offset="66px")],
            fig_margin=dict(top=16, bottom=60, left=86, right=20), display_toolbar=False,
            layout=ipywidgets.Layout(width="100%", height="240px"))
        self.figure.add_class(css_class)
        self.title = with_classes(ipywidgets.HTML(""), "cnnviz-chart-caption")
        self.color_label = color_label
        # the colour scale in words under the picture (bqplot's vertical colour axis is too cramped here)
        self.scale_note = with_classes(ipywidgets.HTML(""), "cnnviz-chart-caption", f"{css_class}-scale")
        self.caption = with_classes(ipywidgets.HTML(""), "cnnviz-chart-caption", f"{css_class}-caption")
        self.message = message_line()
        super().__init__([self.title, self.message, self.figure, self.scale_note, self.caption],
                         css_class="cnnviz-training-chart")

    def redraw(self) -> None:
        """Draw the picture for the state now; the heat map is sent again only when its values changed."""
        if self._waiting():
            self.title.value = self.caption.value = ""
            self._forget_drawn()
            self.say(self._waiting())
            return
        steps, rows, values, title, caption = self.compute(self.state)
        if self.part_changed("heat", (tuple(steps), rows.tobytes(), values.tobytes())):
            x = np.asarray(steps, dtype=float)
            if len(x) == 1:  # one column still needs a width
                x = np.array([x[0] - 0.5, x[0] + 0.5])
                values = np.repeat(values, 2, axis=1)
            with self.heat.hold_sync():
                self.heat.x, self.heat.y, self.heat.color = x, np.asarray(rows, dtype=float), values
            low = self.color_scale.min if self.color_scale.min is not None else float(values.min())
            high = self.color_scale.max if self.color_scale.max is not None else float(values.max())
            self.scale_note.value = (f"{html.escape(self.color_label)}: {format_number(low)} "
                                     f'<span class="cnnviz-legend-swatch" style="width: 90px; height: 10px; '
                                     f'border: none; background: linear-gradient(to right, {VIRIDIS_CSS})"></span> '
                                     f"{format_number(high)}")
        self.title.value = title
        self.caption.value = html.escape(caption)
        self.show_message("")
        self._hide(False)


def weight_distribution_picture(state: TrainingState, bins: int = 30) -> tuple:
    """What `StepPicture` draws for the weight distribution of the current layer over the kept steps."""
    steps, edges, counts = state.weight_distributions(state.layer, bins=bins, most=STEP_COLUMNS)
    share = counts.T / np.maximum(counts.sum(axis=1), 1)  # (bins, steps): each step's column sums to 1
    centres = (edges[:-1] + edges[1:]) / 2
    spread = [float(np.sqrt(((centres - (c * centres).sum()) ** 2 * c).sum())) for c in share.T]
    title = (f"<b>{html.escape(state.layer)} weights over training</b>: each column is one kept step, coloured "
             "by the share of the weights in each value range (as TensorBoard's histograms)"
             + (f"; {len(steps)} of the kept steps, evenly spread." if len(steps) < len(state.snapshots.steps)
                else "."))
    caption = (f"Spread (standard deviation, from the histogram) {format_number(spread[0])} at step {steps[0]}, "
               f"{format_number(spread[-1])} at step {steps[-1]}; values from {format_number(edges[0])} to "
               f"{format_number(edges[-1])}.")
    return steps, centres, share, title, caption


def dead_fraction_picture(state: TrainingState) -> tuple:
    """What `StepPicture` draws for each filter's dead fraction on the shown image over the kept steps."""
    steps, fractions = state.dead_fractions(state.layer, most=DEAD_COLUMNS)
    filters = np.arange(fractions.shape[0])
    dead_now = [int(f) for f in filters if fractions[f, -1] >= 1.0]
    title = (f"<b>Dead {html.escape(state.layer)} filters</b>: for each filter (row) and kept step (column), the "
             "share of its map on this image that is exactly 0. A row turning to 1 is a filter that stopped "
             f"responding. {len(steps)} of the kept steps, evenly spread.")
    caption = (f"At step {steps[-1]}: " + (f"filters {', '.join(map(str, dead_now))} give 0 everywhere on this image"
                                          if dead_now else "no filter gives 0 everywhere on this image")
               + f"; on average {format_number(float(fractions[:, -1].mean()) * 100)} % of each map is 0.")
    return steps, filters, fractions, title, caption
