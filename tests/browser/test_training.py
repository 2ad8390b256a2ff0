"""The training monitor in a real browser: every control works WHILE the network trains, and after.

A notebook trains notebook 05's small CNN in the background for far longer than the test lasts, and its next
cell waits for the fit (`job.wait()`), as notebook 05 does, so the page is in the middle of a "Run All". While
it trains and waits, every control of the monitor is driven with the keyboard or the mouse: the layer, input
channel and filter sliders, the step slider back to step 0 and forward again, pause and resume, a click on a
change bar, the image picker, the smoothing slider; then stop, after which the queued cell runs. After training
the step slider is used again (keys and a click on its track) and the replay plays the kept steps. Then the
monitor is measured at 1100, 1500 and 1920 px in the light and the dark theme (no clipped or overlapping text,
pictures that use the width) and pictured; `docs/training.png` (the README's picture) is rewritten when missing
or with CNNVIZ_UPDATE_SCREENSHOT=1.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from pathlib import Path

import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from tests.browser.harness import DOCS, WIDTHS, write_notebook

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
    # far longer than the test: it must still be training while the controls are driven, and stop must end it
    "job = monitor.fit_in_background(x, digits.target, epochs=500, batch_size=32, validation_split=0.1)",
    "history = await job  # as notebook 05: the controls must stay live while this cell waits",
    "print(f'training ended at step {monitor.seen}')",
)
MONITOR = ".cnnviz-training-monitor"
HEADER = f"{MONITOR} .cnnviz-training-header"
STEP_LABEL = f"{MONITOR} .cnnviz-step-label"
LAYER_SLIDER = f"{MONITOR} .cnnviz-layer-slider"
CHANNEL_SLIDER = f"{MONITOR} .cnnviz-channel-slider"
FILTER_SLIDER = f"{MONITOR} .cnnviz-filter-slider"
STEP_SLIDER = f"{MONITOR} .cnnviz-step-slider"
SMOOTHING_SLIDER = f"{MONITOR} .cnnviz-smoothing-slider"
ACTIVATIONS = f"{MONITOR} .cnnviz-training-activations .cnnviz-mosaic-figure"
ACTIVATIONS_TITLE = f"{MONITOR} .cnnviz-training-activations .cnnviz-mosaic-title"
WEIGHTS = f"{MONITOR} .cnnviz-training-weights .cnnviz-mosaic-figure"
WEIGHTS_TITLE = f"{MONITOR} .cnnviz-training-weights .cnnviz-mosaic-title"
FIRST = f"{MONITOR} .cnnviz-training-first .cnnviz-mosaic-figure"
LOSS_LEGEND = f"{MONITOR} .cnnviz-training-loss-legend"
SCREENSHOT = DOCS / "training.png"
SCREENSHOT_MAX_BYTES = 500_000
MONITOR_TEXTS = (f"{MONITOR} .widget-label, {MONITOR} .widget-readout, {MONITOR} button, "
                 f"{MONITOR} .cnnviz-step-label")


def _header(page) -> str:
    return page.widget(HEADER).text_content()


def _step(page) -> int:
    return int(re.search(r"step (\d+)", _header(page)).group(1))


def _shown_step(page) -> str:
    return page.widget(STEP_LABEL).text_content()


def _wait_shown(page, text: str, timeout: float = 30_000) -> str:
    try:
        return page.wait_text(STEP_LABEL, text, timeout=timeout)
    except Exception as err:
        raise AssertionError(f"the step label never said {text!r}: it says {_shown_step(page)!r}") from err


def _wait_same_picture(page, a: str, b: str, timeout: float = 30_000) -> None:
    """Until the pictures under selectors `a` and `b` are the same image, byte for byte (each picture has a
    blob: URL of its own, so the bytes are compared)."""
    page.page.wait_for_function(
        """async ([a, b]) => {
            const bytes = async (sel) => {
                const image = document.querySelector(sel + ' svg image');
                const href = image && image.getAttribute('href');
                if (!href) return null;
                return new Uint8Array(await (await fetch(href)).arrayBuffer());
            };
            const [x, y] = [await bytes(a), await bytes(b)];
            return x !== null && y !== null && x.length === y.length && x.every((v, i) => v === y[i]);
        }""",
        arg=[page.scoped(a), page.scoped(b)], timeout=timeout, polling=200)


def test_every_control_works_during_run_all_and_after_training(lab_page, served_dir, tmp_path):
    page = lab_page
    write_notebook(served_dir / NOTEBOOK, *CELLS)
    page.open(NOTEBOOK).run_all()
    # The fit returns at once, then `job.wait()` holds the "Run All": the controls must answer all the same.
    page.wait_text(HEADER, "Training", timeout=120_000)
    page.wait_text(ACTIVATIONS_TITLE, "conv1 activations")
    first_weights = page.wait_image(WEIGHTS)
    page.wait_image(FIRST)
    assert page.slider_readout(LAYER_SLIDER) == "conv1"
    assert page.wait_image(WEIGHTS, not_equal=first_weights, timeout=60_000) != first_weights  # live

    # Layer, filter and input channel, with the keyboard, while it trains.
    step_before = _step(page)
    start = time.perf_counter()
    page.press_on_slider(LAYER_SLIDER, "ArrowRight")
    page.wait_text(ACTIVATIONS_TITLE, "pool1 activations", timeout=30_000)
    print(f"layer key -> new title during training: {1000 * (time.perf_counter() - start):.0f} ms")
    page.press_on_slider(LAYER_SLIDER, "ArrowRight")
    page.wait_text(WEIGHTS_TITLE, "conv2 filters at input channel 0", timeout=30_000)
    page.press_on_slider(CHANNEL_SLIDER, "ArrowRight")
    page.wait_text(WEIGHTS_TITLE, "conv2 filters at input channel 1", timeout=30_000)
    page.press_on_slider(FILTER_SLIDER, "ArrowRight")
    page.page.wait_for_function("(sel) => document.querySelector(sel).textContent.trim() === '1'",
                                arg=page.scoped(f"{FILTER_SLIDER} .widget-readout"), timeout=30_000)
    assert "Training" in _header(page) and _step(page) > step_before

    # Back in time while it trains: Home is step 0, and "now" then shows exactly the step-0 picture.
    page.press_on_slider(STEP_SLIDER, "Home")
    _wait_shown(page, "Showing step 0 of")
    _wait_same_picture(page, WEIGHTS, FIRST)
    page.wait_text(f"{MONITOR} .cnnviz-training-now-label", "Step 0")
    page.press_on_slider(STEP_SLIDER, "ArrowRight")
    _wait_shown(page, "Showing step 5 of")
    assert "Training" in _header(page)  # looking back does not stop training
    page.press_on_slider(STEP_SLIDER, "End")
    _wait_shown(page, "Showing now")

    # Pause: header, labels and pictures all at the step paused at; resume goes on.
    page.widget(f"{MONITOR} .cnnviz-pause-button").click()
    page.wait_text(HEADER, "Paused at step", timeout=30_000)
    paused_at = _step(page)
    _wait_shown(page, f"Showing now (step {paused_at})")
    page.wait_text(f"{MONITOR} .cnnviz-pause-button", "resume")
    time.sleep(1.0)
    assert _step(page) == paused_at
    page.widget(f"{MONITOR} .cnnviz-pause-button").click()
    page.wait_text(HEADER, "Training", timeout=30_000)

    # A click on the most changed filter's bar selects it; the image picker shows the other digit.
    bar = page.widget(f"{MONITOR} .cnnviz-training-change svg .bargroup rect").first
    bar.scroll_into_view_if_needed()
    bar.click()
    page.page.wait_for_function(
        "(sel) => document.querySelector(sel).textContent.trim() !== '1'",
        arg=page.scoped(f"{FILTER_SLIDER} .widget-readout"), timeout=30_000)
    maps = page.image_href(ACTIVATIONS)
    page.widget(f"{MONITOR} .cnnviz-image-picker select").select_option(label="image 1")
    page.wait_image(ACTIVATIONS, not_equal=maps, timeout=30_000)
    legend = page.widget(LOSS_LEGEND).text_content()
    page.press_on_slider(SMOOTHING_SLIDER, "ArrowRight")
    page.page.wait_for_function("([sel, old]) => document.querySelector(sel).textContent !== old",
                                arg=[page.scoped(LOSS_LEGEND), legend], timeout=30_000)
    assert "smoothed 0.61" in page.widget(LOSS_LEGEND).text_content()

    # Stop ends training; the cell that waited returns and the queued cell runs.
    page.widget(f"{MONITOR} .cnnviz-stop-button").click()
    page.wait_text(HEADER, "Stopped", timeout=60_000)
    page.wait_all_executed(timeout=60_000)
    assert "training ended at step" in page.panel.locator(".jp-OutputArea-output").last.text_content()

    # After training: keys, a click on the track, and the replay.
    page.press_on_slider(STEP_SLIDER, "Home")
    _wait_shown(page, "Showing step 0 of")
    _wait_same_picture(page, WEIGHTS, FIRST)
    page.click_slider_at(STEP_SLIDER, 0.5)
    page.page.wait_for_function("(sel) => !document.querySelector(sel).textContent.includes('step 0 of')",
                                arg=page.scoped(STEP_LABEL), timeout=30_000)
    middle = _shown_step(page)
    shown, newest = map(int, re.search(r"step (\d+) of (\d+)", middle).groups())
    assert 0.3 * newest < shown < 0.7 * newest, middle  # the middle of the track is the middle of training
    page.press_on_slider(STEP_SLIDER, "Home")
    _wait_shown(page, "Showing step 0 of")
    replay = page.panel.locator(f"{MONITOR} .cnnviz-replay button")
    replay.nth(0).click()  # play
    _wait_shown(page, "Showing step 10 of", timeout=30_000)  # it plays on by itself, past step 5
    replay.nth(1).click()  # pause the replay
    page.press_on_slider(STEP_SLIDER, "End")
    _wait_shown(page, "Showing the end")
    assert "Stopped" in _header(page)
    page.assert_healthy()

    problems = _look(page, tmp_path)
    assert not problems, "\n".join(problems)


def _look(page, tmp_path: Path) -> list[str]:
    """Measure the monitor at every width, light and dark, and picture it; the problems found."""
    problems: list[str] = []
    update = not SCREENSHOT.exists() or os.environ.get("CNNVIZ_UPDATE_SCREENSHOT") == "1"
    shots = tmp_path / "shots"
    shots.mkdir()
    for theme in ("JupyterLab Light", "JupyterLab Dark"):
        page.set_theme(theme)
        for width in WIDTHS:
            # The whole monitor in the window: JupyterLab leaves the layout of what is scrolled out of view
            # (content-visibility), so a figure there keeps the size of its last time on screen.
            page.page.set_viewport_size({"width": width, "height": 1000})
            page.page.wait_for_timeout(500)
            height = int(page.widget(MONITOR).bounding_box()["height"]) + 400
            page.page.set_viewport_size({"width": width, "height": height})
            page.widget(MONITOR).scroll_into_view_if_needed()
            page.page.mouse.move(0, 0)
            seen = _settled_measure(page)
            where = f"{theme}, {width} px:"
            problems += [f"{where} clipped {text}" for text in seen["clipped"]]
            problems += [f"{where} overlapping {pair}" for pair in seen["overlaps"]]
            problems += [f"{where} broken image {src}" for src in seen["broken"]]
            monitor_width = seen["root"]["w"]
            row = [p for p in seen["pictures"] if abs(p["y"] - seen["pictures"][0]["y"]) < 80]
            used = sum(p["w"] for p in row)
            if used < 0.6 * monitor_width:
                problems.append(f"{where} the three pictures take {used:.0f} of {monitor_width:.0f} px")
            name = f"monitor-{theme.split()[-1].lower()}-{width}.png"
            _shot(page, shots / name, width)
    page.set_theme("JupyterLab Light")
    page.page.set_viewport_size({"width": 1500, "height": 1000})
    page.page.wait_for_timeout(600)
    folder = os.environ.get("CNNVIZ_MONITOR_SHOTS")
    if folder:  # to look at them
        for shot in shots.iterdir():
            Path(folder).mkdir(parents=True, exist_ok=True)
            (Path(folder) / shot.name).write_bytes(shot.read_bytes())
    path = SCREENSHOT if update else tmp_path / SCREENSHOT.name
    _shot(page, path, 1500)
    size = path.stat().st_size
    if size > SCREENSHOT_MAX_BYTES:
        problems.append(f"{path} is {size} bytes; keep it under {SCREENSHOT_MAX_BYTES}")
    return problems


def _settled_measure(page) -> dict:
    """`measure` once two measurements 0.7 s apart agree: bqplot lays its figures out again after a resize
    (debounced), and texts measured mid-way sit outside their figures."""
    before = None
    for _ in range(8):
        page.page.wait_for_timeout(700)
        seen = page.measure(MONITOR, MONITOR_TEXTS)
        if seen == before:
            break
        before = seen
    return seen


def _shot(page, path: Path, width: int) -> None:
    """The whole monitor: the window is made tall enough for it, so the notebook's scrolling cuts nothing."""
    monitor = page.widget(MONITOR)
    page.page.set_viewport_size({"width": width, "height": int(monitor.bounding_box()["height"]) + 400})
    monitor.scroll_into_view_if_needed()
    # bqplot lays each figure out again (debounced) after a resize: wait until every drawing fits its figure
    # (a picture only: what does not fit is measured, and reported, by `_look`)
    with contextlib.suppress(PlaywrightTimeout):
        _wait_drawings_fit(page)
    page.page.mouse.move(0, 0)  # no hover: no tooltip in the picture
    page.page.wait_for_timeout(300)
    monitor.screenshot(path=str(path), animations="disabled", caret="hide")
    page.page.set_viewport_size({"width": width, "height": 1000})


def _wait_drawings_fit(page) -> None:
    page.page.wait_for_function(
        """(sel) => [...document.querySelectorAll(sel + ' .bqplot')].every(f => {
            const box = f.getBoundingClientRect();
            return [...f.querySelectorAll('svg, svg image')].every(e => {
                const r = e.getBoundingClientRect(); return r.left >= box.left - 2 && r.right <= box.right + 2; });
        })""",
        arg=page.scoped(MONITOR), timeout=15_000, polling=200)


@pytest.fixture(autouse=True)
def _no_stale_notebook(served_dir):
    yield
    (served_dir / NOTEBOOK).unlink(missing_ok=True)
