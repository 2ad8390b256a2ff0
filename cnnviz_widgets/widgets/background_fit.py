"""`BackgroundFit` and `fit_in_background`: a `model.fit` in a thread, so the notebook's widgets stay live.

In ipykernel, messages from the browser wait while a cell runs: a `model.fit` in the cell itself blocks the
controls. `fit_in_background` runs `fit` in a thread, so the cell returns at once and the sliders, the step slider
and pause / stop of a `TrainingMonitor` work while the network trains; ``history = await job`` waits for the end
with the widgets live (ipykernel 7 handles widget messages while a cell awaits; see `_widget_replies_finished`).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cnnviz_widgets.widgets.training_monitor import TrainingMonitor


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
                self.monitor.report("fit", err)
        finally:
            self.seconds = time.perf_counter() - start

    @property
    def done(self) -> bool:
        return not self.thread.is_alive()

    def wait(self, timeout: float | None = None) -> Any:
        """Wait for the fit to end and return its `History` (the fit's error, if it failed).

        In a notebook, prefer ``history = await job``: a cell blocked in `wait()` freezes every widget until
        training ends (ipykernel reads the browser's messages only between cells), one that awaits does not.
        """
        self.thread.join(timeout)
        if self.thread.is_alive():
            raise TimeoutError(f"training still runs after {timeout} s")
        if self.error is not None:
            raise self.error
        return self.history

    def __await__(self) -> Any:
        """``history = await job`` in a notebook cell: the cell waits for the end of training while the
        widgets stay live (ipykernel ≥ 7 handles widget messages while a cell awaits), and the cells queued
        after it (a "Run All") run once training has ended, in order."""
        return self._until_done().__await__()

    async def _until_done(self) -> Any:
        with _widget_replies_finished():
            while self.thread.is_alive():
                await asyncio.sleep(0.05)
        return self.wait()

    def stop(self) -> None:
        """End training after the current batch."""
        if self.monitor is not None:
            self.monitor.stop()
        else:
            self.model.stop_training = True

    def __repr__(self) -> str:
        state = "running" if not self.done else "failed" if self.error is not None else "done"
        return f"<BackgroundFit {state} {self.seconds:.1f} s>"


@contextlib.contextmanager
def _widget_replies_finished() -> Iterator[None]:
    """While a cell awaits: say "idle" after each widget message the kernel handles, as it does between cells.

    ipykernel >= 7 handles widget (comm) messages while a cell awaits, but reports no "idle" for them; the
    ipywidgets front end sends a widget's next change only after the "idle" of its previous one, so without
    this a control answers once and then waits for the cell to end.
    """
    shell = _ipython()
    kernel = getattr(shell, "kernel", None)
    handlers = getattr(kernel, "shell_handlers", None)
    if not isinstance(handlers, dict) or "comm_msg" not in handlers or getattr(kernel, "session", None) is None:
        yield
        return
    original = handlers["comm_msg"]

    def idle(message: Any) -> None:
        kernel.session.send(kernel.iopub_socket, "status", {"execution_state": "idle"}, parent=message)

    def handle(stream: Any, ident: Any, message: Any) -> Any:
        try:
            result = original(stream, ident, message)
        except BaseException:
            idle(message)
            raise
        if not inspect.isawaitable(result):
            idle(message)
            return result

        async def finish() -> Any:
            try:
                return await result
            finally:
                idle(message)

        return finish()

    handlers["comm_msg"] = handle
    try:
        yield
    finally:
        handlers["comm_msg"] = original


def _ipython() -> Any:
    try:
        from IPython import get_ipython
    except ImportError:
        return None
    return get_ipython()


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
