"""The Explorer's "Why" tab in JupyterLab: the method menu answers the keyboard and the mouse (the picture and the
summary change), and the methods compared side by side show with their titles (one notebook, one kernel).

The model is a small classifier built in the notebook (64×64 input, seeded), so that every method has a class to
explain and the whole test stays quick on two cores.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.browser.harness import write_notebook

NOTEBOOK = "why_workbench_check.ipynb"
CELLS = (
    # Keras through the package's one quiet import (a plain `import keras` logs to stderr, which fails the test)
    "import cnnviz_widgets as cw\nfrom cnnviz_widgets.network.backend import keras\n"
    "from cnnviz_widgets.widgets import CompareMethods, Explorer\nkeras = keras()",
    "keras.utils.set_random_seed(3)\n"
    "inputs = keras.Input((64, 64, 3), name='pixels')\n"
    "x = keras.layers.Conv2D(8, 3, padding='same', activation='relu', name='conv1')(inputs)\n"
    "x = keras.layers.MaxPooling2D(name='pool1')(x)\n"
    "x = keras.layers.Conv2D(8, 3, padding='same', activation='relu', name='conv2')(x)\n"
    "x = keras.layers.GlobalAveragePooling2D(name='gap')(x)\n"
    "outputs = keras.layers.Dense(4, activation='softmax', name='probs')(x)\n"
    "model = keras.Model(inputs, outputs, name='small_classifier')",
    "explorer = Explorer(cw.ModelState(model, image='astronaut'))\nexplorer",
    "CompareMethods(explorer.state)",
)
ACTIVATIONS = ".cnnviz-activation-grid .cnnviz-mosaic-figure"
CAM = ".cnnviz-class-activation-map-figure"
CAM_TITLE = f"{CAM} .cnnviz-mosaic-title"
PICKER = ".cnnviz-method-picker select"
SUMMARY = ".cnnviz-method-summary"
COMPARE = ".cnnviz-compare-methods"
COMPARED = f"{COMPARE} .cnnviz-compare-method"


def _titles(page) -> list[str]:
    return [text.strip() for text in page.panel.locator(f"{COMPARED} .cnnviz-mosaic-title").all_inner_texts()]


def _wait_count(page, selector: str, count: int) -> None:
    page.page.wait_for_function("([sel, n]) => document.querySelectorAll(sel).length === n",
                                arg=[page.scoped(selector), count], timeout=60_000, polling=100)


def test_why_tab_method_menu_and_comparison_in_jupyterlab(lab_page, served_dir, tmp_path, record_property):
    page = lab_page
    write_notebook(served_dir / NOTEBOOK, *CELLS)
    page.open(NOTEBOOK).run_all()
    page.wait_all_executed(timeout=120_000)
    page.wait_image(ACTIVATIONS)
    page.assert_healthy()

    page.open_tab("Why (Grad-CAM)")
    grad_cam = page.wait_image(CAM)
    page.wait_text(CAM_TITLE, "Grad-CAM of class")
    assert "Grad-CAM" in page.wait_text(SUMMARY, "weighed by the mean gradient")
    picker = page.widget(PICKER)
    # the menu has an accessible name: its label is tied to the <select>
    assert page.page.evaluate("([sel]) => { const s = document.querySelector(sel); "
                              "return !!s && s.labels.length > 0 && s.labels[0].textContent.includes('method'); }",
                              [page.scoped(PICKER)])

    # Keyboard: focus the menu, open its list (Alt+Down; Space does too), Down, Enter: the next method, Grad-CAM++.
    # (A bare Down on the closed menu is JupyterLab's "next cell" in command mode: the notebook takes it.)
    picker.scroll_into_view_if_needed()
    picker.focus()
    for key in ("Alt+ArrowDown", "ArrowDown", "Enter"):
        page.page.keyboard.press(key)
    page.wait_text(CAM_TITLE, "Grad-CAM++ of class")
    assert "Grad-CAM++" in page.wait_text(SUMMARY, "positive gradients")
    plus_plus = page.wait_image(CAM, not_equal=grad_cam)
    assert picker.input_value() == "Grad-CAM++"  # ipywidgets' <option> values are the labels
    assert page.widget(".cnnviz-gradcam-layer-picker").is_visible()  # a CAM method: its layer menu shows

    # Mouse: click the menu open and choose Saliency; the layer menu goes (saliency weighs no layer)
    picker.click()
    picker.select_option(label="Saliency")
    page.page.keyboard.press("Escape")
    page.wait_text(CAM_TITLE, "Saliency of class")
    assert "sensitive" in page.wait_text(SUMMARY, "Saliency")
    page.wait_image(CAM, not_equal=plus_plus)
    page.page.wait_for_function("([sel]) => { const el = document.querySelector(sel); "
                                "return !!el && getComputedStyle(el).display === 'none'; }",
                                arg=[page.scoped(".cnnviz-gradcam-layer-picker")], timeout=20_000)

    # The comparison under it: six methods by default, each titled with its name and time, one scale sentence
    _wait_count(page, COMPARED, 6)
    for name in ("grad-cam", "grad-cam-plus-plus", "layer-cam", "saliency", "input-x-gradient", "guided-backprop"):
        page.wait_image(f".cnnviz-compare-method-{name}")
    page.wait_text(f"{COMPARED}:last-child .cnnviz-mosaic-title", " ms")
    titles = _titles(page)
    assert [title.split(" ")[0] for title in titles] == ["Grad-CAM", "Grad-CAM++", "LayerCAM", "Saliency",
                                                          "Input", "Guided"], titles
    assert all(title.endswith(" ms") and "<" not in title for title in titles), titles
    assert "scaled to its own range" in page.widget(".cnnviz-compare-methods-scale").inner_text()

    # A slow method added with the mouse (Ctrl-click in the list): a seventh picture, titled Score-CAM
    option = page.widget(".cnnviz-compare-methods-picker select option:text-is('Score-CAM')")
    option.scroll_into_view_if_needed()
    option.click(modifiers=["Control"])
    _wait_count(page, COMPARED, 7)
    page.wait_image(".cnnviz-compare-method-score-cam")
    page.wait_text(".cnnviz-compare-method-score-cam .cnnviz-mosaic-title", "Score-CAM")
    assert "Score-CAM" in [title.split(" ")[0] for title in _titles(page)]

    page.assert_healthy()
    path = _screenshot(page, tmp_path)
    record_property("screenshot", str(path))
    print(f"Why tab screenshot: {path}")


def _screenshot(page, tmp_path: Path) -> Path:
    """The comparison, whole: in a window tall enough for it (an element taller than the notebook's scrolling
    area would be cut)."""
    path = tmp_path / "why_workbench.png"
    page.page.set_viewport_size({"width": 1400, "height": 2400})
    tab = page.widget(COMPARE)
    tab.scroll_into_view_if_needed()
    page.page.mouse.move(0, 0)  # no hover: no tooltip in the picture
    page.page.wait_for_timeout(300)
    tab.screenshot(path=str(path), animations="disabled", caret="hide")
    return path


@pytest.fixture(autouse=True)
def _no_stale_notebook(served_dir):
    yield
    (served_dir / NOTEBOOK).unlink(missing_ok=True)
