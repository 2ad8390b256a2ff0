"""analysis: one output value taken apart, receptive fields, channel statistics; against Keras and plain loops."""

from __future__ import annotations

import numpy as np
import pytest

from cnnviz_widgets import CnnvizError, LayerError, ModelGraph, ModelState
from cnnviz_widgets.lessons.channel_stats import CHANNEL_ORDERS, channel_statistics, order_channels
from cnnviz_widgets.lessons.filter_effect import channel_contributions
from cnnviz_widgets.lessons.pixel_breakdown import pixel_breakdown
from cnnviz_widgets.lessons.receptive_field import receptive_box, receptive_field
from cnnviz_widgets.network.backend import keras
from cnnviz_widgets.pictures.preprocessing import input_channel_labels

# The standard VGG16 receptive fields (size, jump) for 3×3 convs with padding 1 and 2×2 pools.
VGG16_FIELDS = {
    "block1_conv1": (3, 1), "block1_conv2": (5, 1), "block1_pool": (6, 2),
    "block2_conv1": (10, 2), "block2_conv2": (14, 2), "block2_pool": (16, 4),
    "block3_conv1": (24, 4), "block3_conv2": (32, 4), "block3_conv3": (40, 4), "block3_pool": (44, 8),
    "block4_conv1": (60, 8), "block4_conv2": (76, 8), "block4_conv3": (92, 8), "block4_pool": (100, 16),
    "block5_conv1": (132, 16), "block5_conv2": (164, 16), "block5_conv3": (196, 16), "block5_pool": (212, 32),
}


def loop_value(previous, kernel, bias, f, row, col, strides, dilation, top_left):
    """Plain loops: (per-channel partial sums (C,), pre-activation) of output (row, col) of filter f."""
    h, w, n = previous.shape
    kh, kw = kernel.shape[:2]
    partials = np.zeros(n)
    for c in range(n):
        for i in range(kh):
            for j in range(kw):
                y = row * strides[0] - top_left[0] + i * dilation[0]
                x = col * strides[1] - top_left[1] + j * dilation[1]
                if 0 <= y < h and 0 <= x < w:
                    partials[c] += float(previous[y, x, c]) * float(kernel[i, j, c, f])
    return partials, partials.sum() + float(bias[f])


def gradient_support(model, layer: str, x: np.ndarray, row: int, col: int) -> np.ndarray:
    """(H, W) bool: input pixels where d(sum over channels of layer[row, col]) / d input is non-zero."""
    sub = keras().Model(model.inputs[0], model.get_layer(layer).output)  # one tensor, not a list: no warning
    import tensorflow as tf  # after keras(): the library sets up TensorFlow's logging before it loads

    inputs = tf.constant(x[None])
    with tf.GradientTape() as tape:
        tape.watch(inputs)
        value = tf.reduce_sum(sub(inputs)[0, row, col])
    return np.any(tape.gradient(value, inputs).numpy()[0] != 0, axis=-1)


def bounding_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1


def box_mask(box, shape) -> np.ndarray:
    mask = np.zeros(shape, bool)
    y0, x0, y1, x1 = box
    mask[y0:y1, x0:x1] = True
    return mask


def positive_model(k, build):
    """The model `build(k)` returns, with every kernel set to 0.1 and every bias to 0: all paths add."""
    model = build(k)
    for layer in model.layers:
        weights = layer.get_weights()
        if weights:
            layer.set_weights([np.full_like(w, 0.1 if w.ndim > 1 else 0.0) for w in weights])
    return model


def vgg16_geometry(k, size: int):
    """VGG16's 13 convs and 5 pools with 2 channels, and AVERAGE pooling: a pool's gradient then reaches every
    pixel of its window (max pooling only its argmax), so the gradient's support is the whole field."""
    layers = [k.Input((size, size, 1), name="pixels")]
    for block, convs in enumerate((2, 2, 3, 3, 3), start=1):
        layers += [k.layers.Conv2D(2, 3, padding="same", activation="relu", name=f"block{block}_conv{i}")
                   for i in range(1, convs + 1)]
        layers.append(k.layers.AveragePooling2D(2, name=f"block{block}_pool"))
    return k.Sequential(layers, name="vgg16_geometry")


