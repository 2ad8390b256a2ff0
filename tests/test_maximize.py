"""Feature visualisation (cnnviz_widgets.maximization) on a hand-built model whose filter is a known detector."""

from __future__ import annotations

import threading

import numpy as np
import pytest

import cnnviz_widgets as cw
from cnnviz_widgets import ModelState
from cnnviz_widgets.errors import CnnvizError, LayerError

EDGE = np.array([-1, -1, 0, 1, 1], np.float32)  # dark left, bright right: a vertical-edge detector
BIAS = -2000.0  # far below anything noise gives: under ReLU the filter starts dead


@pytest.fixture(scope="module")
def state(k):
    inputs = k.Input((None, None, 3), name="pixels")
    x = k.layers.Conv2D(2, 5, padding="same", activation="relu", name="conv1")(inputs)
    x = k.layers.MaxPooling2D(name="pool1")(x)
    model = k.Model(inputs, x, name="edge")
    kernel = np.zeros((5, 5, 3, 2), np.float32)
    kernel[:, :, :, 0] = EDGE[None, :, None]
    kernel[:, :, :, 1] = EDGE[:, None, None]  # filter 1: the horizontal edge
    model.get_layer("conv1").set_weights([kernel, np.array([BIAS, BIAS], np.float32)])
    return ModelState(model, image=np.zeros((32, 32, 3), np.uint8), preprocess=None)


def centre_pre_activation(picture: np.ndarray, axis: int) -> float:
    """The centre unit's pre-activation, by numpy: the 5×5 window at the middle of a 32×32 picture."""
    return float((picture.astype(np.float64).sum(axis=2)[14:19, 14:19] * kernel_2d(axis)).sum() + BIAS)


def kernel_2d(axis: int) -> np.ndarray:
    return np.tile(EDGE, (5, 1)) if axis == 1 else np.tile(EDGE, (5, 1)).T


def shows_edge(picture: np.ndarray, axis: int) -> float:
    """Correlation of the centre window (grey) with the kernel: 1 for the edge the filter detects."""
    window = picture.astype(np.float64).sum(axis=2)[14:19, 14:19]
    return float(np.corrcoef(window.ravel(), kernel_2d(axis).ravel())[0, 1])


@pytest.mark.parametrize("param", ["fourier", "pixel"])
def test_a_dead_edge_filter_is_driven_far_above_noise_and_shows_edges(state, param):
    fv = cw.maximize(state, "conv1", 0, steps=40, size=32, param=param, lr=0.1, cache=False, progress=False)
    assert fv.image.shape == (32, 32, 3) and fv.image.dtype == np.uint8 and fv.objective_kind == "neuron"
    rng = np.random.default_rng(0)
    noise = [centre_pre_activation(rng.integers(0, 256, (32, 32, 3)), axis=1) for _ in range(50)]
    assert fv.start == pytest.approx(BIAS, abs=100)  # the starting grey: dead under ReLU
    assert fv.objective == pytest.approx(centre_pre_activation(fv.image, axis=1), rel=0.02, abs=20)
    assert fv.objective > np.mean(noise) + 6 * np.std(noise)
    assert fv.objective > 0  # alive: above its bias of -2000
    assert fv.trace[-10:].mean() > fv.trace[:5].mean() + 1000
    assert shows_edge(fv.image, axis=1) > 0.8


def test_filters_together_each_get_their_own_pattern(state):
    vertical, horizontal = cw.maximize(state, "conv1", [0, 1], steps=40, size=32, lr=0.1, cache=False,
                                       progress=False)
    assert (vertical.filter, horizontal.filter) == (0, 1)
    assert shows_edge(vertical.image, axis=1) > 0.8 and shows_edge(horizontal.image, axis=0) > 0.8
    assert horizontal.objective == pytest.approx(centre_pre_activation(horizontal.image, axis=0), rel=0.02, abs=20)
    pooled = cw.maximize(state, "pool1", 0, steps=5, size=32, cache=False, progress=False)
    assert pooled.image.shape == (32, 32, 3) and pooled.objective_kind == "channel"


def test_cache_cancel_and_progress(state, tmp_path):
    stop, seen = threading.Event(), []

    def progress(done, total):
        seen.append((done, total))
        if done == 3:
            stop.set()

    cut = cw.maximize(state, "conv1", 0, steps=20, size=32, cache=tmp_path, progress=progress, cancel=stop)
    assert (cut.steps, cut.complete, len(cut.trace)) == (3, False, 3) and seen[-1] == (3, 20)
    assert not list(tmp_path.rglob("*.npz"))  # a cut-short picture is not cached
    first = cw.maximize(state, "conv1", 0, steps=20, size=32, cache=tmp_path, progress=False)
    again = cw.maximize(state, "conv1", 0, steps=20, size=32, cache=tmp_path, progress=False)
    assert (first.from_cache, again.from_cache) == (False, True)
    np.testing.assert_array_equal(first.image, again.image)
    np.testing.assert_array_equal(first.trace, again.trace)


def test_the_export_is_the_function_after_the_widgets_import():
    import cnnviz_widgets.widgets  # noqa: F401  (imports the module that defines it)

    assert cw.maximize.__module__ == "cnnviz_widgets.features.visualisation" and callable(cw.maximize)


def test_errors_name_the_bad_value(state):
    with pytest.raises(LayerError, match=r"conv1 has 2 filters \(0..1\); got filter 5"):
        cw.maximize(state, "conv1", 5, cache=False)
    with pytest.raises(LayerError, match="cannot be maximised"):
        cw.maximize(state, "pixels", 0, cache=False)
    with pytest.raises(CnnvizError, match="param must be one of fourier, pixel; got 'lbfgs'"):
        cw.maximize(state, "conv1", 0, param="lbfgs", cache=False)
    with pytest.raises(CnnvizError, match="steps must be a positive int; got 0"):
        cw.maximize(state, "conv1", 0, steps=0, cache=False)
