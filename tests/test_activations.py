"""Activations: one forward pass per image, exact values, and a cache that respects its budget."""

from __future__ import annotations

import numpy as np
import pytest

from cnnviz_widgets import LayerError, ModelState
from cnnviz_widgets.network.extractor import ActivationExtractor, input_key, separators
from cnnviz_widgets.network.graph import ModelGraph
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


def test_over_budget_input_keeps_the_asked_layer_and_computes_the_rest_from_it(tiny_model, rng):
    graph = ModelGraph(tiny_model)
    extractor = ActivationExtractor(graph, graph.visualisable(), budget_bytes=16 * 16 * 4 * 4)  # one conv_a map
    x = rng.normal(size=(16, 16, 3)).astype(np.float32)
    first = extractor.get(x, "conv_a")
    assert extractor.get(x, "conv_a") is first
    # it cannot keep everything: the pass stopped at conv_a instead of running the whole network
    assert (extractor.forward_passes, extractor.partial_passes, extractor.last_pass) == (0, 1, ("pixels", "conv_a"))
    extractor.get(x, "conv_b")  # computed on from conv_a, the layer it kept
    assert (extractor.forward_passes, extractor.partial_passes, extractor.last_pass) == (0, 2, ("conv_a", "conv_b"))
    assert extractor.cached_bytes <= extractor.budget_bytes


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
    extractor.get(inputs[keys.index(kept[0])], "conv_b")  # another layer of an older image: one pass, from conv_a
    assert (extractor.forward_passes, extractor.partial_passes) == (5, 1)
    assert extractor.last_pass == ("conv_a", extractor._in_order[-1])
    assert extractor.cached_bytes <= extractor.budget_bytes


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


# -- partial passes: a layer the budget dropped is computed on from the deepest checkpoint before it ---------


@pytest.fixture(scope="module")
def branchy_model(k):
    """24×24 functional CNN with what big networks have: a residual add, a squeeze-and-excite gate (global
    pooling, 1×1 conv, multiply), two parallel branches concatenated, raw ops (`x + y`, `keras.ops.relu`),
    a DenseNet-style concatenation of a block's input with its output, and a classifier."""
    k.utils.set_random_seed(5)
    layers = k.layers
    inputs = k.Input((24, 24, 3), name="pixels")
    stem = layers.Conv2D(6, 3, padding="same", activation="relu", name="stem")(inputs)
    x = layers.Conv2D(6, 3, padding="same", activation="relu", name="res_conv1")(stem)
    x = layers.Conv2D(6, 3, padding="same", name="res_conv2")(x)
    x = layers.Add(name="res_add")([stem, x])
    pooled = layers.MaxPooling2D(name="pool")(x)
    squeezed = layers.GlobalAveragePooling2D(keepdims=True, name="se_squeeze")(pooled)
    gate = layers.Conv2D(6, 1, activation="sigmoid", name="se_gate")(squeezed)
    x = layers.Multiply(name="se_excite")([pooled, gate])
    x = layers.Conv2D(8, 1, name="se_project")(x)
    left = layers.Conv2D(4, 1, activation="relu", name="branch_1x1")(x)
    right = layers.Conv2D(4, 3, padding="same", activation="relu", name="branch_3x3")(x)
    x = layers.Concatenate(name="branches")([left, right])
    x = k.ops.relu(x + layers.Conv2D(8, 1, name="shortcut")(x)) * 0.5  # raw ops, not layers
    x = layers.Conv2D(8, 3, padding="same", activation="relu", name="dense_conv")(x)
    dense = layers.Concatenate(name="dense_concat")([x, layers.Conv2D(4, 3, padding="same", name="grow")(x)])
    x = layers.Conv2D(10, 3, strides=2, padding="same", activation="relu", name="head_conv")(dense)
    x = layers.AveragePooling2D(2, name="head_pool")(x)
    outputs = layers.Dense(3, name="logits")(layers.Flatten(name="flat")(x))
    return k.Model(inputs, outputs, name="branchy")


def _extractor(graph, budget_bytes=None):
    """An extractor for what `ModelState` extracts: every visualised layer and the layers feeding them."""
    names = list(graph.visualisable())
    for name in graph.visualisable():
        names.extend(graph.previous_layers(name))
    return ActivationExtractor(graph, names, budget_bytes)


def test_separators_are_the_nodes_no_connection_jumps_over(tiny_model, branchy_model):
    assert separators(ModelGraph(tiny_model)) == ["conv_a", "pool_a", "conv_b", "pool_b", "flat", "logits"]
    graph = ModelGraph(branchy_model)
    found = separators(graph)
    # inside the residual block, the gate (pool feeds the multiply too), the branches and the raw-op shortcut,
    # and between dense_conv and the concatenation that reads it again, none of the nodes is one
    for inside in ("res_conv1", "res_conv2", "se_squeeze", "se_gate", "branch_1x1", "branch_3x3", "shortcut", "grow"):
        assert inside not in found
    named = [name for name in found if name in {layer.name for layer in branchy_model.layers}]
    assert named == ["stem", "res_add", "pool", "se_excite", "se_project", "branches", "dense_conv", "dense_concat",
                     "head_conv", "head_pool", "flat", "logits"]