def two_paths(k):
    """A DAG: two stride-2 branches whose windows overlap only partly, joined by Add; then a stride-2 'same' conv
    on an even size (TensorFlow pads the odd pixel at the end), a dilated conv, a stride-1 pool, a crop."""
    inputs = k.Input((20, 20, 1), name="pixels")
    a = k.layers.ZeroPadding2D(((2, 0), (2, 0)), name="pad_a")(inputs)
    a = k.layers.Conv2D(1, 3, strides=2, name="down_a")(a)
    b = k.layers.ZeroPadding2D(((0, 2), (0, 2)), name="pad_b")(inputs)
    b = k.layers.Conv2D(1, 3, strides=2, name="down_b")(b)
    x = k.layers.Add(name="join")([a, b])
    x = k.layers.Conv2D(1, 3, strides=2, padding="same", activation="relu", name="strided")(x)
    x = k.layers.Conv2D(1, 3, dilation_rate=2, padding="same", name="dilated")(x)
    x = k.layers.AveragePooling2D(2, strides=1, padding="same", name="pool")(x)
    x = k.layers.Cropping2D(((1, 0), (0, 1)), name="crop")(x)
    return k.Model(inputs, x, name="two_paths")


# -- one output value ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("padding", "strides", "dilation"), [
    ("same", (1, 1), (1, 1)), ("valid", (1, 1), (1, 1)), ("same", (2, 2), (1, 1)), ("same", (2, 3), (1, 1)),
    ("valid", (3, 2), (1, 1)), ("same", (1, 1), (2, 3)), ("valid", (1, 1), (2, 1)),
])  # Keras refuses strides > 1 together with dilation > 1
def test_pixel_breakdown_equals_keras_and_plain_loops_everywhere(k, rng, padding, strides, dilation):
    previous = rng.normal(size=(8, 9, 5)).astype(np.float32)
    layer = k.layers.Conv2D(4, (3, 2), strides=strides, padding=padding, dilation_rate=dilation, activation="tanh")
    layer.build((1, 8, 9, 5))
    kernel, bias = np.asarray(layer.kernel), rng.normal(size=4).astype(np.float32)
    layer.set_weights([kernel, bias])
    expected = np.asarray(layer(previous[None]))[0]  # Keras itself computes the reference
    out_h, out_w = expected.shape[:2]
    # where the window starts: TensorFlow pads (total // 2) before
    span = ((3 - 1) * dilation[0] + 1, (2 - 1) * dilation[1] + 1)
    before = [max((o - 1) * s + sp - n, 0) // 2 if padding == "same" else 0
              for o, s, sp, n in zip((out_h, out_w), strides, span, (8, 9), strict=True)]
    for row in range(out_h):
        for col in range(out_w):
            b = pixel_breakdown(previous, kernel, bias, 2, row, col, strides=strides, padding=padding,
                                dilation=dilation, activation="tanh", top_k=2)
            partials, pre = loop_value(previous, kernel, bias, 2, row, col, strides, dilation, before)
            np.testing.assert_allclose(b.partials, partials, rtol=1e-9, atol=1e-9)
            assert b.pre_activation == pytest.approx(pre, abs=1e-9)
            assert b.output == pytest.approx(expected[row, col, 2], abs=2e-6)
    contributions = channel_contributions(previous, kernel, 2, strides=strides, padding=padding, dilation=dilation)
    np.testing.assert_allclose(b.partials, contributions[out_h - 1, out_w - 1], rtol=1e-5, atol=1e-5)


