"""`StepControls`: the step slider and the replay of a `TrainingMonitor`, over training steps (batches seen).

They move by the spacing of the kept steps; past the newest kept step is now (live). Front-end facts shape
this code: a slider's range is set once, when it is made (the keyboard's End key reaches only the end a
noUiSlider was drawn with), so a longer range gets a new slider; values the front end snaps or clamps come back
as picks and are told apart from the user's; and a per-thread flag marks the moves made here, since the training
thread moves the controls too while the notebook's thread handles the user's.
"""

from __future__ import annotations

import ipywidgets

from cnnviz_widgets.widgets.parts import close_all, with_classes


class StepControls:
    """The step slider and replay of a `TrainingMonitor` (mixed into it: it reads the monitor's steps and state)."""

    def _new_step_slider(self, end: int) -> ipywidgets.IntSlider:
        """A step slider from 0 to `end` (training steps). Its range is set once, when it is made: the front
        end's keyboard End reaches only the end a slider was drawn with (noUiSlider's updateOptions leaves
        the range its End key reads), so a longer range gets a new slider (see `_sync_step_controls`)."""
        slider = with_classes(ipywidgets.IntSlider(value=0, min=0, max=end, description="step", continuous_update=True,
                                           readout=False, disabled=True, layout=ipywidgets.Layout(width="360px")),
                      "cnnviz-step-slider")
        self.watch(slider, self._on_step_slider)
        return slider

    def _live_value(self) -> int:
        """The step slider's value for now: the first step of its grid past the newest kept step (a value off
        its grid the front end would move onto it, and send back as a pick)."""
        spacing = self.state.snapshots.spacing
        steps = self.steps
        return (steps[-1] // spacing + 1) * spacing if steps else 1

    def _step_slider_end(self) -> int:
        """Where the step slider ends: the end of the fit under way when Keras says how long it is, else the
        newest step (doubled ahead while training, so the slider is remade only a few times); on its grid."""
        spacing = self.state.snapshots.spacing
        newest = max(self.seen, self._live_value())
        if not self.running:
            end = newest
        elif (self._planned_end or 0) >= newest:
            end = self._planned_end
        else:
            end = self.step_slider.max
            while end < newest:
                end *= 2
        return -(-end // spacing) * spacing

    def _sync_step_controls(self) -> None:
        """The step slider and replay run over training steps (batches seen); past the newest kept step is now
        (live). They move by the spacing of the kept steps, and a value between two kept steps shows the
        nearer one."""
        steps = self.steps
        if self.step is not None and self.step not in steps:  # thinned away while shown: the nearest
            self.step = self.state.snapshots.nearest(self.step)
        value = self._live_value() if self.step is None else self.step
        end = self._step_slider_end()
        self._moving.controls = True
        try:
            if end != self.step_slider.max:
                old, self.step_slider = self.step_slider, self._new_step_slider(end)
                self._time_controls.children = [self.step_slider if c is old else c
                                                 for c in self._time_controls.children]
                self.unwatch(old, self._on_step_slider)
                close_all(old)
            for control in (self.step_slider, self.replay):
                control.step = self.state.snapshots.spacing
                control.disabled = not steps
            self.step_slider.value = value
            # the replay's range grows before its value moves, and shrinks after: sent together, the front
            # end applies the value first, clamped to the old range, and sends the clamped one back
            top = self._live_value()
            for name in ("max", "value") if top >= self.replay.max else ("value", "max"):
                setattr(self.replay, name, top if name == "max" else value)
        finally:
            self._moving.controls = False
