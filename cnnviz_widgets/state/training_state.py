"""`TrainingState`: a `ModelState` on a model that is being trained, able to show any kept training step.

While `step` is None it shows the live model: `refresh()` (called by the monitor at each redraw) makes the
next `activation()` run the network again with the current weights. While `step` is a kept step,
`weights(layer)` and `activation(layer)` are that snapshot's: the same code runs under
`SnapshotStore.scope(step)`, so the maps are computed with the snapshot's weights, and cached per step.
`version` changes whenever what those methods return changes, so views can key their pictures on it.
Over all kept steps at once: the distribution of a layer's weights (`weight_distributions`, as TensorBoard's
histograms), their largest magnitude (`weight_range`, one colour scale for every step) and the share of each
filter's map that is exactly 0 (`dead_fractions`), none of which changes `step` or `version`.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import traitlets

from cnnviz_widgets.errors import CnnvizError
from cnnviz_widgets.network.extractor import input_key
from cnnviz_widgets.pictures.preprocessing import ModelInput
from cnnviz_widgets.state.model_state import ModelState
from cnnviz_widgets.training.snapshots import (
    DEFAULT_BUDGET_BYTES,
    SnapshotStore,
    describe_steps,
    filter_change,
    spread_steps,
    upstream_variables,
)


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
        # A kept snapshot never changes (steps only go forward): what is computed from one is kept per step.
        self._largest: dict[tuple[str, int], float] = {}
        self._dead: dict[tuple[str, str, int], np.ndarray] = {}
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
            self._statistics.clear()  # kept per layer and image, computed with the weights shown before
            self.set_trait("version", self.version + 1)

    def _scope(self) -> Any:
        return contextlib.nullcontext() if self.step is None else self.snapshots.scope(self.step)

    def _weights_key(self) -> str:
        return self._key(self._input_key)  # predictions and explanations are kept per step (or live refresh)

    @contextlib.contextmanager
    def _explaining(self, what: str) -> Iterator[None]:
        with self.lock, self._scope(), super()._explaining(what):  # computed with the weights of `step`
            yield

    def _key(self, key: str) -> str:
        return f"{key}@live{self._live}" if self.step is None else _at_step(key, self.step)

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
        with self.lock:
            return super().channel_statistics(layer)

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

    # -- over every kept step --------------------------------------------------------------------------

    def histogram(self, layer: str | None = None, step: int | None = None,
                  bins: int | Sequence[float] | str = 30) -> tuple[np.ndarray, np.ndarray]:
        """`numpy.histogram(kernel, bins)` of a conv layer's kernel at `step` (None: the step shown, `step`,
        which is the live model while that is None): (counts (n_bins,), edges (n_bins + 1,)).

        bins : as numpy takes it: a number of bins, increasing edges, or a rule name such as "auto". The kernel
        is `weights_at(step, layer)`'s: for depthwise, separable and grouped layers the equivalent full kernel,
        whose zeros for the channels a filter does not see are counted too.
        """
        with self.lock:
            kernel, _ = self.weights_at(self.step if step is None else step, layer)
        try:
            return np.histogram(kernel, bins=bins)
        except (TypeError, ValueError) as err:
            raise CnnvizError(f"bins must be what numpy.histogram takes: a number of bins >= 1, increasing edges "
                              f"or a rule name such as 'auto'; got {bins!r} ({err})") from err

    def weight_distributions(self, layer: str | None = None, bins: int | Sequence[float] = 30, *,
                             most: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The histogram of a conv layer's kernel at every kept step, on one set of edges (TensorBoard's
        histograms over training): (steps (n_steps,), edges (n_bins + 1,), counts (n_steps, n_bins)).
        With `most`, at most that many of the kept steps, evenly spread (`training.spread_steps`).

        bins : a number of equal bins spanning the smallest to the largest weight over all kept steps (so each
        row sums to the kernel's size), or increasing edges to use as they are (weights outside are not counted).
        """
        if isinstance(bins, bool) or not isinstance(bins, (int, np.integer, list, tuple, np.ndarray)):
            raise CnnvizError(f"bins must be a number of bins >= 1 or a sequence of increasing edges; got {bins!r}")
        with self.lock:
            steps = spread_steps(self._kept_steps(), most)
            kernels = [self.weights_at(step, layer)[0] for step in steps]
        if isinstance(bins, (int, np.integer)):
            if bins < 1:
                raise CnnvizError(f"bins must be a number of bins >= 1 or a sequence of increasing edges; got {bins}")
            lo = min(float(kernel.min()) for kernel in kernels)
            hi = max(float(kernel.max()) for kernel in kernels)
            # An int with a range takes numpy's equal-bins path (no search per value), the same edges each row;
            # in float64, so that the edges are those of float64 linspace(lo, hi), not rounded to float32.
            rows = [np.histogram(kernel.astype(np.float64), bins=int(bins), range=(lo, hi)) for kernel in kernels]
        else:
            try:
                rows = [np.histogram(kernel, bins=np.asarray(bins, dtype=np.float64)) for kernel in kernels]
            except ValueError as err:
                raise CnnvizError(f"bins must be a number of bins >= 1 or a sequence of increasing edges; got "
                                  f"{bins!r} ({err})") from err
        counts = np.stack([row[0] for row in rows]).astype(np.int64)
        return np.asarray(steps, dtype=np.int64), np.asarray(rows[0][1], dtype=np.float64), counts

    def weight_range(self, layer: str | None = None) -> float:
        """The largest |w| of a conv layer's kernel over every kept step and the live weights (1.0 if all are 0):
        one colour scale for the kernel pictures of any step, so that "step 0" and "now" compare."""
        with self.lock:
            live, _ = self.weights_at(None, layer)
            largest = float(np.abs(live).max(initial=0.0))
            name = self._name(layer)
            steps = self.snapshots.steps
            for step in steps:
                if (name, step) not in self._largest:
                    self._largest[(name, step)] = float(np.abs(self.weights_at(step, name)[0]).max(initial=0.0))
                largest = max(largest, self._largest[(name, step)])
            kept = set(steps)
            self._largest = {key: value for key, value in self._largest.items() if key[1] in kept}
        return largest if largest > 0 else 1.0

    def dead_fractions(self, layer: str | None = None, *, most: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """For each filter of `layer` and each kept step, the share of its map on the current image that is
        exactly 0 (a ReLU unit that gives nothing here): (steps (n_steps,), fractions (n_filters, n_steps)).
        With `most`, at most that many of the kept steps, evenly spread (`training.spread_steps`): one forward
        pass per step shown.

        Each step's maps are computed with that snapshot's weights (as `activation()` does while `step` is it,
        sharing its cache), once per layer, image and step; `step` and `version` do not change.
        """
        with self.lock:
            name = self._name(layer)
            if name != self.input_layer and name not in self.extractor.layers:
                self._activation_of(self.model_input, self._input_key, name)  # raises activation()'s LayerError
            steps = spread_steps(self._kept_steps(), most)
            image = self._input_key
            missing = [step for step in steps if (name, image, step) not in self._dead]
            if missing:
                self.set_trait("busy", True)  # once for all the passes, not once per step
                try:
                    for step in missing:
                        with self.snapshots.scope(step):
                            maps = (self.model_input.array if name == self.input_layer else
                                    self.extractor.get(self.model_input.array, name, key=_at_step(image, step)))
                        self._dead[(name, image, step)] = (maps == 0).mean(axis=(0, 1))
                finally:
                    self.set_trait("busy", False)
            fractions = np.stack([self._dead[(name, image, step)] for step in steps], axis=1)
            kept = set(self.snapshots.steps)  # dropped steps and other images go: the cache stays small
            self._dead = {key: value for key, value in self._dead.items() if key[1] == image and key[2] in kept}
        return np.asarray(steps, dtype=np.int64), fractions

    def _kept_steps(self) -> list[int]:
        steps = self.snapshots.steps
        if not steps:
            raise CnnvizError("no snapshot has been taken yet: training has not started")
        return steps


def _at_step(key: str, step: int) -> str:
    """The activation-cache key of an input's maps computed with the snapshot of `step`."""
    return f"{key}@step{step}"