def test_pixel_breakdown_ranks_channels_and_shows_the_padding(rng):
    previous = rng.normal(size=(6, 6, 7)).astype(np.float32)
    kernel = rng.normal(size=(3, 3, 7, 2)).astype(np.float32)
    b = pixel_breakdown(previous, kernel, [0.5, -1.0], 1, 0, 5, padding="same", activation="relu", top_k=3)
    assert (b.row, b.col, b.filter, b.bias) == (0, 5, 1, -1.0)
    # the window at the top-right corner: row -1 and column 6 lie in the zero padding
    assert b.taps_y == (-1, 0, 1) and b.taps_x == (4, 5, 6) and b.window == (-1, 4, 2, 7)
    np.testing.assert_array_equal(b.padded, [[True, True, True], [False, False, True], [False, False, True]])
    order = sorted(range(7), key=lambda c: (-abs(b.partials[c]), c))
    assert b.ranking == tuple(order) and b.channels == tuple(order[:3])
    for i, c in enumerate(b.channels):
        expected = np.zeros((3, 3), np.float32)
        expected[1:, :2] = previous[0:2, 4:6, c]
        np.testing.assert_array_equal(b.patches[:, :, i], expected)
        np.testing.assert_array_equal(b.kernels[:, :, i], kernel[:, :, c, 1])
        assert float((b.patches[:, :, i].astype(np.float64) * b.kernels[:, :, i]).sum()) == pytest.approx(
            b.partials[c], rel=1e-6)
    assert b.shown_sum == pytest.approx(b.partials[list(b.channels)].sum())
    assert b.shown_sum + b.rest == pytest.approx(b.total) and b.total == pytest.approx(b.partials.sum())
    assert b.output == pytest.approx(max(b.total - 1.0, 0.0), abs=1e-6) and b.activation_reproduced
    everything = pixel_breakdown(previous, kernel, [0.5, -1.0], 1, 0, 5, top_k=50)
    assert everything.channels == b.ranking and everything.rest == pytest.approx(0.0, abs=1e-12)
    # an activation not reproduced here: the pre-activation is given, and said so
    softmax = pixel_breakdown(previous, kernel, 0.0, 0, 2, 2, activation="softmax")
    assert not softmax.activation_reproduced and softmax.output == softmax.pre_activation


@pytest.mark.parametrize(("kwargs", "match"), [
    (dict(row=6, col=0), r"row must be an int in 0\.\.5 \(the filter's output map is 6×6\); got 6"),
    (dict(row=0, col=-1), r"col must be an int in 0\.\.5"),
    (dict(row=1.5, col=0), "row must be an int"),
    (dict(row=0, col=0, top_k=0), "top_k must be a positive int"),
    (dict(row=0, col=0, filter=2), r"filter must be an int in 0\.\.1"),
    (dict(row=0, col=0, padding="full"), "padding must be one of"),
])
def test_pixel_breakdown_refuses_bad_input_by_name(rng, kwargs, match):
    args = dict(previous=rng.normal(size=(6, 6, 3)), kernel=rng.normal(size=(3, 3, 3, 2)), bias=np.zeros(2),
                filter=0)
    args.update(kwargs)
    with pytest.raises(CnnvizError, match=match):
        pixel_breakdown(**args)


def test_state_pixel_breakdown_matches_the_layers_own_output(tiny_model, rng):
    state = ModelState(tiny_model, image=rng.integers(0, 256, (16, 16, 3), dtype=np.uint8))
    for layer, filters in (("conv_a", range(4)), ("conv_b", range(6))):
        state.layer = layer
        reference = state.activation()
        for f in filters:
            for row, col in ((0, 0), (3, 5), (reference.shape[0] - 1, reference.shape[1] - 1)):
                b = state.pixel_breakdown(row, col, filter=f, top_k=2)
                assert b.output == pytest.approx(float(reference[row, col, f]), rel=1e-5, abs=1e-5)
                assert (b.layer, len(b.channels)) == (layer, 2)
    state.layer = "conv_a"
    b = state.pixel_breakdown(4, 4)  # default: the current filter, top 8 (of 3: all)
    assert b.filter == state.filter and len(b.channels) == 3 and b.previous_layer == "pixels"
    every = input_channel_labels(state.model_input.preprocess, 3)
    assert b.channel_labels == tuple(every[c] for c in b.channels)
    assert b.bias == pytest.approx(-0.2)  # conv_a's bias for filter 0 (conftest)
    state.layer = "conv_b"
    assert state.pixel_breakdown(1, 1, top_k=2).channel_labels[0].startswith("pool_a channel ")
    for layer in ("pool_a", "pixels"):
        state.layer = layer
        with pytest.raises(LayerError, match=f"{layer} .* does not slide a kernel.*e.g. conv_a, conv_b"):
            state.pixel_breakdown(0, 0)
    state.layer = "conv_b"
    with pytest.raises(LayerError, match=r"conv_b has 6 filters \(0\.\.5\); got filter 6"):
        state.pixel_breakdown(0, 0, filter=6)
    with pytest.raises(CnnvizError, match=r"conv_b, filter 0: row must be an int in 0\.\.7"):
        state.pixel_breakdown(8, 0, filter=0)


