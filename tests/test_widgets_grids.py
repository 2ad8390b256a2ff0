"""MosaicFigure, WeightGrid and ActivationGrid, driven as a user would, checked on the marks' data (no browser)."""

from __future__ import annotations

import io

import ipywidgets
import numpy as np
import pytest
from PIL import Image

from cnnviz_widgets import CnnvizError, ModelState
from cnnviz_widgets.pictures import render
from cnnviz_widgets.widgets import ActivationGrid, MosaicFigure, WeightGrid
from cnnviz_widgets.widgets.parts import format_number as short  # the views' number format
from tests.conftest import notifier_counts


def picture(figure: MosaicFigure) -> np.ndarray:
    """The picture the browser gets: the PNG in the Image mark, decoded."""
    return np.asarray(Image.open(io.BytesIO(figure.image_mark.image.value)))


@pytest.fixture
def state(tiny_model, rng):
    return ModelState(tiny_model, image=rng.integers(0, 256, (16, 16, 3), dtype=np.uint8))


# -- MosaicFigure -------------------------------------------------------------------------------------

def test_mosaic_figure_ships_the_picture_labels_and_clicks(rng):
    figure = MosaicFigure(css_class="my-grid")
    maps = rng.normal(size=(6, 4, 5)).astype(np.float32)
    mosaic = render.tile_maps(render.apply_colormap(render.normalize(maps, "symmetric")[0], "coolwarm"),
                              indices=[20, 21, 22, 23, 24])
    first_image = figure.image_mark.image
    figure.show(mosaic, title="five <maps>", tooltips=[f"map {i}" for i in range(20, 25)],
                colorbar=("coolwarm", -2.5, 2.5))
    assert first_image.comm is None  # the placeholder picture was closed, a new one sent
    np.testing.assert_array_equal(picture(figure), mosaic.image)
    assert figure.title.value == "<b>five &lt;maps&gt;</b>"
    assert (mosaic.rows, mosaic.cols) == (2, 3)
    assert list(figure.image_mark.x) == [0, 3] and list(figure.image_mark.y) == [0, 2]
    # hover markers: one per tile, at the cell centres, row 0 on top
    assert figure.tooltips == [f"map {i}" for i in range(20, 25)]
    np.testing.assert_array_equal(figure._hover_marks.x, [0.5, 1.5, 2.5, 0.5, 1.5])
    np.testing.assert_array_equal(figure._hover_marks.y, [1.5, 1.5, 1.5, 0.5, 0.5])
    # colour bar: the LUT strip, ticks at the ends and at 0
    assert figure.colorbar_values == ("coolwarm", -2.5, 2.5)
    assert list(figure._bar_axis.tick_values) == [-2.5, 0.0, 2.5]
    strip = np.asarray(Image.open(io.BytesIO(figure._bar_mark.image.value)))
    np.testing.assert_array_equal(strip[0], render.colormap_lut("coolwarm"))

    clicked = []
    figure.on_tile_click(clicked.append)
    figure.click_tile(1, 1)  # second row, second column
    figure.click_tile(1, 2)  # empty cell: nothing
    figure._on_image_click(figure.image_mark, {"event": "element_click", "data": {"click_x": 2.9, "click_y": 1.2}})
    figure._on_marker_click(figure._hover_marks, {"event": "element_click", "data": {"index": 3}})
    assert clicked == [24, 22, 23]


