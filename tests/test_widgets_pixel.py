"""ConvolutionAtPixel, ChannelStats and the sorted ActivationGrid, driven as a user would, checked on the marks."""

from __future__ import annotations

import html
import io

import ipywidgets
import numpy as np
import pytest
from PIL import Image

from cnnviz_widgets import CnnvizError, ModelState
from cnnviz_widgets.pictures import render
from cnnviz_widgets.widgets import ActivationGrid
from cnnviz_widgets.widgets.pixel import MAP_SIDE, PAD_RGB, SIGNED_CMAP, TILE_PX, ConvolutionAtPixel, arithmetic_text
from cnnviz_widgets.widgets.stats import ChannelStats


def picture(figure) -> np.ndarray:
    """The picture the browser gets: the PNG or JPEG in the Image mark, decoded."""
    return np.asarray(Image.open(io.BytesIO(figure.image_mark.image.value)))


def open_widgets() -> set:
    """Model ids of the widgets whose comm is open (ipywidgets keeps them registered until close())."""
    return set(ipywidgets.widgets.widget._instances)


def observers(state) -> dict:
    return {(name, kind): len(handlers) for name, kinds in state._trait_notifiers.items()
            for kind, handlers in kinds.items() if handlers}


def click_map(view: ConvolutionAtPixel, row: int, col: int) -> None:
    """What the browser sends for a click on the middle of map pixel (row, col): data coordinates in [0, 1]."""
    height, width = view.state.activation().shape[:2]
    content = {"event": "element_click", "data": {"click_x": (col + 0.5) / width, "click_y": 1 - (row + 0.5) / height}}
    view.map_figure.image_mark._handle_custom_msg(content, [])


@pytest.fixture
def state(tiny_model, rng):
    return ModelState(tiny_model, image=rng.integers(0, 256, (16, 16, 3), dtype=np.uint8))


# -- ConvolutionAtPixel --------------------------------------------------------------------------------


