"""Watching a network train: snapshots under a budget, scrubbing back, curves, pause / stop, errors in views.

Models are tiny (16×16 inputs, a few filters) so each fit takes well under a second. Kernels are checked
against copies taken independently by a plain Keras callback at the same steps.
"""

from __future__ import annotations

import numpy as np
import pytest

from cnnviz_widgets.errors import CnnvizError
from cnnviz_widgets.training import (
    SnapshotStore,
    TrainingHistory,
    filter_change,
    rank_by_change,
    thin_steps,
    upstream_variables,
)
from cnnviz_widgets.training_state import TrainingState


def _model(k, seed: int = 0, metrics=("accuracy",)):
    """1-channel 16×16 classifier: conv(4) -> pool -> conv(6) -> flatten -> dense(3)."""
    k.utils.set_random_seed(seed)
    model = k.Sequential([
        k.Input((16, 16, 1), name="pixels"),
        k.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv_a"),
        k.layers.MaxPooling2D(name="pool_a"),
        k.layers.Conv2D(6, 3, padding="same", activation="relu", name="conv_b"),
        k.layers.Flatten(name="flat"),
        k.layers.Dense(3, activation="softmax", name="probs"),
    ], name="trainee")
    model.compile(k.optimizers.Adam(0.01), "sparse_categorical_crossentropy", metrics=list(metrics))
    return model


def _data(n: int = 64, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    x = rng.random((n, 16, 16, 1)).astype("float32") * 60
    x[y == 0, :8] += 150  # learnable: class 0 bright on top, class 1 on the left
    x[y == 1, :, :8] += 150
    return x, y


@pytest.fixture
def picture():
    rng = np.random.default_rng(5)
    return rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)


class _KernelRecorder:
    """An independent record: conv kernels copied by a plain Keras callback after chosen global steps."""

    def __init__(self, k, model, layers, every):
        recorder = self
        self.kernels: dict[int, dict[str, np.ndarray]] = {}
        self.seen = 0

        class Callback(k.callbacks.Callback):
            def on_train_begin(self, logs=None):
                if not recorder.kernels:
                    recorder._copy(0)

            def on_train_batch_end(self, batch, logs=None):
                recorder.seen += 1
                if recorder.seen % every == 0:
                    recorder._copy(recorder.seen)

            def on_train_end(self, logs=None):
                recorder._copy(recorder.seen)

        self.model, self.layers, self.callback = model, layers, Callback()

    def _copy(self, step):
        self.kernels[step] = {name: self.model.get_layer(name).kernel.numpy().copy() for name in self.layers}


# -- the compute core ------------------------------------------------------------------------------------


def test_thin_steps_keeps_first_last_and_the_grid():
    assert thin_steps([0, 10, 20, 30, 40, 45], 20) == [0, 20, 40, 45]
    assert thin_steps([3, 10, 20, 30], 40) == [3, 30]
    assert thin_steps([0, 7], 1000) == [0, 7]


def test_upstream_variables_are_what_the_visualised_layers_depend_on(k):
    model = _model(k)
    state = TrainingState(model)
    paths = [v.path for v in upstream_variables(state.graph, state.extractor.layers)]
    assert paths == [v.path for v in model.get_layer("conv_a").weights + model.get_layer("conv_b").weights]
    only_a = upstream_variables(state.graph, ["conv_a"])
    assert [v.path for v in only_a] == [v.path for v in model.get_layer("conv_a").weights]


def test_store_thins_evenly_under_the_budget_never_dropping_first_or_last(k):
    model = _model(k)
    variables = model.get_layer("conv_a").weights
    size = sum(v.numpy().nbytes for v in variables)
    store = SnapshotStore(variables, every=1, budget_bytes=5 * size)
    assert store.bytes_per_snapshot == size
    taken = []
    for step in range(0, 40):
        if step == 0 or store.due(step - 1, step):
            store.take(step)
            taken.append(step)
        assert store.nbytes <= store.budget_bytes
        steps = store.steps
        assert steps[0] == 0 and steps[-1] == taken[-1]
        gaps = np.diff(steps[:-1])  # evenly spaced; the newest may be closer (the end of a fit is off the grid)
        assert len(set(gaps.tolist())) <= 1 and (len(steps) < 3 or steps[-1] - steps[-2] <= gaps[0]), steps
    store.take(41)  # the end of training, off the grid: kept as the last
    assert store.steps[0] == 0 and store.steps[-1] == 41 and store.nbytes <= store.budget_bytes
    assert store.thinnings >= 3 and store.spacing == 2 ** store.thinnings
    # fewer than 5 snapshots in the budget means the kept ones are at least half the budget: nothing thinned early
    assert len(store.steps) * size > store.budget_bytes // 2