def test_mosaic_figure_skips_identical_pictures_and_moves_the_outline_alone(rng):
    figure = MosaicFigure()
    mosaic = render.tile_maps(rng.integers(0, 256, (4, 4, 4), dtype=np.uint8), pad=2)
    figure.show(mosaic, title="t", highlight=3)
    shown = figure.image_mark.image
    figure.show(mosaic, title="t", highlight=0)
    assert figure.redraws == 1 and figure.image_mark.image is shown  # same picture: not sent again
    assert figure.highlighted == 0
    # the outline surrounds tile 0 (top-left cell) in data coordinates
    assert max(figure._outline.x) == pytest.approx(5 * 2 / 10) and min(figure._outline.x) == 0
    assert max(figure._outline.y) == 2 and min(figure._outline.y) == pytest.approx(2 - 5 * 2 / 10)
    figure.highlight(7)  # not in the mosaic: no outline
    assert figure.highlighted is None
    figure.show(mosaic, title="other title")
    assert figure.redraws == 2 and figure.image_mark.pixelated  # enlarged on screen: crisp cells
    figure.show(render.tile_maps(np.zeros((300, 300, 4), np.uint8)), title="big")
    assert not figure.image_mark.pixelated  # 601 px shrunk to 416: smoothed
    # the container decides the width; the height follows the picture's aspect (square here), in one CSS rule
    assert figure.figure.layout.width == "100%" and figure.figure.layout.height is None
    assert figure.aspect_ratio == pytest.approx(1.0) == figure.figure.max_aspect_ratio
    assert "aspect-ratio: 1.00000" in figure._size_style.value
    figure.show(render.tile_maps(np.zeros((10, 40, 1), np.uint8), pad=0), title="wide")
    assert figure.aspect_ratio == pytest.approx(420 / (round(416 * 10 / 40) + 4))
    assert f"aspect-ratio: {figure.aspect_ratio:.5f}" in figure._size_style.value
    assert figure.figure.min_aspect_ratio == figure.figure.max_aspect_ratio == figure.aspect_ratio
    with pytest.raises(CnnvizError, match="one label per tile"):
        figure.show(mosaic, title="t", tooltips=["only one"])
    with pytest.raises(CnnvizError, match="'png' or 'jpeg'"):
        figure.show(mosaic, title="t", fmt="gif")


def test_mosaic_figure_encodes_only_pictures_whose_pixels_changed(rng, monkeypatch):
    figure = MosaicFigure()
    encoded = []
    real = render.encode_png
    monkeypatch.setattr(render, "encode_png", lambda picture, **kw: encoded.append(1) or real(picture, **kw))
    pixels = rng.integers(0, 256, (4, 4, 4), dtype=np.uint8)
    figure.show(render.tile_maps(pixels, pad=2), title="t")
    figure.show(render.tile_maps(pixels.copy(), pad=2), title="another title")  # same pixels, a new array
    assert len(encoded) == 1 and figure.redraws == 2 and figure.title.value == "<b>another title</b>"
    changed = pixels.copy()
    changed[0, 0, 0] ^= 1
    figure.show(render.tile_maps(changed, pad=2), title="t")
    assert len(encoded) == 2
    np.testing.assert_array_equal(picture(figure), render.tile_maps(changed, pad=2).image)
    figure.close()


def test_mosaic_figure_per_map_colorbar_names_its_ends_and_close_closes_everything(rng):
    figure = MosaicFigure()
    figure.show(render.tile_maps(rng.integers(0, 256, (4, 4, 2), dtype=np.uint8)), title="t",
                colorbar=("viridis", 0.0, 1.0), colorbar_ends=("tile min", "tile max"), colorbar_label="own range")
    assert figure._bar_axis.tick_labels == {"0": "tile min", "1": "tile max"}
    assert figure._bar_axis.label == "own range"
    parts = [figure.figure, figure.image_mark, figure.image_mark.image, figure._hover_marks, figure.title,
             figure._colorbar_figure, figure._bar_mark.image]
    figure.close()
    assert all(part.comm is None for part in parts)


# -- WeightGrid -----------------------------------------------------------------------------------------

def expected_weight_tile(kernel: np.ndarray, channel: int, filt: int) -> np.ndarray:
    """Independent colouring: coolwarm entry round(255 * (0.5 + w / 2m)), m = max |w| over the layer."""
    m = np.abs(kernel).max()
    idx = np.floor(255 * (0.5 + kernel[:, :, channel, filt].astype(np.float64) / (2 * m)) + 0.5).astype(int)
    return render.colormap_lut("coolwarm")[idx]