def test_pixel_view_starts_on_the_strongest_value_and_a_click_picks_a_pixel(state):
    before, widgets_before = observers(state), open_widgets()
    view = ConvolutionAtPixel(state)
    maps = state.activation()
    assert (view.row, view.col) == np.unravel_index(int(np.argmax(maps[..., 0])), maps.shape[:2])
    expected, _ = render.render_mosaic(maps, "per_map", "grey", max_side=MAP_SIDE, indices=[0])
    np.testing.assert_array_equal(picture(view.map_figure), expected.image)

    click_map(view, 0, 15)  # the top-right corner
    assert (view.row, view.col) == (0, 15)
    b = view.breakdown
    assert (b.row, b.col, b.filter, len(b.channels)) == (0, 15, 0, 3)
    assert b.output == pytest.approx(float(maps[0, 15, 0]), rel=1e-5, abs=1e-5)
    # the orange square sits on that pixel (data coordinates: x right, y up, the map spans [0, 1])
    assert min(view.pixel_mark.x) < 15.5 / 16 < max(view.pixel_mark.x)
    assert min(view.pixel_mark.y) < 1 - 0.5 / 16 < max(view.pixel_mark.y) and view.pixel_mark.visible

    # the receptive field on the input picture: 3×3 around (0, 15), clipped by the border to 2×2
    assert view.box == state.receptive_box(0, 15) == (0, 14, 2, 16)
    np.testing.assert_allclose(view.field_mark.x, [14 / 16, 1, 1, 14 / 16, 14 / 16])
    np.testing.assert_allclose(view.field_mark.y, [1, 1, 1 - 2 / 16, 1 - 2 / 16, 1])
    assert "3×3 pixels (2×2 inside the image)" in view.field_figure.title.value
    assert "rows 0–1, columns 14–15 of the input" in view.heading.value
    # what the window reads is said in words: the fed input, not the input layer's name
    assert "window of the fed input in every channel" in view.heading.value
    assert f"window of {state.input_layer}" not in view.patches_figure.title.value
    assert "the fed input channel" in view.arithmetic.value
    sent = view.map_figure.image_mark.image
    click_map(view, 1, 14)  # another pixel: the outlines move, the map picture is not sent again
    assert view.map_figure.image_mark.image is sent and view.box == (0, 13, 3, 16)
    click_map(view, 0, 15)

    # row 1: the window of the fed input; the taps in the zero padding are grey, the others coloured
    unit, _ = render.normalize(b.patches, "symmetric")
    tiles = render.apply_colormap(unit, SIGNED_CMAP)
    tiles[b.padded] = PAD_RGB
    factor = -(-TILE_PX // 3)
    expected = render.tile_maps(render.scale_up(tiles, factor), indices=list(b.channels), cols=3, pad=2)
    shown = picture(view.patches_figure)
    np.testing.assert_array_equal(shown, expected.image)
    assert b.padded[0].all() and b.padded[:, 2].all() and not b.padded[1:, :2].any()
    assert tuple(shown[0, 0]) == PAD_RGB and tuple(shown[factor, 0]) != PAD_RGB  # tap (0, 0) pad, (1, 0) not
    # row 3: input × weight, tap by tap; the tile's taps add up to the channel's partial sum
    for i, c in enumerate(b.channels):
        assert float((b.patches[:, :, i].astype(np.float64) * b.kernels[:, :, i]).sum()) == pytest.approx(
            b.partials[c], rel=1e-5, abs=1e-6)
    assert view.patches_figure.tooltips[0].startswith(f"channel {b.channels[0]} (")
    assert "pad pad pad" in view.patches_figure.tooltips[0]

    # the sum written out, next to the layer's own value
    text = arithmetic_text(b)
    assert text.startswith("Σ over 3 channels = ") and "→ relu → " in text and "other" not in text
    assert html.escape(text) in view.arithmetic.value
    assert "the layer's own output there" in view.arithmetic.value

    redraws = view.redraws
    click_map(view, 0, 15)  # the same pixel again: nothing to do
    assert view.redraws == redraws
    view.close()
    view.close()  # harmless
    assert observers(state) == before
    assert open_widgets() == widgets_before  # every figure, mark, scale, layout and style closed


def test_pixel_view_follows_the_state_and_explains_what_it_cannot_take_apart(state):
    view = ConvolutionAtPixel(state)
    view.select(10, 6)
    state.layer = "conv_b"  # 16×16 -> 8×8: the pick stays on the same part of the image, unless that is a zero
    values = state.activation()[..., 0]
    kept = (5, 3) if values[5, 3] != 0 or values.max() <= 0 else np.unravel_index(int(values.argmax()), values.shape)
    assert (view.row, view.col) == tuple(kept) and view.breakdown.previous_layer == "pool_a"
    assert view.breakdown.output == pytest.approx(float(values[kept]), rel=1e-5, abs=1e-5)
    state.filter = 4
    values = state.activation()[..., 4]
    if values[kept] == 0 and values.max() > 0:  # a zero explains little: the view moves to the strongest value
        kept = np.unravel_index(int(values.argmax()), values.shape)
    assert view.breakdown.filter == 4 and (view.row, view.col) == tuple(kept)
    view.select(99, -3)  # clamped to the map
    assert (view.row, view.col) == (7, 0)

    c = view.breakdown.channels[1]
    state.channel = c
    assert view.kernels_figure.highlighted == c
    view.products_figure.click_tile(0, 2)
    assert state.channel == view.breakdown.channels[2]

    state.layer = "pool_a"
    assert view.breakdown is None and view.details not in view.children
    assert "does not slide a kernel" in view.message.value
    assert view.box == state.receptive_box(view.row, view.col)  # the field is still shown: pooling has one
    assert state.receptive_field().size == (4, 4)
    state.layer = "conv_a"
    assert view.breakdown is not None and view.message.value == ""

    view.active = False  # hidden: no drawing until shown again
    redraws = view.redraws
    state.filter = 2
    assert view.redraws == redraws
    view.active = True
    assert view.redraws == redraws + 1 and view.breakdown.filter == 2
    view.strongest.click()
    maps = state.activation()[..., 2]
    assert maps[view.row, view.col] == maps.max()
    with pytest.raises(CnnvizError, match="top_k must be an int in 1..16"):
        ConvolutionAtPixel(state, top_k=0)
    view.close()


def test_pixel_view_explains_a_64_channel_filter_on_vgg16(vgg_state):
    state = vgg_state
    state.layer, state.filter = "block1_conv2", 1
    view = ConvolutionAtPixel(state)
    view.select(0, 0)
    b = view.breakdown
    assert len(b.channels) == 8 and b.n_channels == 64
    assert b.output == pytest.approx(float(state.activation()[0, 0, 1]), abs=1e-4 * max(1, abs(b.total)))
    assert "(top 8: " in arithmetic_text(b) and ", other 56: " in arithmetic_text(b)
    assert "the other 56 channels" in view.arithmetic.value and "Σ all 64" in view.arithmetic.value
    assert "the 8 input channels that move it most" in view.heading.value
    assert view.box == (0, 0, 3, 3) and "5×5 pixels (3×3 inside the image)" in view.field_figure.title.value
    view.top_k.value = 3
    assert len(view.breakdown.channels) == 3
    assert len(view.patches_figure.mosaic.indices) == 3
    for figure in (view.patches_figure, view.kernels_figure, view.products_figure):  # each tile's channel over it
        assert figure.caption_texts == [f"channel {c}" for c in view.breakdown.channels]

    # a 96×96 map: a zoomed crop of 24×24 values around the pick, in the map's own colours, takes clicks too
    maps = state.activation()[..., 1]
    assert view.zoom_figure in view.top.children and view._zoom_origin == (0, 0)
    lo, hi = view._map_range
    expected, _ = render.render_mosaic(maps[:24, :24, None], cmap="grey", pad=0, value_range=(lo, hi))
    np.testing.assert_array_equal(picture(view.zoom_figure), expected.image)
    assert (lo, hi) == pytest.approx((float(maps.min()), float(maps.max())), rel=1e-5)  # per map, unpooled
    view.select(50, 60)  # far from the crop: it centres on the pick
    assert view._zoom_origin == (38, 48) and "rows 38–61, columns 48–71" in view.zoom_figure.title.value
    content = {"event": "element_click", "data": {"click_x": (3 + 0.5) / 24, "click_y": 1 - (20 + 0.5) / 24}}
    view.zoom_figure.image_mark._handle_custom_msg(content, [])  # the value 3 right, 20 down in the crop
    assert (view.row, view.col) == (58, 51) and view._zoom_origin == (38, 48)  # inside: the crop stays put
    assert list(view.zoom_mark.x) == pytest.approx([3 / 24, 4 / 24, 4 / 24, 3 / 24, 3 / 24])

    state.layer = "block1_conv1"  # the fed colour channels: their captions say which colour
    captions = view.kernels_figure.caption_texts
    assert all(c.startswith("channel ") for c in captions) and any("(B − 103.9)" in c for c in captions)
    state.layer = "block5_conv3"  # 6×6 maps at 96 px: the field (196 px) is bigger than the picture
    field = state.receptive_field()
    assert field.size == (196, 196) and view.box == field.box(view.row, view.col)
    assert view.zoom_figure not in view.top.children  # small enough to click on: no zoom
    view.close()


def test_pixel_view_draws_a_dead_filter_and_follows_a_new_image_size(k, rng):
    model = k.Sequential([k.Input((None, None, 3)), k.layers.Conv2D(2, 3, padding="same", activation="relu",
                                                                     name="conv")])
    kernel, _ = model.get_layer("conv").get_weights()
    model.get_layer("conv").set_weights([kernel, np.array([-1e4, 0], np.float32)])  # filter 0 never fires
    state = ModelState(model, image=rng.integers(0, 256, (24, 24, 3), dtype=np.uint8), max_side=24)
    view = ConvolutionAtPixel(state)
    assert (view.row, view.col) == (0, 0) and view.redraws == 1  # all zeros: the first value is the strongest
    assert view.breakdown.output == 0.0 and view.breakdown.pre_activation < -9000
    view.select(20, 10)
    state.image = rng.integers(0, 256, (12, 24, 3), dtype=np.uint8)  # fed 12×24: the map is half as high
    assert state.activation().shape[:2] == (12, 24) and (view.row, view.col) == (10, 10)
    assert view.breakdown.row == 10 and view.box == (9, 9, 12, 12)
    view.select(3, 4)
    state.filter = 1  # a live filter: where its value at the pick is 0, the view moves to its strongest value
    values = state.activation()[..., 1]
    if values[3, 4] == 0 and values.max() > 0:  # (random kernel: it may be dead too, then the pick stays)
        assert (view.row, view.col) == np.unravel_index(int(np.argmax(values)), values.shape)
    else:
        assert (view.row, view.col) == (3, 4)
    view.close()


# -- ChannelStats --------------------------------------------------------------------------------------


def test_channel_stats_bars_sort_select_and_share_the_order(k, rng):
    k.utils.set_random_seed(3)
    model = k.Sequential([k.Input((12, 12, 3)), k.layers.Conv2D(5, 3, activation="relu", name="conv")])
    kernel, _ = model.get_layer("conv").get_weights()
    model.get_layer("conv").set_weights([kernel, np.array([-1e4, 0, 0.5, 0, 0], np.float32)])  # channel 0: dead
    state = ModelState(model, image=rng.integers(0, 256, (12, 12, 3), dtype=np.uint8))
    before, widgets_before = observers(state), open_widgets()
    view = ChannelStats(state)
    stats = state.channel_statistics()
    assert list(view.bars.x) == ["0", "1", "2", "3", "4"] and list(view.x_scale.domain) == list(view.bars.x)
    np.testing.assert_array_equal(view.bars.y, stats["max"])
    dead = int((stats["zeros"] == 1.0).sum())  # channel 0 for sure; others may be, for this random image
    assert stats["zeros"][0] == 1.0 and f"{dead} of 5 channels are dead" in view.summary.value
    assert list(view.bars.selected) == [0]  # the current filter
    assert view.x_axis.label == "channel" and not view.x_axis.tick_labels  # channel numbers, in order
    assert "Activations tab" in view.order_note.value  # the menu says what else it sorts, in sight

    view.order_menu.value = "mean"  # the sort control is the state's channel order
    assert state.channel_order == "mean" and view.statistic == "mean"
    order = [int(c) for c in np.argsort(-stats["mean"], kind="stable")]
    assert view.order == order and list(view.bars.x) == [str(c) for c in order]
    # sorted, the axis counts ranks (its ticks are looked up by the bar's channel), the hover names the channel
    assert view.x_axis.tick_labels == {str(c): str(rank) for rank, c in enumerate(order, start=1)}
    assert view.x_axis.label.startswith("rank by mean") and "channel" in view.bars.tooltip.labels
    np.testing.assert_array_equal(view.bars.y, stats["mean"][order])
    assert list(view.bars.selected) == [order.index(0)]

    view.bars.selected = [1]  # a click on the second bar (bqplot's own selection, synced back)
    assert state.filter == order[1]
    state.filter = order[3]
    assert list(view.bars.selected) == [3]

    view.statistic_buttons.value = "zeros"
    np.testing.assert_array_equal(view.bars.y, stats["zeros"][order])
    assert view.y_scale.max == 1.0 and state.channel_order == "mean"
    state.channel_order = "zeros"
    assert view.order_menu.value == "zeros" and 0 in view.order[-dead:]  # the dead channels last
    with pytest.raises(CnnvizError, match="statistic must be one of"):
        ChannelStats(state, statistic="median")
    view.close()
    view.close()
    assert observers(state) == before and open_widgets() == widgets_before
    state.channel_order = "max"  # no error after close, the menu is unlinked
    assert view.order_menu.value == "zeros"


# -- ActivationGrid sorted by state.channel_order -----------------------------------------------------


def test_activation_grid_sorted_by_max_keeps_true_channel_indices(vgg_state):
    state = vgg_state
    state.layer = "block3_conv1"  # 256 channels: 4 pages of 64
    grid = ActivationGrid(state)
    try:
        state.filter = state.channel_ranking(by="max")[200]
        state.channel_order = "max"  # the strongest first: page 1, and the selection moves onto it
        ranking = state.channel_ranking()
        assert state.filter == ranking[0] and grid.page == 0
        maxima = state.activation().max(axis=(0, 1))
        assert ranking == sorted(range(256), key=lambda c: (-maxima[c], c))
        assert grid.figure.mosaic.indices == tuple(ranking[:64])
        expected, _ = render.render_mosaic(state.activation(), "per_map", "grey", max_side=grid.max_tile_px,
                                           indices=ranking[:64])
        np.testing.assert_array_equal(picture(grid.figure), expected.image)
        assert grid.figure.tooltips[0].startswith(f"channel {ranking[0]}: ")
        assert "by max (strongest first), ranks 1–64" in grid.figure.title.value

        grid.figure.click_tile(0, 1)  # the second strongest channel
        assert state.filter == ranking[1] and grid.figure.highlighted == ranking[1]
        state.filter = ranking[100]  # its page follows the sorted position
        assert grid.page == 1 and grid.figure.mosaic.indices == tuple(ranking[64:128])
        assert grid.page_label.value == "channels ranked 65–128 of 256"
        grid.page = 2  # the page turns; the selection stays (paging never changes what other views show)
        assert state.filter == ranking[100] and grid.figure.mosaic.indices == tuple(ranking[128:192])
        assert grid.page_label.value == "channels ranked 129–192 of 256 · channel " f"{ranking[100]} is on page 2"

        state.channel_order = "index"  # back to index order: the selection stays, its page shows
        page = state.filter // 64
        assert state.filter == ranking[100] and grid.page == page
        assert grid.figure.mosaic.indices == tuple(range(64 * page, 64 * page + 64))
    finally:
        state.channel_order = "index"
        grid.close()
