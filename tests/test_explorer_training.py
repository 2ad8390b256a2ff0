"""An Explorer on a TrainingMonitor's state follows the training: live while the network trains, a kept step when
one is shown, and the status line says which; an Explorer on a plain ModelState is as it was.

Models are tiny (16×16 inputs, a few filters). What a view drew is checked against values computed apart from the
library: each kept step's weights are copied by a plain Keras callback, and the maps come from a Keras model that
holds those weights.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from cnnviz_widgets import ModelState
from cnnviz_widgets.network.backend import keras
from cnnviz_widgets.pictures import render
from cnnviz_widgets.widgets import Explorer
from cnnviz_widgets.widgets.explorer import weights_words
from cnnviz_widgets.widgets.grids import full_rows
from cnnviz_widgets.widgets.mosaic import MosaicFigure
from tests.tiny_training import learnable_data, tiny_cnn

LAYER = "conv_b"  # deep enough that its maps depend on the weights of both conv layers


class _WeightsRecorder:
    """An independent record: every weight of the model, copied by a plain Keras callback at the monitor's steps
    (every `every` batches, and the end of training)."""

    def __init__(self, k, model, every):
        recorder = self
        self.weights: dict[int, list[np.ndarray]] = {}
        self.seen = 0

        class Callback(k.callbacks.Callback):
            def on_train_begin(self, logs=None):
                if not recorder.weights:
                    recorder.weights[0] = [w.copy() for w in model.get_weights()]

            def on_train_batch_end(self, batch, logs=None):
                recorder.seen += 1
                if recorder.seen % every == 0:
                    recorder.weights[recorder.seen] = [w.copy() for w in model.get_weights()]

            def on_train_end(self, logs=None):
                recorder.weights[recorder.seen] = [w.copy() for w in model.get_weights()]

        self.callback = Callback()


def _with_weights(k, model, weights):
    clone = k.models.clone_model(model)
    clone.set_weights(weights)
    return clone


def _maps(fed: np.ndarray, model) -> np.ndarray:
    """(H, W, C) output of LAYER for the fed input, by a Keras model of its own."""
    probe = keras().Model(model.inputs, model.get_layer(LAYER).output)
    return np.asarray(probe([fed[None]]))[0]


def _picture(figure: MosaicFigure) -> np.ndarray:
    """The picture the browser gets: the PNG in the Image mark, decoded."""
    return np.asarray(Image.open(io.BytesIO(figure.image_mark.image.value))).astype(int)


def _expected_activations(grid, maps: np.ndarray) -> np.ndarray:
    state = grid.state
    mosaic, _ = render.render_mosaic(maps, state.normalization, state.colormap, max_side=grid.max_tile_px,
                                     indices=grid.shown, cols=full_rows(len(grid.shown)))
    return mosaic.image.astype(int)


def _assert_shows_maps_of(grid, model) -> None:
    """The activation grid's picture is LAYER's maps computed by `model` (one colour level of float noise allowed)."""
    maps = _maps(grid.state.model_input.array, model)
    np.testing.assert_allclose(_picture(grid.figure), _expected_activations(grid, maps), atol=1)


def _assert_weight_tiles(grid, kernel: np.ndarray) -> None:
    """Each tile of the weight grid is `kernel`'s slice at the grid's channel, coloured on ±max |w| (coolwarm)."""
    channel, m = grid.state.channel, float(np.abs(kernel).max())
    assert grid.figure.colorbar_values == ("coolwarm", pytest.approx(-m), pytest.approx(m))
    lut = render.colormap_lut("coolwarm")
    kh, kw = kernel.shape[:2]
    for f in grid.shown:
        y0, x0, y1, x1 = grid.figure.mosaic.tile_box(f)
        cell_h, cell_w = (y1 - y0) // kh, (x1 - x0) // kw
        cells = _picture(grid.figure)[y0:y1, x0:x1][cell_h // 2::cell_h, cell_w // 2::cell_w][:kh, :kw]
        index = np.floor(255 * (0.5 + kernel[:, :, channel, f].astype(np.float64) / (2 * m)) + 0.5).astype(int)
        np.testing.assert_array_equal(cells, lut[index])


@pytest.fixture
def picture():
    rng = np.random.default_rng(5)
    return rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)


@pytest.fixture
def monitored(k, picture):
    """A model, a TrainingMonitor on it (a snapshot every 3 steps) and an Explorer on the monitor's state."""
    from cnnviz_widgets.widgets import TrainingMonitor

    model = tiny_cnn(k)
    monitor = TrainingMonitor(model, picture, every=3, redraw_seconds=0.0)
    explorer = Explorer(monitor.state)
    explorer.state.layer = LAYER
    yield model, monitor, explorer
    explorer.close()
    monitor.close()


