"""Each batch's own loss and metrics from Keras' running means, smoothing, and the weight and dead-unit
pictures over the kept training steps.

Each result is checked against an independent computation: the loss and accuracy computed directly on each
batch, a hand-written smoothing loop, numpy histograms of kernels copied by a plain Keras callback, and the
maps of a clone of the model holding those copies.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from cnnviz_widgets.errors import CnnvizError
from cnnviz_widgets.state.training_state import TrainingState
from cnnviz_widgets.training.history import TrainingHistory, metric_counts, smooth
from tests.tiny_training import tiny_cnn

N, BATCH = 58, 16  # 4 batches an epoch, the last of 10 samples


def _classifier(k, metrics=("accuracy",), learning_rate=0.0, **compile_args):
    """1-channel 8×8 classifier: conv(3) -> flatten -> dense(3, softmax). Learning rate 0: weights never move."""
    k.utils.set_random_seed(3)
    model = k.Sequential([
        k.Input((8, 8, 1)),
        k.layers.Conv2D(3, 3, activation="relu", name="conv"),
        k.layers.Flatten(),
        k.layers.Dense(3, activation="softmax", name="probs"),
    ])
    model.compile(k.optimizers.SGD(learning_rate), "sparse_categorical_crossentropy", metrics=list(metrics),
                  **compile_args)
    return model


def _samples(n=N, seed=1):
    rng = np.random.default_rng(seed)
    return rng.random((n, 8, 8, 1)).astype("float32"), rng.integers(0, 3, n)


def _fit_recording(k, model, x, y, **kwargs):
    """Fit with a plain callback that records Keras' logs and the metric counts after each batch."""
    history, logged = TrainingHistory(), []

    class Recorder(k.callbacks.Callback):
        seen = 0

        def on_train_batch_end(self, batch, logs=None):
            Recorder.seen += 1
            counts = metric_counts(self.model)
            logged.append(counts)
            history.record(Recorder.seen, logs, batch=batch + 1, counts=counts)

    model.fit(x, y, batch_size=BATCH, epochs=2, shuffle=False, verbose=0, callbacks=[Recorder()], **kwargs)
    return history, logged


def _batches(n=N):
    starts = list(range(0, n, BATCH))
    return [slice(s, min(s + BATCH, n)) for s in starts] * 2  # two epochs, the same batches (shuffle=False)


# -- each batch's own value ------------------------------------------------------------------------------


def test_batch_values_are_each_batchs_own_loss_and_accuracy(k):
    model = _classifier(k, metrics=("accuracy", k.metrics.MeanIoU(3, sparse_y_pred=False, name="iou")))
    x, y = _samples()
    history, logged = _fit_recording(k, model, x, y)
    # The counts are the samples seen so far in the epoch; MeanIoU is not a mean: absent.
    assert logged[:4] == [{"loss": c, "accuracy": c} for c in (16.0, 32.0, 48.0, 58.0)] and logged[4] == logged[0]
    loss_fn = k.losses.SparseCategoricalCrossentropy()
    own_loss, own_accuracy = [], []
    for part in _batches():
        probs = np.asarray(model(x[part]))
        own_loss.append(float(loss_fn(y[part], probs)))
        own_accuracy.append(float(np.mean(probs.argmax(axis=1) == y[part])))
    steps, loss, exact = history.batch_values("loss")
    assert steps.tolist() == list(range(1, 9)) and exact
    np.testing.assert_allclose(loss, own_loss, rtol=1e-5)
    steps, accuracy, exact = history.batch_values("accuracy")
    assert exact
    np.testing.assert_allclose(accuracy, own_accuracy, rtol=1e-5, atol=1e-6)
    # Not Keras' running mean: it differs wherever a batch differs from the ones before it in its epoch.
    running = np.asarray(history.values["loss"])
    assert np.abs(loss - running)[[1, 2, 3, 5, 6, 7]].min() > 1e-4
    np.testing.assert_allclose(loss[[0, 4]], running[[0, 4]])  # an epoch's first batch is its own mean
    # The series as logged is unchanged; a metric that is not a mean is given as logged, not exact.
    assert history.series("loss")[1].tolist() == running.tolist()
    iou_steps, iou, exact = history.batch_values("iou")
    assert not exact and iou.tolist() == history.values["iou"] and iou_steps.tolist() == list(range(1, 9))


