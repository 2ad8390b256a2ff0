"""`TrainingMonitor`: watch a CNN learn, live in the notebook, and scrub back through training.

The monitor is a Keras callback and a widget. Its views are bound to `monitor.state`, a `TrainingState` on the
model being trained: the filters at step 0 beside the filters now, the activation maps of one image, how much
each filter moved, and the loss and metric curves. The callback does the bookkeeping after every batch
(history, a snapshot every `every` steps) and redraws only when enough wall time has passed, so watching
costs a small fraction of the fit.

In ipykernel, messages from the browser wait while a cell runs: a `model.fit` in the cell itself blocks the
controls. `fit_in_background` runs `fit` in a thread, so the cell returns at once and the sliders, the step
slider and pause / stop work while the network trains.

Importing this module loads Keras (the class is a `keras.callbacks.Callback`); `cnnviz_widgets.widgets`
imports it only when `TrainingMonitor` or `fit_in_background` is asked for.
"""

from __future__ import annotations

import functools
import html
import threading
import time
from collections.abc import Callable
from typing import Any

import ipywidgets
import numpy as np
import traitlets

from .._keras import keras
from ..errors import CnnvizError
from ..training import DEFAULT_BUDGET_BYTES, TrainingHistory, rank_by_change
from ..training_state import TrainingState
from ._common import View, close_all, format_number
from .training_views import ChangeBars, Curves, TrainingActivationGrid, TrainingWeightGrid

_GRID_PX = 250
_COLUMN_PX = 270  # the grids' titles wrap inside; three columns fit in 850 px
_LIVE = -1  # the step slider's value for "live"


# -- the monitor --------------------------------------------------------------------------------------------


def _guarded(hook: Callable) -> Callable:
    """A callback hook that shows its error in the monitor instead of ending the fit, and counts its time."""

    @functools.wraps(hook)
    def run(self: TrainingMonitor, *args: Any, **kwargs: Any) -> None:
        start, self._waited = time.perf_counter(), 0.0
        try:
            hook(self, *args, **kwargs)
        except Exception as err:
            self._report(f"{hook.__name__}", err)
        finally:
            self.hook_time += time.perf_counter() - start - self._waited  # paused time is not the monitor's cost

    return run


