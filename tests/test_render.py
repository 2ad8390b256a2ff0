"""Tests for cnnviz_widgets.render: values checked against plain, independent computations."""

from __future__ import annotations

import io
import math
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image

from cnnviz_widgets.errors import CnnvizError
from cnnviz_widgets.pictures import render


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


def _loop_pool(maps: np.ndarray, k: int) -> np.ndarray:
    h, w, n = maps.shape
    out = np.zeros((math.ceil(h / k), math.ceil(w / k), n))
    for i in range(out.shape[0]):
        for j in range(out.shape[1]):
            out[i, j] = maps[i * k : (i + 1) * k, j * k : (j + 1) * k].mean(axis=(0, 1))
    return out


# --- pooling ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape, max_side, k", [((7, 5, 3), 3, 3), ((11, 11, 2), 4, 3), ((8, 6, 2), 4, 2)])
def test_pool_matches_loop(rng, shape, max_side, k):
    maps = rng.normal(size=shape).astype(np.float32)
    pooled = render.pool_maps(maps, max_side)
    assert pooled.shape == (math.ceil(shape[0] / k), math.ceil(shape[1] / k), shape[2])
    assert max(pooled.shape[:2]) <= max_side
    np.testing.assert_allclose(pooled, _loop_pool(maps.astype(np.float64), k), rtol=1e-5, atol=1e-6)


