"""The training monitor in a real browser: the controls work WHILE the network trains.

A notebook trains notebook 05's small CNN in the background (`fit_in_background`) for far longer than the test
lasts. While it trains, the layer slider is moved with the keyboard, and the activation view must show the
new layer and keep changing (live weights) before training ends; then the stop button ends it. Takes the
README screenshot (`docs/training.png`, rewritten only when missing or with CNNVIZ_UPDATE_SCREENSHOT=1).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.browser.harness import DOCS, write_notebook

NOTEBOOK = "training_check.ipynb"
CELLS = (
    "import numpy as np\nimport cnnviz_widgets as cw\n"
    "TrainingMonitor = cw.TrainingMonitor\nimport keras\n"
    "digits = cw.load_digits()\n"
    "x = np.asarray(keras.ops.image.resize(digits.images[..., None] * (255 / 16), (32, 32))).clip(0, 255)"
    ".astype('uint8')\n"
    "keras.utils.set_random_seed(0)\n"
    "model = keras.Sequential([keras.Input((32, 32, 1)), keras.layers.Rescaling(1 / 255, name='scale'),\n"
    "    keras.layers.Conv2D(8, 5, activation='relu', name='conv1'), keras.layers.MaxPooling2D(name='pool1'),\n"
    "    keras.layers.Conv2D(16, 3, activation='relu', name='conv2'), keras.layers.MaxPooling2D(name='pool2'),\n"
    "    keras.layers.Flatten(), keras.layers.Dense(10, activation='softmax')])\n"
    "model.compile('adam', 'sparse_categorical_crossentropy', metrics=['accuracy'])",
    "monitor = TrainingMonitor(model, image=x[:2], every=5, redraw_seconds=0.3)\nmonitor",
    # far longer than the test: it must still be training when the slider moves, and stop must end it
    "job = monitor.fit_in_background(x, digits.target, epochs=500, batch_size=32, validation_split=0.1)",
)
MONITOR = ".cnnviz-training-monitor"
HEADER = f"{MONITOR} .cnnviz-training-header"
LAYER_SLIDER = f"{MONITOR} .cnnviz-layer-slider"
ACTIVATIONS = f"{MONITOR} .cnnviz-training-activations .cnnviz-mosaic-figure"
ACTIVATIONS_TITLE = f"{MONITOR} .cnnviz-training-activations .cnnviz-mosaic-title"
WEIGHTS = f"{MONITOR} .cnnviz-training-weights .cnnviz-mosaic-figure"
WEIGHTS_TITLE = f"{MONITOR} .cnnviz-training-weights .cnnviz-mosaic-title"
SCREENSHOT = DOCS / "training.png"
SCREENSHOT_MAX_BYTES = 400_000


def _header(page) -> str:
    return page.widget(HEADER).text_content()


def _step(page) -> int:
    return int(_header(page).split("step ")[1].split()[0])


def test_layer_slider_moves_the_view_while_training_runs(lab_page, served_dir, tmp_path):
    page = lab_page
    write_notebook(served_dir / NOTEBOOK, *CELLS)
    page.open(NOTEBOOK).run_all()
    page.wait_all_executed(timeout=120_000)  # the fit cell returns at once: training goes on in a thread
    page.wait_text(HEADER, "training…", timeout=60_000)
    page.wait_text(ACTIVATIONS_TITLE, "conv1 activations")
    first_weights = page.wait_image(WEIGHTS)
    maps = page.wait_image(ACTIVATIONS)
    assert page.slider_readout(LAYER_SLIDER) == "conv1"
    # The live view follows the weights as they train.
    assert page.wait_image(WEIGHTS, not_equal=first_weights, timeout=60_000) != first_weights

    # While it trains: conv1 -> pool1 -> conv2 with the keyboard. Both views show conv2, training goes on.
    step_before = _step(page)
    page.press_on_slider(LAYER_SLIDER, "ArrowRight")
    page.wait_text(ACTIVATIONS_TITLE, "pool1 activations", timeout=30_000)
    page.press_on_slider(LAYER_SLIDER, "ArrowRight")
    page.wait_text(ACTIVATIONS_TITLE, "conv2 activations", timeout=30_000)
    page.wait_text(WEIGHTS_TITLE, "conv2 filters", timeout=30_000)
    conv2_maps, conv2_weights = page.wait_image(ACTIVATIONS, not_equal=maps), page.wait_image(WEIGHTS)
    assert page.slider_readout(LAYER_SLIDER) == "conv2"
    assert "training…" in _header(page), _header(page)
    # ... and keeps moving with the weights: newer pictures of the same layer, steps later, still training.
    page.wait_image(ACTIVATIONS, not_equal=conv2_maps, timeout=60_000)
    page.wait_image(WEIGHTS, not_equal=conv2_weights, timeout=60_000)
    assert "conv2 activations" in page.widget(ACTIVATIONS_TITLE).text_content()
    assert _step(page) > step_before and "training…" in _header(page)

    _save_screenshot(page, tmp_path)
    # Stop ends training cleanly (after the current batch), long before its 500 epochs.
    page.widget(f"{MONITOR} .cnnviz-stop-button").click()
    page.wait_text(HEADER, "stopped", timeout=60_000)
    assert "epoch 500/500" not in _header(page)
    page.assert_healthy()


def _save_screenshot(page, tmp_path: Path) -> Path:
    """Into docs/ (for the README) when missing or CNNVIZ_UPDATE_SCREENSHOT=1; otherwise into tmp_path."""
    update = not SCREENSHOT.exists() or os.environ.get("CNNVIZ_UPDATE_SCREENSHOT") == "1"
    path = SCREENSHOT if update else tmp_path / SCREENSHOT.name
    monitor = page.widget(MONITOR)
    monitor.scroll_into_view_if_needed()
    page.page.mouse.move(0, 0)  # no hover: no tooltip in the picture
    page.page.wait_for_timeout(300)
    path.parent.mkdir(exist_ok=True)
    monitor.screenshot(path=str(path), animations="disabled", caret="hide")
    size = path.stat().st_size
    assert size < SCREENSHOT_MAX_BYTES, f"{path} is {size} bytes; keep it under {SCREENSHOT_MAX_BYTES}"
    return path


@pytest.fixture(autouse=True)
def _no_stale_notebook(served_dir):
    yield
    (served_dir / NOTEBOOK).unlink(missing_ok=True)