class TrainingMonitor(View, keras().callbacks.Callback):
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

    def __init__(self, model: Any, image: Any = None, every: int = 10, *,
                 memory_budget_mb: float = DEFAULT_BUDGET_BYTES / 2**20, redraw_seconds: float = 0.5,
                 max_overhead: float = 0.05, **state_kwargs: Any):
        if not redraw_seconds >= 0 or not 0 < max_overhead <= 1:
            raise CnnvizError(f"redraw_seconds must be >= 0 and max_overhead in (0, 1]; got {redraw_seconds!r} "
                              f"and {max_overhead!r}")
        self._images = _as_images(image)
        self.state = TrainingState(model, self._images[0], every=every, memory_budget_mb=memory_budget_mb,
                                   **state_kwargs)
        state = self.state
        # "step 0 vs now": a second state on the same snapshots, held at the first step, following the selection.
        self._first = TrainingState(model, self._images[0], snapshots=state.snapshots, layer=state.layer,
                                    **{k: v for k, v in state_kwargs.items() if k != "layer"})
        self._links = [traitlets.link((state, name), (self._first, name)) for name in ("layer", "channel", "filter")]
        self.logged = TrainingHistory()
        self._updating_slider = False
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
        self._next_redraw = 0.0
        self._go = threading.Event()
        self._go.set()
        self._stop_asked = False
        self._ignoring = False
        self._state_handlers: list[tuple[Callable, list[str]]] = []

        self.header = _css(ipywidgets.HTML(""), "cnnviz-training-header")
        self.layer_slider = _css(ipywidgets.SelectionSlider(
            options=state.layers, value=state.layer, description="layer", continuous_update=True,
            layout=ipywidgets.Layout(width="360px")), "cnnviz-layer-slider")
        self.channel_slider = _css(ipywidgets.IntSlider(
            value=state.channel, min=0, max=state.n_channels() - 1, description="input channel",
            style={"description_width": "initial"}), "cnnviz-channel-slider")
        self.filter_slider = _css(ipywidgets.IntSlider(
            value=state.filter, min=0, max=state.n_filters() - 1, description="filter"), "cnnviz-filter-slider")
        self.image_picker = _css(ipywidgets.Dropdown(
            options=[(f"image {i}", i) for i in range(len(self._images))], value=0, description="image",
            layout=ipywidgets.Layout(width="200px", display=None if len(self._images) > 1 else "none")),
            "cnnviz-image-picker")
        # No readout: the front end does not always refresh it when the options grow; step_label says it.
        self.step_slider = _css(ipywidgets.SelectionSlider(
            options=[("live", _LIVE)], value=_LIVE, description="step", continuous_update=True, readout=False,
            layout=ipywidgets.Layout(width="360px")), "cnnviz-step-slider")
        self.step_label = _css(ipywidgets.HTML("live"), "cnnviz-step-label")
        self.pause_button = _css(ipywidgets.ToggleButton(value=False, description="pause", icon="pause",
                                                         tooltip="pause training after the current batch"),
                                 "cnnviz-pause-button")
        self.stop_button = _css(ipywidgets.Button(description="stop", icon="stop", button_style="warning",
                                                  tooltip="end training after the current batch"),
                                "cnnviz-stop-button")
        self.error_box = _css(ipywidgets.HTML(""), "cnnviz-training-errors")

        self.first_grid = TrainingWeightGrid(self._first, css_class="cnnviz-training-first", width_px=_GRID_PX)
        self.weight_grid = TrainingWeightGrid(state, css_class="cnnviz-training-weights", width_px=_GRID_PX)
        self.activation_grid = TrainingActivationGrid(state, css_class="cnnviz-training-activations",
                                                       width_px=_GRID_PX)
        self.change_bars = ChangeBars(state)
        self.loss_curves = Curves("loss", "cnnviz-training-loss")
        self.metric_curves = Curves("metrics", "cnnviz-training-metrics")
        self.first_label = _css(ipywidgets.HTML("<b>step 0</b>"), "cnnviz-training-first-label")
        self.now_label = _css(ipywidgets.HTML("<b>now</b>"), "cnnviz-training-now-label")

        self._links += [ipywidgets.link((state, name), (control, "value")) for name, control in (
            ("layer", self.layer_slider), ("channel", self.channel_slider), ("filter", self.filter_slider))]
        self._links.append(ipywidgets.link((self, "paused"), (self.pause_button, "value")))
        self.stop_button.on_click(lambda _button: self.stop())
        self.step_slider.observe(self._on_step_slider, "value")
        self.image_picker.observe(self._on_image_picked, "value")
        self._observe_state(self._on_layer_change, ["layer"])
        self._observe_state(self._on_state_step, ["step"])
        self._observe_state(self._on_selection, ["filter", "version"])

        row = ipywidgets.Layout(flex_flow="row wrap", align_items="flex-start")
        controls = ipywidgets.VBox([
            ipywidgets.HBox([self.layer_slider, self.channel_slider, self.filter_slider, self.image_picker],
                            layout=row),
            ipywidgets.HBox([self.step_slider, self.step_label, self.pause_button, self.stop_button], layout=row)])
        grids = ipywidgets.HBox([ipywidgets.VBox([self.first_label, self.first_grid], layout=_column()),
                                 ipywidgets.VBox([self.now_label, self.weight_grid], layout=_column()),
                                 ipywidgets.VBox([_css(ipywidgets.HTML("<b>activations</b>"), "cnnviz-label"),
                                                  self.activation_grid], layout=_column())], layout=row)
        charts = ipywidgets.HBox([self.loss_curves, self.metric_curves, self.change_bars], layout=row)
        super().__init__(children=[self.header, controls, self.error_box, grids, charts])
        self.add_class("cnnviz-training-monitor")
        self.set_model(model)
        self._on_layer_change(None)
        self._draw_header()

    # -- what the API promises ---------------------------------------------------------------------------

    @property
    def steps(self) -> list[int]:
        """Training steps (batches seen) with kept weights, oldest first."""
        return self.state.snapshots.steps

    @property
    def history(self) -> dict[str, list[float]]:
        """{"loss": [...], "accuracy": [...], "val_loss": [...], ...}: training values after each batch,
        validation values after each epoch (see `history_steps` for when)."""
        return self.logged.as_dict()

    @property
    def history_steps(self) -> dict[str, list[int]]:
        """For each key of `history`, the step at which each value was logged."""
        return {key: self.logged.series(key)[0].tolist() for key in self.logged.names()}

    def filter_change(self, layer: str | None = None) -> np.ndarray:
        """How much each filter of `layer` (default: the current one) changed from the first kept step to the
        step shown (or now), relative to its size then; shape (c_out,)."""
        return self.state.filter_change(layer)

    def filters_by_change(self, layer: str | None = None) -> list[int]:
        """Filter indices of `layer`, most changed first."""
        return rank_by_change(self.filter_change(layer))

    def stop(self) -> None:
        """End training after the current batch; the model keeps the weights it has (and stays usable)."""
        self._stop_asked = True
        model = self.model
        if model is not None:
            model.stop_training = True
        self._go.set()  # a paused fit wakes up to stop
        self._draw_header()

    def fit_in_background(self, *args: Any, **kwargs: Any) -> BackgroundFit:
        """`model.fit(*args, **kwargs)` in a background thread with this monitor among its callbacks.

        The cell returns at once, so the controls stay live while the network trains. verbose defaults to 0.
        """
        return fit_in_background(self.state.model, *args, monitor=self, **kwargs)

    # -- Keras callback hooks ----------------------------------------------------------------------------

    @_guarded
    def on_train_begin(self, logs: dict | None = None) -> None:
        self._ignoring = self.model is not self.state.model
        if self._ignoring:
            raise CnnvizError(f"this monitor watches {self.state.model.name!r}; fit was called on "
                              f"{getattr(self.model, 'name', self.model)!r}: make a TrainingMonitor for that model")
        self._stop_asked = False
        self._epochs = (self.params or {}).get("epochs")
        self._started = time.perf_counter()
        if not self.steps:
            self.state.snapshots.take(self.seen)  # the weights before any training
        self.set_trait("running", True)
        self._redraw()

    @_guarded
    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._epoch = int(epoch)
        self._epoch_start = self.seen

    @_guarded
    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        if self._ignoring:
            return
        before, self.seen = self.seen, self._epoch_start + int(batch) + 1
        self.logged.record(self.seen, logs)
        if self.state.snapshots.due(before, self.seen):
            self.state.snapshots.take(self.seen)
        if time.perf_counter() >= self._next_redraw:
            self._redraw()
        if not self._go.is_set() and threading.current_thread() is not threading.main_thread():
            self._draw_header()
            paused = time.perf_counter()
            self._go.wait()  # paused: only a fit off the main thread can be resumed (the controls are live)
            self._waited = time.perf_counter() - paused

    @_guarded
    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if self._ignoring:
            return
        self.logged.record(self.seen, logs, validation_only=True)
        self.logged.epoch_ends.append(self.seen)
        if any(key.startswith("val_") for key in logs or {}):
            self._draw_curves()  # validation points arrive once per epoch: show them without a full redraw

    @_guarded
    def on_train_end(self, logs: dict | None = None) -> None:
        if self._ignoring:
            return
        self.state.snapshots.take(self.seen)
        self.set_trait("running", False)
        self._redraw()

    # -- drawing -----------------------------------------------------------------------------------------

    def _redraw(self) -> None:
        """Show the newest weights, maps and curves (called from the training thread, throttled)."""
        start = time.perf_counter()
        with self.state.lock:
            try:
                if self._first.step is None and self.steps:
                    self._first.step = self.steps[0]
                self._update_step_slider()
                self.state.refresh()  # live: the views redraw with the current weights (their version moved)
            except Exception as err:
                self._report("redraw", err)
            self._draw_curves()
            self._draw_header()
        cost = time.perf_counter() - start
        self.redraws += 1
        self.redraw_time += cost
        self._next_redraw = time.perf_counter() + max(self.redraw_seconds, cost / self.max_overhead)

    def _draw_curves(self) -> None:
        try:
            keys = self.logged.names()
            self.loss_curves.update(self.logged, [k for k in keys if k.removeprefix("val_") == "loss"], self.step)
            self.metric_curves.update(self.logged, [k for k in keys if k.removeprefix("val_") != "loss"], self.step)
        except Exception as err:
            self._report("curves", err)

    def _draw_header(self) -> None:
        parts = [f"step {self.seen}"]
        if self._epochs:
            parts.append(f"epoch {min(self._epoch + 1, self._epochs)}/{self._epochs}")
        for key, values in self.logged.as_dict().items():
            if values:
                parts.append(f"{key} {format_number(values[-1])}")
        if self.running:
            parts.append(f"{time.perf_counter() - self._started:.0f} s")
        status = ("stopping…" if self._stop_asked and self.running else "stopped" if self._stop_asked
                  else "paused" if self.paused and self.running else "training…" if self.running
                  else "finished" if self.steps and self.seen else "not started")
        self.header.value = f"<b>{html.escape(status)}</b> · " + html.escape(" · ".join(parts))

    def _update_step_slider(self) -> None:
        options = [(str(s), s) for s in self.steps] + [("live", _LIVE)]
        if options != list(self.step_slider.options):
            value = _LIVE if self.step is None else self.step
            with self.step_slider.hold_sync():
                self._updating_slider = True
                try:
                    self.step_slider.options = options
                    self.step_slider.value = value if value in self.steps else _LIVE
                finally:
                    self._updating_slider = False
        if self.step is not None and self.step not in self.steps:  # thinned away while shown: the nearest
            self.step = self.state.snapshots.nearest(self.step)
        self._draw_step_label()

    def _draw_step_label(self) -> None:
        kept = len(self.steps)
        shown = "live" if self.step is None else f"step {self.step}"
        self.step_label.value = f"{shown} · {kept} kept" if kept else shown

    def _report(self, where: str, err: Exception) -> None:
        """Show an error in the monitor; training goes on."""
        text = f"{where}: {type(err).__name__}: {err}"
        self.errors.append(text)
        shown = self.errors[-3:]
        self.error_box.value = ('<div class="cnnviz-view-error" style="color: var(--jp-error-color1, #c00)">'
                                + "<br>".join(html.escape(t) for t in shown) + "</div>")

    # -- controls ----------------------------------------------------------------------------------------

    @traitlets.validate("step")
    def _validate_step(self, proposal: traitlets.Bunch) -> int | None:
        # (traitlets skips validation for None, "live": _on_step passes that on)
        self.state.step = proposal["value"]  # CnnvizError naming the kept steps for one that is not kept
        return self.state.step

    @traitlets.observe("step")
    def _on_step(self, change: traitlets.Bunch) -> None:
        if self.state.step != change["new"]:
            self.state.step = change["new"]

    def _on_state_step(self, change: traitlets.Bunch) -> None:
        self.step = change["new"]
        with self.step_slider.hold_sync():
            self._updating_slider = True
            try:
                self.step_slider.value = _LIVE if change["new"] is None else change["new"]
            finally:
                self._updating_slider = False
        self.now_label.value = "<b>now</b>" if change["new"] is None else f"<b>step {change['new']}</b>"
        self._draw_step_label()
        self._draw_curves()

    def _on_step_slider(self, change: traitlets.Bunch) -> None:
        if not getattr(self, "_updating_slider", False):
            self.step = None if change["new"] == _LIVE else change["new"]

    @traitlets.observe("paused")
    def _on_paused(self, change: traitlets.Bunch) -> None:
        if change["new"]:
            self._go.clear()
        else:
            self._go.set()
        self._draw_header()

    def _on_image_picked(self, change: traitlets.Bunch) -> None:
        try:
            with self.state.lock:
                self.state.set_image(self._images[change["new"]])
        except CnnvizError as err:
            self._report("image", err)

    def _on_layer_change(self, _change: Any) -> None:
        state = self.state
        with self.channel_slider.hold_sync(), self.filter_slider.hold_sync():
            self.filter_slider.max = state.n_filters() - 1
            self.channel_slider.max = state.n_channels() - 1
            self.channel_slider.layout.display = None if state.layer_kind() == "conv" else "none"
        first = self.steps[0] if self.steps else 0
        self.first_label.value = f"<b>step {first}</b>"
        self.change_bars.redraw()

    def _on_selection(self, _change: Any) -> None:
        self.change_bars.redraw()

    def _observe_state(self, handler: Callable, names: list[str]) -> None:
        self.state.observe(handler, names)
        self._state_handlers.append((handler, names))

    def redraw(self) -> None:
        for view in (self.first_grid, self.weight_grid, self.activation_grid):
            view.redraw()
        self.change_bars.redraw()
        self._draw_curves()

    def close(self) -> None:
        """Stop observing, unlink the controls and close every widget the monitor made."""
        if not hasattr(self, "activation_grid"):  # __init__ refused its arguments: nothing was built
            super().close()
            return
        for link in self._links:
            link.unlink()
        self._links = []
        for handler, names in self._state_handlers:
            self.state.unobserve(handler, names)
        self._state_handlers.clear()
        for view in (self.first_grid, self.weight_grid, self.activation_grid):
            view.close()
        close_all(self)


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


