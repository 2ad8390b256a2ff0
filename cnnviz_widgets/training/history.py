"""The curves of a training run, as Keras logged them and as each batch really was.

Keras logs each training loss and metric after a batch as its mean over the epoch so far. `TrainingHistory`
keeps those logs as they came and, given each mean metric's sample count (`metric_counts`), recovers each
batch's own value from them (`batch_values`); `smooth` is TensorBoard's smoothing of such a noisy line.
"""

from __future__ import annotations

import math
import threading
import weakref
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from cnnviz_widgets.checks import check_int
from cnnviz_widgets.errors import CnnvizError
from cnnviz_widgets.network.backend import keras


class TrainingHistory:
    """Loss and metrics as Keras logs them: training values after each batch, validation values after each epoch.

    `values[key]` and `steps[key]` are parallel lists (step = batches seen when the value was logged): Keras'
    logs as they were, so a training value is the mean over its epoch so far. `batch_values(key)` gives each
    batch's own value instead.
    """

    def __init__(self) -> None:
        self.values: dict[str, list[float]] = {}
        self.steps: dict[str, list[int]] = {}
        self.epoch_ends: list[int] = []
        # Parallel to `values`: the batch's index within its epoch (0: not known) and the metric's count after
        # it (None: no counts were recorded with it; nan: counts were, but this key is not a mean metric).
        self._batches: dict[str, list[int]] = {}
        self._counts: dict[str, list[float | None]] = {}
        self._lock = threading.Lock()

    def record(self, step: int, logs: Mapping[str, Any] | None, *, batch: int | None = None,
               counts: Mapping[str, float] | None = None, validation_only: bool = False) -> None:
        """Append the numeric entries of `logs` at `step` (only the val_ ones with `validation_only`).

        batch : the 1-based index of the batch within its epoch (Keras' `batch` + 1), which tells where epochs
            start; with `steps_per_execution` > 1, the index of the last batch of the call.
        counts : `metric_counts(model)` taken right after that batch; with it, `batch_values` is exact.
        """
        if batch is not None:
            check_int(batch, "batch", 1, message=f"batch must be the 1-based index of the batch within its epoch "
                                                  f"(a whole number >= 1) or None; got {batch!r}")
        if counts is not None and not isinstance(counts, Mapping):
            raise CnnvizError(f"counts must be a dict of metric name to sample count (see metric_counts) or None; "
                              f"got {type(counts).__name__}")
        with self._lock:
            for key, value in (logs or {}).items():
                if validation_only and not key.startswith("val_"):
                    continue
                try:
                    number = float(np.asarray(value))
                except (TypeError, ValueError):  # e.g. a learning-rate schedule object: not a curve
                    continue
                self.values.setdefault(key, []).append(number)
                self.steps.setdefault(key, []).append(int(step))
                self._batches.setdefault(key, []).append(0 if batch is None else int(batch))
                count = None if counts is None else float(counts.get(key, math.nan))
                self._counts.setdefault(key, []).append(count)

    def series(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        """(steps, values) of one logged key, as arrays."""
        with self._lock:
            return (np.asarray(self.steps.get(key, []), dtype=np.int64),
                    np.asarray(self.values.get(key, []), dtype=np.float64))

    def batch_values(self, key: str) -> tuple[np.ndarray, np.ndarray, bool]:
        """Each batch's own value of a training key: (steps (n,) int64, values (n,) float64, exact).

        Keras logs m_b, the mean over batches 1..b of the epoch. With the metric's counts C_b (what it divides
        its total by: samples or their weights, see `metric_counts`) batch b's own value is
        (m_b·C_b − m_{b−1}·C_{b−1}) / (C_b − C_{b−1}) (the first batch of an epoch: m_1), computed in float64.
        That is exact (up to the float32 rounding of Keras' own running sums, amplified by C_b / (C_b − C_{b−1})
        late in long epochs) for the loss and every mean metric (accuracy, mae, ...), a last smaller batch and
        sample weights included, because the counts are the metric's own; a batch whose samples all weigh 0
        gives nan. Where no counts were recorded but the batch index was, all batches are taken as equal:
        b·m_b − (b−1)·m_{b−1} (not exact: a last smaller batch or sample weights make it wrong). A key that is
        not a mean metric (Precision, AUC, ...: absent from the recorded counts) and an entry recorded without
        its batch index are returned as logged. With `steps_per_execution` > 1 a value is the mean over the
        steps of one callback call (weighted as the metric weighs them). Validation keys ("val_...") are one
        value per epoch already: they are returned as logged, exact. `exact` is True only when every value was
        recovered from counts.
        """
        with self._lock:
            steps = np.asarray(self.steps.get(key, []), dtype=np.int64)
            logged = np.asarray(self.values.get(key, []), dtype=np.float64)
            batches = np.asarray(self._batches.get(key, []), dtype=np.int64)
            recorded = list(self._counts.get(key, []))
        if key.startswith("val_") or not len(logged):
            return steps, logged, True
        has = np.array([c is not None for c in recorded])
        counts = np.array([math.nan if c is None else c for c in recorded], dtype=np.float64)
        values = logged.copy()
        known = np.flatnonzero(batches > 0)  # entries without a batch index are left as logged
        b, m, c, h = batches[known], logged[known], counts[known], has[known]
        # The previous entry of the same epoch; at an epoch's start, nothing before it (0 batches, mean 0).
        b0, m0, c0, h0 = (np.concatenate([a[:1], a[:-1]]) for a in (b, m, c, h))
        new = (b <= b0) | (h & h0 & (c < c0))  # fewer samples than the batch before: a new epoch (another fit)
        new[:1] = True
        b0, m0, c0 = np.where(new, 0, b0), np.where(new, 0.0, m0), np.where(new, 0.0, c0)
        h0 = new | h0
        counted = h & np.isfinite(c) & h0 & np.isfinite(c0)
        not_mean = h & ~np.isfinite(c)
        with np.errstate(divide="ignore", invalid="ignore"):
            from_counts = np.where(c > c0, (m * c - m0 * c0) / (c - c0), math.nan)
            equal_batches = (b * m - b0 * m0) / np.maximum(b - b0, 1)
        values[known] = np.where(counted, from_counts, np.where(not_mean, m, equal_batches))
        exact = len(known) == len(logged) and bool(counted.all())
        return steps, values, exact

    def names(self) -> list[str]:
        with self._lock:
            return list(self.values)

    def as_dict(self) -> dict[str, list[float]]:
        with self._lock:
            return {key: list(values) for key, values in self.values.items()}


def metric_counts(model: Any) -> dict[str, float]:
    """For each key Keras logs in training whose metric is a weighted mean, the metric's count so far.

    Returns {log key: count}. The count is what the metric divides its total by, read from its public `count`
    variable: the samples seen this epoch for the loss tracker "loss" and unweighted metrics, the sum of
    their sample weights for `weighted_metrics`, the batches for the per-output losses of a multi-output
    model (Keras averages those per batch in a compiled step). Whatever it counts, (m·C) is the metric's
    total, which is all `TrainingHistory.batch_values` needs. Means are `keras.metrics.Mean` and its
    subclasses that keep its result, total / count: the loss trackers and every `MeanMetricWrapper` (accuracy,
    mae, ...). RootMeanSquaredError (a Mean whose result is a square root), Precision, AUC, F1 and MeanIoU
    are not: their keys are absent. Empty for a model not compiled.

    Found through `model.metrics`: the loss tracker (`name` "loss"), then the container of the compiled
    metrics, whose public `metrics` are the inner ones, then any other metric (per-output losses, a layer's
    own) under its `name`. The container logs its inner metrics under the keys of its `result()` (prefixed
    by the output's name on a multi-output model, "weighted_" where a metric is also a weighted one), in the
    order of `metrics`: those keys are read once per container and kept. Cheap enough for every batch: about
    0.1 ms a call for notebook 05's model (loss and accuracy), ~3 % of its 3.7 ms training step (measured on
    a busy 2-core machine, TensorFlow CPU).
    """
    metrics = list(getattr(model, "metrics", None) or [])
    cached = _COUNTED.get(model)
    if cached is None or cached[0] != [id(m) for m in metrics]:  # found again after a new compile
        cached = ([id(m) for m in metrics], _counted_variables(metrics))
        _COUNTED[model] = cached
    return {name: _number(count) for name, count in cached[1]}


_COUNTED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _counted_variables(metrics: Sequence[Any]) -> list[tuple[str, Any]]:
    """(log key, `count` variable) of each weighted-mean metric among `metrics` (see `metric_counts`)."""
    mean = keras().metrics.Mean
    found: list[tuple[str, Any]] = []
    for metric in metrics:
        inner = getattr(metric, "metrics", None)
        if isinstance(inner, (list, tuple)) and not isinstance(metric, mean):
            pairs = zip(_log_names(metric, inner), inner, strict=True)
        else:
            pairs = ((metric.name, metric),)
        found += [(name, each.count) for name, each in pairs
                  if isinstance(each, mean) and type(each).result is mean.result]
    return found


def _number(variable: Any) -> float:
    try:
        return float(variable.value)  # ~2× faster than .numpy() on TensorFlow
    except TypeError:  # under a tf.distribute strategy: a per-replica variable, read as one number
        return float(np.asarray(variable.numpy()))


_LOG_NAMES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _log_names(container: Any, inner: Sequence[Any]) -> list[str]:
    """The keys under which `container.result()` logs `inner` (same order), kept per container once built."""
    names = _LOG_NAMES.get(container)
    if names is None or len(names) != len(inner):
        names = [each.name for each in inner]
        if inner:
            # result() lists the inner metrics in order, renamed per output and where names repeat; it computes
            # every value, so it is asked once.
            result = container.result()
            if isinstance(result, Mapping) and len(result) == len(inner):
                names = list(result)
            _LOG_NAMES[container] = names
    return names


def smooth(values: Any, weight: float) -> np.ndarray:
    """TensorBoard's smoothing of a scalar curve: a debiased exponential moving average, shape as `values`.

    As TensorBoard's line chart does it (its `classicSmoothing`): the average starts at 0 and is updated with
    each finite value v as a = weight·a + (1 − weight)·v; the value shown is a / (1 − weight^n), n the finite
    values so far, which removes the pull towards the starting 0. Non-finite values (nan, inf) are shown as
    they are and skipped by the average; a constant series is returned unchanged (TensorBoard does so too,
    so that rounding does not make a flat line wiggle).

    weight : in [0, 1); 0 returns the values unchanged, closer to 1 smooths more.
    """
    if (isinstance(weight, bool) or not isinstance(weight, (int, float, np.integer, np.floating))
            or not 0 <= weight < 1):
        raise CnnvizError(f"smoothing weight must be a number in [0, 1) (0: no smoothing); got {weight!r}")
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1:
        raise CnnvizError(f"smooth takes a 1-D series of values; got shape {x.shape}")
    out = x.copy()
    if weight == 0 or not len(x) or np.all(x == x[0]):
        return out
    weight = float(weight)
    last, n = 0.0, 0
    for i, value in enumerate(x.tolist()):  # a plain loop: ~0.3 µs a value, and no overflow of weight^-n
        if math.isfinite(value):
            last = last * weight + (1 - weight) * value
            n += 1
            out[i] = last / (1 - weight**n)
    return out