def test_store_values_are_copies_and_errors_name_the_kept_steps(k):
    model = _model(k)
    conv = model.get_layer("conv_a")
    store = SnapshotStore(conv.weights, every=5)
    store.take(0)
    before = conv.kernel.numpy().copy()
    conv.kernel.assign(before + 1.0)
    assert np.array_equal(store.values(0)[0], before)
    with store.scope(0):
        assert np.array_equal(np.asarray(conv.kernel), before)
    assert np.array_equal(conv.kernel.numpy(), before + 1.0)
    with pytest.raises(CnnvizError, match=r"no snapshot at step 3; kept: 0"):
        store.values(3)
    assert store.take(0) is False
    with pytest.raises(CnnvizError, match="older than the last"):
        store.take(5) and store.take(2)
    with pytest.raises(CnnvizError, match="every must be a whole number"):
        SnapshotStore(conv.weights, every=0)
    with pytest.raises(CnnvizError, match="cannot hold two snapshots"):
        SnapshotStore(conv.weights, budget_bytes=10)


def test_filter_change_is_relative_per_filter():
    rng = np.random.default_rng(0)
    before = rng.normal(size=(3, 3, 2, 4))
    after = before.copy()
    after[..., 1] *= 3.0  # moved by twice its size
    after[..., 3] += 0.5
    change = filter_change(before, after)
    expected = [np.linalg.norm(after[..., f] - before[..., f]) / np.linalg.norm(before[..., f]) for f in range(4)]
    np.testing.assert_allclose(change, expected)
    assert change[0] == 0 and change[1] == pytest.approx(2.0)
    assert rank_by_change(change)[:2] == [1, 3]
    with pytest.raises(CnnvizError, match="one shape"):
        filter_change(before, after[..., :2])


def test_history_keeps_training_per_batch_and_validation_per_epoch():
    history = TrainingHistory()
    history.record(1, {"loss": 1.0, "accuracy": np.float32(0.5)})
    history.record(2, {"loss": 0.8, "accuracy": 0.6, "learning_rate": object()})
    history.record(2, {"loss": 0.8, "val_loss": 0.9, "val_accuracy": 0.55}, validation_only=True)
    assert history.as_dict() == {"loss": [1.0, 0.8], "accuracy": [0.5, pytest.approx(0.6)], "val_loss": [0.9],
                                 "val_accuracy": [0.55]}
    steps, values = history.series("val_loss")
    assert steps.tolist() == [2] and values.tolist() == [0.9]


# -- the state: scrubbing to a step shows that step's kernels and maps ----------------------------------


def test_state_at_a_step_is_that_snapshot_and_live_is_the_model(k, picture):
    model = _model(k)
    state = TrainingState(model, picture, every=4)
    state.snapshots.take(0)
    recorded = {name: model.get_layer(name).kernel.numpy().copy() for name in ("conv_a", "conv_b")}
    maps_at_0 = state.activation("conv_b").copy()
    x, y = _data()
    model.fit(x, y, epochs=1, batch_size=16, verbose=0)
    state.snapshots.take(4)
    state.refresh()
    assert not np.array_equal(model.get_layer("conv_b").kernel.numpy(), recorded["conv_b"])

    version = state.version
    state.step = 0
    assert state.version > version
    for name, kernel in recorded.items():
        assert np.array_equal(state.weights(name)[0], kernel)
    np.testing.assert_array_equal(state.activation("conv_b"), maps_at_0)
    # Independent: a clone holding the step-0 weights gives the same maps.
    clone = k.models.clone_model(model)
    clone.set_weights(model.get_weights())
    clone.get_layer("conv_a").kernel.assign(recorded["conv_a"])
    clone.get_layer("conv_b").kernel.assign(recorded["conv_b"])
    conv_a, conv_b = model.get_layer("conv_a"), model.get_layer("conv_b")
    clone.get_layer("conv_a").bias.assign(state.snapshots.values(0)[1])
    clone.get_layer("conv_b").bias.assign(state.snapshots.values(0)[3])
    probe = k.Model(clone.inputs, clone.get_layer("conv_b").output)
    np.testing.assert_allclose(state.activation("conv_b"), np.asarray(probe([state.model_input.array[None]]))[0],
                               rtol=1e-5, atol=1e-5)

    state.step = None
    assert np.array_equal(state.weights("conv_a")[0], conv_a.kernel.numpy())
    assert np.array_equal(state.weights("conv_b")[1], conv_b.bias.numpy())
    assert not np.allclose(state.activation("conv_b"), maps_at_0)
    np.testing.assert_allclose(state.filter_change("conv_a"),
                               filter_change(recorded["conv_a"], conv_a.kernel.numpy()))
    with pytest.raises(CnnvizError, match=r"no snapshot at step 3; kept: 0, 4; the nearest is 4"):
        state.step = 3
    assert state.step is None
