"""Watching a network train: snapshots under a budget, scrubbing back, curves, pause / stop, errors in views.

Models are tiny (16×16 inputs, a few filters) so each fit takes well under a second. Kernels are checked
against copies taken independently by a plain Keras callback at the same steps.
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from cnnviz_widgets.errors import CnnvizError
from cnnviz_widgets.state.training_state import TrainingState
from cnnviz_widgets.training.history import TrainingHistory
from cnnviz_widgets.training.snapshots import (
    SnapshotStore,
    filter_change,
    rank_by_change,
    thin_steps,
    upstream_variables,
)
from tests.tiny_training import learnable_data, tiny_cnn


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
    model = tiny_cnn(k)
    state = TrainingState(model)
    paths = [v.path for v in upstream_variables(state.graph, state.extractor.layers)]
    assert paths == [v.path for v in model.get_layer("conv_a").weights + model.get_layer("conv_b").weights]
    only_a = upstream_variables(state.graph, ["conv_a"])
    assert [v.path for v in only_a] == [v.path for v in model.get_layer("conv_a").weights]


def test_store_thins_evenly_under_the_budget_never_dropping_first_or_last(k):
    model = tiny_cnn(k)
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
    model = tiny_cnn(k)
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
    model = tiny_cnn(k)
    state = TrainingState(model, picture, every=4)
    state.snapshots.take(0)
    recorded = {name: model.get_layer(name).kernel.numpy().copy() for name in ("conv_a", "conv_b")}
    maps_at_0 = state.activation("conv_b").copy()
    x, y = learnable_data()
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


# -- the monitor: a Keras callback and a widget ------------------------------------------------------------


@pytest.fixture
def monitor_parts(k, picture):
    from cnnviz_widgets.widgets import TrainingMonitor

    made = []

    def make(model, **kwargs):
        kwargs.setdefault("redraw_seconds", 0.0)
        monitor = TrainingMonitor(model, kwargs.pop("image", picture), **kwargs)
        made.append(monitor)
        return monitor

    yield make
    for monitor in made:
        monitor.close()


def test_monitor_is_a_callback_and_scrubbing_shows_the_kernels_saved_at_each_step(k, monitor_parts):
    from cnnviz_widgets.widgets import TrainingMonitor

    model = tiny_cnn(k)
    monitor = monitor_parts(model, every=3)
    assert isinstance(monitor, k.callbacks.Callback) and isinstance(monitor, TrainingMonitor)
    recorder = _KernelRecorder(k, model, ["conv_a", "conv_b"], every=3)
    x, y = learnable_data()
    model.fit(x, y, epochs=2, batch_size=16, verbose=0, callbacks=[recorder.callback, monitor])
    assert monitor.steps == sorted(recorder.kernels) == [0, 3, 6, 8]  # 4 batches an epoch; the end at 8
    assert monitor.errors == []
    for step in monitor.steps:
        monitor.step = step
        assert monitor.state.step == step and monitor.step_slider.value == step
        for name in ("conv_a", "conv_b"):
            assert np.array_equal(monitor.state.weights(name)[0], recorder.kernels[step][name])
        # What the grid drew is this step's kernel: its tooltips carry each filter's min and max.
        monitor.state.layer = "conv_a"
        kernel = recorder.kernels[step]["conv_a"][:, :, monitor.state.channel]
        assert monitor.weight_grid.figure.tooltips[1].startswith(
            f"filter 1: min {_fmt(kernel[..., 1].min())}, max {_fmt(kernel[..., 1].max())}")
    assert np.array_equal(monitor.state.weights("conv_b")[0], model.get_layer("conv_b").kernel.numpy())
    # step 0 beside the step shown
    first = recorder.kernels[0]["conv_a"][:, :, monitor.state.channel]
    assert monitor.first_grid.state.step == 0
    assert monitor.first_grid.figure.tooltips[2].startswith(
        f"filter 2: min {_fmt(first[..., 2].min())}, max {_fmt(first[..., 2].max())}")
    monitor.step_slider.value = 4  # the slider drives the state: between two kept steps, the nearer
    assert monitor.step_slider.value == 3
    assert monitor.step == 3 and np.array_equal(monitor.state.weights("conv_a")[0], recorder.kernels[3]["conv_a"])
    monitor.step_slider.value = monitor.step_slider.max  # its right end: now
    assert monitor.step is None and monitor.state.step is None
    with pytest.raises(CnnvizError, match="no snapshot at step 4; kept: 0, 3, 6, 8; the nearest is 3"):
        monitor.step = 4


def _text(widget) -> str:
    """What an HTML widget reads as, without its tags."""
    return re.sub(r"<[^>]+>", "", widget.value)


def _fmt(value):
    from cnnviz_widgets.widgets.parts import format_number

    return format_number(float(value))


def test_monitor_logs_metrics_and_validation_per_step(k, monitor_parts):
    model = tiny_cnn(k, metrics=("accuracy", k.metrics.SparseTopKCategoricalAccuracy(k=2, name="top2")))
    monitor = monitor_parts(model, every=2)
    x, y = learnable_data()
    result = model.fit(x, y, epochs=3, batch_size=16, verbose=0, validation_data=(x[:32], y[:32]),
                       callbacks=[monitor])
    history = monitor.history
    assert set(history) == {"loss", "accuracy", "top2", "val_loss", "val_accuracy", "val_top2"}
    assert len(history["loss"]) == 12 and monitor.history_steps["loss"] == list(range(1, 13))
    assert monitor.history_steps["val_loss"] == [4, 8, 12]
    # Keras' own epoch logs: the last batch's running mean is the epoch's value, validation as logged.
    np.testing.assert_allclose([history["loss"][i] for i in (3, 7, 11)], result.history["loss"], rtol=1e-5)
    np.testing.assert_allclose(history["val_top2"], result.history["val_top2"], rtol=1e-5)
    assert set(monitor.loss_curves.lines) == {"loss"} and set(monitor.loss_curves.points) == {"val_loss"}
    assert [value for _, value in monitor.metric_picker.options] == ["accuracy", "top2"]
    points = monitor.metric_curves.points
    assert set(monitor.metric_curves.lines) == {"accuracy"} and set(points) == {"val_accuracy"}
    np.testing.assert_allclose(points["val_accuracy"].y, result.history["val_accuracy"], rtol=1e-5)
    assert list(points["val_accuracy"].x) == [4, 8, 12]
    assert [list(x) for x in monitor.loss_curves.epoch_rules.x] == [[4, 4], [8, 8], [12, 12]]
    monitor.metric_picker.value = "top2"  # the other metric, validation points included
    np.testing.assert_allclose(monitor.metric_curves.points["val_top2"].y, result.history["val_top2"], rtol=1e-5)
    assert "epoch 3 of 3" in monitor.header.value and "Finished" in monitor.header.value
    monitor.step = 4
    assert monitor.loss_curves.rule.visible and list(monitor.loss_curves.rule.x) == [4.0, 4.0]


def test_monitor_keeps_within_its_memory_budget_the_first_last_and_evenly_spaced(k, monitor_parts):
    model = tiny_cnn(k)
    size = sum(v.numpy().nbytes for name in ("conv_a", "conv_b") for v in model.get_layer(name).weights)
    with pytest.raises(CnnvizError, match="cannot hold two snapshots"):
        monitor_parts(model, memory_budget_mb=1.5 * size / 2**20)
    monitor = monitor_parts(model, every=1, memory_budget_mb=5 * size / 2**20)
    recorder = _KernelRecorder(k, model, ["conv_a", "conv_b"], every=1)
    x, y = learnable_data()
    model.fit(x, y, epochs=3, batch_size=16, verbose=0, callbacks=[recorder.callback, monitor])
    steps = monitor.steps
    assert monitor.state.snapshots.nbytes <= 5 * size and len(steps) >= 3
    assert steps[0] == 0 and steps[-1] == 12
    assert len(set(np.diff(steps[:-1]).tolist())) == 1  # evenly spaced
    for step in steps:
        monitor.step = step
        assert np.array_equal(monitor.state.weights("conv_b")[0], recorder.kernels[step]["conv_b"])
    spacing = monitor.state.snapshots.spacing
    monitor.step = None
    assert monitor.step_slider.step == spacing and monitor.step_slider.value == monitor.step_slider.max > 12  # now
    monitor.step_slider.value = 8  # a kept step picked with the slider
    assert monitor.step == 8


def test_stop_ends_training_cleanly_and_the_model_stays_usable(k, monitor_parts):
    model = tiny_cnn(k)
    monitor = monitor_parts(model, every=2)

    class StopAfterThree(k.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if monitor.seen == 3:
                monitor.stop()

    x, y = learnable_data()
    result = model.fit(x, y, epochs=5, batch_size=16, verbose=0, callbacks=[monitor, StopAfterThree()])
    assert monitor.seen == 3 and len(result.history["loss"]) == 1  # stopped inside the first epoch
    assert monitor.steps == [0, 2, 3] and not monitor.running and "Stopped" in monitor.header.value
    assert np.array_equal(monitor.state.weights_at(3, "conv_a")[0], model.get_layer("conv_a").kernel.numpy())
    assert model.predict(x[:4], verbose=0).shape == (4, 3)
    model.fit(x, y, epochs=1, batch_size=16, verbose=0, callbacks=[monitor])  # trains again, steps go on
    assert monitor.seen == 7 and monitor.steps[-1] == 7 and "Finished" in monitor.header.value
    monitor.stop()  # nothing to stop once training has ended: it stays "Finished"
    assert "Finished" in monitor.header.value and monitor.stop_button.disabled and monitor.pause_button.disabled


def test_pause_and_stop_a_fit_in_the_background(k, monitor_parts):
    from cnnviz_widgets.widgets import fit_in_background

    model = tiny_cnn(k)
    monitor = monitor_parts(model, every=5)
    x, y = learnable_data(256)
    job = monitor.fit_in_background(x, y, epochs=200, batch_size=16)
    deadline = time.monotonic() + 30
    while monitor.seen < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    monitor.paused = True
    time.sleep(0.3)  # the batch running when pause was pressed ends
    seen = monitor.seen
    time.sleep(0.5)
    assert monitor.seen == seen and not job.done and monitor.running and "Paused" in monitor.header.value
    assert f"Paused at step {seen}" in _text(monitor.header) and seen in monitor.steps  # the paused step is kept
    assert monitor.pause_button.description == "resume" and f"now (step {seen})" in monitor.step_label.value
    monitor.pause_button.value = False  # the button resumes
    while monitor.seen < seen + 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert monitor.seen >= seen + 3
    monitor.stop_button.click()
    history = job.wait(timeout=30)
    assert job.done and job.error is None and len(history.history["loss"]) < 200
    assert monitor.steps[-1] == monitor.seen and not monitor.running
    assert 0 < monitor.hook_time < job.seconds - 0.5  # the time paused is not counted as the monitor's cost
    assert model.predict(x[:2], verbose=0).shape == (2, 3)
    # Without a monitor, errors are kept for wait().
    broken = fit_in_background(model, x, y[:3])
    with pytest.raises(ValueError):
        broken.wait(timeout=30)


def test_an_error_inside_a_view_is_shown_there_and_training_goes_on(k, monitor_parts, monkeypatch):
    model = tiny_cnn(k)
    monitor = monitor_parts(model, every=2)
    grid = monitor.activation_grid

    def broken_draw(shown):
        raise RuntimeError("the picture broke")

    monkeypatch.setattr(grid, "_draw", broken_draw)
    weights_drawn = monitor.weight_grid.redraws
    calls = []

    def broken_curves(*args, **kwargs):
        calls.append(1)
        raise ZeroDivisionError("curves broke")

    monkeypatch.setattr(monitor.metric_curves, "update", broken_curves)
    x, y = learnable_data()
    result = model.fit(x, y, epochs=2, batch_size=16, verbose=0, callbacks=[monitor])
    assert len(result.history["loss"]) == 2 and monitor.seen == 8  # trained to the end
    assert "RuntimeError: the picture broke" in grid.message.value and grid.error
    assert monitor.weight_grid.redraws > weights_drawn and not monitor.weight_grid.error  # the others go on
    assert calls and any("curves broke" in e for e in monitor.errors) and "curves broke" in monitor.error_box.value
    monkeypatch.undo()
    monitor.step = 2  # drawing works again once the view does
    assert grid.error == "" and "broke" not in grid.message.value


def test_an_error_in_the_callback_itself_never_ends_training(k, monitor_parts):
    model, other = tiny_cnn(k), tiny_cnn(k, seed=1)
    monitor = monitor_parts(model)
    x, y = learnable_data()
    result = other.fit(x, y, epochs=2, batch_size=16, verbose=0, callbacks=[monitor])
    assert len(result.history["loss"]) == 2
    assert any("this monitor watches 'trainee'" in e for e in monitor.errors) and monitor.steps == []


def test_monitor_under_mirrored_strategy_on_two_cpu_replicas(tmp_path):
    """tf.distribute: two logical CPUs (set before TensorFlow starts, hence a fresh process)."""
    script = tmp_path / "mirrored.py"
    script.write_text(textwrap.dedent("""
        import numpy as np, tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        import keras
        from cnnviz_widgets.widgets import TrainingMonitor
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        with strategy.scope():
            keras.utils.set_random_seed(0)
            model = keras.Sequential([keras.Input((16, 16, 1)), keras.layers.Conv2D(4, 3, name="conv_a"),
                                      keras.layers.BatchNormalization(name="norm"), keras.layers.ReLU(),
                                      keras.layers.Conv2D(6, 3, name="conv_b"), keras.layers.Flatten(),
                                      keras.layers.Dense(3, activation="softmax")])
            model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
        monitor = TrainingMonitor(model, np.zeros((16, 16, 3), np.uint8), every=2, redraw_seconds=0)
        first = model.get_layer("conv_b").kernel.numpy().copy()
        x = np.random.default_rng(0).random((64, 16, 16, 1)).astype("float32") * 255
        y = np.arange(64) % 3
        model.fit(x, y, epochs=2, batch_size=16, verbose=0, validation_data=(x[:16], y[:16]), callbacks=[monitor])
        monitor.step = 0
        assert np.array_equal(monitor.state.weights("conv_b")[0], first)
        monitor.step = monitor.steps[-1]
        assert np.array_equal(monitor.state.weights("conv_b")[0], model.get_layer("conv_b").kernel.numpy())
        maps = monitor.state.activation("conv_b")
        probe = keras.Model(model.inputs, model.get_layer("conv_b").output)
        np.testing.assert_allclose(maps, probe.predict(monitor.state.model_input.array[None], verbose=0)[0],
                                   rtol=1e-4, atol=1e-4)
        print(strategy.num_replicas_in_sync, monitor.steps, sorted(monitor.history), monitor.errors)
    """))
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split("\n")[-2] == (
        "2 [0, 2, 4, 6, 8] ['accuracy', 'loss', 'val_accuracy', 'val_loss'] []")


def test_monitor_with_a_tf_data_dataset(k, monitor_parts):
    import tensorflow as tf

    model = tiny_cnn(k)
    monitor = monitor_parts(model, every=3)
    x, y = learnable_data()
    train = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    result = model.fit(train, epochs=2, verbose=0, shuffle=False, validation_data=train.take(1), callbacks=[monitor])
    assert monitor.steps == [0, 3, 6, 8] and monitor.history_steps["val_loss"] == [4, 8]
    np.testing.assert_allclose(monitor.history["val_loss"], result.history["val_loss"], rtol=1e-5)
    assert np.array_equal(monitor.state.weights_at(8, "conv_b")[0], model.get_layer("conv_b").kernel.numpy())


def test_overhead_benchmark_runs(k):
    """benchmarks/training.py (`make bench`, group "training") on a tiny fit: its figures, not their values."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "training.py"
    spec = importlib.util.spec_from_file_location("cnnviz_benchmarks_training", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    result = bench.measure_overhead(bench.tiny_model, *bench.tiny_data(64), epochs=1, batch_size=16, repeats=1,
                                    every=2)
    assert result["steps"] == 4 and result["redraws"][0] >= 2  # the first and the last step are drawn
    for key in ("plain_s", "watched_s", "per_batch_s", "redraw_s", "monitor_build_s"):
        assert len(result[key]) == 1 and 0 < result[key][0] < 120, key
    assert np.isfinite(result["overhead"]) and np.isfinite(result["per_batch_overhead"])
    assert np.isfinite(result["cpu_overhead"]) and all(len(v) == 1 for v in result["cpu_s"].values())
    assert 0 < result["hook_share"][0] < 1
    assert result["overhead"] == pytest.approx(result["watched_s"][0] / result["plain_s"][0] - 1)


def test_the_views_tell_the_truth_sorted_bars_per_batch_curves_one_scale(k, monitor_parts):
    model = tiny_cnn(k)
    monitor = monitor_parts(model, every=2)
    recorder = _KernelRecorder(k, model, ["conv_a", "conv_b"], every=2)
    x, y = learnable_data(56)  # 4 batches of 16 a epoch, the last one of 8
    model.fit(x, y, epochs=3, batch_size=16, verbose=0, callbacks=[recorder.callback, monitor])
    # The change bars are in the order the axis says, most changed first, at every redraw.
    for layer in ("conv_a", "conv_b", "conv_a"):
        monitor.state.layer = layer
        order = monitor.filters_by_change()
        assert monitor.change_bars.order == order and list(monitor.change_bars.x_scale.domain) == list(map(str, order))
        np.testing.assert_allclose(monitor.change_bars.bars.y, np.sort(monitor.filter_change())[::-1])
    monitor.step = monitor.steps[1]  # the change up to another step: ranked again
    assert list(monitor.change_bars.x_scale.domain) == list(map(str, monitor.filters_by_change()))
    # The drawn training line is each batch's own loss, not Keras' running mean over the epoch.
    steps, values = monitor.batch_values("loss")
    line = monitor.loss_curves.lines["loss"]
    assert list(line.x) == list(steps) == list(range(1, 13))
    np.testing.assert_allclose(line.y, values)
    assert not np.allclose(line.y, monitor.history["loss"], rtol=1e-3)
    # Step 0 and the step shown share one colour scale: the largest |w| over every kept step and now.
    largest = max(np.abs(kernels["conv_a"]).max() for kernels in recorder.kernels.values())
    for step in (None, monitor.steps[0], monitor.steps[2]):
        monitor.step = step
        first, now = (grid.weight_scale()[0] for grid in (monitor.first_grid, monitor.weight_grid))
        assert first == now == pytest.approx(largest)
    monitor.step = monitor.steps[0]  # the same step on both sides: the very same picture
    assert np.array_equal(monitor.first_grid.figure.mosaic.image, monitor.weight_grid.figure.mosaic.image)
    # The distribution over training: one column per kept step, each the share of the weights per bin.
    share = np.asarray(monitor.distribution.heat.color)
    assert share.shape[1] == len(monitor.steps) and np.allclose(share.sum(axis=0), 1.0)
    dead_steps, fractions = monitor.state.dead_fractions("conv_a")
    assert list(dead_steps) == monitor.steps and np.allclose(monitor.dead_filters.heat.color, fractions)  # all 8


def test_predictions_and_explanations_are_those_of_the_step_shown(k, monitor_parts, picture):
    model = tiny_cnn(k)
    monitor = monitor_parts(model, every=2)
    recorder = _KernelRecorder(k, model, ["conv_a", "conv_b"], every=2)
    state = monitor.state
    before = state.predictions(top=3)
    x, y = learnable_data()
    model.fit(x, y, epochs=2, batch_size=16, verbose=0, callbacks=[recorder.callback, monitor])
    fed = state.model_input.array[None]
    live = np.asarray(model(fed))[0]
    np.testing.assert_allclose(state.predictions(top=3).probabilities, np.sort(live)[::-1], rtol=1e-5, atol=1e-6)
    assert not np.allclose(state.predictions(top=3).probabilities, before.probabilities)
    monitor.step = 0  # step 0's weights: the probabilities before training, and its own Grad-CAM
    np.testing.assert_allclose(state.predictions(top=3).probabilities, before.probabilities, rtol=1e-5, atol=1e-6)
    at_start = state.explanation("grad-cam").raw
    monitor.step = None
    assert not np.allclose(state.explanation("grad-cam").raw, at_start)
