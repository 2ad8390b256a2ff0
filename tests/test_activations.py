"""Activations: one forward pass per image, exact values, and a cache that respects its budget."""

from __future__ import annotations

import numpy as np
import pytest

from cnnviz_widgets import LayerError, ModelState
from cnnviz_widgets.activations import ActivationExtractor, input_key
from cnnviz_widgets.models import ModelGraph
from tests.conftest import correlate_same


def relu(x):
    return np.maximum(x, 0)


@pytest.mark.parametrize(("layer", "filters"), [("block1_conv1", [0, 34, 63]), ("block1_conv2", [1, 40]),
                                                ("block3_conv2", [0, 100, 255]), ("block5_conv3", [7, 511])])
def test_vgg16_conv_outputs_equal_an_independent_correlation(vgg16_bsds, layer, filters):
    state = ModelState(vgg16_bsds, image="astronaut", max_side=64)
    state.layer = layer
    previous = state.activation(state.previous_layer())
    kernel, bias = state.weights()
    expected = relu(correlate_same(previous, kernel, bias, filters))
    got = state.activation()[..., filters]
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-3 * max(1.0, float(np.abs(expected).max())))


def test_tiny_model_outputs_equal_an_independent_computation(tiny_model, rng):
    state = ModelState(tiny_model, image=rng.integers(0, 256, (16, 16, 3), dtype=np.uint8))
    x = state.activation("pixels")
    np.testing.assert_array_equal(x, state.model_input.array)  # the input layer returns what was fed
    kernel, bias = state.weights("conv_a")
    conv_a = relu(correlate_same(x, kernel, bias, range(4)))
    np.testing.assert_allclose(state.activation("conv_a"), conv_a, rtol=1e-5, atol=1e-3)
    pooled = conv_a.reshape(8, 2, 8, 2, 4).max(axis=(1, 3))
    np.testing.assert_allclose(state.activation("pool_a"), pooled, rtol=1e-5, atol=1e-3)
    kernel_b, bias_b = state.weights("conv_b")
    np.testing.assert_allclose(state.activation("conv_b"), relu(correlate_same(pooled, kernel_b, bias_b, range(6))),
                               rtol=1e-4, atol=1e-3)


def test_one_forward_pass_serves_every_layer(tiny_model, rng):
    graph = ModelGraph(tiny_model)
    extractor = ActivationExtractor(graph, graph.visualisable())
    x = rng.normal(size=(16, 16, 3)).astype(np.float32)
    for name in graph.visualisable():
        extractor.get(x, name)
    assert extractor.forward_passes == 1
    extractor.get(x + 1, "conv_b")
    assert extractor.forward_passes == 2
    extractor.get(x, "pool_b")  # still cached
    assert extractor.forward_passes == 2
    with pytest.raises(LayerError, match="not among the extracted layers"):
        extractor.get(x, "logits")


def _one_image_cached(tiny_model, rng):
    """(graph, visualised names, an input, the bytes one input's activations take in the cache)."""
    graph = ModelGraph(tiny_model)
    names = graph.visualisable()
    probe = ActivationExtractor(graph, names)
    x = rng.normal(size=(16, 16, 3)).astype(np.float32)
    probe.get(x, "conv_a")
    return graph, names, x, probe.cached_bytes


def test_cache_evicts_oldest_within_budget(tiny_model, rng):
    graph, names, x, one_image = _one_image_cached(tiny_model, rng)
    extractor = ActivationExtractor(graph, names, budget_bytes=int(2.5 * one_image))
    extractor.policy = "images"  # whole inputs only
    inputs = [x + i for i in range(4)]
    for xi in inputs:
        extractor.get(xi, "conv_a")
        assert extractor.cached_bytes <= extractor.budget_bytes
    assert extractor.forward_passes == 4
    extractor.get(inputs[3], "conv_b")  # newest kept
    extractor.get(inputs[2], "conv_b")
    assert extractor.forward_passes == 4
    extractor.get(inputs[0], "conv_b")  # oldest was evicted: recomputed
    assert extractor.forward_passes == 5


def test_over_budget_input_keeps_the_asked_layer_and_recomputes_the_rest(tiny_model, rng):
    graph = ModelGraph(tiny_model)
    extractor = ActivationExtractor(graph, graph.visualisable(), budget_bytes=16 * 16 * 4 * 4)  # one conv_a map
    x = rng.normal(size=(16, 16, 3)).astype(np.float32)
    first = extractor.get(x, "conv_a")
    assert extractor.get(x, "conv_a") is first and extractor.forward_passes == 1
    extractor.get(x, "conv_b")
    assert extractor.forward_passes == 2 and extractor.cached_bytes <= 2 * extractor.budget_bytes


def test_input_key_distinguishes_shape_and_values():
    a = np.zeros((4, 6, 3), np.float32)
    assert input_key(a) == input_key(a.copy())
    assert input_key(a) != input_key(a.reshape(6, 4, 3))
    b = a.copy()
    b[0, 0, 0] = 1
    assert input_key(a) != input_key(b)


def test_recent_images_keep_the_layers_shown_and_revisits_run_nothing(tiny_model, rng):
    graph, names, x, one_image = _one_image_cached(tiny_model, rng)
    probe = ActivationExtractor(graph, names)
    conv_a_bytes = probe.get(x, "conv_a").nbytes
    extractor = ActivationExtractor(graph, names, budget_bytes=int(1.5 * one_image))  # 1½ images' worth
    inputs = [x + i for i in range(5)]
    for xi in inputs:  # a user stepping through five images on conv_a
        extractor.get(xi, "conv_a")
        assert extractor.cached_bytes <= extractor.budget_bytes
    assert extractor.forward_passes == 5
    # the newest keeps every layer; the older ones the layer that was shown, as long as it fits
    keys = [input_key(xi) for xi in inputs]
    assert set(extractor.cached_layers(keys[-1])) == set(extractor.layers)
    kept = [k for k in keys[:-1] if extractor.cached_layers(k) == ("conv_a",)]
    assert len(kept) == min(4, int((1.5 * one_image - one_image) // conv_a_bytes)) >= 1
    for xi in [inputs[-1]] + [inputs[keys.index(k)] for k in kept]:  # going back runs nothing
        np.testing.assert_array_equal(extractor.get(xi, "conv_a"), probe._model(xi[np.newaxis])[1][0])
    assert extractor.forward_passes == 5
    extractor.get(inputs[keys.index(kept[0])], "conv_b")  # another layer of an older image: one pass
    assert extractor.forward_passes == 6 and extractor.cached_bytes <= extractor.budget_bytes


def test_state_revisits_of_the_last_three_images_cost_no_forward_pass(vgg16_bsds):
    from cnnviz_widgets import sample_image

    probe = ModelState(vgg16_bsds, image="astronaut", max_side=96)
    probe.activation()
    one_image = probe.extractor.cached_bytes  # every extracted layer of one image
    # two images' worth, as the default budget at 512×512; the old policy held two images, not three
    state = ModelState(vgg16_bsds, image="astronaut", max_side=96, cache_budget_mb=2.05 * one_image / 2**20)
    pictures = [np.roll(sample_image("astronaut"), 40 * i, axis=1) for i in range(3)]
    state.layer = "block1_conv2"
    for picture in pictures:
        state.set_image(picture)
        state.activation(), state.activation("block1_conv1")  # what the grid and the filter effect show
    assert 3 * one_image > state.extractor.budget_bytes >= state.extractor.cached_bytes
    passes = state.forward_passes
    for picture in pictures[:2] + pictures:
        state.set_image(picture)
        state.activation(), state.activation("block1_conv1")
    assert state.forward_passes == passes