def test_batch_values_are_exact_with_sample_weights(k):
    # Keras weighs only `weighted_metrics` (and the loss); the same metric in both is logged twice.
    model = _classifier(k, weighted_metrics=["accuracy"])
    x, y = _samples()
    weights = np.random.default_rng(2).uniform(0.2, 2.0, N).astype("float32")
    history, logged = _fit_recording(k, model, x, y, sample_weight=weights)
    # The loss tracker and the unweighted metric count samples; the weighted metric, their weights.
    assert logged[3]["loss"] == logged[3]["accuracy"] == 58.0
    np.testing.assert_allclose(logged[3]["weighted_accuracy"], weights.sum(), rtol=1e-6)
    loss_fn = k.losses.SparseCategoricalCrossentropy()
    own_loss, own_accuracy, own_weighted = [], [], []
    for part in _batches():
        probs, w = np.asarray(model(x[part])), weights[part]
        right = probs.argmax(axis=1) == y[part]
        own_loss.append(float(loss_fn(y[part], probs, sample_weight=w)))  # Σ w·l / batch size
        own_accuracy.append(float(right.mean()))
        own_weighted.append(float((w * right).sum() / w.sum()))
    for key, own in (("loss", own_loss), ("accuracy", own_accuracy), ("weighted_accuracy", own_weighted)):
        _, values, exact = history.batch_values(key)
        assert exact, key
        np.testing.assert_allclose(values, own, rtol=1e-5, atol=1e-6, err_msg=key)


