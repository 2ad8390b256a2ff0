"""Watching a network train: weight snapshots under a memory budget, and how much each filter changed.

A `SnapshotStore` copies the variables that feed the visualised layers (conv kernels and biases, and any
normalisation in between) at step 0, every `every` training steps and at the end of training. When the
copies outgrow the budget, the spacing doubles and the snapshots off the new grid are dropped, so what is
kept stays evenly spaced; the first and the last are never dropped (the last may be off the grid: the end
of a fit). `scope(step)` makes Keras read a snapshot's values instead of the live variables, in the calling
thread only (a `keras.StatelessScope`), so the weights and activations of a past step are computed by the
same code as the live ones while training goes on in another thread.
"""

from __future__ import annotations

import contextlib
import math
import threading
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from cnnviz_widgets.checks import check_int
from cnnviz_widgets.errors import CnnvizError
from cnnviz_widgets.network.backend import keras
from cnnviz_widgets.network.graph import ModelGraph

DEFAULT_BUDGET_BYTES = 256 * 2**20
"""Memory for kept snapshots: 4 of VGG16's conv part (58 MB each), thousands of a small CNN's."""


def upstream_variables(graph: ModelGraph, layers: Iterable[str]) -> list[Any]:
    """The Keras variables of `layers` and of every layer feeding them (each once, in graph order).

    These are all the values the layers' outputs depend on: a snapshot of them reproduces the activations.
    """
    wanted: set[str] = set()
    pending = list(layers)
    while pending:
        name = pending.pop()
        if name not in wanted:
            wanted.add(name)
            pending.extend(graph.node(name).inputs)
    seen: set[int] = set()
    variables = []
    for name, node in graph.nodes.items():
        if name not in wanted or node.layer is None:
            continue
        for variable in node.layer.weights:
            if id(variable) not in seen:
                seen.add(id(variable))
                variables.append(variable)
    return variables


def thin_steps(steps: Sequence[int], spacing: int) -> list[int]:
    """`steps` without those between the first and the last that are not multiples of `spacing`."""
    if len(steps) <= 2:
        return list(steps)
    return [steps[0], *(s for s in steps[1:-1] if s % spacing == 0), steps[-1]]


def spread_steps(steps: Sequence[int], most: int | None) -> list[int]:
    """At most `most` of `steps`, evenly spaced: the first, the last and the multiples of the smallest spacing
    (doubling from 1) that leaves few enough. The same steps stay picked as training adds more, so a picture
    over the steps computes each picked step once."""
    if most is None or len(steps) <= most:
        return list(steps)
    if most < 2:
        raise CnnvizError(f"most must be at least 2 (the first and the last step); got {most!r}")
    spacing = 1
    while len(picked := thin_steps(steps, spacing)) > most:
        spacing *= 2
    return picked


