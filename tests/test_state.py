"""ModelState: the one source of truth. Validation, clamping, images, and no needless forward passes."""

from __future__ import annotations

import io
import subprocess
import sys

import numpy as np
import pytest
import traitlets
from PIL import Image

from cnnviz_widgets import ImageError, LayerError, ModelError, ModelState, sample_image


@pytest.fixture
def state(tiny_model, rng):
    return ModelState(tiny_model, image=rng.integers(0, 256, (16, 16, 3), dtype=np.uint8))


def test_starts_on_the_first_conv_layer_with_a_sample_image(vgg16_bsds):
    state = ModelState(vgg16_bsds, max_side=64)
    assert state.layer == "block1_conv1" and state.image_name == "astronaut"
    assert state.layers[0] == state.input_layer and state.layers[-1] == "block5_pool"
    assert len([n for n in state.layers if state.layer_kind(n) == "conv"]) == 13
    info = state.describe()
    assert info["model"] == "VGG16" and "BSDS500" in info["weights"] and info["input_size"] == "64×64"


def test_indices_are_clamped_to_the_layer(state):
    state.filter = 99
    assert state.filter == 3  # conv_a has 4 filters
    state.channel = -5
    assert state.channel == 0
    state.layer = "conv_b"
    state.filter, state.channel = 5, 3
    assert (state.n_filters(), state.n_channels()) == (6, 4)
    state.layer = "conv_a"  # fewer filters and channels: both clamped with the layer change
    assert (state.filter, state.channel) == (3, 2)


def test_unknown_layer_is_refused_and_the_state_keeps_its_layer(state):
    state.layer = "conv_b"
    with pytest.raises(LayerError, match="Layers shown: pixels, conv_a, pool_a, conv_b, pool_b"):
        state.layer = "conv_z"
    with pytest.raises(LayerError, match="logits .Dense. is not visualisable because"):
        state.layer = "logits"
    assert state.layer == "conv_b"
    with pytest.raises(LayerError):
        state.activation("nope")


def test_observers_see_one_consistent_change(state):
    seen = []
    state.observe(lambda change: seen.append((change["name"], state.layer, state.filter)), names=["layer", "filter"])
    state.filter = 3
    state.layer = "conv_b"
    state.layer = "pool_a"  # 4 channels: filter 3 stays valid
    assert seen[0] == ("filter", "conv_a", 3)
    assert ("layer", "conv_b", 3) in seen and seen[-1][1] == "pool_a"


def test_image_from_path_bytes_and_sample(state, tmp_path):
    picture = sample_image("cat")
    path = tmp_path / "cat.png"
    Image.fromarray(picture).save(path)
    state.image = str(path)
    np.testing.assert_array_equal(state.image, picture)
    buffer = io.BytesIO()
    Image.fromarray(picture[:, ::-1]).save(buffer, format="PNG")
    state.set_image(buffer.getvalue(), name="flipped.png")
    assert state.image_name == "flipped.png"
    np.testing.assert_array_equal(state.image, picture[:, ::-1])
    state.set_image("coffee")
    assert state.image_name == "coffee" and state.model_input.array.shape == (16, 16, 3)  # tiny: fixed size


@pytest.mark.parametrize("bad", [b"", b"not an image at all", np.zeros((1, 1, 3), np.uint8), 42])
def test_bad_images_leave_the_previous_one_in_place(state, bad):
    before, name, fed = state.image, state.image_name, state.model_input
    passes = state.forward_passes
    state.activation()
    with pytest.raises((ImageError, traitlets.TraitError)):
        state.set_image(bad)
    with pytest.raises((ImageError, traitlets.TraitError)):
        state.image = bad
    assert state.image is before and state.image_name == name and state.model_input is fed
    state.activation()
    assert state.forward_passes == passes + 1  # the earlier image is still the cached one


def test_scrubbing_layers_and_filters_runs_no_forward_pass(vgg16_bsds):
    state = ModelState(vgg16_bsds, max_side=64)
    state.activation()
    passes = state.forward_passes
    rng = np.random.default_rng(0)
    for _ in range(100):
        state.layer = state.layers[rng.integers(len(state.layers))]
        state.filter = int(rng.integers(600))
        state.channel = int(rng.integers(600))
        assert state.activation().shape[-1] == state.n_filters()
    assert state.forward_passes == passes
    state.set_image("cat")
    state.activation("block5_conv3")
    state.activation("block1_conv1")
    assert state.forward_passes == passes + 1


def test_busy_and_status_report_the_forward_pass(state):
    flags = []
    state.observe(lambda change: flags.append(change["new"]), names=["busy"])
    state.activation()
    assert flags == [True, False]
    assert state.status.startswith("forward pass: ") and state.status.endswith(" ms")


def test_model_without_maps_is_refused(k):
    dense = k.Sequential([k.Input((8, 8, 3)), k.layers.Flatten(), k.layers.Dense(2)])
    with pytest.raises(LayerError, match="no layer that can be shown as maps"):
        ModelState(dense)
    with pytest.raises(ModelError):
        ModelState(object())


def test_previous_layer_and_weights_default_to_the_current_layer(state):
    state.layer = "conv_b"
    assert state.previous_layer() == "pool_a"
    kernel, bias = state.weights()
    assert kernel.shape == (3, 3, 4, 6) and bias.shape == (6,)
    assert state.summary()[0]["name"] == "pixels"


def test_import_does_not_load_tensorflow():
    code = ("import sys, cnnviz_widgets as cw; cw.sample_image('cat'); cw.ModelState; "
            "print('tensorflow' in sys.modules, 'keras' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
