"""`ChannelStats`: per channel of the current layer, for the current image, its max, mean or fraction of zeros.

A bar chart (one bar per channel) in the order of `state.channel_order`, which `ActivationGrid` follows too:
sorting here by "max" puts the strongest maps first in the grid, and the view says so next to its menu. Sorted
by a statistic, the x axis counts ranks (1 = first), and each bar's hover label names its channel. A click on
a bar selects that channel as `state.filter`. The numbers are `ModelState.channel_statistics` (see
`cnnviz_widgets.analysis`).
"""

from __future__ import annotations

import html
from typing import Any

import bqplot
import ipywidgets
import numpy as np
import traitlets

from cnnviz_widgets.errors import CnnvizError
from cnnviz_widgets.lessons.channel_stats import CHANNEL_ORDERS, STATISTICS
from cnnviz_widgets.widgets.parts import format_number
from cnnviz_widgets.widgets.theme import BAR_COLOR, HIGHLIGHT_COLOR
from cnnviz_widgets.widgets.view import View, as_state

_MAX_TICKS = 16  # channel labels under the bars; more would overlap
_WORDS = {
    "max": "largest value",
    "mean": "mean value",
    "zeros": "share of zeros (1 = dead)",  # short: the axis title must fit the chart's height
}
_ORDER_WORDS = {
    "index": "channel index",
    "max": "max, largest first",
    "mean": "mean, largest first",
    "zeros": "zeros, fewest first",
}


