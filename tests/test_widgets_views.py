"""LayerSummary and FilterEffect, driven as a user would, checked on the widgets' data (no browser)."""

from __future__ import annotations

import io
import math
import re

import numpy as np
import pytest
from PIL import Image

from cnnviz_widgets import CnnvizError, ModelState
from cnnviz_widgets.pictures import render
from cnnviz_widgets.widgets.effect import KERNEL_TILE_PX, MAP_SIDE, SIGNED_CMAP, FilterEffect
from cnnviz_widgets.widgets.summary import LayerSummary
from tests.conftest import notifier_counts


def picture(figure) -> np.ndarray:
    """The picture the browser gets: the PNG in the figure's Image mark, decoded."""
    return np.asarray(Image.open(io.BytesIO(figure.image_mark.image.value)))


@pytest.fixture(scope="module")
def vgg16_full_state(vgg16_full):
    """VGG16 with its classifier, random weights: the reference table of the original notebook."""
    return ModelState(vgg16_full)


# -- LayerSummary --------------------------------------------------------------------------------------


def test_layer_summary_shows_the_vgg16_table_and_its_totals(vgg16_full_state):
    state = vgg16_full_state
    view = LayerSummary(state)
    rows = state.summary()
    assert list(view.buttons) == [r["name"] for r in rows] and len(rows) == 23
    fc1 = view.buttons["fc1"].description.split()
    assert fc1 == ["14", "fc1", "Dense", "4096", "102,764,544"]  # ordinal among counted rows
    assert "224 × 224 × 64" in view.buttons["block1_conv1"].description  # a fixed-size model: its own sizes
    assert view.buttons["block1_conv2"].description.split()[0] == "2"
    assert view.buttons["block1_pool"].description.split()[0] == "block1_pool"  # not counted: no number
    marks = [b.description.split()[0] for b in view.buttons.values() if b.description.split()[0].isdigit()]
    assert marks == [str(i) for i in range(1, 17)]
    trainable = sum(math.prod(w.shape) for w in state.model.trainable_weights)
    assert trainable == state.model.count_params() == 138_357_544
    totals = view.totals.value
    assert "Total params: 138,357,544" in totals and "trainable: 138,357,544" in totals
    assert "16 rows have parameters" in totals and "That is the 16 in VGG16: 13 Conv2D + 3 Dense = 16" in totals
    assert "random" in view.header.value and "VGG16" in view.header.value  # which weights are loaded
    # the column header lines up with the rows: same width, "Param #" right-aligned over the counts
    head = view.column_head.value.split(">", 1)[1].rsplit("<", 1)[0]
    assert len(head) == len(view.buttons["fc1"].description) and head.endswith("Param #")
    view.close()


def test_layer_summary_rows_select_layers_and_follow_the_state(vgg16_full_state):
    state = vgg16_full_state
    state.layer = "block1_conv1"
    before = notifier_counts(state)
    view = LayerSummary(state)
    assert view.current == "block1_conv1" and view.buttons["block1_conv1"].button_style == "info"
    view.click("block2_conv1")
    assert state.layer == "block2_conv1" and view.current == "block2_conv1"
    assert view.buttons["block2_conv1"].button_style == "info" and view.buttons["block1_conv1"].button_style == ""
    # rows that are not maps cannot be clicked and say why on hover
    for name in ("flatten", "fc1", "predictions"):
        assert view.buttons[name].disabled and "not visualisable" in view.buttons[name].tooltip
    view.click("fc1")
    assert state.layer == "block2_conv1"
    assert not view.buttons["block1_pool"].disabled and not view.buttons[state.input_layer].disabled
    # a layer change from code restyles only the old and the new row
    changes = []
    for button in view.buttons.values():
        button.observe(changes.append, names="button_style")
    state.layer = "block5_pool"
    names = {id(button): name for name, button in view.buttons.items()}
    assert [(names[id(c["owner"])], c["new"]) for c in changes] == [
        ("block2_conv1", ""), ("block5_pool", "info")]
    view.close()
    assert notifier_counts(state) == before
    state.layer = "block1_conv1"  # no error, nothing restyled after close
    assert view.current == "block5_pool"
    view.close()  # a second close is harmless