def _column() -> ipywidgets.Layout:
    return ipywidgets.Layout(width=f"{_COLUMN_PX}px", margin="0 8px 0 0")


def _css(widget: ipywidgets.Widget, name: str) -> Any:
    widget.add_class(name)
    return widget


# -- training off the notebook's main thread ----------------------------------------------------------------


class BackgroundFit:
    """A `model.fit` running in a background thread (see `fit_in_background`)."""

    def __init__(self, model: Any, args: tuple, kwargs: dict, monitor: TrainingMonitor | None):
        self.model = model
        self.monitor = monitor
        self.history: Any = None
        self.error: BaseException | None = None
        self.seconds = 0.0
        self.thread = threading.Thread(target=self._run, args=(args, kwargs), name="cnnviz-fit", daemon=True)
        self.thread.start()

    def _run(self, args: tuple, kwargs: dict) -> None:
        start = time.perf_counter()
        try:
            self.history = self.model.fit(*args, **kwargs)
        except BaseException as err:  # kept for wait(); shown in the monitor
            self.error = err
            if self.monitor is not None:
                self.monitor._report("fit", err)
        finally:
            self.seconds = time.perf_counter() - start

    @property
    def done(self) -> bool:
        return not self.thread.is_alive()

    def wait(self, timeout: float | None = None) -> Any:
        """Wait for the fit to end and return its `History` (the fit's error, if it failed)."""
        self.thread.join(timeout)
        if self.thread.is_alive():
            raise TimeoutError(f"training still runs after {timeout} s")
        if self.error is not None:
            raise self.error
        return self.history

    def stop(self) -> None:
        """End training after the current batch."""
        if self.monitor is not None:
            self.monitor.stop()
        else:
            self.model.stop_training = True

    def __repr__(self) -> str:
        state = "running" if not self.done else "failed" if self.error is not None else "done"
        return f"<BackgroundFit {state} {self.seconds:.1f} s>"


def fit_in_background(model: Any, *args: Any, monitor: TrainingMonitor | None = None, **kwargs: Any) -> BackgroundFit:
    """Run `model.fit(*args, **kwargs)` in a background thread and return at once.

    In a notebook this keeps the widgets' controls live during training (ipykernel handles messages from
    the browser only between cell executions). `monitor` is added to the callbacks; verbose defaults to 0,
    as a progress bar printed from another thread lands in whichever cell runs then. Use `.wait()` for the
    `History`, `.stop()` to end training early.
    """
    kwargs.setdefault("verbose", 0)
    if monitor is not None:
        callbacks = list(kwargs.get("callbacks") or [])
        if monitor not in callbacks:
            callbacks.append(monitor)
        kwargs["callbacks"] = callbacks
    return BackgroundFit(model, args, kwargs, monitor)
