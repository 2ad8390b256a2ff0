"""WhatItLooksFor: top patches, optimised picture and weights of the current filter, bound to a ModelState."""

from __future__ import annotations

import io

import ipywidgets
import numpy as np
import pytest
from PIL import Image

import cnnviz_widgets as cw
from cnnviz_widgets import ModelState
from cnnviz_widgets.widgets import Explorer, WhatItLooksFor

from .test_scan import collection, detector_model


def empty_pictures_shown(root) -> list:
    """Image widgets without a picture that the page would show (none of their boxes hidden)."""
    found = []

    def walk(widget, hidden: bool) -> None:
        layout = getattr(widget, "layout", None)
        hidden = hidden or getattr(layout, "display", None) == "none"
        if isinstance(widget, ipywidgets.Image) and not hidden and not widget.value:
            found.append(widget)
        for child in getattr(widget, "children", ()):
            walk(child, hidden)

    walk(root, False)
    return found


def decoded(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


@pytest.fixture(scope="module")
def state(k):
    return ModelState(detector_model(k), image=collection()[0], preprocess=None)


@pytest.fixture(scope="module")
def top(state):
    return cw.top_examples(state, collection(), k=4, cache=False, progress=False)


def test_crops_follow_the_sliders_and_open_marks_the_unit(state, top):
    view = WhatItLooksFor(state, top, k=4)
    state.layer, state.filter = "conv1", 0
    assert view.problem == ""
    first = decoded(view.crops[0].value)
    crop = top.crops("conv1", 0)[0]  # 3×3, shown enlarged 32×
    np.testing.assert_array_equal(first, np.repeat(np.repeat(crop, 32, 0), 32, 1))
    assert "255" in view.captions[0].value
    state.filter = 1
    assert view.crops[0].value != b"" and decoded(view.crops[0].value).shape[:2] == (96, 96)
    redraws = view.redraws
    state.filter = 1  # nothing changed: nothing drawn
    assert view.redraws == redraws
    state.filter = 0
    view.open_buttons[1].click()  # image 7, its red dot at (5, 20)
    np.testing.assert_array_equal(state.image, collection()[7])
    assert view.marked == ("conv1", 0, 5, 20)
    assert view.weights.value and "colours" in view.weights_caption.value
    state.layer = "conv2"
    assert "kernel slices" in view.weights_caption.value
    view.close()


def test_fewer_examples_than_k_leave_no_empty_cells(state):
    small = cw.top_examples(state, collection()[:2], k=4, cache=False, progress=False)
    view = WhatItLooksFor(state, small, k=4)
    state.layer = "conv1"
    assert [cell.layout.display for cell in view._cells] == [None, None, "none", "none"]
    view.close()


def test_without_a_scan_it_offers_one_and_runs_it(state, tmp_path, monkeypatch):
    monkeypatch.setenv("CNNVIZ_CACHE_DIR", str(tmp_path / "cache"))  # the view caches where it is told to
    view = WhatItLooksFor(state, k=4)
    state.layer = "conv1"
    assert view.scan_box.layout.display is None and "no scan" in view.title.value
    # nothing empty is on the page (an empty Image shows a broken-picture icon in the browser): sentences instead
    assert view.grid.layout.display == "none" and view.optimised.layout.display == "none"
    assert view.placeholder.layout.display is None and "After a scan, the 4 image patches" in view.placeholder.value
    assert view.optimised_caption.value.startswith("Not made yet.")
    assert not empty_pictures_shown(view)
    state.layer = "pool1"  # a pooling layer: no weights, and no empty frame for them
    assert view.weights_caption.value == "A pooling layer has no weights." and not empty_pictures_shown(view)
    state.layer = "conv1"
    for i, picture in enumerate(collection()):
        Image.fromarray(picture).save(tmp_path / f"{i:02d}.png")
    view.folder.value = str(tmp_path)
    view.scan_button.click()
    assert view.top is not None and view.scan_box.layout.display == "none" and view.grid.layout.display is None
    assert view.placeholder.layout.display == "none" and not empty_pictures_shown(view)
    assert view.progress.value == view.progress.max == 12
    assert view.top.sources("conv1", 0)[0] == (str(tmp_path / "03.png"), 10, 12)
    result = view.optimise()
    assert view.optimised.value and result.filter == state.filter and view.optimised.layout.display is None
    assert len(list((tmp_path / "cache").rglob("*.npz"))) == 2  # the scan and the picture
    view.close()


def test_explorer_has_the_tab(state):
    explorer = Explorer(state)
    titles = explorer.tabs.titles
    assert titles[-1] == "What it looks for" and isinstance(explorer.views[-1], WhatItLooksFor)
    explorer.tabs.selected_index = len(titles) - 1
    assert explorer.views[-1].active and explorer.views[-1].problem == ""
    explorer.close()