def test_layer_summary_shows_the_sizes_for_the_image_fed(vgg16_bsds):
    # A model that takes any size: Keras says (None, None, None, 512); the table shows this image's sizes.
    state = ModelState(vgg16_bsds, image="astronaut", max_side=64)
    view = LayerSummary(state)
    head = view.column_head.value
    assert "Output (H × W × channels)" in head and "any size" in view.header.value
    for name in state.layers:  # each size against the map the network really computes
        height, width, channels = state.activation(name).shape
        assert f"  {height} × {width} × {channels}  " in view.buttons[name].description, name
    assert "None" not in "".join(b.description for b in view.buttons.values())
    state.set_image(np.zeros((40, 64, 3), np.uint8))  # another size: the rows follow
    assert state.activation("block3_conv1").shape[:2] == (10, 16)
    assert "  10 × 16 × 256  " in view.buttons["block3_conv1"].description
    assert "this 64×40 image" in view.header.value
    assert len(view.column_head.value) == len(head)  # same header text, nothing else redrawn
    # the parameter counts stay exact
    assert view.buttons["block3_conv1"].description.split()[-1] == f"{3 * 3 * 128 * 256 + 256:,}"
    view.close()


def test_layer_summary_says_16_only_when_it_fits(vgg16_bsds, tiny_model):
    view = LayerSummary(ModelState(vgg16_bsds, max_side=64))  # no classifier: 13 rows count
    assert "13 rows have parameters" in view.totals.value and "That is the" not in view.totals.value
    assert "BSDS500" in view.header.value
    view.close()
    view = LayerSummary(tiny_model)  # a model (not a state) is accepted
    assert view.state.model is tiny_model
    assert "Total params: " + f"{tiny_model.count_params():,}" in view.totals.value
    assert "3 rows have parameters" in view.totals.value  # conv_a, conv_b, logits
    view.close()


# -- FilterEffect --------------------------------------------------------------------------------------


def test_filter_effect_pictures_are_the_rendered_breakdown(vgg_state):
    state = vgg_state
    view = FilterEffect(state)
    state.filter = 34
    b = view.breakdown
    assert (b.layer, b.filter, len(b.channels)) == ("block1_conv1", 34, 3)
    # the arrays themselves, independently: the fed image's channels, the kernel slices, the layer's output
    np.testing.assert_array_equal(b.previous_maps, state.model_input.array[..., list(b.channels)])
    kernel, _ = state.weights()
    np.testing.assert_array_equal(b.kernels, kernel[:, :, list(b.channels), 34])
    reference = state.activation()[..., 34]
    np.testing.assert_allclose(b.output, reference, rtol=1e-4, atol=1e-4 * float(np.abs(reference).max()))

    expected, _ = render.render_mosaic(b.previous_maps, "per_map", "grey", max_side=MAP_SIDE, cols=3)
    np.testing.assert_array_equal(view.inputs_figure.mosaic.image, expected.image)
    np.testing.assert_array_equal(picture(view.inputs_figure), expected.image)
    factor = math.ceil(KERNEL_TILE_PX / 3)
    expected, ranges = render.render_mosaic(render.scale_up(b.kernels, factor), "symmetric", SIGNED_CMAP,
                                            cols=3, pad=2)
    np.testing.assert_array_equal(picture(view.kernels_figure), expected.image)
    assert ranges[0, 1] == pytest.approx(float(np.abs(b.kernels).max()))
    assert view.kernels_figure.colorbar_values == (SIGNED_CMAP, ranges[0, 0], ranges[0, 1])
    expected, _ = render.render_mosaic(b.partials, "symmetric", SIGNED_CMAP, max_side=MAP_SIDE, cols=3)
    np.testing.assert_array_equal(picture(view.partials_figure), expected.image)
    # all 3 input channels are shown, so row 4 is the total and the output only
    expected, _ = render.render_mosaic(np.stack([b.pre_activation, b.output], -1), "per_map", "grey",
                                       max_side=MAP_SIDE, cols=2)
    np.testing.assert_array_equal(picture(view.result_figure), expected.image)  # one row, no empty slot
    # every tile of row 4 is captioned underneath, left to right
    assert view.result_figure.caption_texts == ["sum of all channels + bias", "after relu: the layer&#x27;s output"]

    # words: caffe preprocessing feeds B, G, R minus the ImageNet mean, and the labels say so
    assert "B, G, R (in that order) minus the ImageNet mean" in view.heading.value
    labels = dict(zip(b.channels, b.channel_labels, strict=True))
    assert labels == {0: "B − 103.9", 1: "G − 116.8", 2: "R − 123.7"}
    assert "the fed image's channels" in view.inputs_figure.title.value.replace("&#x27;", "'")
    assert view.inputs_figure.caption_texts == [f"channel {c}: {labels[c]}" for c in b.channels]
    assert "each map scaled to its own min..max" in view.inputs_figure.title.value
    # the 3×3 weights on hover, and written under each kernel tile: every number of the row with the same
    # decimals (3 significant digits for the largest)
    c0, largest = b.channels[0], float(np.abs(b.kernels).max())
    decimals = 2 - math.floor(math.log10(largest))
    values = " / ".join(" ".join(f"{v:.{decimals}f}" for v in row) for row in kernel[:, :, c0, 34])
    assert view.kernels_figure.tooltips[0] == f"channel {c0} kernel: {values}"
    for i, caption in enumerate(view.kernels_figure.caption_texts):
        cells = re.findall(r"<td>([^<]*)</td>", caption)
        assert caption.startswith(f"channel {b.channels[i]}<table") and len(cells) == 9
        assert cells == [f"{v:.{decimals}f}" for v in b.kernels[:, :, i].ravel()]
    assert view.result_figure.tooltips[1].startswith("after relu: the layer's output")
    view.close()