def test_metric_counts_keep_only_means_under_their_logged_names(k):
    inputs = k.Input((4,))
    model = k.Model(inputs, [k.layers.Dense(3, activation="softmax", name="kind")(inputs),
                             k.layers.Dense(1, name="size")(inputs)])
    model.compile(k.optimizers.SGD(0.0), ["sparse_categorical_crossentropy", "mse"],
                  metrics=[["accuracy"], ["mae", k.metrics.RootMeanSquaredError(name="rmse")]])
    assert metric_counts(model) == {"loss": 0.0}  # before any batch: the compiled metrics are not built yet
    rng = np.random.default_rng(0)
    x, kinds, sizes = rng.random((10, 4)), rng.integers(0, 3, 10), rng.random((10, 1))
    history, seen = TrainingHistory(), []

    class Grab(k.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            seen.append((set(logs), metric_counts(self.model)))
            history.record(batch + 1, logs, batch=batch + 1, counts=seen[-1][1])

    model.fit(x, [kinds, sizes], batch_size=8, shuffle=False, verbose=0, callbacks=[Grab()])
    keys, counts = seen[-1]
    # rmse is a Mean whose result is a square root: m·C is not its total, so it is left out.
    assert set(counts) == {"loss", "kind_loss", "size_loss", "kind_accuracy", "size_mae"} and "size_rmse" in keys
    assert counts["loss"] == counts["kind_accuracy"] == counts["size_mae"] == 10.0
    # Each output's loss is a mean over whatever its tracker counts (batches, in a compiled step): still exact.
    for key, loss_fn, y in (("kind_loss", k.losses.SparseCategoricalCrossentropy(), kinds),
                            ("size_loss", k.losses.MeanSquaredError(), sizes)):
        own = [float(loss_fn(y[part], np.asarray(model(x[part])[key == "size_loss"])))
               for part in (slice(0, 8), slice(8, 10))]
        _, values, exact = history.batch_values(key)
        assert exact
        np.testing.assert_allclose(values, own, rtol=1e-5, err_msg=key)
    assert metric_counts(k.Sequential([k.Input((2,)), k.layers.Dense(1)])) == {}  # not compiled


def test_batch_values_fall_back_to_equal_batches_without_counts():
    own = [[2.0, 4.0, 9.0], [1.0, 5.0]]  # two epochs of batch values
    history = TrainingHistory()
    step = 0
    for epoch in own:
        for b in range(1, len(epoch) + 1):
            step += 1
            history.record(step, {"loss": np.mean(epoch[:b]), "auc": 0.5 + step / 10}, batch=b)
        history.record(step, {"val_loss": 7.0}, validation_only=True)
    steps, values, exact = history.batch_values("loss")
    assert steps.tolist() == [1, 2, 3, 4, 5] and not exact
    np.testing.assert_allclose(values, [2.0, 4.0, 9.0, 1.0, 5.0])
    assert not np.allclose(values, history.values["loss"])
    val_steps, val, exact = history.batch_values("val_loss")  # one value an epoch: as logged
    assert val_steps.tolist() == [3, 5] and val.tolist() == [7.0, 7.0] and exact
    # Two calls of 2 batches each (steps_per_execution=2): each value is the mean of its call's batches.
    spe = TrainingHistory()
    spe.record(2, {"loss": 3.0}, batch=2)
    spe.record(4, {"loss": 5.0}, batch=4)
    np.testing.assert_allclose(spe.batch_values("loss")[1], [3.0, 7.0])


def test_batch_values_from_counts_on_synthetic_numbers():
    history = TrainingHistory()
    sizes, own = [4, 4, 2], [1.0, 3.0, 6.0]  # a last smaller batch
    for b in range(1, 4):
        count = float(sum(sizes[:b]))
        mean = float(np.dot(sizes[:b], own[:b]) / count)
        history.record(b, {"loss": mean, "precision": 0.1 * b}, batch=b, counts={"loss": count})
    _, values, exact = history.batch_values("loss")
    assert exact
    np.testing.assert_allclose(values, own)
    equal = 3 * history.values["loss"][2] - 2 * history.values["loss"][1]
    assert equal != pytest.approx(6.0)  # what assuming equal batches would have given
    assert history.batch_values("precision")[1].tolist() == history.values["precision"]
    assert history.batch_values("precision")[2] is False
    assert history.batch_values("nothing")[1].size == 0
    with pytest.raises(CnnvizError, match=r"batch must be the 1-based index.*got 0"):
        history.record(4, {"loss": 1.0}, batch=0)
    with pytest.raises(CnnvizError, match="counts must be a dict"):
        history.record(4, {"loss": 1.0}, batch=1, counts=[3.0])


# -- smoothing --------------------------------------------------------------------------------------------


def _tensorboard(values, weight):
    """The closed form: Σ (1−w)·w^(n−i)·v_i / (1 − w^n) over the n finite values so far; others as they are."""
    finite = [v for v in values if math.isfinite(v)]
    out, n = [], 0
    for v in values:
        if not math.isfinite(v):
            out.append(v)
            continue
        n += 1
        total = sum((1 - weight) * weight ** (n - i) * finite[i - 1] for i in range(1, n + 1))
        out.append(total / (1 - weight**n))
    return out


def test_smooth_is_tensorboards_debiased_moving_average():
    values = [3.0, 1.0, 4.0, math.nan, 1.0, 5.0, 9.0, 2.0, math.inf, 6.0]
    for weight in (0.3, 0.6, 0.95):
        np.testing.assert_allclose(smooth(values, weight), _tensorboard(values, weight), rtol=1e-12)
    assert smooth(values, 0.6)[0] == pytest.approx(3.0)  # debiased: the first value is itself, not pulled towards 0
    np.testing.assert_array_equal(smooth(values, 0.0), values)
    np.testing.assert_array_equal(smooth([2.5] * 4, 0.9), [2.5] * 4)
    assert smooth([], 0.5).size == 0
    for bad in (1.0, -0.1, math.nan, True, "0.5"):
        with pytest.raises(CnnvizError, match=r"smoothing weight must be a number in \[0, 1\)"):
            smooth(values, bad)


# -- the weights and maps over the kept steps ------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(k):
    """A 16×16 CNN trained 2 epochs of 4 batches with snapshots every 3 steps, and an independent record of
    all its weights after every step."""
    model = tiny_cnn(k, metrics=(), learning_rate=0.05)
    picture = np.random.default_rng(5).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    state = TrainingState(model, picture, every=3)
    copies: dict[int, list[np.ndarray]] = {0: [w.copy() for w in model.get_weights()]}

    class Snapshots(k.callbacks.Callback):  # what the monitor does, without the widget
        seen = 0

        def on_train_batch_end(self, batch, logs=None):
            before, Snapshots.seen = Snapshots.seen, Snapshots.seen + 1
            if state.snapshots.due(before, Snapshots.seen):
                state.snapshots.take(Snapshots.seen)

        def on_train_end(self, logs=None):
            state.snapshots.take(Snapshots.seen)

    class Copies(k.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            copies[len(copies)] = [w.copy() for w in self.model.get_weights()]

    state.snapshots.take(0)
    rng = np.random.default_rng(0)
    x, y = rng.random((64, 16, 16, 1)).astype("float32") * 255, rng.integers(0, 3, 64)
    model.fit(x, y, batch_size=16, epochs=2, verbose=0, callbacks=[Copies(), Snapshots()])
    assert state.snapshots.steps == [0, 3, 6, 8]
    return model, state, copies


def _kernel(model, copies, step, layer):
    index = [w.path for w in model.weights].index(model.get_layer(layer).kernel.path)
    return copies[step][index]


def test_histogram_is_numpys_of_the_kernel_at_that_step(trained):
    model, state, copies = trained
    for step in state.snapshots.steps:
        kernel = _kernel(model, copies, step, "conv_b")
        for bins in (30, 7, [-1.0, -0.1, 0.0, 0.1, 1.0]):
            counts, edges = state.histogram("conv_b", step=step, bins=bins)
            expected_counts, expected_edges = np.histogram(kernel, bins=bins)
            np.testing.assert_array_equal(counts, expected_counts)
            np.testing.assert_array_equal(edges, expected_edges)
    state.step = 3  # step None: the step shown
    try:
        np.testing.assert_array_equal(state.histogram("conv_a")[0],
                                      np.histogram(_kernel(model, copies, 3, "conv_a"), bins=30)[0])
    finally:
        state.step = None
    live = model.get_layer("conv_a").kernel.numpy()
    np.testing.assert_array_equal(state.histogram("conv_a")[0], np.histogram(live, bins=30)[0])
    with pytest.raises(CnnvizError, match="pool_a"):
        state.histogram("pool_a")
    with pytest.raises(CnnvizError, match="bins must be what numpy.histogram takes"):
        state.histogram("conv_a", bins=0)


def test_weight_distributions_share_edges_over_all_kept_steps(trained):
    model, state, copies = trained
    steps, edges, counts = state.weight_distributions("conv_a", bins=12)
    kernels = [_kernel(model, copies, step, "conv_a") for step in steps]
    assert steps.tolist() == [0, 3, 6, 8] and counts.shape == (4, 12)
    low, high = min(float(k.min()) for k in kernels), max(float(k.max()) for k in kernels)
    np.testing.assert_allclose(edges, np.linspace(low, high, 13), rtol=1e-12)
    assert (counts.sum(axis=1) == kernels[0].size).all()
    for row, kernel in zip(counts, kernels, strict=True):  # each weight in the bin its value falls in
        bin_of = np.minimum(np.searchsorted(edges, kernel.ravel(), side="right") - 1, 11)  # the last bin is closed
        np.testing.assert_array_equal(row, np.bincount(bin_of, minlength=12))
    assert not np.array_equal(counts[0], counts[-1])  # the weights moved
    _, given, counts = state.weight_distributions("conv_a", bins=[-0.5, 0.0, 0.5])
    assert given.tolist() == [-0.5, 0.0, 0.5] and counts.shape == (4, 2)
    with pytest.raises(CnnvizError, match="pool_a"):
        state.weight_distributions("pool_a")
    with pytest.raises(CnnvizError, match="bins must be a number of bins >= 1"):
        state.weight_distributions("conv_a", bins="auto")


def test_weight_range_is_the_largest_weight_over_the_kept_steps_and_now(trained):
    model, state, copies = trained
    for layer in ("conv_a", "conv_b"):
        kernels = [_kernel(model, copies, step, layer) for step in state.snapshots.steps]
        kernels.append(model.get_layer(layer).kernel.numpy())
        assert state.weight_range(layer) == pytest.approx(max(float(np.abs(k).max()) for k in kernels), rel=1e-7)
    with pytest.raises(CnnvizError, match="pool_a"):
        state.weight_range("pool_a")


def test_dead_fractions_are_the_zeros_of_each_steps_maps(k, trained):
    model, state, copies = trained
    clone = k.models.clone_model(model)
    fed = state.activation(state.input_layer)[None]
    state.step = 6  # computed the same while a step is shown, which does not change
    try:
        version = state.version
        for layer in ("conv_a", "conv_b"):
            steps, fractions = state.dead_fractions(layer)
            assert steps.tolist() == [0, 3, 6, 8] and fractions.shape == (state.n_filters(layer), 4)
            probe = k.Model(clone.inputs, clone.get_layer(layer).output)
            for column, step in enumerate(steps):
                clone.set_weights(copies[step])
                maps = np.asarray(probe([fed]))[0]
                np.testing.assert_array_equal(fractions[:, column], (maps == 0).mean(axis=(0, 1)))
        assert fractions.max() > 0 and state.step == 6 and state.version == version
        passes = state.forward_passes
        state.dead_fractions("conv_b")  # cached per layer, image and step
        state.activation("conv_b")  # the step shown was computed on the way
        assert state.forward_passes == passes
    finally:
        state.step = None
    assert state.dead_fractions("conv_b")[1].tolist() == fractions.tolist()
    with pytest.raises(CnnvizError, match="flat"):
        state.dead_fractions("flat")
