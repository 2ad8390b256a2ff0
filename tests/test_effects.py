"""effects: per-channel partial sums exactly as Keras computes them, the filter breakdown, ranking, words."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.signal import correlate2d

from cnnviz_widgets import CnnvizError, LayerError, ModelState
from cnnviz_widgets.lessons.arithmetic import ACTIVATIONS, apply_activation
from cnnviz_widgets.lessons.filter_effect import (
    break_down_filter,
    channel_contributions,
    parse_channels,
    transposed_channel_contributions,
)
from cnnviz_widgets.pictures.preprocessing import describe_preprocessing, input_channel_labels


def _assert_same_map(actual, reference, rtol=1e-5):
    """Equal up to float32 rounding: differences scale with the map's largest value (sums cancel)."""
    scale = float(np.abs(reference).max()) or 1.0
    np.testing.assert_allclose(actual, reference, rtol=rtol, atol=rtol * scale)


def _keras_conv(k, previous, kernel, bias, **config):
    """The layer's own output (linear activation) for one (H, W, C) input: (H', W', F)."""
    layer = k.layers.Conv2D(kernel.shape[3], kernel.shape[:2], activation=None, **config)
    layer.build((1, *previous.shape))
    layer.set_weights([kernel, bias])
    return np.asarray(layer(previous[np.newaxis]))[0]


# Geometry cases: odd and even kernels, stride 2 (TensorFlow pads the odd pixel at the end), "valid",
# dilation, non-square kernels and strides, sizes that do not divide by the stride.
GEOMETRIES = [
    dict(kernel=(3, 3), strides=1, padding="same", dilation_rate=1, size=(9, 9)),
    dict(kernel=(3, 3), strides=2, padding="same", dilation_rate=1, size=(9, 8)),
    dict(kernel=(4, 4), strides=1, padding="same", dilation_rate=1, size=(8, 7)),
    dict(kernel=(4, 4), strides=2, padding="same", dilation_rate=1, size=(9, 10)),
    dict(kernel=(2, 5), strides=(1, 2), padding="same", dilation_rate=1, size=(7, 11)),
    dict(kernel=(3, 3), strides=2, padding="valid", dilation_rate=1, size=(9, 8)),
    dict(kernel=(2, 2), strides=3, padding="valid", dilation_rate=1, size=(10, 11)),
    dict(kernel=(3, 3), strides=1, padding="same", dilation_rate=2, size=(9, 9)),
    dict(kernel=(3, 2), strides=1, padding="valid", dilation_rate=(2, 3), size=(10, 9)),
]


@pytest.mark.parametrize("geometry", GEOMETRIES, ids=lambda g: f"{g['kernel']}-s{g['strides']}-{g['padding']}-"
                                                              f"d{g['dilation_rate']}")
@pytest.mark.parametrize("backend", ["numpy", "auto"])
def test_partial_sums_add_up_to_the_keras_layer_output(k, rng, geometry, backend):
    g = dict(geometry)
    (h, w), (kh, kw) = g.pop("size"), g.pop("kernel")
    previous = rng.standard_normal((h, w, 4)).astype(np.float32)
    kernel = rng.standard_normal((kh, kw, 4, 3)).astype(np.float32)
    bias = rng.standard_normal(3).astype(np.float32)
    expected = _keras_conv(k, previous, kernel, bias, **g)
    for f in range(3):
        parts = channel_contributions(previous, kernel, f, strides=g["strides"], padding=g["padding"],
                                      dilation=g["dilation_rate"], backend=backend)
        assert parts.shape == (*expected.shape[:2], 4) and parts.dtype == np.float32
        np.testing.assert_allclose(parts.sum(axis=2) + bias[f], expected[..., f], rtol=1e-5, atol=1e-5)
        # each channel alone: Keras on that one channel with that one kernel slice (no bias)
        for c in (0, 3):
            alone = _keras_conv(k, previous[..., c : c + 1], kernel[:, :, c : c + 1, f : f + 1], np.zeros(1, "f4"),
                                **g)
            np.testing.assert_allclose(parts[..., c], alone[..., 0], rtol=1e-5, atol=1e-5)


