"""`MonitorCallback`: the Keras callback role of `TrainingMonitor`.

After every batch it does the bookkeeping (the logged values, a snapshot every `every` steps) and redraws only when
enough wall time has passed (`redraw_seconds`, and at most `max_overhead` of the time), so watching costs a small
fraction of the fit; it holds a paused fit after its current batch and ends it on `stop()`. A hook never ends the
fit: its error is said in the monitor (`report`), and its time is counted in `hook_time` (pauses are not).
The drawing itself is the monitor's (`_sync_step_controls`, `_draw_step_words`, `_draw_charts`, `_draw_curves`,
`_draw_header`).
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable
from typing import Any

from cnnviz_widgets.errors import CnnvizError
from cnnviz_widgets.training.history import metric_counts
from cnnviz_widgets.widgets.background_fit import BackgroundFit, fit_in_background


def _hook(hook: Callable) -> Callable:
    """A callback hook that shows its error in the monitor instead of ending the fit, and counts its time."""

    @functools.wraps(hook)
    def run(self: MonitorCallback, *args: Any, **kwargs: Any) -> None:
        start, self._waited = time.perf_counter(), 0.0
        try:
            hook(self, *args, **kwargs)
        except Exception as err:
            self.report(f"{hook.__name__}", err)
        finally:
            self.hook_time += time.perf_counter() - start - self._waited  # paused time is not the monitor's cost

    return run


class MonitorCallback:
    """The Keras hooks of a `TrainingMonitor` (mixed in before `keras.callbacks.Callback`)."""

    def stop(self) -> None:
        """End training after the current batch; the model keeps the weights it has (and stays usable).

        Once training has ended there is nothing to stop: it does nothing.
        """
        if not self.running:
            return
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

    @_hook
    def on_train_begin(self, logs: dict | None = None) -> None:
        self._ignoring = self.model is not self.state.model
        if self._ignoring:
            raise CnnvizError(f"this monitor watches {self.state.model.name!r}; fit was called on "
                              f"{getattr(self.model, 'name', self.model)!r}: make a TrainingMonitor for that model")
        self._stop_asked = False
        self._stopped_at = None
        self._epochs = (self.params or {}).get("epochs")
        per_epoch = (self.params or {}).get("steps")
        self._planned_end = self.seen + self._epochs * per_epoch if self._epochs and per_epoch else None
        self._started = time.perf_counter()
        if not self.steps:
            self.state.snapshots.take(self.seen)  # the weights before any training
        self.set_trait("running", True)
        self._redraw()

    @_hook
    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._epoch = int(epoch)
        self._epoch_start = self.seen

    @_hook
    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        if self._ignoring:
            return
        before, self.seen = self.seen, self._epoch_start + int(batch) + 1
        self.logged.record(self.seen, logs, batch=int(batch) + 1, counts=metric_counts(self.model))
        if self.state.snapshots.due(before, self.seen):
            self.state.snapshots.take(self.seen)
        paused = not self._go.is_set() and threading.current_thread() is not threading.main_thread()
        if paused:
            self.state.snapshots.take(self.seen)  # the step paused at can be come back to
            self._holding = True
        if paused or time.perf_counter() >= self._next_redraw:
            self._redraw()  # paused: every picture, label and the header show the step paused at
        if paused:
            waiting = time.perf_counter()
            self._go.wait()  # paused: only a fit off the main thread can be resumed (the controls are live)
            self._waited = time.perf_counter() - waiting
            self._holding = False
            self._draw_header()

    @_hook
    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if self._ignoring:
            return
        self.logged.record(self.seen, logs, validation_only=True)
        self.logged.epoch_ends.append(self.seen)
        if any(key.startswith("val_") for key in logs or {}):
            self._draw_curves()  # validation points arrive once per epoch: show them without a full redraw
            self._draw_header()

    @_hook
    def on_train_end(self, logs: dict | None = None) -> None:
        if self._ignoring:
            return
        self.state.snapshots.take(self.seen)
        self._seconds = time.perf_counter() - self._started
        if self._stop_asked:
            self._stopped_at = self.seen
        self.set_trait("running", False)
        self.paused = False
        self._redraw()

    def _redraw(self) -> None:
        """Show the newest weights, maps and curves (called from the training thread, throttled)."""
        start = time.perf_counter()
        with self.state.lock:
            try:
                if self._first.step is None and self.steps:
                    self._first.step = self.steps[0]
                self._sync_step_controls()
                self.state.refresh()  # live: the views redraw with the current weights (their version moved)
                self.first_grid.redraw()  # its step stays, but the colour scale it shares may have grown
                self._draw_step_words()
                if len(self.steps) > 1:  # over training: nothing to show before a second step is kept
                    self._draw_charts()
            except Exception as err:
                self.report("redraw", err)
            self._draw_curves()
            self._draw_header()
        cost = time.perf_counter() - start
        self.redraws += 1
        self.redraw_time += cost
        # The less of the last two costs: a drawing that pays one-off costs (the first of a layer, tracing)
        # does not hold the next ones back for long.
        self._redraw_costs = [*self._redraw_costs[-1:], cost]
        self._next_redraw = time.perf_counter() + max(self.redraw_seconds, min(self._redraw_costs) / self.max_overhead)