def test_filter_effect_channel_chooser(vgg_state):
    state = vgg_state
    state.layer, state.filter = "block1_conv2", 1
    view = FilterEffect(state, top_k=3)
    b = view.breakdown
    assert b.channels == b.ranking[:3] and len(view.inputs_figure.mosaic.indices) == 3
    assert len(view.result_figure.mosaic.indices) == 3  # the 61 channels not shown get a tile of their own
    assert view.result_figure.tooltips[0].startswith("the other 61 channels together")
    np.testing.assert_allclose(view.result_maps(b)[0][..., 0], b.rest)
    assert "the 3 that contribute most, by mean |partial sum| (ranks 1, 2, 3)" in view.heading.value
    assert "The other 61 are added up in row 4" in view.heading.value and "orange outline" in view.heading.value
    assert view.partials_figure.caption_texts[0].startswith(f"channel {b.channels[0]} · rank 1 · mean |·| ")

    view.top_k.value = 5
    assert view.breakdown.channels == b.ranking[:5] and len(view.kernels_figure.mosaic.indices) == 5
    view.channels.value = "0, 5, 17"  # typing channels switches to picking them
    assert view.mode.value == "pick" and view.breakdown.channels == (0, 5, 17) and view.top_k.disabled
    assert "the channels you picked" in view.heading.value
    assert view.inputs_figure.tooltips[1].startswith("channel 5 · block1_conv1 channel 5")
    np.testing.assert_array_equal(view.breakdown.previous_maps, state.activation("block1_conv1")[..., [0, 5, 17]])
    view.channels.value = "0, 99"
    assert "'99' is out of range" in view.message.value.replace("&#x27;", "'")
    assert view.breakdown.channels == b.ranking[:5]  # falls back to the top contributors, and says so
    assert "the 5 that contribute most" in view.heading.value and "you picked" not in view.heading.value
    view.mode.value = "top"
    assert view.message.value == "" and view.breakdown.channels == b.ranking[:5]
    view.close()
    with pytest.raises(CnnvizError, match="top_k must be an int in 1..16"):
        FilterEffect(state, top_k=0)