def test_pool_factor_one_returns_input(rng):
    maps = rng.normal(size=(5, 4, 2))
    assert render.pool_maps(maps, 5) is maps


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_pool_near_the_dtype_max_does_not_overflow(dtype):
    maps = np.full((5, 5, 1), np.finfo(dtype).max * 0.9, dtype=dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pooled = render.pool_maps(maps, 2)
    np.testing.assert_allclose(pooled, maps[0, 0, 0], rtol=1e-6)


def test_pool_is_fast_enough_for_vgg_block1():
    import time

    maps = np.random.default_rng(1).random((224, 224, 64), dtype=np.float32)
    start = time.perf_counter()
    pooled = render.pool_maps(maps, 112)
    assert pooled.shape == (112, 112, 64)
    assert time.perf_counter() - start < 0.5  # generous: a loop per pixel would take seconds


# --- normalisation ---------------------------------------------------------------------------------------


def test_per_map_matches_hand_computation():
    maps = np.stack([np.array([[1.0, 3.0], [5.0, 9.0]]), np.array([[-2.0, 0.0], [2.0, 6.0]])], axis=2)
    unit, ranges = render.normalize(maps, "per_map")
    assert unit.dtype == np.float32 and unit.shape == maps.shape
    np.testing.assert_allclose(unit[:, :, 0], (maps[:, :, 0] - 1) / 8, atol=1e-6)
    np.testing.assert_allclose(unit[:, :, 1], (maps[:, :, 1] + 2) / 8, atol=1e-6)
    np.testing.assert_array_equal(ranges, [[1, 9], [-2, 6]])
    assert ranges.dtype == np.float64


def test_per_layer_uses_one_range(rng):
    maps = rng.normal(size=(4, 5, 3)) * [1, 10, 100]
    unit, ranges = render.normalize(maps, "per_layer")
    lo, hi = maps.min(), maps.max()
    np.testing.assert_allclose(unit, (maps - lo) / (hi - lo), atol=1e-6)
    np.testing.assert_array_equal(ranges, [[lo, hi]] * 3)


def test_symmetric_puts_zero_at_half():
    maps = np.array([[-2.0, 0.0], [1.0, 4.0]])[:, :, None]
    unit, ranges = render.normalize(maps, "symmetric")
    assert unit[0, 1, 0] == 0.5
    np.testing.assert_allclose(unit[:, :, 0], (maps[:, :, 0] + 4) / 8, atol=1e-6)
    np.testing.assert_array_equal(ranges, [[-4, 4]])


def test_value_range_forces_and_clips():
    maps = np.array([[-5.0, 0.0], [5.0, 20.0]])[:, :, None]
    unit, ranges = render.normalize(maps, value_range=(0, 10))
    np.testing.assert_allclose(unit[:, :, 0], [[0, 0], [0.5, 1]])
    np.testing.assert_array_equal(ranges, [[0, 10]])


@pytest.mark.parametrize("mode, expected", [("per_map", 0.0), ("per_layer", 0.0), ("symmetric", 0.5)])
def test_zero_and_constant_maps_are_flat_without_warnings(mode, expected):
    maps = np.zeros((3, 4, 2), dtype=np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        unit, _ = render.normalize(maps, mode)
        mosaic, _ = render.render_mosaic(maps, mode=mode, cmap="viridis")
    assert not np.isnan(unit).any()
    assert (unit == expected).all()
    assert mosaic.image.dtype == np.uint8


def test_constant_map_beside_a_live_one():
    maps = np.stack([np.full((3, 3), 7.0), np.arange(9.0).reshape(3, 3)], axis=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        unit, ranges = render.normalize(maps, "per_map")
    assert (unit[:, :, 0] == 0).all()
    np.testing.assert_allclose(unit[:, :, 1], np.arange(9).reshape(3, 3) / 8, atol=1e-6)
    np.testing.assert_array_equal(ranges[0], [7, 7])


def test_non_finite_values_are_counted():
    maps = np.ones((2, 2, 2))
    maps[0, 0, 0], maps[1, 1, 1] = np.nan, np.inf
    with pytest.raises(CnnvizError, match="2 non-finite"):
        render.normalize(maps)
    with pytest.raises(CnnvizError, match="2 non-finite"):
        render.render_mosaic(maps)


@pytest.mark.parametrize(
    "bad",
    [np.zeros((3, 3)), np.zeros((2, 2, 2, 2)), np.zeros((2, 2, 1), dtype=bool), np.zeros((0, 2, 1)), "text"],
)
def test_bad_stacks_name_the_shape(bad):
    with pytest.raises(CnnvizError, match=r"\(H, W, N\).*got shape"):
        render.normalize(bad)


@pytest.mark.parametrize("kwargs", [{"mode": "minmax"}, {"value_range": (1, 1)}, {"value_range": (0, np.inf)}])
def test_bad_normalize_options(kwargs):
    with pytest.raises(CnnvizError):
        render.normalize(np.ones((2, 2, 1)), **kwargs)


def test_extreme_float32_values_stay_in_unit_interval():
    maps = np.array([[-3e38, 3e38], [1e-45, 0.0]], dtype=np.float32)[:, :, None]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        unit, _ = render.normalize(maps)
    assert np.isfinite(unit).all() and unit.min() == 0 and unit.max() == 1


# --- colour maps -----------------------------------------------------------------------------------------


def test_lut_endpoints_match_matplotlib():
    viridis, magma = render.colormap_lut("viridis"), render.colormap_lut("magma")
    assert viridis.shape == (256, 3) and viridis.dtype == np.uint8
    np.testing.assert_allclose(viridis[0], (68, 1, 84), atol=1)
    np.testing.assert_allclose(viridis[255], (253, 231, 37), atol=1)
    np.testing.assert_allclose(viridis[128], (33, 145, 140), atol=2)  # matplotlib: 0.127568, 0.566949, 0.550556
    np.testing.assert_allclose(magma[0], (0, 0, 4), atol=1)
    np.testing.assert_allclose(magma[255], (252, 253, 191), atol=1)
    np.testing.assert_allclose(magma[16], (10, 8, 34), atol=2)  # matplotlib: 0.039608, 0.031090, 0.133515


def test_grey_is_identity_and_coolwarm_diverges():
    np.testing.assert_array_equal(render.colormap_lut("grey"), np.repeat(np.arange(256)[:, None], 3, axis=1))
    cw = render.colormap_lut("coolwarm").astype(int)
    assert cw[0, 2] > cw[0, 0] and cw[255, 0] > cw[255, 2]  # blue end, red end
    np.testing.assert_array_equal(cw[128], (255, 255, 255))
    np.testing.assert_array_equal(render.apply_colormap(np.array([0.5]), "coolwarm"), [(255, 255, 255)])


def test_apply_colormap_shapes_and_values():
    unit = np.array([[0.0, 0.5], [1.0, 0.25]], dtype=np.float32)
    grey = render.apply_colormap(unit)
    assert grey.dtype == np.uint8
    np.testing.assert_array_equal(grey, np.round(unit * 255))
    rgb = render.apply_colormap(unit, "magma")
    assert rgb.shape == (2, 2, 3)
    np.testing.assert_array_equal(rgb, render.colormap_lut("magma")[grey])
    np.testing.assert_array_equal(render.apply_colormap(np.array([-1.0, 2.0])), [0, 255])  # clipped


def test_unknown_colormap_lists_choices():
    with pytest.raises(CnnvizError, match="viridis"):
        render.apply_colormap(np.zeros(3), "jet")
    with pytest.raises(CnnvizError, match="coolwarm"):
        render.colormap_lut("hot")
    with pytest.raises(CnnvizError, match="non-finite"):
        render.apply_colormap(np.array([np.nan]))


# --- grids and mosaics -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "n, cols, expected",
    [(64, None, (8, 8)), (3, None, (2, 2)), (1, None, (1, 1)), (128, None, (11, 12)), (10, 4, (3, 4)), (3, 8, (1, 8))],
)
def test_grid_shape(n, cols, expected):
    assert render.grid_shape(n, cols) == expected


@pytest.mark.parametrize("n", [0, -1, 2.5])
def test_grid_shape_rejects_bad_counts(n):
    with pytest.raises(CnnvizError):
        render.grid_shape(n)


@pytest.mark.parametrize("colour", [False, True])
def test_tiles_land_where_the_mosaic_says(rng, colour):
    n, h, w, pad = 7, 4, 5, 2
    shape = (h, w, n, 3) if colour else (h, w, n)
    pictures = rng.integers(0, 200, size=shape, dtype=np.uint8)  # never 255, so pads are distinguishable
    mosaic = render.tile_maps(pictures, cols=3, pad=pad, pad_value=255)
    assert (mosaic.rows, mosaic.cols) == (3, 3)
    assert mosaic.image.shape[:2] == (3 * h + 2 * pad, 3 * w + 2 * pad)
    covered = np.zeros(mosaic.image.shape[:2], dtype=bool)
    for i in range(n):
        y0, x0, y1, x1 = mosaic.tile_box(i)
        np.testing.assert_array_equal(mosaic.image[y0:y1, x0:x1], pictures[:, :, i])
        covered[y0:y1, x0:x1] = True
    assert (mosaic.image[~covered] == 255).all()  # gutters and the two empty cells
    assert covered.sum() == n * h * w


def test_index_position_pixel_round_trip_with_paging(rng):
    maps = rng.normal(size=(6, 6, 150)).astype(np.float32)
    page = range(64, 128)
    mosaic, ranges = render.render_mosaic(maps, indices=page, pad=1)
    assert mosaic.indices == tuple(page) and ranges.shape == (64, 2)
    for index in page:
        row, col = mosaic.tile_position(index)
        assert mosaic.tile_index(row, col) == index
        y0, x0, y1, x1 = mosaic.tile_box(index)
        assert mosaic.tile_at_pixel(y0, x0) == index and mosaic.tile_at_pixel(y1 - 0.5, x1 - 0.5) == index
        assert mosaic.tile_at_pixel(y0, x1) is None  # the pad column to its right (or past the edge)
    with pytest.raises(CnnvizError, match=r"64\.\.127"):
        mosaic.tile_position(3)
    assert mosaic.tile_index(-1, 0) is None and mosaic.tile_index(0, mosaic.cols) is None
    assert mosaic.tile_at_pixel(-1, 0) is None


def test_empty_cells_have_no_index():
    mosaic = render.tile_maps(np.zeros((2, 2, 5), dtype=np.uint8), indices=[10, 11, 12, 13, 14], cols=4)
    assert mosaic.tile_index(1, 0) == 14 and mosaic.tile_index(1, 1) is None
    assert mosaic.tile_at_pixel(4, 4) is None


def test_selection_order_is_tile_order(rng):
    maps = rng.normal(size=(3, 3, 10))
    mosaic, ranges = render.render_mosaic(maps, indices=[7, 2, 9], cols=3)
    assert mosaic.indices == (7, 2, 9) and mosaic.tile_position(2) == (0, 1)
    unit, _ = render.normalize(maps)
    y0, x0, y1, x1 = mosaic.tile_box(9)
    np.testing.assert_array_equal(mosaic.image[y0:y1, x0:x1], render.apply_colormap(unit[:, :, 9]))
    np.testing.assert_allclose(ranges[2], [maps[:, :, 9].min(), maps[:, :, 9].max()])


def test_per_layer_paging_keeps_the_whole_stack_scaling(rng):
    maps = rng.normal(size=(8, 8, 20))
    maps[:, :, 19] *= 50  # the extreme map is not on the page
    full, full_ranges = render.render_mosaic(maps, mode="per_layer", max_side=4)
    page, page_ranges = render.render_mosaic(maps, mode="per_layer", max_side=4, indices=range(0, 10))
    np.testing.assert_array_equal(page_ranges, full_ranges[:10])
    for i in range(10):
        a, b = full.tile_box(i), page.tile_box(i)
        np.testing.assert_array_equal(full.image[a[0] : a[2], a[1] : a[3]], page.image[b[0] : b[2], b[1] : b[3]])


def test_render_mosaic_equals_the_steps_by_hand(rng):
    maps = rng.normal(size=(9, 9, 5)).astype(np.float32)
    mosaic, ranges = render.render_mosaic(maps, cmap="viridis", max_side=5, pad=0)
    unit, expected_ranges = render.normalize(render.pool_maps(maps, 5))
    expected = render.tile_maps(render.apply_colormap(unit, "viridis"), pad=0)
    np.testing.assert_array_equal(mosaic.image, expected.image)
    np.testing.assert_array_equal(ranges, expected_ranges)
    assert mosaic.image.shape == (2 * 5, 3 * 5, 3)  # 9 -> 5 px tiles, 5 tiles on a 2 x 3 grid


@pytest.mark.parametrize(
    "call",
    [
        lambda: render.tile_maps(np.zeros((2, 2, 3), dtype=np.float32)),
        lambda: render.tile_maps(np.zeros((2, 2, 3, 4), dtype=np.uint8)),
        lambda: render.tile_maps(np.zeros((2, 2, 3), dtype=np.uint8), indices=[0, 0, 1]),
        lambda: render.tile_maps(np.zeros((2, 2, 3), dtype=np.uint8), pad=-1),
        lambda: render.render_mosaic(np.zeros((2, 2, 3)), indices=[3]),
        lambda: render.render_mosaic(np.zeros((2, 2, 3)), indices=[]),
        lambda: render.render_mosaic(np.zeros((2, 2, 3)), max_side=0),
        lambda: render.render_mosaic(np.zeros((2, 2, 3)), mode="log"),
        lambda: render.encode_png(np.zeros((2, 2), dtype=np.float64)),
        lambda: render.encode_jpeg(np.zeros((2, 2, 4), dtype=np.uint8)),
        lambda: render.scale_up(np.zeros((2, 2), dtype=np.uint8), 0),
    ],
)
def test_bad_arguments_raise_cnnviz_error(call):
    with pytest.raises(CnnvizError):
        call()


# --- encoding and scaling --------------------------------------------------------------------------------


@pytest.mark.parametrize("shape, mode", [((5, 7), "L"), ((5, 7, 3), "RGB")])
def test_png_round_trip(rng, shape, mode):
    image = rng.integers(0, 256, size=shape, dtype=np.uint8)
    decoded = Image.open(io.BytesIO(render.encode_png(image)))
    assert decoded.mode == mode
    np.testing.assert_array_equal(np.asarray(decoded), image)


def test_png_of_a_non_contiguous_view(rng):
    image = rng.integers(0, 256, size=(6, 8, 3), dtype=np.uint8)[::2, ::-1]
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(render.encode_png(image)))), image)