class ChannelStats(View):
    """A bar per channel of the current layer: its max, mean or fraction of zeros for the current image.

    Parameters
    ----------
    state_or_model
        A `ModelState` (shared with other views), or anything `ModelState` takes as a model.
    statistic
        Which statistic the bars show first: one of `analysis.STATISTICS`.
    css_class
        Added to the root box (browser tests find the view by it).
    width_px
        Width of the chart.

    The "sort" control IS `state.channel_order`: the bars, and an `ActivationGrid` on the same state, show
    the channels in that order. Picking an order by a statistic also shows that statistic. A click on a bar
    makes that channel `state.filter`; the current filter's bar is orange. The bars follow the weights of a
    `TrainingState` (its `version`).
    """

    statistic = traitlets.Enum(STATISTICS, "max", help="The statistic the bars show.")

    def __init__(self, state_or_model: Any, *, statistic: str = "max", css_class: str = "cnnviz-channel-stats",
                 width_px: int = 640):
        if statistic not in STATISTICS:
            raise CnnvizError(f"statistic must be one of {STATISTICS}; got {statistic!r}")
        self.state = as_state(state_or_model)
        self.order: list[int] = []
        self._syncing = False

        self.statistic_buttons = ipywidgets.ToggleButtons(options=list(STATISTICS), value=statistic,
                                                          description="show", style={"button_width": "auto"})
        self.order_menu = ipywidgets.Dropdown(options=[(_ORDER_WORDS[o], o) for o in CHANNEL_ORDERS],
                                              value=self.state.channel_order, description="sort by",
                                              tooltip="sorts the bars here and the tiles of the Activations view "
                                                      "(one setting of the state)")
        # said where the menu is: the one setting also orders the Activations tab's tiles
        self.order_note = ipywidgets.HTML("<small>this order also sorts the Activations tab's tiles</small>")
        self.order_note.add_class(f"{css_class}-order-note")
        self.summary = ipywidgets.HTML("")
        self.summary.add_class(f"{css_class}-summary")

        self.x_scale = bqplot.OrdinalScale()
        self.y_scale = bqplot.LinearScale()
        self.bars = bqplot.Bars(x=["0"], y=[0.0], scales={"x": self.x_scale, "y": self.y_scale},
                                colors=[BAR_COLOR], padding=0.1, interactions={"click": "select", "hover": "tooltip"},
                                selected_style={"fill": HIGHLIGHT_COLOR},
                                unselected_style={}, tooltip=bqplot.Tooltip(fields=["x", "y"],
                                                                              labels=["channel", "value"]))
        # an ordinal axis labels evenly spaced bars when given num_ticks (tick_values are replaced by the domain)
        # captions kept clear of the tick labels (label_offset: away from the plot)
        self.x_axis = bqplot.Axis(scale=self.x_scale, label="channel", grid_lines="none", num_ticks=_MAX_TICKS,
                                  label_offset="36px")
        self.y_axis = bqplot.Axis(scale=self.y_scale, side="left", label_offset="52px",
                                  tick_format=".3~r")  # 0.9, not SI's "900m"
        self.figure = bqplot.Figure(marks=[self.bars], axes=[self.x_axis, self.y_axis],
                                    fig_margin=dict(top=10, bottom=52, left=72, right=10), display_toolbar=False,
                                    layout=ipywidgets.Layout(width="100%", min_width=f"{min(int(width_px), 480)}px",
                                                             max_width="1400px", height="300px"))
        self.figure.add_class(f"{css_class}-chart")
        controls = ipywidgets.HBox([self.statistic_buttons, self.order_menu, self.order_note])
        controls.add_class("cnnviz-view-controls")
        super().__init__([controls, self.summary, self.figure], css_class=css_class, statistic=statistic)

        self.link((self.statistic_buttons, "value"), (self, "statistic"))
        self.link((self.order_menu, "value"), (self.state, "channel_order"))
        # bqplot's own click interaction selects the bar; its `selected` syncs back: that is the click
        self.watch(self.bars, self._on_bar_selected, "selected")
        self.follow_state(["layer", "image", "channel_order"])
        self.observe_state(self._on_filter_change, ["filter"])
        self.redraw()

    # -- drawing ---------------------------------------------------------------------------------------

    def _key(self) -> tuple:
        s = self.state
        return (s.layer, id(s.model_input), s.channel_order, self.statistic, self._weights_version)

    def _draw(self) -> None:
        s = self.state
        stats = s.channel_statistics()
        self.order = s.channel_ranking()
        values = stats[self.statistic][self.order]
        labels = [str(c) for c in self.order]
        with self.bars.hold_sync(), self.x_scale.hold_sync(), self.y_scale.hold_sync(), self.x_axis.hold_sync(), \
                self.y_axis.hold_sync():
            self._syncing = True
            try:
                self.x_scale.domain = labels  # the bars' order: the scale keeps it as given
                self.bars.x, self.bars.y = labels, values
                self.y_scale.min = min(0.0, float(values.min()))
                self.y_scale.max = 1.0 if self.statistic == "zeros" else _above(float(values.max()))
                if s.channel_order == "index":
                    self.x_axis.tick_labels = {}
                    self.x_axis.label = "channel"
                else:
                    # Sorted, the channel numbers under the bars would jump like a broken axis: the ticks
                    # count ranks instead (the front end looks a tick's label up by its domain value, the
                    # channel), and the hover label names the channel.
                    self.x_axis.tick_labels = {label: str(rank) for rank, label in enumerate(labels, start=1)}
                    self.x_axis.label = f"rank by {_ORDER_WORDS[s.channel_order]} (hover a bar for its channel)"
                self.y_axis.label = _WORDS[self.statistic]
                self.bars.selected = self._selected_bar()
            finally:
                self._syncing = False
        self.summary.value = self._summary(stats)

    def _selected_bar(self) -> list[int] | None:
        return [self.order.index(self.state.filter)] if self.state.filter in self.order else None

    def _summary(self, stats: dict[str, np.ndarray]) -> str:
        s = self.state
        n = stats["max"].size
        dead = int(np.count_nonzero(stats["zeros"] == 1.0))
        top = [int(c) for c in np.argsort(-stats["max"], kind="stable")[:5]]
        strongest = ", ".join(f"{c} ({format_number(float(stats['max'][c]))})" for c in top)
        dead_words = (f"{dead} of {n} channels are dead for this image (all zeros)" if dead
                      else f"none of the {n} channels is all zeros")
        return (f"<b>{html.escape(s.layer)}</b> for {html.escape(s.image_name or 'the image')}: {dead_words}; "
                f"largest values in channels {strongest}.")

    # -- events ----------------------------------------------------------------------------------------

    @traitlets.observe("statistic")
    def _on_statistic_change(self, _change: traitlets.Bunch) -> None:
        self.redraw()

    def _on_state_change(self, change: traitlets.Bunch) -> None:
        if change["name"] == "channel_order" and change["new"] in STATISTICS:
            self.statistic = change["new"]  # sorting by a statistic shows it (redraws via the observer)
        self.redraw()

    def _on_filter_change(self, _change: traitlets.Bunch) -> None:
        if self._drawn_key is not None and self._drawn_key[0] == self.state.layer:
            self._syncing = True
            try:
                self.bars.selected = self._selected_bar()
            finally:
                self._syncing = False

    def _on_bar_selected(self, change: traitlets.Bunch) -> None:
        picked = change["new"]
        if self._syncing or picked is None or len(picked) == 0:
            return
        self.state.filter = self.order[int(picked[-1])]  # ctrl-click adds bars: the last one counts


def _above(value: float) -> float:
    """Top of the value axis: a little above the largest bar, and above 0 for an all-zero layer."""
    return value * 1.05 if value > 0 else 1.0