def test_partial_sums_match_scipy_correlation(rng):
    previous = rng.standard_normal((11, 13, 5))
    kernel = rng.standard_normal((5, 3, 5, 2))
    parts = channel_contributions(previous, kernel, 1)  # stride 1, "same", odd kernel: centred
    for c in range(5):
        np.testing.assert_allclose(parts[..., c], correlate2d(previous[..., c], kernel[:, :, c, 1], mode="same"),
                                   rtol=1e-5, atol=1e-5)
    valid = channel_contributions(previous, kernel, 1, padding="valid")
    for c in range(5):
        np.testing.assert_allclose(valid[..., c], correlate2d(previous[..., c], kernel[:, :, c, 1], mode="valid"),
                                   rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("kernel", "strides", "padding", "size"), [
    (3, 2, "same", (5, 6)), (4, 2, "same", (5, 5)), (3, 2, "valid", (5, 4)), (2, 3, "valid", (4, 5)),
    (3, 1, "same", (6, 6)),
])
def test_transposed_partial_sums_add_up_to_conv2d_transpose(k, rng, kernel, strides, padding, size):
    previous = rng.standard_normal((*size, 3)).astype(np.float32)
    layer = k.layers.Conv2DTranspose(2, kernel, strides=strides, padding=padding)
    layer.build((1, *previous.shape))
    stored = rng.standard_normal((kernel, kernel, 2, 3)).astype(np.float32)  # Keras: (kh, kw, out, in)
    bias = rng.standard_normal(2).astype(np.float32)
    layer.set_weights([stored, bias])
    expected = np.asarray(layer(previous[np.newaxis]))[0]
    as_full = np.transpose(stored, (0, 1, 3, 2))  # (kh, kw, in, out), as ModelState.weights gives it
    for f in range(2):
        parts = transposed_channel_contributions(previous, as_full, f, strides=strides, padding=padding)
        assert parts.shape[:2] == expected.shape[:2]
        np.testing.assert_allclose(parts.sum(axis=2) + bias[f], expected[..., f], rtol=1e-5, atol=1e-5)


def _independent_partials(previous, kernel, f):
    """Stride-1 "same" partial sums, one scipy correlation per channel: (H, W, C) float64."""
    return np.stack([correlate2d(previous[..., c].astype(np.float64), kernel[:, :, c, f].astype(np.float64),
                                 mode="same") for c in range(previous.shape[2])], axis=-1)


