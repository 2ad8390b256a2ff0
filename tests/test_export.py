"""export.py: a view's pictures saved as one PNG (with titles and code in its metadata), and the code that
rebuilds a state, executed to check that it does."""

from __future__ import annotations

import types

import numpy as np
import pytest
from PIL import Image

import cnnviz_widgets
from cnnviz_widgets import CnnvizError
from cnnviz_widgets.export.code import reproduce_code
from cnnviz_widgets.export.panels import Panel, compose, enlargement, figures_of
from cnnviz_widgets.export.saving import export_png, save_png
from cnnviz_widgets.export.slide import SLIDE_PX, _on_paper, layout_slide
from cnnviz_widgets.network.loading import ModelInfo
from cnnviz_widgets.pictures import render
from cnnviz_widgets.widgets import ActivationGrid, Explorer, FilterEffect, MosaicFigure


def find(haystack: np.ndarray, needle: np.ndarray) -> list[tuple[int, int]]:
    """Every (y, x) where `needle` (h, w, 3) appears exactly in `haystack` (H, W, 3)."""
    h, w = needle.shape[:2]
    hits = []
    for y, x in zip(*np.nonzero((haystack[: haystack.shape[0] - h + 1, : haystack.shape[1] - w + 1]
                                 == needle[0, 0]).all(axis=2)), strict=True):
        if np.array_equal(haystack[y:y + h, x:x + w], needle):
            hits.append((int(y), int(x)))
    return hits


def assert_tiles_are_the_views_enlarged(saved: np.ndarray, slide, figures) -> None:
    """Each tile of each figure, cut from the view's own picture by its grid and enlarged by the slide's whole
    factor with np.kron (not the code under test), is at its box in the saved PNG, pixel for pixel."""
    assert len(slide.tiles) == sum(len(figure.mosaic.indices) for figure in figures)
    for box in slide.tiles:
        figure = figures[box.figure]
        mosaic, picture = figure.mosaic, figure.mosaic.image
        picture = picture if picture.ndim == 3 else np.repeat(picture[..., None], 3, axis=2)
        row, col = divmod(mosaic.indices.index(box.index), mosaic.cols)
        y0, x0 = row * (mosaic.tile_height + mosaic.pad), col * (mosaic.tile_width + mosaic.pad)
        tile = picture[y0:y0 + mosaic.tile_height, x0:x0 + mosaic.tile_width]
        enlarged = np.kron(tile, np.ones((box.factor, box.factor, 1), np.uint8))
        ty0, tx0, ty1, tx1 = box.tile
        np.testing.assert_array_equal(saved[ty0:ty1, tx0:tx1], enlarged)


def test_export_is_slide_sized_with_each_tiles_label_written_under_it(vgg_state, tmp_path):
    state = vgg_state
    state.layer = "block1_conv2"
    grid = ActivationGrid(state)
    with Image.open(export_png(grid, tmp_path / "grid.png")) as png:
        saved = np.asarray(png.convert("RGB"))
    slide = layout_slide(grid)
    figures = figures_of(grid)
    assert figures == [grid.figure, grid.detail]  # the mosaic and, beside it, the selected map large
    assert saved.shape[1] >= SLIDE_PX == 1920 and saved.shape[0] >= 1000
    assert_tiles_are_the_views_enlarged(saved, slide, figures)
    mosaic_tiles = [box for box in slide.tiles if box.figure == 0]
    assert all(box.factor >= 2 for box in slide.tiles)  # 96 px maps: no tile left at its own size
    # the hover labels are written under their tiles (a PNG has no hover): the same words, in ink
    for box, label in zip(mosaic_tiles, grid.figure.tooltips, strict=True):
        assert box.text == label and label.startswith(f"channel {box.index}: min ")
        cy0, cx0, cy1, cx1 = box.caption
        assert cy0 >= box.tile[2] and (cx0, cx1) == (box.tile[1], box.tile[3])  # under its tile, as wide
        ink = saved[cy0:cy1, cx0:cx1].min(axis=2) < 128
        assert 0.01 < ink.mean() < 0.5, box.index
    # side by side as in the view: the large map to the right of the mosaic, tops aligned
    large = next(box for box in slide.tiles if box.figure == 1)
    assert large.tile[1] > max(box.tile[3] for box in mosaic_tiles) and large.text == ""  # no hover there
    # tiles do not overlap each other or the captions
    boxes = [b.tile for b in slide.tiles] + [b.caption for b in mosaic_tiles]
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            assert min(a[2], b[2]) <= max(a[0], b[0]) or min(a[3], b[3]) <= max(a[1], b[1]), (a, b)
    # what only a screen does is not said on paper
    assert _on_paper("each tile has its own range (hover a tile for its values)", True) == (
        "each tile has its own range (values under each tile)")
    assert _on_paper("filters (click one to pick it)", False) == "filters"
    assert _on_paper("a map · click a value to take it apart", False) == "a map"
    grid.close()


