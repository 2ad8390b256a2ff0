"""The Explorer in a real browser: it renders, its sliders and tiles drive the state, the pictures follow.

Runs a small notebook (VGG16 with the offline weights, 128 px input) in JupyterLab and in Notebook 7 under
headless Chromium, fails on JavaScript errors and widget error messages, takes the README screenshot
(`docs/explorer.png`, rewritten only when missing or with CNNVIZ_UPDATE_SCREENSHOT=1) and measures what a
slider step costs in the browser.
"""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path

import pytest

from tests.browser.harness import DOCS, write_notebook

NOTEBOOK = "explorer_check.ipynb"
CELLS = (
    "import cnnviz_widgets as cw\nfrom cnnviz_widgets.widgets import Explorer",
    'explorer = Explorer(cw.ModelState("vgg16", max_side=128))\nexplorer',
)
ACTIVATIONS = ".cnnviz-activation-grid .cnnviz-mosaic-figure"
ACTIVATIONS_TITLE = ".cnnviz-activation-grid .cnnviz-mosaic-title"
EFFECT_RESULT = ".cnnviz-filter-effect-result .cnnviz-mosaic-figure"
EFFECT_RESULT_TITLE = ".cnnviz-filter-effect-result .cnnviz-mosaic-title"
LAYER_SLIDER, FILTER_SLIDER = ".cnnviz-layer-slider", ".cnnviz-filter-slider"
# VGG16's visualised layers: the input, 13 conv and 5 pooling layers.
VGG16_LAYERS = ["input_layer", "block1_conv1", "block1_conv2", "block1_pool", "block2_conv1", "block2_conv2",
                "block2_pool", "block3_conv1", "block3_conv2", "block3_conv3", "block3_pool", "block4_conv1",
                "block4_conv2", "block4_conv3", "block4_pool", "block5_conv1", "block5_conv2", "block5_conv3",
                "block5_pool"]
SCREENSHOT = DOCS / "explorer.png"
SCREENSHOT_MAX_BYTES = 400_000

# Watches one picture: the time of the last key press and of the first `<image href>` change after it.
_WATCH_JS = """([sel]) => {
    const root = document.querySelector(sel);
    const href = () => { const i = root.querySelector('svg image'); return i ? i.getAttribute('href') : ''; };
    const watch = window.__cnnvizWatch = {pressed: null, changed: null, last: href()};
    document.addEventListener('keydown', () => { watch.pressed = performance.now(); watch.changed = null; },
                              true);
    new MutationObserver(() => {
        const now = href();
        if (now !== watch.last) {
            watch.last = now;
            if (watch.pressed !== null && watch.changed === null) watch.changed = performance.now();
        }
    }).observe(root, {attributes: true, childList: true, subtree: true, attributeFilter: ['href']});
}"""


def _outline(page, figure: str) -> str:
    """The path of the orange outline (a bqplot Lines mark) over the mosaic: where the selection is drawn."""
    return page.page.evaluate(
        "([sel]) => { const p = document.querySelector(sel + ' svg .line'); return p ? p.getAttribute('d') : ''; }",
        [page.scoped(figure)],
    )


def _wait_outline_moved(page, figure: str, old: str) -> None:
    page.page.wait_for_function(
        "([sel, old]) => { const p = document.querySelector(sel + ' svg .line'); "
        "return !!p && p.getAttribute('d') !== old; }",
        arg=[page.scoped(figure), old], timeout=30_000, polling="raf",
    )


def _click_tile(page, figure: str, row: int, col: int, rows: int, cols: int) -> None:
    """Click the centre of tile (row, col) of a rows × cols mosaic that fills the figure's plot area."""
    plot = page.widget(figure).locator("svg rect.plotarea_background").first
    plot.scroll_into_view_if_needed()
    box = plot.bounding_box()
    page.page.mouse.click(box["x"] + (col + 0.5) * box["width"] / cols,
                          box["y"] + (row + 0.5) * box["height"] / rows)


def _open_tab(page, title: str) -> None:
    page.open_tab(title)


def _open_explorer(page, served_dir: Path) -> str:
    write_notebook(served_dir / NOTEBOOK, *CELLS)
    page.open(NOTEBOOK).run_all()
    page.wait_all_executed(timeout=120_000)
    first = page.wait_image(ACTIVATIONS)
    page.wait_text(ACTIVATIONS_TITLE, "block1_conv1")
    page.assert_healthy()
    return first