def test_filter_effect_redraws_once_per_change_and_explains_layers_without_filters(vgg_state):
    state = vgg_state
    view = FilterEffect(state)
    passes = state.forward_passes
    start = view.redraws
    state.filter = 5
    state.filter = 5  # same value: nothing to do
    assert view.redraws == start + 1
    state.channel = 2  # only moves the outline
    assert view.redraws == start + 1 and view.inputs_figure.highlighted == view.breakdown.channels.index(2)
    state.layer = "block2_conv1"  # the state clamps the filter in the same change: one redraw
    assert view.redraws == start + 2 and view.breakdown.previous_layer == "block1_pool"
    state.colormap = "viridis"
    assert view.redraws == start + 3
    state.layer = "block1_pool"
    assert view.figures not in view.children and view.breakdown is None
    assert "block1_pool is a pooling layer: it has no filters" in view.message.value
    state.layer = state.input_layer
    assert "is the model input" in view.message.value
    state.layer = "block1_conv1"
    assert view.figures in view.children and view.breakdown.layer == "block1_conv1"
    assert state.forward_passes == passes  # scrubbing reuses the cached activations
    view.close()


def test_filter_effect_tile_click_picks_the_input_channel_and_close_releases_observers(vgg_state):
    state = vgg_state
    state.layer, state.filter = "block1_conv2", 1
    before = notifier_counts(state)
    view = FilterEffect(state)
    channels = view.breakdown.channels
    view.kernels_figure.click_tile(0, 2)
    assert state.channel == channels[2] and view.partials_figure.highlighted == 2
    view.close()
    assert notifier_counts(state) == before
    drawn = view.redraws
    state.filter = 9  # the closed view no longer follows
    assert view.redraws == drawn and view.breakdown.filter == 1
    view.close()


def test_filter_effect_on_a_tiny_model_built_from_the_model(tiny_model):
    view = FilterEffect(tiny_model, top_k=2)
    state = view.state
    assert view.breakdown.layer == "conv_a" and len(view.breakdown.channels) == 2
    state.layer = "conv_b"
    b = view.breakdown
    assert b.previous_layer == "pool_a" and b.channel_labels[0] == f"pool_a channel {b.channels[0]}"
    np.testing.assert_allclose(b.output, state.activation()[..., state.filter], rtol=1e-5,
                               atol=1e-5 * float(np.abs(state.activation()).max()))
    drawn = view.redraws
    state.set_image(np.full((16, 16, 3), 200, np.uint8))  # a new image: a new breakdown
    assert view.redraws == drawn + 1 and view.breakdown is not b
    np.testing.assert_array_equal(view.breakdown.previous_maps,
                                  state.activation("pool_a")[..., list(view.breakdown.channels)])
    view.close()


@pytest.mark.slow
def test_layer_summary_stays_cheap_for_a_resnet_sized_table(k):
    import time

    state = ModelState(k.applications.ResNet50(weights=None, include_top=False, input_shape=(32, 32, 3)),
                       max_side=32)
    start = time.perf_counter()
    view = LayerSummary(state)
    built = time.perf_counter() - start
    assert len(view.buttons) == len(state.summary()) > 170
    assert built < 1.0, f"building a {len(view.buttons)}-row table took {built:.2f} s"
    changes = []
    for button in view.buttons.values():
        button.observe(changes.append, names="button_style")
    state.layer = "conv3_block1_1_conv"
    assert len(changes) == 2  # the old and the new current row, nothing else
    assert view.buttons["conv1_bn"].disabled and "BatchNormalization" in view.buttons["conv1_bn"].tooltip
    totals = state.parameter_totals()
    trainable = sum(math.prod(w.shape) for w in state.model.trainable_weights)
    assert (totals["total"], totals["trainable"]) == (state.model.count_params(), trainable)
    assert f"non-trainable: {state.model.count_params() - trainable:,}" in view.totals.value  # BN statistics
    assert "That is the" not in view.totals.value  # 106 rows with parameters: not the 50 of ResNet50
    view.close()
