"""A spread of real Keras architectures: every visualisable layer gives a correct picture or a clear reason."""

from __future__ import annotations

import numpy as np
import pytest

from cnnviz_widgets import LayerError, ModelError, ModelState
from cnnviz_widgets.pictures.render import render_mosaic


def _build(k, name):
    apps, layers = k.applications, k.layers
    if name == "vgg19":
        return apps.VGG19(weights=None, include_top=False, input_shape=(32, 32, 3))
    if name == "resnet50":
        return apps.ResNet50(weights=None, include_top=False, input_shape=(32, 32, 3))
    if name == "mobilenet_v2":
        return apps.MobileNetV2(weights=None, include_top=False, input_shape=(32, 32, 3), alpha=0.35)
    if name == "mnist":
        return k.Sequential([k.Input((28, 28, 1)), layers.Conv2D(4, 3, activation="relu"), layers.MaxPooling2D(),
                             layers.SeparableConv2D(6, 3, activation="relu"), layers.Flatten(), layers.Dense(10)])
    if name == "decoder":
        return k.Sequential([k.Input((8, 8, 3)), layers.Conv2D(4, 3, padding="same"),
                             layers.Conv2DTranspose(3, 3, strides=2, padding="same", activation="sigmoid")])
    raise AssertionError(name)


@pytest.mark.parametrize("name", ["vgg19", "resnet50", "mobilenet_v2", "mnist", "decoder"])
def test_every_visualisable_layer_renders(k, rng, name):
    model = _build(k, name)
    state = ModelState(model, image=rng.integers(0, 256, (40, 40, 3), dtype=np.uint8), max_side=32)
    for layer in state.layers:
        maps = state.activation(layer)
        assert maps.dtype == np.float32 and np.isfinite(maps).all()
        assert maps.shape[-1] == state.n_filters(layer)
        mosaic, _ = render_mosaic(maps, indices=range(min(16, maps.shape[-1])))
        assert mosaic.image.dtype == np.uint8 and mosaic.image.size > 0
        if state.layer_kind(layer) == "conv":
            kernel, bias = state.weights(layer)
            assert kernel.shape[2:] == (state.n_channels(layer), state.n_filters(layer))
            assert bias.shape[0] == kernel.shape[3]
            render_mosaic(kernel[:, :, 0, :], mode="symmetric", cmap="coolwarm")
        else:
            with pytest.raises(LayerError, match="has no convolution kernel"):
                state.weights(layer)
    assert state.forward_passes == 1


def test_resnet_residual_add_is_explained(k):
    state = ModelState(_build(k, "resnet50"), max_side=32)
    assert state.previous_layers("conv2_block1_add") == ["conv2_block1_0_bn", "conv2_block1_3_bn"]
    with pytest.raises(LayerError, match="has 2 inputs .* use previous_layers"):
        state.previous_layer("conv2_block1_add")
    assert state.previous_layer("conv2_block1_1_conv") == "pool1_pool"


def test_single_channel_model_is_fed_luma(k):
    state = ModelState(_build(k, "mnist"), image="astronaut")
    assert state.model_input.array.shape == (28, 28, 1) and "grey" in state.describe()["input_note"]


def test_conv1d_model_is_refused_clearly(k):
    model = k.Sequential([k.Input((100, 8)), k.layers.Conv1D(4, 3, name="c1d"), k.layers.GlobalMaxPooling1D()])
    with pytest.raises(ModelError, match=r"c1d.*1-D layers are not supported"):
        ModelState(model)