def test_breakdown_ranks_channels_by_mean_absolute_partial_sum(rng):
    previous = rng.standard_normal((10, 10, 6)).astype(np.float32)
    kernel = rng.standard_normal((3, 3, 6, 2)).astype(np.float32)
    kernel[:, :, 4, 1] *= 10  # channel 4 dominates, channel 2 is silent
    kernel[:, :, 2, 1] = 0
    bias = np.array([0.0, -0.5], np.float32)
    b = break_down_filter(previous, kernel, bias, 1, top_k=3, activation="relu")
    partials = _independent_partials(previous, kernel, 1)
    contribution = np.abs(partials).mean(axis=(0, 1))
    np.testing.assert_allclose(b.contribution, contribution, rtol=1e-5)
    assert b.ranking == tuple(np.argsort(-contribution, kind="stable")) and b.ranking[0] == 4 and b.ranking[-1] == 2
    assert b.channels == b.ranking[:3]
    np.testing.assert_allclose(b.partials, partials[..., list(b.channels)], rtol=1e-5, atol=1e-5)
    others = [c for c in range(6) if c not in b.channels]
    np.testing.assert_allclose(b.rest, partials[..., others].sum(axis=2), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(b.pre_activation, partials.sum(axis=2) - 0.5, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(b.output, np.maximum(b.pre_activation, 0))
    np.testing.assert_array_equal(b.previous_maps, previous[..., list(b.channels)])
    np.testing.assert_array_equal(b.kernels, kernel[:, :, list(b.channels), 1])
    assert b.shown_share == pytest.approx(contribution[list(b.channels)].sum() / contribution.sum())
    assert b.bias == -0.5 and b.activation == "relu" and b.activation_reproduced


def test_breakdown_shows_the_channels_asked_for_in_their_order(rng):
    previous = rng.standard_normal((8, 8, 5)).astype(np.float32)
    kernel = rng.standard_normal((3, 3, 5, 1)).astype(np.float32)
    b = break_down_filter(previous, kernel, 0.25, 0, channels=[4, 0, 4])
    assert b.channels == (4, 0)
    partials = _independent_partials(previous, kernel, 0)
    np.testing.assert_allclose(b.partials, partials[..., [4, 0]], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(b.rest, partials[..., [1, 2, 3]].sum(axis=2), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(b.output, partials.sum(axis=2) + 0.25, rtol=1e-5, atol=1e-5)  # linear
    for bad in ([], [5], [-1], ["a"], [1.5]):
        with pytest.raises(CnnvizError, match=r"channels must be a non-empty list of input channel indices in 0\.\.4"):
            break_down_filter(previous, kernel, 0.0, 0, channels=bad)


def test_breakdown_in_chunks_equals_one_pass(rng, monkeypatch):
    from cnnviz_widgets.lessons import channel_ranking

    previous = rng.standard_normal((12, 12, 9)).astype(np.float32)
    kernel = rng.standard_normal((3, 3, 9, 2)).astype(np.float32)
    whole = break_down_filter(previous, kernel, np.zeros(2), 1, strides=2)
    monkeypatch.setattr(channel_ranking, "CHUNK_BYTES", 2 * 6 * 6 * 4)  # 2 channels of output per chunk
    chunked = break_down_filter(previous, kernel, np.zeros(2), 1, strides=2)
    np.testing.assert_allclose(chunked.pre_activation, whole.pre_activation, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(chunked.contribution, whole.contribution, rtol=1e-6)


def _full_ranking(previous, kernel, f, geometry):
    """Every channel's mean |partial sum| and the full order, the slow way: one partial map per channel."""
    parts = channel_contributions(previous, kernel, f, backend="numpy", **geometry)
    values = np.abs(parts.astype(np.float64)).mean(axis=(0, 1))
    return values, tuple(int(c) for c in np.argsort(-values, kind="stable")), parts.astype(np.float64).sum(axis=2)


@pytest.mark.parametrize("geometry", GEOMETRIES, ids=lambda g: f"{g['kernel']}-s{g['strides']}-{g['padding']}-"
                                                              f"d{g['dilation_rate']}")
def test_pruned_ranking_equals_computing_every_channel(rng, geometry):
    g = dict(strides=geometry["strides"], padding=geometry["padding"], dilation=geometry["dilation_rate"])
    n = 24
    previous = rng.standard_normal((*geometry["size"], n)).astype(np.float32)
    previous[..., 3] = 0  # a dead channel: ranks by index among the zeros
    previous[..., 5:8] = np.maximum(previous[..., 5:8], 0)  # some ReLU-like ones
    kernel = rng.standard_normal((*geometry["kernel"], n, 3)).astype(np.float32)
    kernel[..., 9, :] *= 20  # one strong channel, one silent
    kernel[..., 11, :] = 0
    for f in range(3):
        values, order, total = _full_ranking(previous, kernel, f, g)
        for k in (1, 3, n):
            b = break_down_filter(previous, kernel, np.zeros(3), f, top_k=k, **g)
            assert b.channels == order[:k] and b.shown_rank == tuple(range(1, k + 1))
            np.testing.assert_allclose(b.shown_contribution, values[list(b.channels)], rtol=1e-5)
            _assert_same_map(b.pre_activation, total)
            assert b.ranking == order  # the full order, computed when asked for
            np.testing.assert_allclose(b.contribution, values, rtol=1e-5)
        picked = [11, 3, 9, 0]
        b = break_down_filter(previous, kernel, np.zeros(3), f, channels=picked, **g)
        assert b.shown_rank == tuple(order.index(c) + 1 for c in picked)
        np.testing.assert_allclose(b.shown_contribution, values[picked], rtol=1e-5)


def test_ranking_computes_only_the_channels_it_needs(rng, monkeypatch):
    from cnnviz_widgets.lessons import channel_ranking

    previous = np.abs(rng.standard_normal((32, 32, 64))).astype(np.float32)  # ReLU output: non-negative
    kernel = rng.standard_normal((3, 3, 64, 1)).astype(np.float32)
    kernel[:, :, 40:44, 0] *= 30  # four channels dominate
    computed = []
    original = channel_ranking.partials_first

    def counting(stack, taps, geometry):
        computed.append(stack.shape[0])
        return original(stack, taps, geometry)

    monkeypatch.setattr(channel_ranking, "partials_first", counting)
    b = break_down_filter(previous, kernel, 0.0, 0, top_k=3)
    assert set(b.channels) <= {40, 41, 42, 43} and 3 <= sum(computed) < 16  # of 64
    order = _full_ranking(previous, kernel, 0, dict(strides=1, padding="same", dilation=1))[1]
    assert b.channels == order[:3]
    # a second array with the same shape gets its own box sums (they are kept by array identity)
    other = previous[:, :, ::-1].copy()
    b2 = break_down_filter(other, kernel, 0.0, 0, top_k=3)
    assert b2.channels == _full_ranking(other, kernel, 0, dict(strides=1, padding="same", dilation=1))[1][:3]
    # the channels-first copy kept for the steps goes with the array it was made from
    assert [entry.ref() for entry in channel_ranking.PreparedInput._recent] == [other]
    del other, b2
    assert channel_ranking.PreparedInput._recent == []


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_activations_match_keras(k, name):
    x = np.linspace(-8, 8, 161, dtype=np.float32).reshape(7, 23)
    expected = np.asarray(k.activations.get(name)(x))
    np.testing.assert_allclose(apply_activation(x, name), expected, rtol=1e-5, atol=1e-6)


def test_softmax_and_unknown_activations_are_not_reproduced(rng):
    assert apply_activation(np.zeros((2, 2)), "softmax") is None
    b = break_down_filter(rng.standard_normal((5, 5, 2)), rng.standard_normal((3, 3, 2, 2)), 0.0, 0,
                          activation="softmax")
    assert not b.activation_reproduced and b.activation == "softmax"


def test_bad_inputs_are_named(rng):
    previous, kernel = np.zeros((6, 6, 3)), np.zeros((3, 3, 3, 4))
    with pytest.raises(CnnvizError, match=r"kernel takes 2 input channels but previous has 3"):
        channel_contributions(previous, np.zeros((3, 3, 2, 4)), 0)
    with pytest.raises(CnnvizError, match=r"filter must be an int in 0\.\.3; got 4"):
        channel_contributions(previous, kernel, 4)
    with pytest.raises(CnnvizError, match=r"padding must be one of \('same', 'valid'\); got 'causal'"):
        channel_contributions(previous, kernel, 0, padding="causal")
    with pytest.raises(CnnvizError, match=r"strides must be a positive int or a pair of them; got 0"):
        channel_contributions(previous, kernel, 0, strides=0)
    with pytest.raises(CnnvizError, match=r"previous must be a non-empty \(H, W, C\) array"):
        channel_contributions(np.zeros((6, 6)), kernel, 0)
    with pytest.raises(CnnvizError, match=r"smaller than the 5-pixel \(dilated\) kernel"):
        channel_contributions(np.zeros((4, 4, 3)), np.zeros((3, 3, 3, 1)), 0, padding="valid", dilation=2)
    with pytest.raises(CnnvizError, match="top_k must be a positive int"):
        break_down_filter(previous, kernel, 0.0, 0, top_k=0)


def test_depthwise_kernel_skips_the_channels_a_filter_does_not_see(rng):
    previous = rng.standard_normal((6, 6, 4)).astype(np.float32)
    kernel = np.zeros((3, 3, 4, 4), np.float32)
    kernel[:, :, 2, 2] = rng.standard_normal((3, 3))
    parts = channel_contributions(previous, kernel, 2)
    assert not parts[..., [0, 1, 3]].any()
    np.testing.assert_allclose(parts[..., 2], correlate2d(previous[..., 2], kernel[:, :, 2, 2], mode="same"),
                               rtol=1e-5, atol=1e-5)


def test_parse_channels():
    assert parse_channels("0, 5, 17", 64) == (0, 5, 17)
    assert parse_channels(" 3 4\t5 ", 64) == (3, 4, 5)
    assert parse_channels("0-3, 7; 9 .. 10", 64) == (0, 1, 2, 3, 7, 9, 10)
    assert parse_channels("5, 1, 5", 64) == (5, 1)
    for text, message in [("", "no channels given"), ("a", "'a' is not a channel index"),
                          ("64", "'64' is out of range"), ("3-1", "'3-1' runs backwards"),
                          ("-1", "'-1' is not a channel index")]:
        with pytest.raises(CnnvizError, match=message):
            parse_channels(text, 64)


def test_input_channel_words():
    assert input_channel_labels("caffe", 3) == ("B − 103.9", "G − 116.8", "R − 123.7")
    assert input_channel_labels("tf", 3)[0] == "R scaled to −1..1"
    assert input_channel_labels("unit", 1) == ("grey / 255",)
    assert "B, G, R (in that order) minus the ImageNet mean" in describe_preprocessing("caffe")


# ------------------------------------------------------------------------------------------ via ModelState


def test_state_breakdown_equals_the_activation_on_the_tiny_model(tiny_model, rng):
    state = ModelState(tiny_model, image=rng.integers(0, 256, (16, 16, 3), dtype=np.uint8))
    for layer in ("conv_a", "conv_b"):
        state.layer = layer
        for f in range(state.n_filters()):
            b = state.filter_effect(f)
            _assert_same_map(b.output, state.activation()[..., f])
            assert b.previous_layer == state.previous_layer() and b.layer == layer and b.filter == f
            assert b.activation_reproduced and b.activation == "relu"
    assert state.filter_effect().channel_labels[0].startswith("pool_a channel")  # conv_b's input is pool_a
    state.filter = 4
    assert state.filter_effect().filter == 4  # default: the current filter
    with pytest.raises(LayerError, match=r"conv_b has 6 filters \(0\.\.5\); got filter 6"):
        state.filter_effect(6)
    state.layer = "conv_a"
    _, bias = state.weights()
    assert state.filter_effect(2).bias == pytest.approx(float(bias[2])) != 0  # conv_a has non-zero biases
    state.layer = "pool_a"
    with pytest.raises(LayerError, match="pool_a is a pooling layer: it has no filters to take apart"):
        state.filter_effect()
    state.layer = "pixels"
    with pytest.raises(LayerError, match="pixels is the model input"):
        state.filter_effect()


@pytest.fixture(scope="module")
def conv_zoo(k):
    """Every conv type and several activations: strided, depthwise, separable, transposed, dilated, fused."""
    k.utils.set_random_seed(3)
    layers = k.layers
    inputs = k.Input((12, 12, 3), name="img")
    x = layers.Conv2D(4, 3, strides=2, padding="same", activation="relu6", name="strided")(inputs)
    x = layers.DepthwiseConv2D(3, depth_multiplier=2, padding="same", activation="tanh", name="depthwise")(x)
    x = layers.SeparableConv2D(5, 3, padding="valid", activation="elu", name="separable")(x)
    x = layers.Conv2DTranspose(3, 3, strides=2, padding="same", activation="sigmoid", name="transposed")(x)
    x = layers.Conv2D(4, 2, dilation_rate=2, padding="same", name="dilated_linear")(x)
    x = layers.Activation("relu", name="separate_relu")(x)
    x = layers.Conv2D(3, 1, activation="softmax", name="softmaxed")(x)
    model = k.Model(inputs, x, name="zoo")
    for layer in model.layers:  # non-zero biases everywhere, so they are seen to be used
        if getattr(layer, "use_bias", False) and layer.weights:
            *kernels, bias = layer.get_weights()
            layer.set_weights([*kernels, np.linspace(-0.3, 0.3, bias.size).astype("float32")])
    return model


def test_state_breakdown_for_every_conv_type(conv_zoo, rng):
    state = ModelState(conv_zoo, image=rng.integers(0, 256, (12, 12, 3), dtype=np.uint8))
    expected_activation = {"strided": "relu6", "depthwise": "tanh", "separable": "elu", "transposed": "sigmoid",
                           "dilated_linear": "linear", "softmaxed": "softmax"}
    for layer, activation in expected_activation.items():
        state.layer = layer
        for f in range(state.n_filters()):
            b = state.filter_effect(f, top_k=2)
            assert b.activation == activation
            _assert_same_map(b.output, state.activation()[..., f])
            if b.activation_reproduced:  # the total is checked independently of the layer's own output
                _assert_same_map(apply_activation(b.pre_activation, activation), state.activation()[..., f])
    state.layer = "depthwise"
    b = state.filter_effect(5)  # depth_multiplier 2: filter 5 sees input channel 2 only
    assert b.channels[0] == 2 and b.contribution[[0, 1, 3]].sum() == 0 and "DepthwiseConv2D" in b.note
    state.layer = "transposed"
    assert "transposed convolution" in state.filter_effect().note
    state.layer = "softmaxed"
    assert "'softmax' is not reproduced" in state.filter_effect().note
    state.layer = "dilated_linear"  # the ReLU after it is a layer of its own: not part of this layer's output
    assert state.filter_effect().activation == "linear" and state.activation().min() < 0


@pytest.mark.slow
@pytest.mark.parametrize(("layer", "filter"), [("block1_conv1", 34), ("block1_conv2", 1), ("block1_conv2", 40),
                                               ("block3_conv1", 7)])
def test_vgg16_breakdown_equals_the_activation(vgg16_bsds, layer, filter):
    state = ModelState(vgg16_bsds, max_side=64)
    state.layer = layer
    b = state.filter_effect(filter)
    reference = state.activation()[..., filter]
    _assert_same_map(b.output, reference, rtol=1e-4)
    assert len(b.channels) == 3 and b.n_channels == state.n_channels()
    if layer == "block1_conv1":
        # the fed channels are B, G, R minus the ImageNet mean, and the breakdown says so
        assert set(b.channel_labels) == {"B − 103.9", "G − 116.8", "R − 123.7"}
        np.testing.assert_array_equal(b.previous_maps, state.model_input.array[..., list(b.channels)])
        assert "minus the ImageNet mean" in b.note and b.shown_share == 1.0
        if filter == 34:  # the original notebook's remark: its three channels look alike (B, G, R are alike)
            slices = b.kernels.reshape(-1, 3).T
            assert np.corrcoef(slices).min() > 0.95
    assert state.forward_passes == 1
