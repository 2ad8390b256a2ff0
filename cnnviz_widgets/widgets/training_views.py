"""The views inside `TrainingMonitor`: grids that follow the training, the curves, the per-filter change.

The grids are the library's `WeightGrid` and `ActivationGrid`, keyed on `TrainingState.version` (so a live
refresh or another step redraws them) and showing an error inside the view instead of raising it into the
training loop. The curves and the change bars are bqplot figures the monitor feeds.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

import bqplot
import ipywidgets
import numpy as np

from ..training import TrainingHistory, rank_by_change
from ..training_state import TrainingState
from ._common import show_child
from .grids import ActivationGrid, WeightGrid

_CURVE_POINTS = 800  # a curve sends at most this many points per redraw
_MAX_BARS = 64
_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")


class FollowsTraining:
    """Mixin for the grid views: redraw when the state's `version` moves; an error is shown in the view."""

    error = ""

    def _picture_key(self) -> tuple:
        return (*super()._picture_key(), self.state.version)

    def _sync(self) -> None:
        with self.state.lock:  # the training thread redraws too
            try:
                super()._sync()
                self.error = ""
            except Exception as err:  # a broken picture must not stop training: say it where the picture was
                self.error = f"{type(err).__name__}: {err}"
                self.message.value = f'<span class="cnnviz-view-error">could not draw: {html.escape(self.error)}</span>'


class TrainingWeightGrid(FollowsTraining, WeightGrid):
    _observed_traits = (*WeightGrid._observed_traits, "version")

    def _kernel(self) -> tuple:
        if getattr(self, "_kernel_version", None) != self.state.version:  # the parent caches per layer only
            self._kernel_cache = None
            self._kernel_version = self.state.version
        return super()._kernel()


class TrainingActivationGrid(FollowsTraining, ActivationGrid):
    _observed_traits = (*ActivationGrid._observed_traits, "version")

    def _maps_key(self) -> tuple:
        return (*super()._maps_key(), self.state.version)  # the maps change as the weights train


class Curves(ipywidgets.VBox):
    """Logged values against training step: one bqplot line per key (validation dashed), a rule at a step."""

    def __init__(self, title: str, css_class: str):
        self.x_scale = bqplot.LinearScale()
        self.y_scale = bqplot.LinearScale()
        self._rule_scale = bqplot.LinearScale(min=0.0, max=1.0)
        self.rule = bqplot.Lines(x=[0.0, 0.0], y=[0.0, 1.0], scales={"x": self.x_scale, "y": self._rule_scale},
                                 colors=["#999999"], line_style="dotted", visible=False)
        self.lines: dict[str, bqplot.Lines] = {}
        self.figure = bqplot.Figure(
            marks=[self.rule], title=title, legend_location="top-right",
            axes=[bqplot.Axis(scale=self.x_scale, label="step (batches seen)", grid_lines="none"),
                  bqplot.Axis(scale=self.y_scale, side="left", tick_format=".3~g", grid_lines="dashed")],
            fig_margin=dict(top=36, bottom=44, left=56, right=16),
            layout=ipywidgets.Layout(width="100%", min_width="280px", max_width="520px", height="240px"))
        self.figure.add_class(css_class)
        super().__init__(children=[self.figure], layout=ipywidgets.Layout(flex="1 1 280px"))

    def update(self, history: TrainingHistory, keys: Sequence[str], step: int | None) -> None:
        with self.figure.hold_sync():
            for key in keys:
                steps, values = history.series(key)
                if len(steps) > _CURVE_POINTS:  # thin evenly, keeping the newest value
                    pick = np.unique(np.linspace(0, len(steps) - 1, _CURVE_POINTS).round().astype(int))
                    steps, values = steps[pick], values[pick]
                line = self.lines.get(key)
                if line is None:
                    base = key.removeprefix("val_")
                    color = _COLORS[sorted({*(k.removeprefix("val_") for k in self.lines), base}).index(base)
                                    % len(_COLORS)]
                    line = bqplot.Lines(x=steps, y=values, scales={"x": self.x_scale, "y": self.y_scale},
                                        colors=[color], labels=[key], display_legend=True,
                                        line_style="dashed" if key.startswith("val_") else "solid",
                                        marker="circle" if key.startswith("val_") else None, marker_size=24)
                    self.lines[key] = line
                    self.figure.marks = [*self.figure.marks, line]
                else:
                    with line.hold_sync():
                        line.x, line.y = steps, values
            self.rule.visible = step is not None
            if step is not None:
                self.rule.x = [float(step), float(step)]


class ChangeBars(ipywidgets.VBox):
    """How much each filter of the current layer moved since the first snapshot, most first; a click selects."""

    def __init__(self, state: TrainingState):
        self.state = state
        self.error = ""
        self.x_scale = bqplot.OrdinalScale()
        self.y_scale = bqplot.LinearScale(min=0.0)
        self.bars = bqplot.Bars(x=["0"], y=[0.0], scales={"x": self.x_scale, "y": self.y_scale},
                                colors=["#4c72b0"], padding=0.15, tooltip=bqplot.Tooltip(fields=["x", "y"]))
        self.bars.on_element_click(self._on_click)
        self.figure = bqplot.Figure(
            marks=[self.bars], title="change of each filter since step 0",
            axes=[bqplot.Axis(scale=self.x_scale, label="filter (most changed first)", grid_lines="none"),
                  bqplot.Axis(scale=self.y_scale, side="left", tick_format=".2~f",
                              label="|Δw| / |w₀|", grid_lines="dashed")],
            fig_margin=dict(top=36, bottom=44, left=56, right=16),
            layout=ipywidgets.Layout(width="100%", min_width="280px", max_width="520px", height="240px"))
        self.figure.add_class("cnnviz-training-change")
        self.message = ipywidgets.HTML("")
        self.order: list[int] = []
        super().__init__(children=[self.message, self.figure], layout=ipywidgets.Layout(flex="1 1 280px"))

    def redraw(self) -> None:
        state = self.state
        try:
            with state.lock:
                if state.layer_kind() != "conv" or not state.snapshots.steps:
                    show_child(self, self.figure, False)
                    self.message.value = ("" if state.snapshots.steps else "training has not started") if (
                        state.layer_kind() == "conv") else f"{state.layer} has no filters"
                    return
                change = state.filter_change()
            self.order = rank_by_change(change)[:_MAX_BARS]
            with self.bars.hold_sync():
                self.bars.x = [str(f) for f in self.order]
                self.bars.y = change[self.order]
                self.bars.colors = ["#ff7f0e" if f == state.filter else "#4c72b0" for f in self.order]
            self.message.value = ""
            self.error = ""
            show_child(self, self.figure, True)
        except Exception as err:  # shown here; training and the other views go on
            self.error = f"{type(err).__name__}: {err}"
            self.message.value = f'<span class="cnnviz-view-error">could not draw: {html.escape(self.error)}</span>'

    def _on_click(self, _mark: Any, content: dict) -> None:
        index = content.get("data", {}).get("index")
        if index is not None and index < len(self.order):
            self.state.filter = self.order[index]
