"""`TrainingMonitor`: watch a CNN learn, live in the notebook, and scrub back through training.

The monitor is a widget and a Keras callback (its hooks: `MonitorCallback`). Its views are bound to
`monitor.state`, a `TrainingState` on the model being trained: the filters at step 0 beside the filters now, the
activation maps of one image, how much each filter moved, and the loss and metric curves. This module lays them
out and keeps the controls (layer, channel, filter, image, the step slider and replay, pause and stop) and the
words around them up to date; `fit_in_background` (`background_fit`) keeps the controls live while it trains.

Importing this module loads Keras (the class is a `keras.callbacks.Callback`); `cnnviz_widgets.widgets`
imports it only when `TrainingMonitor` or `fit_in_background` is asked for.
"""

from __future__ import annotations

import html
import threading
import time
from typing import Any

import ipywidgets
import numpy as np
import traitlets

from cnnviz_widgets.errors import CnnvizError
from cnnviz_widgets.network.backend import keras
from cnnviz_widgets.state.training_state import TrainingState
from cnnviz_widgets.training.history import TrainingHistory
from cnnviz_widgets.training.snapshots import DEFAULT_BUDGET_BYTES, rank_by_change
from cnnviz_widgets.widgets.monitor_callback import MonitorCallback
from cnnviz_widgets.widgets.parts import format_number, with_classes
from cnnviz_widgets.widgets.step_controls import StepControls
from cnnviz_widgets.widgets.theme import MONITOR_CSS, colored, stylesheet
from cnnviz_widgets.widgets.training_views import (
    ChangeBars,
    Curves,
    StepPicture,
    TrainingActivationGrid,
    TrainingWeightGrid,
    dead_fraction_picture,
    weight_distribution_picture,
)
from cnnviz_widgets.widgets.view import View

_GRID_PX = 280
_REPLAY_MS = 500  # a replayed step every half second: slow enough to see each picture