def test_a_single_small_picture_fills_the_slide_width():
    figure = MosaicFigure()
    picture = np.arange(48 * 64, dtype=np.uint8).reshape(48, 64) % 251
    figure.show(render.tile_maps(picture[..., None]), title="one map")
    slide = layout_slide(figure)
    (box,) = slide.tiles
    assert slide.image.shape[1] == SLIDE_PX and box.factor == min(16, (SLIDE_PX - 64) // 64, 1600 // 48)
    np.testing.assert_array_equal(slide.image[box.tile[0]:box.tile[2], box.tile[1]:box.tile[3], 0],
                                  np.kron(picture, np.ones((box.factor, box.factor), np.uint8)))
    figure.close()


def test_export_png_holds_the_shown_picture_its_title_and_the_code(vgg_state, tmp_path):
    state = vgg_state
    state.layer, state.colormap = "block2_conv1", "viridis"
    grid = ActivationGrid(state)
    path = export_png(grid, tmp_path / "grid.png")
    with Image.open(path) as png:
        saved = np.asarray(png.convert("RGB"))
        metadata = dict(png.text)
    slide = layout_slide(grid)
    np.testing.assert_array_equal(saved, slide.image)  # the PNG is the slide
    title = grid.figure.title.value.removeprefix("<b>").removesuffix("</b>").replace("&#x27;", "'")
    # the mosaic's title first; the large view of the selected map beside it adds its own after " | "
    assert metadata["Title"].split(" | ")[0] == title and title.startswith("block2_conv1 activations for astronaut")
    assert metadata["Description"] == reproduce_code(state)
    assert metadata["Software"] == f"cnnviz_widgets {cnnviz_widgets.__version__}"
    lut = render.colormap_lut("viridis")  # the colour bar is drawn under the picture: both of its ends
    assert find(saved, lut[None, :1]) and find(saved, lut[None, 255:])
    grid.close()


def test_export_png_of_a_view_with_several_figures_and_of_one_figure(vgg_state, tmp_path):
    view = FilterEffect(vgg_state)
    figures = figures_of(view)
    assert figures == [view.inputs_figure, view.kernels_figure, view.partials_figure, view.result_figure]
    with Image.open(export_png(view, tmp_path / "effect.png")) as png:
        saved, titles = np.asarray(png.convert("RGB")), png.text["Title"].split(" | ")
    assert len(titles) == 4 and titles[0].lower().startswith("1 · input") and titles[3].startswith("4 · block1_conv1")
    assert_tiles_are_the_views_enlarged(saved, layout_slide(view), figures)
    with Image.open(export_png(view.kernels_figure, tmp_path / "kernels.png")) as png:
        assert "Description" not in png.text and png.text["Title"].lower().startswith("2 · filter 0")
    vgg_state.layer = "block1_pool"  # FilterEffect hides its figures for a pooling layer
    with pytest.raises(CnnvizError, match="FilterEffect shows no picture to export"):
        export_png(view, tmp_path / "nothing.png")
    view.close()
    with pytest.raises(CnnvizError, match="MosaicFigure shows no picture"):
        export_png(MosaicFigure(), tmp_path / "blank.png")


def test_export_of_the_explorer_takes_the_open_tab(vgg_state, tmp_path):
    explorer = Explorer(vgg_state)
    explorer.tabs.selected_index = 0  # the mosaic, then the large view of the selected map beside it
    assert figures_of(explorer)[0] is explorer.activation_grid.figure
    assert all(figure in figures_of(explorer.activation_grid) for figure in figures_of(explorer))
    explorer.tabs.selected_index = 1
    assert figures_of(explorer)[0] is explorer.weight_grid.figure
    with Image.open(export_png(explorer, tmp_path / "explorer.png")) as png:
        assert png.text["Title"].startswith("block1_conv1 filters at input channel 0")
        assert png.text["Description"] == reproduce_code(vgg_state)
    explorer.close()


def test_compose_and_save_png_check_their_input(tmp_path):
    grey = np.arange(64, dtype=np.uint8).reshape(8, 8)
    picture = compose([Panel(grey, "a grey ramp")], heading="heading")
    assert picture.shape[1] >= 320 and picture.dtype == np.uint8
    assert enlargement(8) == 16 and enlargement(200) == 1 and enlargement(100) == 3
    assert find(picture, np.repeat(render.scale_up(grey, 16)[..., None], 3, axis=2))  # small: enlarged, crisp
    with pytest.raises(CnnvizError, match="nothing to export"):
        compose([])
    with pytest.raises(CnnvizError, match=r"uint8 \(H, W\) or \(H, W, 3\)"):
        Panel(np.zeros((4, 4), np.float32))
    with pytest.raises(CnnvizError, match="give a path ending in .png"):
        save_png(picture, tmp_path / "out.jpg")
    with pytest.raises(CnnvizError, match="no folder"):
        save_png(picture, tmp_path / "missing" / "out.png")
    written = save_png(picture, tmp_path / "out.png", {"Title": "3×3 · ok"})
    with Image.open(written) as png:
        assert png.text["Title"] == "3×3 · ok"
        np.testing.assert_array_equal(np.asarray(png.convert("RGB")), picture)


def test_reproduce_code_rebuilds_the_state(vgg_state, vgg16_bsds, monkeypatch):
    state = vgg_state
    state.layer, state.channel, state.filter = "block2_conv2", 17, 42
    state.normalization, state.colormap = "symmetric", "magma"
    state.set_image("cat")
    code = reproduce_code(state)
    assert 'model = cw.load_model("vgg16", weights="bsds500")' in code
    assert "state = cw.ModelState(model, image='cat', max_side=96)" in code
    loaded = []
    monkeypatch.setattr(cnnviz_widgets, "load_model", lambda *a, **kw: loaded.append((a, kw)) or vgg16_bsds)
    namespace: dict = {}
    exec(code, namespace)  # the code itself, run as a user would
    rebuilt = namespace["state"]
    assert loaded == [(("vgg16",), {"weights": "bsds500"})]
    for trait in ("layer", "channel", "filter", "normalization", "colormap", "image_name", "max_side"):
        assert getattr(rebuilt, trait) == getattr(state, trait)
    np.testing.assert_array_equal(rebuilt.model_input.array, state.model_input.array)
    state.set_image("astronaut")


def _fake_state(name: str, weights: str, has_top: bool, image_name: str) -> types.SimpleNamespace:
    rows = [{"name": "predictions"}] if has_top else [{"name": "block5_pool"}]
    return types.SimpleNamespace(info=ModelInfo(name, weights), summary=lambda: rows, image_name=image_name,
                                 max_side=512, layer="conv", channel=1, filter=2, normalization="per_map",
                                 colormap="grey", explained_class=None)


@pytest.mark.parametrize(("info", "line"), [
    (("VGG16", "ImageNet (Keras applications)", True), 'cw.load_model("vgg16", weights="imagenet")\n'),
    (("VGG16", "ImageNet (Keras applications)", False),
     'cw.load_model("vgg16", weights="imagenet", include_top=False)\n'),
    (("VGG16", "random (weights=None: the architecture only)", True), 'cw.load_model("vgg16", weights=None)\n'),
    (("VGG16", "from mine.weights.h5", False),
     "cw.load_model(\"vgg16\", weights='mine.weights.h5', include_top=False)  # the path of your weights file"),
    (("net", "from net.keras", True), "cw.load_model('net.keras')  # the path of your saved model"),
    (("net", "the model's own (user model)", True), "model = build_model()  # your own keras.Model 'net'"),
])
def test_reproduce_code_names_the_model_or_a_placeholder(info, line):
    code = reproduce_code(_fake_state(*info, image_name="astronaut"))
    assert line in code and "image='astronaut')" in code


def test_reproduce_code_marks_an_image_it_cannot_name():
    code = reproduce_code(_fake_state("VGG16", "BSDS500: ...", False, "holiday.jpg"))
    assert "state = cw.ModelState(model, image='holiday.jpg')  # your image: give its path\n" in code
    code = reproduce_code(_fake_state("VGG16", "BSDS500: ...", False, "image"))
    assert "(model, image=my_picture)  # my_picture: your image (a path, bytes, a PIL image or an array)" in code
    compile(code, "reproduce", "exec")  # placeholders keep the code valid Python