def test_explorer_in_jupyterlab(lab_page, served_dir, record_property, tmp_path):
    page = lab_page
    started = time.monotonic()
    picture = _open_explorer(page, served_dir)
    assert page.slider_readout(LAYER_SLIDER) == "block1_conv1"
    assert page.slider_readout(FILTER_SLIDER) == "0"
    record_property("open_and_run_s", round(time.monotonic() - started, 1))

    # Layer slider, keyboard: block1_conv1 -> block1_conv2; a new picture and a title naming the new layer.
    page.press_on_slider(LAYER_SLIDER, "ArrowRight")
    picture_conv2 = page.wait_image(ACTIVATIONS, not_equal=picture)
    assert "block1_conv2" in page.wait_text(ACTIVATIONS_TITLE, "block1_conv2")
    assert page.slider_readout(LAYER_SLIDER) == "block1_conv2"

    # Filter slider, keyboard: 0 -> 1. The activation picture stays (same maps) and the selection outline moves.
    outline = _outline(page, ACTIVATIONS)
    page.press_on_slider(FILTER_SLIDER, "ArrowRight")
    _wait_outline_moved(page, ACTIVATIONS, outline)
    assert page.slider_readout(FILTER_SLIDER) == "1"
    assert page.image_href(ACTIVATIONS) == picture_conv2, "moving the filter must not redraw the maps"
    # The filter-effect tab draws only while open: opened now, it shows filter 1 of block1_conv2.
    _open_tab(page, "Filter effect")
    assert "block1_conv2 filter 1:" in page.wait_text(EFFECT_RESULT_TITLE, "block1_conv2 filter 1:")
    effect_picture = page.wait_image(EFFECT_RESULT)

    # Click a tile of the 8 × 8 activation mosaic: row 2, column 3 is channel 19, which becomes the filter.
    _open_tab(page, "Activations")
    outline = _outline(page, ACTIVATIONS)
    _click_tile(page, ACTIVATIONS, row=2, col=3, rows=8, cols=8)
    _wait_outline_moved(page, ACTIVATIONS, outline)
    page.wait_text(FILTER_SLIDER, "19")
    assert page.slider_readout(FILTER_SLIDER) == "19"
    _open_tab(page, "Filter effect")
    page.wait_text(EFFECT_RESULT_TITLE, "block1_conv2 filter 19:")
    assert page.wait_image(EFFECT_RESULT, not_equal=effect_picture) != effect_picture
    _open_tab(page, "Activations")

    page.assert_healthy()
    _save_screenshot(page, tmp_path)
    record_property("whole_test_s", round(time.monotonic() - started, 1))


def _save_screenshot(page, tmp_path: Path) -> Path:
    """Screenshot the Explorer: into docs/ (for the README) when it is missing or CNNVIZ_UPDATE_SCREENSHOT=1.

    Otherwise into tmp_path, so a test run leaves the repository as it was (the status line's timing differs
    from run to run, so the bytes would change every time).
    """
    update = not SCREENSHOT.exists() or os.environ.get("CNNVIZ_UPDATE_SCREENSHOT") == "1"
    path = SCREENSHOT if update else tmp_path / SCREENSHOT.name
    explorer = page.widget(".cnnviz-explorer")
    explorer.scroll_into_view_if_needed()
    page.page.mouse.move(0, 0)  # no hover: no tooltip, no bqplot toolbar in the picture
    page.page.wait_for_timeout(300)
    path.parent.mkdir(exist_ok=True)
    explorer.screenshot(path=str(path), animations="disabled", caret="hide")
    size = path.stat().st_size
    assert size < SCREENSHOT_MAX_BYTES, f"{path} is {size} bytes; keep it under {SCREENSHOT_MAX_BYTES}"
    return path


def test_slider_step_cost_in_jupyterlab(lab_page, served_dir, record_property):
    """Key press -> new `<image href>`, measured in the page, over 20 layer steps (down the network and back)."""
    page = lab_page
    _open_explorer(page, served_dir)
    page.page.evaluate(_WATCH_JS, [page.scoped(ACTIVATIONS)])
    costs_ms = []
    for step in range(20):
        key = "ArrowRight" if step < 12 else "ArrowLeft"  # input_layer+1 .. +12, then back down
        page.press_on_slider(LAYER_SLIDER, key)
        page.page.wait_for_function("() => window.__cnnvizWatch.changed !== null", timeout=30_000, polling="raf")
        watch = page.page.evaluate("window.__cnnvizWatch")
        costs_ms.append(watch["changed"] - watch["pressed"])
    expected = VGG16_LAYERS[1 + 12 - 8]  # 12 steps right from block1_conv1, 8 back
    assert page.slider_readout(LAYER_SLIDER) == expected
    page.wait_text(ACTIVATIONS_TITLE, expected)
    median, p95 = statistics.median(costs_ms), statistics.quantiles(costs_ms, n=20)[-1]
    record_property("layer_step_ms_median", round(median))
    record_property("layer_step_ms_p95", round(p95))
    print(f"layer slider step, key press -> new <image href>: median {median:.0f} ms, p95 {p95:.0f} ms, "
          f"max {max(costs_ms):.0f} ms over {len(costs_ms)} steps")
    page.assert_healthy()
    # Generous bound (2 shared cores, CI noise): a step is a cache hit, never a forward pass.
    assert median < 2000, costs_ms


def test_explorer_in_notebook7(notebook_page, served_dir):
    page = notebook_page
    picture = _open_explorer(page, served_dir)
    # Notebook 7 keeps the arrow keys for its own shortcuts (see harness.click_slider_at): use the mouse.
    page.click_slider_at(LAYER_SLIDER, 2 / (len(VGG16_LAYERS) - 1))  # option 2 of 19: block1_conv2
    assert page.wait_image(ACTIVATIONS, not_equal=picture) != picture
    page.wait_text(ACTIVATIONS_TITLE, "block1_conv2")
    assert page.slider_readout(LAYER_SLIDER) == "block1_conv2"
    _click_tile(page, ACTIVATIONS, row=1, col=2, rows=8, cols=8)  # channel 10
    page.wait_text(FILTER_SLIDER, "10")
    assert page.slider_readout(FILTER_SLIDER) == "10"
    _open_tab(page, "Filter effect")
    page.wait_text(EFFECT_RESULT_TITLE, "block1_conv2 filter 10:")
    page.wait_image(EFFECT_RESULT)
    page.assert_healthy()


@pytest.fixture(autouse=True)
def _no_stale_notebook(served_dir):
    yield
    (served_dir / NOTEBOOK).unlink(missing_ok=True)