def test_partial_passes_equal_keras_own_sub_models_on_a_graph_with_skips_and_branches(k, branchy_model, rng):
    graph = ModelGraph(branchy_model)
    x = rng.normal(size=(24, 24, 3)).astype(np.float32)
    everything = _extractor(graph)
    everything.get(x, "stem")
    assert everything.forward_passes == 1
    whole = {name: everything.get(x, name) for name in everything.layers}
    biggest = max(a.nbytes for a in whole.values())
    extractor = _extractor(graph, budget_bytes=2 * biggest)  # far less than one input's outputs
    assert sum(a.nbytes for a in whole.values()) > 3 * extractor.budget_bytes
    # independent: Keras' own graph of the model, not the flattened one (raw ops: as the whole pass)
    independent = {name: np.asarray(k.Model(branchy_model.input, branchy_model.get_layer(name).output)(x[None]))[0]
                   for name in whole if name in {layer.name for layer in branchy_model.layers}}
    convs = [name for name in graph.visualisable() if graph.node(name).kind == "conv"]
    # what the filter-effect view asks, layer by layer (each layer's input first): forward, then back, then jumps
    walk = convs + convs[::-1] + [convs[-1], convs[0], convs[len(convs) // 2], convs[1]]
    for layer in walk:
        for name in (*graph.previous_layers(layer), layer):
            got = extractor.get(x, name)
            if name in independent:
                np.testing.assert_allclose(got, independent[name], rtol=1e-5, atol=1e-5, err_msg=name)
            np.testing.assert_array_equal(got, whole[name], err_msg=name)
            assert extractor.cached_bytes <= extractor.budget_bytes
    assert extractor.forward_passes == 0 and 0 < extractor.partial_passes < len(walk)


def test_a_step_back_runs_from_the_nearest_checkpoint_not_the_input(branchy_model, rng):
    graph = ModelGraph(branchy_model)
    x = rng.normal(size=(24, 24, 3)).astype(np.float32)
    probe = _extractor(graph)
    probe.get(x, "stem")
    sizes = probe.layer_bytes(x.shape)
    extractor = _extractor(graph, budget_bytes=sizes["head_conv"] + sizes["dense_concat"] + sizes["dense_conv"])
    extractor.get(x, "head_conv")  # nothing held yet: from the input up to head_conv, which is a checkpoint
    assert extractor.last_pass == ("pixels", "head_conv")
    kept = set(extractor.cached_layers(input_key(x)))
    assert {"head_conv", "dense_concat"} <= kept  # the layer and the one feeding it (what the next view asks)
    extractor.get(x, "dense_concat")
    assert extractor.partial_passes == 1  # already there
    extractor.get(x, "grow")  # dropped: computed from dense_conv, the deepest checkpoint kept before it
    assert extractor.last_pass == ("dense_conv", "dense_concat") and extractor.partial_passes == 2
    assert extractor.forward_passes == 0


def test_an_input_that_fits_runs_whole_and_older_inputs_refill_from_their_checkpoints(branchy_model, rng):
    graph = ModelGraph(branchy_model)
    x = rng.normal(size=(24, 24, 3)).astype(np.float32)
    extractor = _extractor(graph)
    for name in reversed(extractor.layers):  # every layer, deepest first: still one whole pass
        extractor.get(x, name)
    assert (extractor.forward_passes, extractor.partial_passes) == (1, 0)
    assert extractor.last_pass == ("pixels", extractor._in_order[-1])
    one_image = extractor.cached_bytes
    tight = _extractor(graph, budget_bytes=one_image + extractor.get(x, "se_project").nbytes)
    tight.get(x, "se_project")
    tight.get(x + 1, "stem")  # the first input keeps only what was asked for
    assert tight.cached_layers(input_key(x)) == ("se_project",)
    tight.get(x, "head_conv")  # on from se_project to the end: the part before it is not run again
    assert (tight.forward_passes, tight.partial_passes) == (2, 1)
    assert tight.last_pass == ("se_project", tight._in_order[-1])
    np.testing.assert_array_equal(tight.get(x, "head_conv"), extractor.get(x, "head_conv"))


def test_the_state_says_when_it_ran_part_of_the_network(tiny_model, rng):
    state = ModelState(tiny_model, image=rng.integers(0, 256, (16, 16, 3), dtype=np.uint8),
                       cache_budget_mb=16 * 16 * 4 * 4 / 2**20)  # one conv_a map: every input is over budget
    state.activation("conv_a")
    state.activation("conv_b")
    assert state.status.startswith("partial pass from conv_a to conv_b: ") and state.status.endswith(" ms")
    assert state.forward_passes == 0 and state.extractor.partial_passes >= 2