class TrainingMonitor(View, StepControls, MonitorCallback, keras().callbacks.Callback):
    """A Keras callback that shows a CNN learning: filters, maps and curves, live, with a step slider back.

    Parameters
    ----------
    model
        The `keras.Model` being trained (it needs conv layers with (batch, H, W, C) outputs).
    image
        The image whose activation maps are shown (anything `load_image` takes); several (a list, or an
        (N, H, W, C) array) add an image picker. Default: the astronaut sample.
    every
        Keep the weights every `every` training steps (batches), besides step 0 and the end of training.
    memory_budget_mb
        Memory for the kept weights; old snapshots are thinned evenly when it is full.
    redraw_seconds
        Least wall time between two redraws while training.
    max_overhead
        Also wait at least (last redraw time) / max_overhead between redraws, so drawing takes at most about
        this fraction of the training time.
    **state_kwargs
        Passed to the `ModelState` (layer, preprocess, max_side, ...).

    Attributes
    ----------
    state : TrainingState
        What the views are bound to; its `weights()` and `activation()` follow `step`.
    """

    step = traitlets.Int(None, allow_none=True, help="The kept training step the views show; None: live. Setting "
                                                     "it makes state.weights() and state.activation() that step's.")
    paused = traitlets.Bool(False, help="While True, a fit in the background waits after its current batch.")
    running = traitlets.Bool(False, read_only=True, help="True while a fit with this monitor runs.")
    smoothing = traitlets.Float(0.6, min=0.0, max=0.99, help="Weight of the exponential moving average drawn over "
                                                             "each batch's values (0: none), as TensorBoard's.")

    def __init__(self, model: Any, image: Any = None, every: int = 10, *,
                 memory_budget_mb: float = DEFAULT_BUDGET_BYTES / 2**20, redraw_seconds: float = 0.5,
                 max_overhead: float = 0.04, **state_kwargs: Any):
        if not redraw_seconds >= 0 or not 0 < max_overhead <= 1:
            raise CnnvizError(f"redraw_seconds must be >= 0 and max_overhead in (0, 1]; got {redraw_seconds!r} "
                              f"and {max_overhead!r}")
        self._setting_state = False
        self._images = _as_images(image)
        self.state = TrainingState(model, self._images[0], every=every, memory_budget_mb=memory_budget_mb,
                                   **state_kwargs)
        state = self.state
        # "step 0 vs now": a second state on the same snapshots, held at the first step, following the selection.
        self._first = TrainingState(model, self._images[0], snapshots=state.snapshots, layer=state.layer,
                                    **{k: v for k, v in state_kwargs.items() if k != "layer"})
        for name in ("layer", "channel", "filter"):
            self.on_close(traitlets.link((state, name), (self._first, name)).unlink)
        self.logged = TrainingHistory()
        # Set while this code moves the step controls, per thread: the training thread moves them too, and a
        # user's move handled meanwhile in the notebook's thread must not be taken for one of ours.
        self._moving = threading.local()
        self.redraw_seconds = float(redraw_seconds)
        self.max_overhead = float(max_overhead)
        self.errors: list[str] = []
        self.redraws = 0
        self.redraw_time = 0.0  # seconds spent drawing from the callback, in all
        self.hook_time = 0.0  # seconds spent in the callback's hooks (drawing included, pauses not): its cost
        self._waited = 0.0
        self.seen = 0  # training steps (batches) seen, over every fit
        self._epoch_start = 0
        self._epoch = 0
        self._epochs: int | None = None
        self._started = 0.0
        self._seconds = 0.0  # wall time of the last fit
        self._planned_end: int | None = None  # the step a fit under way will end at, when Keras says
        self._next_redraw = 0.0
        self._redraw_costs: list[float] = []  # the last few, for the throttle
        self._go = threading.Event()
        self._go.set()
        self._stop_asked = False
        self._holding = False  # True while a paused fit waits in the callback
        self._stopped_at: int | None = None
        self._ignoring = False

        self.header = with_classes(ipywidgets.HTML(""), "cnnviz-training-header")
        self.layer_slider = with_classes(ipywidgets.SelectionSlider(
            options=state.layers, value=state.layer, description="layer", continuous_update=True,
            layout=ipywidgets.Layout(width="360px")), "cnnviz-layer-slider")
        self.channel_slider = with_classes(ipywidgets.IntSlider(
            value=state.channel, min=0, max=max(1, state.n_channels() - 1), description="input channel",
            style={"description_width": "initial"}), "cnnviz-channel-slider")
        self.filter_slider = with_classes(ipywidgets.IntSlider(
            value=state.filter, min=0, max=max(1, state.n_filters() - 1), description="filter"),
            "cnnviz-filter-slider")
        self.image_picker = with_classes(ipywidgets.Dropdown(
            options=[(f"image {i}", i) for i in range(len(self._images))], value=0, description="image",
            layout=ipywidgets.Layout(width="200px", display=None if len(self._images) > 1 else "none")),
            "cnnviz-image-picker")
        self.step_slider = self._new_step_slider(1)
        self.replay = with_classes(ipywidgets.Play(value=1, min=0, max=1, interval=_REPLAY_MS, disabled=True,
                                           description="replay", tooltip="replay the kept steps",
                                           show_repeat=False), "cnnviz-replay")
        self.step_label = with_classes(ipywidgets.HTML(""), "cnnviz-step-label")
        self.pause_button = with_classes(ipywidgets.ToggleButton(value=False, description="pause", icon="pause",
                                                         disabled=True,
                                                         tooltip="pause training after the current batch"),
                                 "cnnviz-pause-button")
        self.stop_button = with_classes(ipywidgets.Button(description="stop", icon="stop", button_style="warning",
                                                  disabled=True, tooltip="end training after the current batch"),
                                "cnnviz-stop-button")
        self.smoothing_slider = with_classes(ipywidgets.FloatSlider(
            value=self.smoothing, min=0.0, max=0.99, step=0.01, description="smoothing", continuous_update=True,
            layout=ipywidgets.Layout(width="300px")), "cnnviz-smoothing-slider")
        self.metric_picker = with_classes(ipywidgets.Dropdown(options=[], description="metric",
                                                      layout=ipywidgets.Layout(width="240px", display="none")),
                                  "cnnviz-metric-picker")
        self.error_box = with_classes(ipywidgets.HTML(""), "cnnviz-training-errors")

        self.first_grid = TrainingWeightGrid(self._first, scale_source=state, css_class="cnnviz-training-first",
                                             width_px=_GRID_PX)
        self.weight_grid = TrainingWeightGrid(state, css_class="cnnviz-training-weights", width_px=_GRID_PX)
        self.activation_grid = TrainingActivationGrid(state, css_class="cnnviz-training-activations",
                                                       width_px=_GRID_PX)
        self.change_bars = ChangeBars(state)
        self.distribution = StepPicture(state, "cnnviz-training-distribution", y_label="weight value",
                                        color_label="share", compute=weight_distribution_picture)
        self.dead_filters = StepPicture(state, "cnnviz-training-dead", y_label="filter", color_label="share of 0s",
                                        compute=dead_fraction_picture, color_range=(0.0, 1.0), y_format="d")
        self.loss_curves = Curves("loss", "cnnviz-training-loss")
        self.metric_curves = Curves("metric", "cnnviz-training-metrics")
        self.first_label = with_classes(ipywidgets.HTML(""), "cnnviz-training-first-label")
        self.now_label = with_classes(ipywidgets.HTML(""), "cnnviz-training-now-label")
        self.activations_label = with_classes(ipywidgets.HTML(""), "cnnviz-training-activations-label")

        for name, control in (("layer", self.layer_slider), ("channel", self.channel_slider),
                              ("filter", self.filter_slider)):
            self.link((state, name), (control, "value"))
        self.link((self, "paused"), (self.pause_button, "value"))
        self.link((self, "smoothing"), (self.smoothing_slider, "value"))
        self.on_click(self.stop_button, self._on_stop_click)
        self.watch(self.replay, self._on_step_slider)
        self.watch(self.image_picker, self._on_image_picked)
        self.watch(self.metric_picker, self._on_metric_picked)
        self.observe_state(self._on_layer_change, ["layer"])
        self.observe_state(self._on_state_step, ["step"])
        self.observe_state(self._on_selection, ["filter", "image"])

        def box(kind: type, children: list, css_class: str) -> Any:
            return with_classes(kind(children), css_class)

        self._time_controls = box(ipywidgets.HBox, [self.step_slider, self.replay, self.step_label,
                                                    self.pause_button, self.stop_button], "cnnviz-training-controls")
        controls = box(ipywidgets.VBox, [
            box(ipywidgets.HBox, [self.layer_slider, self.channel_slider, self.filter_slider, self.image_picker],
                "cnnviz-training-controls"),
            self._time_controls], "cnnviz-training-control-box")
        grids = box(ipywidgets.HBox, [box(ipywidgets.VBox, [label, grid], "cnnviz-training-column") for label, grid in (
            (self.first_label, self.first_grid), (self.now_label, self.weight_grid),
            (self.activations_label, self.activation_grid))], "cnnviz-training-row")
        curve_controls = box(ipywidgets.HBox, [self.smoothing_slider, self.metric_picker], "cnnviz-training-controls")
        curves = box(ipywidgets.HBox, [self.loss_curves, self.metric_curves], "cnnviz-training-row")
        changes = box(ipywidgets.HBox, [self.change_bars, self.distribution, self.dead_filters], "cnnviz-training-row")
        super().__init__(children=[
            stylesheet(MONITOR_CSS, "cnnviz-training-stylesheet"),
            self.header, controls, self.error_box,
            _section("What the filters look like, and what they see"), grids,
            _section("How well it learns"), curve_controls, curves,
            _section("How the weights change"), changes])
        self.add_class("cnnviz-training-monitor")
        self.set_model(model)
        self._on_layer_change(None)
        self._sync_step_controls()
        self._draw_curves()
        self._draw_header()

    # -- what the API promises ---------------------------------------------------------------------------

    @property
    def steps(self) -> list[int]:
        """Training steps (batches seen) with kept weights, oldest first."""
        return self.state.snapshots.steps

    @property
    def history(self) -> dict[str, list[float]]:
        """{"loss": [...], "accuracy": [...], "val_loss": [...], ...} exactly as Keras logs them: after each
        batch the mean over the epoch so far, after each epoch the validation values (see `history_steps`
        for when). Each batch's own value: `batch_values`."""
        return self.logged.as_dict()

    @property
    def history_steps(self) -> dict[str, list[int]]:
        """For each key of `history`, the step at which each value was logged."""
        return {key: self.logged.series(key)[0].tolist() for key in self.logged.names()}

    def batch_values(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        """(steps, values): each batch's own value of a logged training loss or metric, recovered from Keras'
        running means over the epoch (see `TrainingHistory.batch_values`, which also says whether it is exact);
        for a "val_" key, its value at each epoch end."""
        steps, values, _exact = self.logged.batch_values(key)
        return steps, values

    def histogram(self, layer: str | None = None, step: int | None = None,
                  bins: Any = 30) -> tuple[np.ndarray, np.ndarray]:
        """(counts, edges) of the kernel of `layer` at kept step `step` (None: the step shown), as
        `numpy.histogram(kernel, bins)`."""
        return self.state.histogram(layer, step=step, bins=bins)

    def filter_change(self, layer: str | None = None) -> np.ndarray:
        """How much each filter of `layer` (default: the current one) changed from the first kept step to the
        step shown (or now), relative to its size then; shape (c_out,)."""
        return self.state.filter_change(layer)

    def filters_by_change(self, layer: str | None = None) -> list[int]:
        """Filter indices of `layer`, most changed first."""
        return rank_by_change(self.filter_change(layer))

    def _draw_charts(self) -> None:
        for chart in (self.change_bars, self.distribution, self.dead_filters):
            chart.redraw()

    def _draw_curves(self) -> None:
        try:
            keys = self.logged.names()
            metrics = list(dict.fromkeys(k.removeprefix("val_") for k in keys if k.removeprefix("val_") != "loss"))
            if metrics != [value for _, value in self.metric_picker.options]:
                with self.metric_picker.hold_sync():
                    chosen = self.metric_picker.value
                    self.metric_picker.options = [(_words(m), m) for m in metrics]
                    self.metric_picker.value = chosen if chosen in metrics else (metrics[0] if metrics else None)
                    self.metric_picker.layout.display = None if len(metrics) > 1 else "none"
            metric = self.metric_picker.value
            self.metric_curves.quantity = _words(metric) if metric else "metric"
            self.metric_curves.y_axis.label = self.metric_curves.quantity
            for curves in (self.loss_curves, self.metric_curves):
                curves.smoothing = self.smoothing
            self.loss_curves.update(self.logged, [k for k in keys if k.removeprefix("val_") == "loss"], self.step)
            self.metric_curves.update(self.logged, [k for k in keys if metric and k.removeprefix("val_") == metric],
                                      self.step)
        except Exception as err:
            self.report("curves", err)

    def _draw_header(self) -> None:
        epochs = f" of {self._epochs}" if self._epochs else ""
        epoch = f"epoch {min(self._epoch + 1, self._epochs or self._epoch + 1)}{epochs}"
        if self._stop_asked and self.running:
            status = f"<b>Stopping</b> after this batch (step {self.seen})"
        elif self.paused and self.running and self._holding:
            status = f"<b>Paused</b> at step {self.seen}, {epoch}: press resume to go on"
        elif self.paused and self.running:
            status = f"<b>Pausing</b> after this batch (step {self.seen})"
        elif self.running:
            status = (f"<b>Training</b>: step {self.seen} (batches seen), {epoch}, "
                      f"{time.perf_counter() - self._started:.0f} s so far")
        elif self._stopped_at is not None:
            status = f"<b>Stopped</b> by you at step {self._stopped_at}, {epoch}"
        elif self.seen:
            status = f"<b>Finished</b>: {self.seen} steps, {epoch}, in {self._seconds:.1f} s"
        else:
            status = ("<b>Not trained yet</b>: train with <code>monitor.fit_in_background(x, y, epochs=…)</code>, "
                      "or <code>model.fit(…, callbacks=[monitor])</code>")
        values = self.logged.as_dict()
        train = [f"{_words(k)} {format_number(v[-1])}" for k, v in values.items() if v and not k.startswith("val_")]
        valid = [f"{_words(k.removeprefix('val_'))} {format_number(v[-1])}" for k, v in values.items()
                 if v and k.startswith("val_")]
        lines = [status]
        if train:
            lines.append("Mean over this epoch so far: " + html.escape(", ".join(train)))
        if valid:
            lines.append(f"Validation, at the end of epoch {len(self.logged.epoch_ends)}: "
                         + html.escape(", ".join(valid)))
        self.header.value = "<br>".join(lines)
        self.pause_button.disabled = self.stop_button.disabled = not self.running
        self.pause_button.description = "resume" if self.paused else "pause"
        self.pause_button.icon = "play" if self.paused else "pause"

    def _draw_step_words(self) -> None:
        steps = self.steps
        first = steps[0] if steps else 0
        self.first_label.value = f"<b>Step {first}</b>" + (" (before training)" if first == 0 else "")
        if self.step is None:
            when = f"now (step {self.seen})" if self.running else f"the end (step {self.seen})" if self.seen else "now"
            shown = f"Showing {when}"
        else:
            when = f"step {self.step}"
            shown = f"Showing step {self.step} of {self.seen}"
        self.now_label.value = f"<b>{when.capitalize()}</b>"
        self.activations_label.value = f"<b>What the filters see</b>, {when}"
        saved = f" · weights saved at {len(steps)} steps" if steps else ""
        self.step_label.value = shown + saved

    def report(self, where: str, err: BaseException) -> None:
        """Say `err` (met in `where`) in the monitor's error box, with the last two before it; training goes on."""
        text = f"{where}: {type(err).__name__}: {err}"
        self.errors.append(text)
        shown = self.errors[-3:]
        self.error_box.value = "<br>".join(colored(t, "error") for t in shown)

    # -- controls ----------------------------------------------------------------------------------------

    @traitlets.validate("step")
    def _validate_step(self, proposal: traitlets.Bunch) -> int | None:
        # (traitlets skips validation for None, "live": _on_step passes that on)
        self._setting_state = True
        try:
            self.state.step = proposal["value"]  # CnnvizError naming the kept steps for one that is not kept
        finally:
            self._setting_state = False
        return self.state.step

    @traitlets.observe("step")
    def _on_step(self, change: traitlets.Bunch) -> None:
        if self.state.step != change["new"]:
            self.state.step = change["new"]
        with self.state.lock:
            self._sync_step_controls()
            self._draw_step_words()
            self._draw_curves()
            self._draw_charts()

    def _on_state_step(self, change: traitlets.Bunch) -> None:
        if not self._setting_state and self.step != change["new"]:
            self.step = change["new"]  # set on the state from code: the monitor follows

    def _on_step_slider(self, change: traitlets.Bunch) -> None:
        if getattr(self._moving, "controls", False):
            return
        steps = self.steps
        if not steps:
            return
        wanted = change["new"]
        if self.step is not None and abs(wanted - self.step) < self.state.snapshots.spacing / 2:
            return  # the front end moved an off-grid kept step onto its grid: not a new pick
        # Past the newest kept step is now. Steps are absolute, so a value sent while training adds steps
        # still means the same moment.
        self.step = None if wanted > steps[-1] else self.state.snapshots.nearest(wanted)
        if (self._live_value() if self.step is None else self.step) != wanted:
            self._sync_step_controls()  # the handle snaps to the kept step shown (or to now)

    @traitlets.observe("paused")
    def _on_paused(self, change: traitlets.Bunch) -> None:
        if change["new"]:
            self._go.clear()
        else:
            self._go.set()
        self._draw_header()

    @traitlets.observe("smoothing")
    def _on_smoothing(self, _change: traitlets.Bunch) -> None:
        self._draw_curves()

    def _on_metric_picked(self, _change: traitlets.Bunch) -> None:
        self._draw_curves()

    def _on_image_picked(self, change: traitlets.Bunch) -> None:
        try:
            with self.state.lock:
                self.state.set_image(self._images[change["new"]])
        except CnnvizError as err:
            self.report("image", err)

    def _on_layer_change(self, _change: Any) -> None:
        state = self.state
        with self.channel_slider.hold_sync(), self.filter_slider.hold_sync():
            # (a range of at least 1: a slider whose min equals its max cannot be moved once it grows)
            self.filter_slider.max = max(1, state.n_filters() - 1)
            self.channel_slider.max = max(1, state.n_channels() - 1)
            self.channel_slider.layout.display = None if state.layer_kind() == "conv" else "none"
            self.channel_slider.disabled = state.n_channels() < 2
            self.filter_slider.disabled = state.n_filters() < 2
        self._draw_step_words()
        self._draw_charts()

    def _on_selection(self, _change: Any) -> None:
        self._draw_charts()

    def _on_stop_click(self, _button: ipywidgets.Button) -> None:
        self.stop()

    def redraw(self) -> None:
        for view in (self.first_grid, self.weight_grid, self.activation_grid):
            view.redraw()
        self._draw_charts()
        self._draw_curves()


_WORDS = {"loss": "loss", "accuracy": "accuracy", "acc": "accuracy"}


def _words(key: str) -> str:
    """A logged key as a student reads it: "val_loss" -> "validation loss", "sparse_top_k" -> "sparse top k"."""
    if key.startswith("val_"):
        return f"validation {_words(key.removeprefix('val_'))}"
    return _WORDS.get(key, key.replace("_", " "))


def _section(title: str) -> ipywidgets.HTML:
    return with_classes(ipywidgets.HTML(f"<h4 style='margin: 12px 0 4px 0'>{html.escape(title)}</h4>"),
                "cnnviz-training-section")


def _as_images(image: Any) -> list[Any]:
    if image is None:
        return [None]
    if isinstance(image, np.ndarray) and image.ndim == 4:
        return list(image)
    if isinstance(image, (list, tuple)):
        if not image:
            raise CnnvizError("image: give an image, a list of images or an (N, H, W, C) array; got an empty list")
        return list(image)
    return [image]