def kernel_cells(figure: MosaicFigure, index: int, kh: int, kw: int) -> np.ndarray:
    """The (kh, kw, 3) colours of one weight tile, read at the middle of each upscaled cell."""
    y0, x0, y1, x1 = figure.mosaic.tile_box(index)
    cell_h, cell_w = (y1 - y0) // kh, (x1 - x0) // kw
    tile = picture(figure)[y0:y1, x0:x1]
    return tile[cell_h // 2::cell_h, cell_w // 2::cell_w][:kh, :kw]


def test_weight_grid_shows_every_kernel_with_one_symmetric_scale(state, tiny_model):
    grid = WeightGrid(state)
    kernel = tiny_model.get_layer("conv_a").get_weights()[0]  # (3, 3, 3, 4), read from Keras directly
    assert grid.figure.mosaic.indices == (0, 1, 2, 3)
    assert grid.figure.mosaic.tile_height == 24  # 3×3 cells, 8 px each: crisp
    for f in range(4):
        np.testing.assert_array_equal(kernel_cells(grid.figure, f, 3, 3), expected_weight_tile(kernel, 0, f))
    m = float(np.abs(kernel).max())
    assert grid.figure.colorbar_values == ("coolwarm", pytest.approx(-m), pytest.approx(m))
    title = grid.figure.title.value
    assert "conv_a" in title and "input channel 0 (R of the input image)" in title and "filters 0–3 of 4" in title
    lo, hi = kernel[:, :, 0, 2].min(), kernel[:, :, 0, 2].max()
    assert grid.figure.tooltips[2] == f"filter 2: min {lo:.2f}, max {hi:.2f}, bias {-0.2 + 0.4 * 2 / 3:.2f}"

    state.channel = 2  # another slice, same scale
    assert grid.redraws == 2 and "input channel 2 (B of the input image)" in grid.figure.title.value
    np.testing.assert_array_equal(kernel_cells(grid.figure, 3, 3, 3), expected_weight_tile(kernel, 2, 3))
    grid.close()


def test_weight_grid_click_selects_and_the_outline_follows_without_a_redraw(state):
    grid = WeightGrid(state)
    grid.figure.click_tile(1, 0)  # 4 filters in a 2×2 grid: second row, first column is filter 2
    assert state.filter == 2 and grid.figure.highlighted == 2
    state.filter = 1
    assert grid.figure.highlighted == 1 and grid.redraws == 1
    grid.close()


def test_weight_grid_rgb_view_colours_each_input_channel(state, tiny_model):
    grid = WeightGrid(state)
    assert grid.rgb_toggle.layout.display is None  # conv_a is fed 3 channels: the toggle is offered
    grid.rgb_toggle.value = True
    assert grid.rgb and grid.redraws == 2
    kernel = tiny_model.get_layer("conv_a").get_weights()[0].astype(np.float64)
    per_channel = np.abs(kernel).max(axis=(0, 1, 3))
    cells = kernel_cells(grid.figure, 1, 3, 3)
    for colour in range(3):  # preprocess "none": fed channels are R, G, B in order
        expected = np.floor(255 * (0.5 + kernel[:, :, colour, 1] / (2 * per_channel[colour])) + 0.5)
        np.testing.assert_array_equal(cells[..., colour], expected)
    assert "red = fed channel 0 (R)" in grid.figure.title.value and grid.figure.colorbar_values is None
    state.channel = 1  # the RGB view shows all three channels: nothing to redraw
    assert grid.redraws == 2
    state.layer = "conv_b"  # fed 4 channels: no RGB view, the toggle hides, the single-channel view returns
    assert grid.rgb_toggle.layout.display == "none" and "input channel 1 (map 1 of pool_a)" in grid.figure.title.value
    grid.close()


def test_weight_grid_explains_layers_without_weights(state):
    grid = WeightGrid(state)
    state.layer = "pool_a"
    assert "pool_a (MaxPooling2D) has no weights" in grid.message.value
    assert grid.body not in grid.children  # the mosaic (and what is beside it) put away
    state.layer = "pixels"
    assert "pixels (InputLayer) has no weights" in grid.message.value
    state.layer = "conv_b"
    assert grid.message.value == "" and grid.body in grid.children and grid.figure in grid.body.children
    assert grid.figure.mosaic.indices == tuple(range(6))
    grid.close()


def test_weight_grid_names_the_bgr_channels_of_caffe_input(vgg_state, vgg16_bsds):
    grid = WeightGrid(vgg_state)
    assert "input channel 0 (B of the fed input: caffe preprocessing feeds B, G, R)" in grid.figure.title.value
    assert grid.figure.mosaic.indices == tuple(range(64)) and grid.pages == 1
    kernel = vgg16_bsds.get_layer("block1_conv1").get_weights()[0]
    np.testing.assert_array_equal(kernel_cells(grid.figure, 34, 3, 3), expected_weight_tile(kernel, 0, 34))
    order, words = grid.rgb_mapping()
    assert order == [2, 1, 0]  # red shows fed channel 2 (R), blue fed channel 0 (B)
    assert words == "red = fed channel 2 (R), green = fed channel 1 (G), blue = fed channel 0 (B)"
    grid.close()


def test_weight_grid_pages_follow_the_selected_filter(vgg_state):
    grid = WeightGrid(vgg_state)
    vgg_state.layer = "block2_conv1"  # 128 filters: 2 pages of 64, never only the first 64
    assert grid.pages == 2 and grid.page == 0 and grid.page_slider.layout.display is None
    assert grid.page_label.value == "filters 0–63 of 128"
    vgg_state.filter = 100
    assert grid.page == 1 and grid.page_slider.value == 2
    assert grid.figure.mosaic.indices == tuple(range(64, 128)) and grid.figure.highlighted == 100
    assert grid.figure.tooltips[0].startswith("filter 64:")
    assert "input channel 0 (map 0 of block1_pool)" in grid.figure.title.value
    grid.figure.click_tile(0, 0)
    assert vgg_state.filter == 64
    grid.page_slider.value = 1  # the user turns to page 1 of 2: the page turns, the selection stays
    assert vgg_state.filter == 64 and grid.figure.mosaic.indices == tuple(range(64))
    assert grid.figure.highlighted is None and grid.page_label.value == "filters 0–63 of 128 · filter 64 is on page 2"
    vgg_state.channel = 1  # a redraw for another reason keeps the page the user turned to
    assert grid.page == 0 and vgg_state.filter == 64
    vgg_state.filter = 70  # a new selection brings its page back
    assert grid.page == 1 and grid.figure.highlighted == 70
    grid.close()


# -- ActivationGrid -------------------------------------------------------------------------------------

def test_activation_grid_per_map_matches_an_independent_scaling(state):
    grid = ActivationGrid(state)
    maps = state.activation().astype(np.float64)  # (16, 16, 4): below max_tile_px, so not pooled
    got = picture(grid.figure)
    for i in range(4):
        y0, x0, y1, x1 = grid.figure.mosaic.tile_box(i)
        lo, hi = maps[..., i].min(), maps[..., i].max()
        expected = np.floor(255 * (maps[..., i] - lo) / (hi - lo) + 0.5)
        np.testing.assert_array_equal(got[y0:y1, x0:x1], expected)
        assert grid.figure.tooltips[i] == f"channel {i}: min {short(lo)}, max {short(hi)}"
    assert grid.figure.colorbar_values == ("grey", 0.0, 1.0)
    assert grid.figure._bar_axis.tick_labels == {"0": "tile min", "1": "tile max"}
    assert "conv_a activations" in grid.figure.title.value and "per map" in grid.figure.title.value
    grid.close()


def test_activation_grid_redraws_for_colormap_and_normalization(state):
    grid = ActivationGrid(state)
    state.colormap = "viridis"
    assert grid.redraws == 2
    mosaic, _ = render.render_mosaic(state.activation(), "per_map", "viridis", max_side=grid.max_tile_px)
    np.testing.assert_array_equal(picture(grid.figure), mosaic.image)
    state.normalization = "per_layer"
    maps = state.activation()
    assert grid.figure.colorbar_values == ("viridis", pytest.approx(maps.min()), pytest.approx(maps.max()))
    state.normalization = "symmetric"
    m = float(np.abs(maps).max())
    assert grid.figure.colorbar_values == ("viridis", pytest.approx(-m), pytest.approx(m))
    assert grid.redraws == 4
    grid.close()


def test_activation_grid_shows_the_input_and_pool_layers(state):
    grid = ActivationGrid(state)
    state.layer = "pixels"
    fed = state.model_input.array
    assert grid.figure.mosaic.indices == (0, 1, 2)
    assert grid.figure.tooltips[1] == f"channel 1 (G): min {short(fed[..., 1].min())}, max {short(fed[..., 1].max())}"
    assert "fed input (after preprocessing)" in grid.figure.title.value
    state.layer = "pool_b"
    assert grid.figure.mosaic.indices == tuple(range(6)) and grid.figure.mosaic.tile_height == 4
    grid.figure.click_tile(1, 2)  # 6 maps in a 2×3 grid
    assert state.filter == 5 and grid.figure.highlighted == 5
    grid.close()


def test_activation_grid_on_vgg16_pools_pages_and_labels_bgr(vgg_state):
    grid = ActivationGrid(vgg_state, max_tile_px=32)
    maps = vgg_state.activation()  # block1_conv1 at 96×96: pooled 3×3 to 32 px tiles
    assert maps.shape == (96, 96, 64) and grid.figure.mosaic.tile_height == 32
    mosaic, _ = render.render_mosaic(maps, "per_map", "grey", max_side=32)
    np.testing.assert_array_equal(picture(grid.figure), mosaic.image)
    vgg_state.layer = "block3_conv1"  # 256 maps: 4 pages
    vgg_state.filter = 200
    assert grid.pages == 4 and grid.page == 3 and grid.figure.mosaic.indices == tuple(range(192, 256))
    mosaic, _ = render.render_mosaic(vgg_state.activation(), "per_map", "grey", max_side=32, indices=range(192, 256))
    np.testing.assert_array_equal(picture(grid.figure), mosaic.image)
    assert grid.figure.tooltips[8].startswith("channel 200: min ")
    vgg_state.layer = vgg_state.input_layer
    assert [t.split(":")[0] for t in grid.figure.tooltips] == ["channel 0 (B)", "channel 1 (G)", "channel 2 (R)"]
    grid.close()


# -- both views on one state ----------------------------------------------------------------------------

def test_scrubbing_runs_no_forward_pass_and_redraws_only_changed_pictures(vgg_state):
    weights, activations = WeightGrid(vgg_state), ActivationGrid(vgg_state, max_tile_px=32)
    vgg_state.activation()  # the one forward pass for this image
    passes = vgg_state.forward_passes
    redraws = weights.redraws, activations.redraws
    for f in range(0, 64, 2):  # within one page: only the outline moves
        vgg_state.filter = f
    assert (weights.redraws, activations.redraws) == redraws and weights.figure.highlighted == 62
    vgg_state.channel = 1  # only the weights change
    assert (weights.redraws, activations.redraws) == (redraws[0] + 1, redraws[1])
    vgg_state.colormap = "magma"  # only the activations change
    assert (weights.redraws, activations.redraws) == (redraws[0] + 1, redraws[1] + 1)
    # 100 layer and filter moves: a view redraws exactly when what it shows (layer, page) changed
    redraws = weights.redraws, activations.redraws
    expected, shown = [0, 0], [("block1_conv1", 0), ("block1_conv1", 0)]
    layers = vgg_state.layers
    for step in range(100):
        for trait, value in (("layer", layers[step % len(layers)]), ("filter", (step * 37) % 512)):
            setattr(vgg_state, trait, value)
            now = (vgg_state.layer, vgg_state.filter // 64)
            is_conv = vgg_state.layer_kind() == "conv"
            for view, picture_now in enumerate((now if is_conv else None, now)):
                if picture_now is not None and picture_now != shown[view]:  # None: a message, picture kept
                    expected[view] += 1
                    shown[view] = picture_now
    assert vgg_state.forward_passes == passes
    assert (weights.redraws - redraws[0], activations.redraws - redraws[1]) == tuple(expected)
    assert expected[1] >= 100  # every step moved to another layer
    weights.close()
    activations.close()


def test_close_releases_every_observer(state):
    before = notifier_counts(state)
    views = [WeightGrid(state), ActivationGrid(state)]
    assert notifier_counts(state) != before
    for view in views:
        view.close()
    assert notifier_counts(state) == before
    drawn = views[1].redraws
    state.layer, state.colormap = "conv_b", "magma"  # the closed views are not touched
    assert views[1].redraws == drawn and views[1].comm is None
    views[0].close()  # closing twice is harmless


def test_views_make_their_own_state_from_a_model(tiny_model):
    grid = ActivationGrid(tiny_model, page_size=3)
    assert isinstance(grid.state, ModelState) and grid.pages == 2
    assert isinstance(grid, ipywidgets.VBox) and "cnnviz-activation-grid" in grid._dom_classes
    grid.close()
    with pytest.raises(CnnvizError, match="page_size must be an integer >= 1; got 0"):
        WeightGrid(tiny_model, page_size=0)
    with pytest.raises(CnnvizError, match="max_tile_px must be an integer >= 1"):
        ActivationGrid(tiny_model, max_tile_px=2.5)


def test_activation_grid_shows_the_selected_map_large_and_the_photo(state):
    grid = ActivationGrid(state)
    state.filter = 2
    maps = state.activation().astype(np.float64)
    lo, hi = maps[..., 2].min(), maps[..., 2].max()  # per map: the large view has its tile's own range
    expected = np.floor(255 * (maps[..., 2] - lo) / (hi - lo) + 0.5)
    np.testing.assert_array_equal(picture(grid.detail), expected)
    assert "channel 2 of conv_a, large" in grid.detail.title.value
    photo = np.asarray(Image.open(io.BytesIO(grid.photo.value)))
    np.testing.assert_array_equal(photo, state.model_input.picture)
    drawn = grid.detail.redraws
    state.filter = 2  # nothing new: not drawn again
    assert grid.detail.redraws == drawn
    state.normalization = "per_layer"  # one range for the layer: the large view keeps the tiles' colours
    whole_lo, whole_hi = maps.min(), maps.max()
    expected = np.floor(255 * (maps[..., 2] - whole_lo) / (whole_hi - whole_lo) + 0.5)
    np.testing.assert_array_equal(picture(grid.detail), expected)
    grid.close()


def test_full_rows_leaves_no_empty_slot_where_the_count_allows():
    from cnnviz_widgets.widgets.grids import full_rows

    assert [full_rows(n) for n in (1, 3, 4, 6, 8, 12, 64, 128)] == [1, 3, 2, 3, 4, 4, 8, 16]
    assert full_rows(7) is None and full_rows(5) is None  # primes: only one row would do, too wide
    for n in range(1, 200):  # whatever it picks fills every row
        cols = full_rows(n)
        assert cols is None or (n % cols == 0 and cols * cols >= n)


def test_activation_grid_shows_the_fed_channels_in_one_named_row(vgg_state):
    grid = ActivationGrid(vgg_state)
    vgg_state.layer = vgg_state.input_layer
    mosaic = grid.figure.mosaic
    assert (mosaic.rows, mosaic.cols) == (1, 3)  # no empty slot
    assert "tiles: channel 0 (B), channel 1 (G), channel 2 (R)" in grid.figure.title.value
    grid.close()


def test_weight_grid_scales_deep_layers_robustly_and_says_so(vgg_state):
    grid = WeightGrid(vgg_state)
    seen = {}
    for layer in ("block1_conv1", "block5_conv3"):
        vgg_state.layer = layer
        magnitude = np.abs(vgg_state.weights(layer)[0])
        top, p99 = float(magnitude.max()), float(np.percentile(magnitude, 99))
        robust = top > 3 * p99
        scale = p99 if robust else top
        assert grid.figure.colorbar_values == ("coolwarm", pytest.approx(-scale), pytest.approx(scale))
        assert ("99th percentile of |w|" in grid.figure.title.value) == robust
        seen[layer] = robust
    assert seen["block5_conv3"], "a deep VGG16 layer has a few dominant weights: the case this scale is for"
    grid.close()


def test_weight_grid_shows_the_selected_filter_whole_and_picks_a_channel(state):
    grid = WeightGrid(state)
    state.layer, state.filter = "conv_b", 4
    kernel = state.weights("conv_b")[0]
    scale = float(np.abs(kernel).max())
    detail = grid.detail.mosaic
    assert detail.indices == tuple(range(kernel.shape[2]))  # one tile per input channel
    y0, x0, y1, x1 = detail.tile_box(2)
    factor = (y1 - y0) // kernel.shape[0]
    unit = np.clip((kernel[:, :, 2, 4] / scale + 1) / 2, 0, 1)
    expected = render.scale_up(render.apply_colormap(unit[..., None], "coolwarm"), factor)[..., 0, :]
    assert np.abs(picture(grid.detail)[y0:y1, x0:x1].astype(int) - expected.astype(int)).max() <= 1
    grid.detail.click_tile(*divmod(2, detail.cols))  # input channel 2 of filter 4
    assert state.channel == 2 and grid.detail.highlighted == 2
    grid.close()


def test_activation_grid_says_when_colours_and_scaling_mislead(state):
    grid = ActivationGrid(state)  # conv_a ends in a ReLU: every value >= 0
    assert grid.message.value == ""  # grey, per map: nothing to say
    state.colormap = "coolwarm"  # two-sided map, per-map scaling: blue would read as "negative"
    assert "its blue end is the lowest value" in grid.message.value
    state.normalization = "symmetric"  # white = 0 now; but half the range is unused on a ReLU layer
    assert state.activation().min() >= 0 and "leaves the lower half of the colours unused" in grid.message.value
    state.normalization = "per_layer"
    state.colormap = "viridis"
    assert grid.message.value == ""
    grid.close()


def test_going_back_to_a_recent_image_shows_its_pictures_again_without_redrawing_them(state, rng, monkeypatch):
    grid = ActivationGrid(state)
    state.layer = "conv_a"
    first, second = (rng.integers(0, 256, (16, 16, 3), dtype=np.uint8) for _ in range(2))
    state.set_image(first)
    key_first, shown_first = state.image_key, (picture(grid.figure), picture(grid.detail), grid.photo.value)
    state.set_image(second)
    assert state.image_key != key_first
    rendered, encoded = [], []
    real_render, real_encode = render.render_mosaic, render.encode_png
    monkeypatch.setattr(render, "render_mosaic", lambda *a, **k: rendered.append(1) or real_render(*a, **k))
    monkeypatch.setattr(render, "encode_png", lambda *a, **k: encoded.append(1) or real_encode(*a, **k))
    passes = state.forward_passes
    state.set_image(first.copy())  # the same content in a new array: recognised by content
    assert state.image_key == key_first and state.forward_passes == passes
    assert (rendered, encoded) == ([], [])  # nothing pooled, coloured or encoded again
    # what is shown is what an independent render of the first image's maps gives
    np.testing.assert_array_equal(picture(grid.figure), shown_first[0])
    expected, _ = real_render(state.activation(), state.normalization, state.colormap, max_side=grid.max_tile_px,
                              indices=grid.shown, cols=grid.figure.mosaic.cols)
    np.testing.assert_array_equal(picture(grid.figure), expected.image)
    np.testing.assert_array_equal(picture(grid.detail), shown_first[1])
    assert grid.photo.value == shown_first[2]
    first[0, 0] = 255 - first[0, 0]  # changed in place: a different image, drawn anew
    state.set_image(first)
    assert state.image_key != key_first and rendered
    grid.close()