def test_explorer_follows_live_training_and_the_step_shown(k, monitored):
    model, monitor, explorer = monitored
    recorder = _WeightsRecorder(k, model, every=3)
    activations = explorer.activation_grid  # the open tab
    _assert_shows_maps_of(activations, model)
    before = _picture(activations.figure)
    assert explorer.status.value.startswith("weights: live, training")
    x, y = learnable_data()

    model.fit(x, y, epochs=1, batch_size=16, verbose=0, callbacks=[recorder.callback, monitor])
    # the open tab was redrawn as the network trained: it shows the maps of the weights the model has now
    _assert_shows_maps_of(activations, model)
    assert np.abs(_picture(activations.figure) - before).max() > 8  # training moved them: the old one would not do
    assert explorer.status.value.startswith("weights: live, training")

    explorer.tabs.selected_index = 1  # Weights, open while the network trains on
    weights = explorer.weight_grid
    model.fit(x, y, epochs=1, batch_size=16, verbose=0, callbacks=[recorder.callback, monitor])
    assert monitor.steps == [0, 3, 6, 8] and set(monitor.steps) <= set(recorder.weights)
    assert weights.problem == activations.problem == ""
    _assert_weight_tiles(weights, model.get_layer(LAYER).kernel.numpy())

    monitor.step = 0  # the first kept step: the open tab shows its weights, the status line says so
    at_first = _with_weights(k, model, recorder.weights[0])
    _assert_weight_tiles(weights, at_first.get_layer(LAYER).kernel.numpy())
    assert explorer.status.value.startswith("weights: step 0 of training")
    explorer.tabs.selected_index = 0  # the Activations tab catches up with the step when it opens
    _assert_shows_maps_of(activations, at_first)
    np.testing.assert_allclose(_picture(activations.figure), before, atol=1)  # the very picture drawn before training

    monitor.step = 3  # another kept step
    _assert_shows_maps_of(activations, _with_weights(k, model, recorder.weights[3]))
    assert explorer.status.value.startswith("weights: step 3 of training")
    monitor.step = None  # live again
    _assert_shows_maps_of(activations, model)
    assert explorer.status.value.startswith("weights: live, training")


def test_every_view_of_the_explorer_redraws_for_new_weights(k, monitored):
    model, monitor, explorer = monitored
    state = explorer.state
    recorder = _WeightsRecorder(k, model, every=3)
    x, y = learnable_data()
    model.fit(x, y, epochs=1, batch_size=16, verbose=0, callbacks=[recorder.callback, monitor])
    titles = explorer.tabs.titles
    for index, title in enumerate(titles):
        explorer.tabs.selected_index = index
        view = explorer.current_view
        if title == "Layers":  # the layer table does not depend on the weights
            continue
        assert view.problem == "", (title, view.problem)
        drawn = view.redraws
        monitor.step = monitor.steps[0] if monitor.step is None else None  # new weights
        assert view.redraws > drawn, title
        assert view.problem == "", (title, view.problem)
    # the filter's effect is taken apart with the weights of the step shown
    explorer.tabs.selected_index = titles.index("Filter effect")
    monitor.step = 3
    kernel = _with_weights(k, model, recorder.weights[3]).get_layer(LAYER).kernel.numpy()
    breakdown = explorer.filter_effect.breakdown
    np.testing.assert_array_equal(breakdown.kernels, kernel[:, :, list(breakdown.channels), state.filter])


def test_views_read_the_state_holding_its_lock(monitored, monkeypatch):
    explorer = monitored[2]
    state = explorer.state
    held = []
    activation = state.activation

    def watched(*args, **kwargs):
        held.append(state.lock._is_owned())  # before TrainingState takes it itself
        return activation(*args, **kwargs)

    monkeypatch.setattr(state, "activation", watched)
    state.filter = 2
    state.normalization = "per_layer"  # the activation grid draws again, from this thread
    assert held and all(held)


def test_explorer_on_a_model_state_is_unchanged(tiny_model, rng):
    state = ModelState(tiny_model, image=rng.integers(0, 256, (16, 16, 3), dtype=np.uint8))
    assert not state.has_trait("version") and weights_words(state) == ""
    explorer = Explorer(state)
    try:
        assert "weights" not in explorer.status.value  # (it says how long the forward pass took)
        for index in range(3):  # Activations, Weights, Filter effect
            explorer.tabs.selected_index = index
            view = explorer.current_view
            assert view.problem == "" and view._weights_version is None
            assert view._state_traits(["layer", "filter", "layer"]) == ["layer", "filter"]
        assert "weights" not in explorer.status.value
    finally:
        explorer.close()