class SnapshotStore:
    """Copies of `variables` at chosen training steps, within `budget_bytes`.

    Parameters
    ----------
    variables
        Keras variables to copy (see `upstream_variables`).
    every
        Take a snapshot every `every` steps (batches seen); the spacing doubles whenever the budget is full.
    budget_bytes
        Memory for all kept copies; it must hold at least two (the first and the last).

    Thread-safe: snapshots are taken in the training thread and read in the notebook's.
    """

    def __init__(self, variables: Sequence[Any], every: int = 10, budget_bytes: int = DEFAULT_BUDGET_BYTES):
        check_int(every, "every", 1, message=f"every must be a whole number of training steps >= 1; got {every!r}")
        self.variables = list(variables)
        if not self.variables:
            raise CnnvizError("there are no weights to snapshot: the visualised layers have no variables")
        self.every = int(every)
        self.spacing = int(every)
        self.bytes_per_snapshot = int(sum(math.prod(v.shape) * np.dtype(v.dtype).itemsize for v in self.variables))
        if budget_bytes < 2 * self.bytes_per_snapshot:
            raise CnnvizError(
                f"a memory budget of {budget_bytes / 2**20:.1f} MB cannot hold two snapshots of "
                f"{self.bytes_per_snapshot / 2**20:.1f} MB each (the first and the last are always kept); "
                f"give at least {2 * self.bytes_per_snapshot / 2**20:.1f} MB")
        self.budget_bytes = int(budget_bytes)
        self._snapshots: dict[int, list[np.ndarray]] = {}
        self._lock = threading.Lock()
        self.thinnings = 0

    # -- taking ---------------------------------------------------------------------------------------

    def due(self, before: int, after: int) -> bool:
        """True if a step in (before, after] is on the snapshot grid (a fit may report several steps at once)."""
        return after // self.spacing > before // self.spacing

    def take(self, step: int) -> bool:
        """Copy the variables' current values as the snapshot of `step`; False if that step is already kept.

        Steps must not go back: a snapshot older than the last one is refused with CnnvizError.
        """
        step = int(step)
        with self._lock:
            last = max(self._snapshots, default=None)
            if last is not None and step <= last:
                if step == last:
                    return False
                raise CnnvizError(f"snapshot at step {step} is older than the last one kept ({last})")
        values = [np.array(variable.numpy()) for variable in self.variables]  # a copy: training goes on
        with self._lock:
            self._snapshots[step] = values
            self._thin()
        return True

    def _thin(self) -> None:
        # A step kept only for being the last (the end of a fit, off the grid) goes once a newer one exists.
        self._keep(thin_steps(sorted(self._snapshots), self.spacing))
        while len(self._snapshots) > 2 and len(self._snapshots) * self.bytes_per_snapshot > self.budget_bytes:
            self.spacing *= 2
            self.thinnings += 1
            self._keep(thin_steps(sorted(self._snapshots), self.spacing))

    def _keep(self, steps: Sequence[int]) -> None:
        kept = set(steps)
        for step in [s for s in self._snapshots if s not in kept]:
            del self._snapshots[step]

    # -- reading --------------------------------------------------------------------------------------

    @property
    def steps(self) -> list[int]:
        """Steps with a snapshot, oldest first."""
        with self._lock:
            return sorted(self._snapshots)

    @property
    def nbytes(self) -> int:
        with self._lock:
            return len(self._snapshots) * self.bytes_per_snapshot

    def values(self, step: int) -> list[np.ndarray]:
        """The copied values at `step`, aligned with `variables`; CnnvizError naming the kept steps if none."""
        with self._lock:
            values = self._snapshots.get(int(step)) if not isinstance(step, bool) else None
            if values is None:
                raise CnnvizError(f"no snapshot at step {step!r}; kept: {describe_steps(sorted(self._snapshots))}")
            return values

    def nearest(self, step: int) -> int:
        """The kept step closest to `step` (the earlier one on a tie)."""
        steps = self.steps
        if not steps:
            raise CnnvizError("no snapshot has been taken yet: training has not started")
        return min(steps, key=lambda s: (abs(s - step), s))

    @contextlib.contextmanager
    def scope(self, step: int) -> Iterator[None]:
        """Within this block, in this thread, Keras reads the snapshot of `step` instead of the live variables."""
        mapping = list(zip(self.variables, self.values(step), strict=True))
        with keras().StatelessScope(state_mapping=mapping):
            yield


def describe_steps(steps: Sequence[int]) -> str:
    """Kept steps in words, shortened in the middle when there are many."""
    if not steps:
        return "none yet"
    if len(steps) <= 8:
        return ", ".join(map(str, steps))
    return f"{', '.join(map(str, steps[:4]))}, …, {', '.join(map(str, steps[-3:]))} ({len(steps)} in all)"


def filter_change(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """How much each filter changed: ||after_f − before_f|| / ||before_f|| per output channel f, shape (c_out,).

    `before` and `after` are (kh, kw, c_in, c_out) kernels. Relative, so filters and layers of different
    scales compare; a filter that started at exactly zero is measured by ||after_f|| instead.
    """
    before = np.asarray(before, dtype=np.float64)
    after = np.asarray(after, dtype=np.float64)
    if before.shape != after.shape or before.ndim != 4:
        raise CnnvizError(f"filter_change compares two (kh, kw, c_in, c_out) kernels of one shape; got "
                          f"{before.shape} and {after.shape}")
    moved = np.sqrt(((after - before) ** 2).sum(axis=(0, 1, 2)))
    scale = np.sqrt((before**2).sum(axis=(0, 1, 2)))
    return moved / np.where(scale > 0, scale, 1.0)


def rank_by_change(change: np.ndarray) -> list[int]:
    """Filter indices, most changed first (ties in index order)."""
    return [int(i) for i in np.argsort(-np.asarray(change), kind="stable")]