def test_vgg16_pixel_breakdown_explains_64_and_256_channel_filters(vgg16_bsds):
    state = ModelState(vgg16_bsds, image="astronaut", max_side=64)
    for layer, f in (("block1_conv2", 1), ("block3_conv1", 7), ("block1_conv1", 34)):
        state.layer = layer
        reference = state.activation()
        n = state.n_channels()
        for row, col in ((0, 0), (5, 9), (reference.shape[0] - 1, 3)):
            b = state.pixel_breakdown(row, col, filter=f)
            scale = max(1.0, float(np.abs(b.partials).sum()))
            assert b.output == pytest.approx(float(reference[row, col, f]), abs=1e-5 * scale)
            assert b.n_channels == n and len(b.channels) == min(8, n)
            assert b.shown_sum + b.rest == pytest.approx(b.total)
    assert set(b.channel_labels) == {"B − 103.9", "G − 116.8", "R − 123.7"}  # block1_conv1: the fed B, G, R


# -- receptive field ----------------------------------------------------------------------------------


def test_vgg16_receptive_fields_are_the_standard_ones(vgg16_bsds):
    graph = ModelGraph(vgg16_bsds)
    for layer, (size, jump) in VGG16_FIELDS.items():
        field = receptive_field(graph, layer, (224, 224))
        assert field.size == (size, size) and (field.y.jump, field.x.jump) == (jump, jump), layer
        assert field.y == field.x
    field = receptive_field(graph, "block5_conv3", (224, 224))
    assert field.output_size == (14, 14) and field.y.offset == -90  # 13 paddings of 1, each at its jump
    assert field.box(7, 7) == (22, 22, 218, 218)  # 196 pixels, centred on the 16-pixel cell of output 7
    assert field.box(0, 0) == (0, 0, 106, 106)  # clipped: the field starts 90 pixels into the padding
    assert receptive_box(graph, "block5_pool", 3, 3, (224, 224)) == (6, 6, 218, 218)
    # any input size: a fully convolutional VGG16 has no fixed size, the field size does not depend on it
    free = receptive_field(graph, "block3_conv3")
    assert free.size == (40, 40) and free.output_size == (None, None)
    with pytest.raises(CnnvizError, match=r"pass input_size=\(height, width\)"):
        free.box(0, 0)
    with pytest.raises(CnnvizError, match=r"row must be an int in 0\.\.55 \(block3_conv3's output is 56×56\)"):
        receptive_box(graph, "block3_conv3", 56, 0, (224, 224))
    with pytest.raises(CnnvizError, match="input_size must be"):
        receptive_field(graph, "block3_conv3", (0, 10))


def test_vgg16_geometry_gradient_fills_exactly_the_computed_box(k):
    """The measurement: d output pixel / d input is non-zero exactly on the receptive field (all weights > 0)."""
    k.utils.set_random_seed(0)
    model = positive_model(k, lambda k: vgg16_geometry(k, 224))
    graph = ModelGraph(model)
    x = np.ones((224, 224, 1), np.float32)
    for layer, pixels in (("block1_conv2", [(0, 0), (100, 223)]), ("block2_pool", [(0, 55), (30, 31)]),
                          ("block4_conv1", [(0, 0), (14, 13)]), ("block5_conv3", [(7, 7), (13, 0)]),
                          ("block5_pool", [(3, 3), (6, 2)])):
        field = receptive_field(graph, layer, (224, 224))
        assert (field.size[0], field.y.jump) == VGG16_FIELDS[layer]  # the same geometry as the real VGG16
        for row, col in pixels:
            support = gradient_support(model, layer, x, row, col)
            np.testing.assert_array_equal(support, box_mask(field.box(row, col), (224, 224)), err_msg=layer)


def test_real_vgg16_gradient_stays_inside_the_box(vgg16_bsds, rng):
    """With max pooling only the argmax of each window passes a gradient: inside the box, never outside."""
    graph = ModelGraph(vgg16_bsds)
    x = rng.normal(0, 50, (96, 96, 3)).astype(np.float32)
    for layer, (row, col) in (("block2_conv2", (20, 3)), ("block3_pool", (5, 5)), ("block4_conv1", (0, 11))):
        support = gradient_support(vgg16_bsds, layer, x, row, col)
        box = receptive_box(graph, layer, row, col, (96, 96))
        assert support.any() and not (support & ~box_mask(box, (96, 96))).any(), layer