def test_jpeg_decodes_close_to_the_source():
    image = np.tile(np.linspace(0, 255, 32, dtype=np.uint8), (32, 1))
    data = render.encode_jpeg(np.stack([image] * 3, axis=2), quality=95)
    assert data[:2] == b"\xff\xd8"
    decoded = np.asarray(Image.open(io.BytesIO(data))).astype(int)
    assert np.abs(decoded[:, :, 0] - image).mean() < 3


def test_scale_up_is_nearest_neighbour():
    kernel = np.arange(9, dtype=np.uint8).reshape(3, 3)
    big = render.scale_up(kernel, 8)
    assert big.shape == (24, 24)
    np.testing.assert_array_equal(big[::8, ::8], kernel)
    np.testing.assert_array_equal(big[7::8, 7::8], kernel)
    assert render.scale_up(np.zeros((2, 2, 3, 3)), 2).shape == (4, 4, 3, 3)


# --- properties ------------------------------------------------------------------------------------------

_stacks = hnp.arrays(
    dtype=st.sampled_from([np.float32, np.float64]),
    shape=hnp.array_shapes(min_dims=3, max_dims=3, min_side=1, max_side=6),
    elements={"allow_nan": False, "allow_infinity": False},
)


@settings(max_examples=150, deadline=None)
@given(
    maps=_stacks,
    mode=st.sampled_from(render.NORMALIZATIONS),
    cmap=st.sampled_from(render.COLORMAPS),
    max_side=st.one_of(st.none(), st.integers(1, 6)),
)
def test_any_finite_stack_renders(maps, mode, cmap, max_side):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        unit, ranges = render.normalize(maps, mode)
        mosaic, _ = render.render_mosaic(maps, mode=mode, cmap=cmap, max_side=max_side)
    assert unit.dtype == np.float32 and unit.min() >= 0 and unit.max() <= 1
    assert ranges.shape == (maps.shape[2], 2) and (ranges[:, 0] <= ranges[:, 1]).all()
    assert mosaic.image.dtype == np.uint8
    assert mosaic.image.ndim == (2 if cmap == "grey" else 3)
