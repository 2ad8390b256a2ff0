"""Any Keras model: one model of each keras.applications family, and hand-built graphs with raw ops.

Every family model is opened in the Explorer and walked over its tabs with `benchmarks/zoo.walk` (what
``make zoo`` does to all 40 at full size), small (include_top=False, 75-96 px) so the suite stays fast. The
flattened graph is checked against Keras' own: a layer's maps equal those of a plain Keras sub-model.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

import cnnviz_widgets as cw
from cnnviz_widgets import LayerError, ModelState
from cnnviz_widgets.lessons.receptive_field import receptive_field
from cnnviz_widgets.network.graph import ModelGraph
from tests.conftest import load_benchmark

ZOO_PY = Path(__file__).resolve().parents[1] / "benchmarks" / "zoo.py"


@pytest.fixture(scope="module")
def zoo():
    return load_benchmark(ZOO_PY, "cnnviz_benchmarks_zoo")


def _keras_maps(k, model, layer, fed):
    """`layer`'s output through Keras' own graph of `model` (not the flattened one)."""
    return np.asarray(k.Model(model.input, model.get_layer(layer).output)(fed[None]))[0]


def _assert_walked(report):
    assert report["escaped"] == []
    failures = [text for tab in report["tabs"].values() for text in tab["failures"]]
    assert failures == []
    assert all(tab["steps"] > 0 for tab in report["tabs"].values())


FAMILIES = {  # one per family, as small as the constructor allows
    "ConvNeXtTiny": (64, 64, 3),
    "MobileNetV3Small": (96, 96, 3),
    "MobileNet": (96, 96, 3),
    "EfficientNetB0": (64, 64, 3),
    "NASNetMobile": (64, 64, 3),
    "InceptionV3": (75, 75, 3),
}


@pytest.mark.parametrize("name", list(FAMILIES))
def test_each_family_opens_and_every_tab_survives_a_walk(k, zoo, name):
    k.utils.set_random_seed(0)
    model = zoo.build(name, FAMILIES[name], include_top=False)
    explorer = cw.Explorer(model, image="cat")
    try:
        state = explorer.state
        # the flattened graph (raw ops included) computes what Keras computes
        last = state.layers[-1]
        fed = state.model_input.array
        np.testing.assert_allclose(state.activation(last), _keras_maps(k, model, last, fed), rtol=1e-4, atol=1e-4)
        _assert_walked(zoo.walk(explorer, layers_per_tab=2, filters_per_layer=1))
    finally:
        explorer.close()


def test_free_input_size_model_opens_and_walks(k, zoo):
    model = k.applications.MobileNetV2(weights=None, include_top=False, input_shape=(None, None, 3), alpha=0.35)
    explorer = cw.Explorer(model, image="cat")
    try:
        assert explorer.state.graph.input_shape == (None, None, 3)
        _assert_walked(zoo.walk(explorer, layers_per_tab=2, filters_per_layer=1))
    finally:
        explorer.close()


def test_convnext_raw_ops_are_nodes_and_grouped_convs_compute_as_keras(k, zoo):
    model = zoo.build("ConvNeXtTiny", (32, 32, 3), include_top=False)
    graph = ModelGraph(model)
    adds = [n for n in graph.nodes.values() if n.class_name == "Add" and not hasattr(n.layer, "count_params")]
    assert adds, "ConvNeXt's residual `x + y` are raw ops"
    assert all(len(n.inputs) == 2 for n in adds)
    # its "depthwise" convs are Conv2D(groups=channels): the full kernel is zero off the diagonal
    node = graph.node("convnext_tiny_stage_0_block_0_depthwise_conv")
    kernel, _, note = graph.weights(node.name)
    assert kernel.shape == (7, 7, 96, 96) and "96 groups" in note
    stored = np.asarray(node.layer.kernel)  # (7, 7, 1, 96)
    np.testing.assert_array_equal(np.diagonal(kernel, axis1=2, axis2=3), stored[:, :, 0, :])
    assert np.count_nonzero(kernel) == np.count_nonzero(stored)


# ------------------------------------------------------------------------------ hand-built graphs, raw ops


@pytest.fixture(scope="module")
def raw_ops_model(k):
    """Two conv branches joined by `x + y`, scaled by `* 0.5`, gated by a squeeze (`keras.ops.mean` with
    keepdims) and a TensorFlow op in a Lambda, then a conv."""
    import tensorflow as tf

    k.utils.set_random_seed(3)
    inputs = k.Input((12, 12, 3), name="pixels")
    a = k.layers.Conv2D(4, 3, padding="same", name="c1")(inputs)
    b = k.layers.Conv2D(4, 1, name="c2")(inputs)
    x = (a + b) * 0.5
    gate = k.ops.sigmoid(k.ops.mean(x, axis=(1, 2), keepdims=True))
    x = k.layers.Lambda(lambda t: tf.nn.relu(t), name="tf_relu")(x * gate)
    outputs = k.layers.Conv2D(5, 3, padding="same", name="c3")(x)
    return k.Model(inputs, outputs, name="raw_ops")


def test_raw_ops_are_passed_through_and_computed_as_keras_does(k, raw_ops_model, rng):
    state = ModelState(raw_ops_model, image=rng.integers(0, 256, (12, 12, 3), dtype=np.uint8))
    assert state.layers == ["pixels", "c1", "c2", "c3"]  # the ops make no maps worth their own slider stop
    classes = [n.class_name for n in state.graph.nodes.values()]
    for op in ("Add", "Multiply", "Mean", "Sigmoid", "Lambda"):
        assert op in classes
    add = next(n for n in state.graph.nodes.values() if n.class_name == "Add")
    assert add.inputs == ["c1", "c2"] and add.params == 0
    assert state.previous_layer("c3") == "tf_relu"
    fed = state.model_input.array
    np.testing.assert_allclose(state.activation("c3"), np.asarray(raw_ops_model(fed[None]))[0], rtol=1e-5,
                               atol=1e-5)


def test_receptive_field_through_a_keepdims_reduction_is_the_whole_input_and_names_it(raw_ops_model):
    graph = ModelGraph(raw_ops_model)
    field = receptive_field(graph, "c1")
    assert not field.whole and field.size == (3, 3)
    joined = receptive_field(graph, next(n for n in graph.nodes if n.startswith("add")))
    assert joined.size == (3, 3)  # the union of c1's 3×3 and c2's 1×1 window
    whole = receptive_field(graph, "c3")
    assert whole.whole and whole.box(5, 7) == (0, 0, 12, 12)
    assert whole.mixed_by.startswith("mean")


def test_global_pooling_with_keepdims_gives_the_whole_input_in_the_one_value_view(k):
    inputs = k.Input((16, 16, 3))
    x = k.layers.Conv2D(4, 3, padding="same", name="conv")(inputs)
    x = k.layers.GlobalAveragePooling2D(keepdims=True, name="gap")(x)
    x = k.layers.Conv2D(6, 1, name="conv_preds")(x)  # MobileNet v1's head
    state = ModelState(k.Model(inputs, x), max_side=16)
    field = state.receptive_field("conv_preds")
    assert field.whole and field.mixed_by == "gap" and field.box(0, 0) == (0, 0, 16, 16)
    view = cw.ConvolutionAtPixel(state)
    try:
        state.layer = "conv_preds"
        assert view.problem == "" and "whole 16×16 input (gap mixes all positions)" in view.field_figure.title.value
    finally:
        view.close()


# ------------------------------------------------------------------------------ errors stay inside views, short


def test_a_view_shows_what_it_cannot_compute_and_recovers(k, rng):
    model = k.Sequential([k.Input((8, 8, 3)), k.layers.Conv2D(4, 3, padding="same", name="conv"),
                          k.layers.Conv2DTranspose(3, 3, strides=2, padding="same", name="up")])
    state = ModelState(model, image=rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
    view = cw.ConvolutionAtPixel(state)
    try:
        state.layer = "up"  # a scatter: no receptive field window; the view says so instead of raising
        assert "scatters" in view.problem and view.failure == ""
        assert "scatters" in view.message.value and view.top not in view.children
        state.layer = "conv"
        assert view.problem == "" and view.message.value == "" and view.top in view.children
        assert view.box == state.receptive_box(view.row, view.col)
    finally:
        view.close()


def test_an_unexpected_error_is_shown_in_the_view_and_logged(k, rng, caplog, monkeypatch, tiny_model):
    state = ModelState(tiny_model, image=rng.integers(0, 256, (16, 16, 3), dtype=np.uint8))
    view = cw.ConvolutionAtPixel(state)
    try:
        def broken(*_args, **_kwargs):
            raise KeyError("some internal key")

        monkeypatch.setattr(state, "receptive_field", broken)
        with caplog.at_level(logging.ERROR, logger="cnnviz_widgets"):
            state.filter = 1  # must not raise out of the control change
        assert view.failure.startswith("ConvolutionAtPixel cannot be drawn for conv_a: KeyError")
        assert view.problem == view.failure and len(view.problem) <= 300
        assert any(record.exc_info for record in caplog.records)
        monkeypatch.undo()
        state.filter = 2
        assert view.problem == view.failure == ""
    finally:
        view.close()


def test_unknown_layer_names_the_closest_matches_not_every_layer(k):
    inputs = k.Input((8, 8, 3))
    x = inputs
    for i in range(60):
        x = k.layers.Conv2D(2, 1, name=f"conv_{i}")(x)
    graph = ModelGraph(k.Model(inputs, x))
    with pytest.raises(LayerError) as caught:
        graph.node("conv_71")
    text = str(caught.value)
    assert "Did you mean conv_7, conv_1" in text and "(61 in all)" in text
    assert len(text) < 400 and "conv_33" not in text


# ------------------------------------------------------------------------------ KerasHub (optional)


def test_a_keras_hub_backbone_opens_and_walks(zoo):
    keras_hub = pytest.importorskip("keras_hub")
    backbone = keras_hub.models.ResNetBackbone(
        input_conv_filters=[64], input_conv_kernel_sizes=[7], stackwise_num_filters=[64, 32],
        stackwise_num_blocks=[1, 1], stackwise_num_strides=[1, 2], block_type="basic_block",
        use_pre_activation=False, image_shape=(64, 64, 3))
    explorer = cw.Explorer(backbone, image="cat")
    try:
        _assert_walked(zoo.walk(explorer, layers_per_tab=2, filters_per_layer=1))
    finally:
        explorer.close()
