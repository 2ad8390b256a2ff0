"""`TrainingState`: a `ModelState` on a model that is being trained, able to show any kept training step.

While `step` is None it shows the live model: `refresh()` (called by the monitor at each redraw) makes the
next `activation()` run the network again with the current weights. While `step` is a kept step,
`weights(layer)` and `activation(layer)` are that snapshot's: the same code runs under
`SnapshotStore.scope(step)`, so the maps are computed with the snapshot's weights, and cached per step.
`version` changes whenever what those methods return changes, so views can key their pictures on it.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any

import numpy as np
import traitlets

from .activations import input_key
from .analysis import channel_statistics
from .errors import CnnvizError
from .inputs import ModelInput
from .state import ModelState
from .training import DEFAULT_BUDGET_BYTES, SnapshotStore, describe_steps, filter_change, upstream_variables


class TrainingState(ModelState):
    """A `ModelState` whose weights and activations can be those of a kept training step.

    Parameters
    ----------
    model, image, **kwargs
        As for `ModelState`.
    every
        A snapshot every `every` training steps (batches seen).
    memory_budget_mb
        Memory for the kept snapshots (see `training.SnapshotStore`).
    snapshots
        Share another state's store (and its steps) instead of making one; `every` and the budget are then its.
    """

    step = traitlets.Int(None, allow_none=True, help="Training step (batches seen) whose snapshot is shown; None: "
                                                     "the live model. Must be one of `snapshots.steps`.")
    version = traitlets.Int(0, read_only=True, help="Changes whenever weights() or activation() would return "
                                                    "something new (another step, or a live refresh).")

    def __init__(self, model: Any, image: Any = None, *, every: int = 10,
                 memory_budget_mb: float = DEFAULT_BUDGET_BYTES / 2**20, snapshots: SnapshotStore | None = None,
                 **kwargs: Any):
        step = kwargs.pop("step", None)
        super().__init__(model, image, **kwargs)
        # Snapshots are taken in the training thread and drawn in the notebook's; one lock keeps the caches whole.
        self.lock = threading.RLock()
        self.snapshots = snapshots or SnapshotStore(upstream_variables(self.graph, self.extractor.layers), every,
                                                    int(memory_budget_mb * 2**20))
        self._live = 0
        self._stats: dict[tuple, dict[str, np.ndarray]] = {}
        self.step = step

    # -- which weights ---------------------------------------------------------------------------------

    @traitlets.validate("step")
    def _validate_step(self, proposal: traitlets.Bunch) -> int | None:
        value = proposal["value"]
        if value is None:
            return None
        steps = self.snapshots.steps
        if value not in steps:
            near = f"; the nearest is {self.snapshots.nearest(value)}" if steps else ""
            raise CnnvizError(f"no snapshot at step {value!r}; kept: {describe_steps(steps)}{near}")
        return int(value)

    @traitlets.observe("step")
    def _on_step_change(self, _change: traitlets.Bunch) -> None:
        self._bump()

    def refresh(self) -> None:
        """The live weights moved on: the next live `activation()` runs the network again."""
        with self.lock:
            self._live += 1
            self.extractor.clear()  # the cached maps were computed with older weights
            if self.step is None:
                self._bump()

    def _bump(self) -> None:
        with self.lock:
            self._stats.clear()
            self.set_trait("version", self.version + 1)

    def _scope(self) -> Any:
        return contextlib.nullcontext() if self.step is None else self.snapshots.scope(self.step)

    def _key(self, key: str) -> str:
        return f"{key}@live{self._live}" if self.step is None else f"{key}@step{self.step}"

    # -- what the views read ---------------------------------------------------------------------------

    def weights(self, layer: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(kernel (kh, kw, c_in, c_out), bias (c_out,)) of a conv layer at `step` (None: now)."""
        with self.lock, self._scope():
            return super().weights(layer)

    def weights_at(self, step: int | None, layer: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """`weights(layer)` at another kept step (None: now), without changing `step`."""
        with self.lock:
            if step is None:
                return ModelState.weights(self, layer)
            with self.snapshots.scope(step):
                return ModelState.weights(self, layer)

    def activation(self, layer: str | None = None) -> np.ndarray:
        """(H, W, C) output of `layer` for the current image, computed with the weights of `step` (None: now)."""
        with self.lock, self._scope():
            return self._activation_of(self.model_input, self._key(self._input_key), layer)

    def activation_for(self, model_input: ModelInput, layer: str | None = None) -> np.ndarray:
        with self.lock, self._scope():
            return self._activation_of(model_input, self._key(input_key(model_input.array)), layer)

    def channel_statistics(self, layer: str | None = None) -> dict[str, np.ndarray]:
        name = self._name(layer)
        with self.lock:
            key = (name, self._input_key)
            if key not in self._stats:
                self._stats[key] = channel_statistics(self.activation(name))
            return self._stats[key]

    def filter_change(self, layer: str | None = None, since: int | None = None,
                      until: int | None = None) -> np.ndarray:
        """How much each filter of a conv layer changed from step `since` (default: the first kept) to `until`
        (default: the step shown, `step`, or now), relative to its size then; shape (c_out,)."""
        with self.lock:
            steps = self.snapshots.steps
            if not steps:
                raise CnnvizError("no snapshot has been taken yet: training has not started")
            start = steps[0] if since is None else since
            end = self.step if until is None else until
            before, _ = self.weights_at(start, layer)
            after, _ = self.weights_at(end, layer)
            return filter_change(before, after)