def test_dag_receptive_field_is_the_box_around_the_union_of_its_paths(k):
    """Where two paths join, the pixels reached are the union of two squares, and a dilated kernel skips pixels:
    the field is the box around every pixel reached, which is exactly the measured extent."""
    model = positive_model(k, two_paths)
    graph = ModelGraph(model)
    expected = {"down_a": (3, 2, -2), "down_b": (3, 2, 0), "join": (5, 2, -2), "strided": (9, 4, -2),
                "dilated": (25, 4, -10), "pool": (29, 4, -10), "crop": (29, 4, -6)}
    x = np.ones((20, 20, 1), np.float32)
    for layer, (size, jump, offset) in expected.items():
        field = receptive_field(graph, layer)
        assert (field.y.size, field.y.jump, field.y.offset) == (size, jump, offset), layer
        h, w = field.output_size
        for row, col in ((0, 0), (h - 1, w - 1), (h // 2, 0)):
            support, box = gradient_support(model, layer, x, row, col), field.box(row, col)
            assert bounding_box(support) == box and not (support & ~box_mask(box, (20, 20))).any(), layer
    support = gradient_support(model, "join", x, 4, 4)  # two 3×3 squares, overlapping in one corner
    assert support.sum() == 9 + 9 - 1 and receptive_box(graph, "join", 4, 4) == (6, 6, 11, 11)
    support = gradient_support(model, "dilated", x, 0, 0)  # the dilated kernel leaves gaps inside its box
    assert receptive_box(graph, "dilated", 0, 0) == (0, 0, 15, 15) and 200 < support.sum() < 15 * 15
    assert receptive_field(graph, "crop").x.offset == -10  # cropped at the top only, not on the left


def test_a_global_branch_makes_the_field_the_whole_image(k):
    inputs = k.Input((12, 12, 1))
    x = k.layers.Conv2D(2, 3, padding="same", name="conv")(inputs)
    se = k.layers.GlobalAveragePooling2D(name="squeeze")(x)
    se = k.layers.Dense(2, name="excite")(se)
    se = k.layers.Reshape((1, 1, 2), name="shape")(se)
    y = k.layers.Multiply(name="scale")([x, se])
    y = k.layers.Conv2D(1, 1, name="after")(y)
    model = positive_model(k, lambda k: k.Model(inputs, y))
    field = receptive_field(ModelGraph(model), "after")
    assert field.whole and field.box(0, 0) == (0, 0, 12, 12) and field.output_size == (12, 12)
    assert gradient_support(model, "after", np.ones((12, 12, 1), np.float32), 0, 0).all()
    assert not receptive_field(ModelGraph(model), "conv").whole


@pytest.mark.parametrize(("name", "last", "size"), [
    ("resnet50", "conv5_block3_3_conv", 483), ("mobilenet_v2", "Conv_1", 491),
])
def test_published_fields_of_dag_models_and_depthwise_values(k, rng, name, last, size):
    """Araujo et al., "Computing Receptive Fields of Convolutional Neural Networks" (Distill, 2019), give 483
    pixels for ResNet-50 and 491 for MobileNet v2 (Add joins, ZeroPadding2D + 'valid' strides, depthwise)."""
    apps = k.applications
    model = (apps.ResNet50(weights=None, include_top=False, input_shape=(32, 32, 3)) if name == "resnet50" else
             apps.MobileNetV2(weights=None, include_top=False, input_shape=(32, 32, 3), alpha=0.35))
    state = ModelState(model, image=rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
    field = state.receptive_field(last)
    assert field.size == (size, size) and field.y.jump == 32 and field.box(0, 0) == (0, 0, 32, 32)
    depthwise = [n for n in state.layers if state.graph.node(n).class_name == "DepthwiseConv2D"][:3]
    for layer in depthwise or ["conv2_block1_2_conv"]:
        state.layer = layer
        reference = state.activation()
        b = state.pixel_breakdown(0, reference.shape[1] - 1, top_k=2)
        assert b.output == pytest.approx(float(reference[0, -1, state.filter]), rel=1e-4, abs=1e-4)


@pytest.mark.parametrize(("layer", "match"), [
    (lambda k: k.layers.UpSampling2D(name="up"), r"up \(UpSampling2D\) changes the map geometry"),
    (lambda k: k.layers.Conv2DTranspose(1, 3, padding="same", name="up"), r"up \(Conv2DTranspose\) scatters"),
])
def test_receptive_field_refuses_layers_it_does_not_compute(k, layer, match):
    model = k.Sequential([k.Input((8, 8, 1)), layer(k)])
    with pytest.raises(CnnvizError, match=match):
        receptive_field(ModelGraph(model), "up")


def test_same_padding_with_stride_needs_the_input_size(k):
    model = k.Sequential([k.Input((None, None, 1)), k.layers.Conv2D(1, 3, strides=2, padding="same", name="c")])
    graph = ModelGraph(model)
    with pytest.raises(CnnvizError, match=r"c pads 'same' with stride 2.*pass input_size"):
        receptive_field(graph, "c")
    # TensorFlow puts the odd padding pixel at the end: none before for an even size, one for an odd size
    assert receptive_field(graph, "c", (8, 8)).y.offset == 0
    assert receptive_field(graph, "c", (9, 9)).y.offset == -1


def test_state_receptive_box_follows_the_fed_size(vgg16_bsds):
    state = ModelState(vgg16_bsds, image="astronaut", max_side=96)
    assert state.receptive_field("block2_conv1").input_size == (96, 96)
    assert state.receptive_box(10, 10, "block2_conv1") == (16, 16, 26, 26)
    state.layer = "block1_conv1"
    assert state.receptive_box(0, 0) == (0, 0, 2, 2)  # 3×3, one row and column in the padding
    assert state.receptive_field(state.input_layer).size == (1, 1)


# -- channel statistics -------------------------------------------------------------------------------


def test_channel_statistics_match_per_channel_loops(rng):
    maps = np.maximum(rng.normal(size=(7, 5, 6)), 0).astype(np.float32)
    maps[..., 4] = 0.0  # a dead channel
    stats = channel_statistics(maps)
    for c in range(6):
        values = [float(v) for v in maps[..., c].ravel()]
        assert stats["max"][c] == max(values)
        assert stats["mean"][c] == pytest.approx(sum(values) / len(values), rel=1e-12)
        assert stats["zeros"][c] == sum(v == 0 for v in values) / len(values)
    assert stats["zeros"][4] == 1.0 and set(stats) == {"max", "mean", "zeros"}
    with pytest.raises(CnnvizError, match="non-finite"):
        channel_statistics(np.where(maps == maps.max(), np.nan, maps))
    with pytest.raises(CnnvizError, match=r"\(H, W, C\)"):
        channel_statistics(maps[0])


def test_order_channels_puts_the_strongest_first_ties_by_index():
    stats = {"max": np.array([1.0, 3.0, 3.0, 0.5]), "mean": np.array([0.2, 0.1, 0.4, 0.4]),
             "zeros": np.array([0.5, 0.0, 1.0, 0.0])}
    assert list(order_channels(stats, "index")) == [0, 1, 2, 3]
    assert list(order_channels(stats, "max")) == [1, 2, 0, 3]
    assert list(order_channels(stats, "mean")) == [2, 3, 0, 1]
    assert list(order_channels(stats, "zeros")) == [1, 3, 0, 2]  # fewest zeros first: dead last
    with pytest.raises(CnnvizError, match=r"channel order must be one of \('index', 'max', 'mean', 'zeros'\)"):
        order_channels(stats, "median")


def test_state_channel_statistics_are_cached_per_image_and_ordered_by_the_trait(tiny_model, rng):
    state = ModelState(tiny_model, image=rng.integers(0, 256, (16, 16, 3), dtype=np.uint8), layer="conv_b")
    stats = state.channel_statistics()
    assert state.channel_statistics() is stats  # no second computation
    np.testing.assert_array_equal(stats["max"], state.activation().max(axis=(0, 1)))
    assert state.channel_order == "index" and state.channel_ranking() == list(range(6))
    for order in CHANNEL_ORDERS[1:]:
        state.channel_order = order
        assert state.channel_ranking() == list(order_channels(stats, order))
    assert state.channel_ranking(by="index") == list(range(6))
    with pytest.raises(Exception, match="channel_order"):
        state.channel_order = "median"
    state.image = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    fresh = state.channel_statistics()
    assert fresh is not stats
    np.testing.assert_array_equal(fresh["max"], state.activation().max(axis=(0, 1)))
