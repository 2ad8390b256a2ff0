"""The front ends our widgets stand on: ipywidgets and bqplot render and respond, in JupyterLab and Notebook 7.

A notebook with nothing of cnnviz_widgets in it, so a failure here points at the installation (a missing
lab extension shows as "Failed to load model class" or a console error), not at our code.
"""

from __future__ import annotations

from tests.browser.harness import write_notebook

# A slider whose value is drawn into a bqplot Image mark as a grey square, and echoed into a label.
SMOKE_CELLS = (
    """\
import io
import bqplot as bq
import ipywidgets as widgets
from PIL import Image as PILImage

def png(level):
    buffer = io.BytesIO()
    PILImage.new("L", (8, 8), color=level * 25).save(buffer, format="PNG")
    return widgets.Image(value=buffer.getvalue(), format="png")

slider = widgets.IntSlider(value=0, min=0, max=10, description="level")
slider.add_class("smoke-slider")
label = widgets.HTML("level 0")
label.add_class("smoke-label")
mark = bq.Image(image=png(0), scales={"x": bq.LinearScale(), "y": bq.LinearScale()})
figure = bq.Figure(marks=[mark], fig_margin=dict(top=0, bottom=0, left=0, right=0),
                   layout=widgets.Layout(width="120px", height="120px"))
figure.add_class("smoke-figure")

def on_level(change):
    old = mark.image
    mark.image = png(change["new"])  # a new Image widget: changing .value does not redraw the mark
    old.close()
    label.value = f"level {change['new']}"

slider.observe(on_level, "value")
widgets.VBox([slider, label, figure])""",
)


def _check(page, name: str, move: str) -> None:
    page.open(name).run_all()
    page.wait_all_executed()
    first = page.wait_image(".smoke-figure")
    assert first.startswith(("data:image/png", "blob:")), first[:40]

    if move == "key":
        page.press_on_slider(".smoke-slider", "ArrowRight")
    else:
        page.click_slider_at(".smoke-slider", 0.1)  # 0..10: a tenth of the way is 1
    second = page.wait_image(".smoke-figure", not_equal=first)
    page.wait_text(".smoke-label", "level 1")
    assert page.slider_readout(".smoke-slider") == "1"
    assert second != first
    page.assert_healthy()


def test_jupyterlab_renders_ipywidgets_and_bqplot(lab_page, served_dir):
    write_notebook(served_dir / "smoke.ipynb", *SMOKE_CELLS)
    _check(lab_page, "smoke.ipynb", move="key")


def test_notebook7_renders_ipywidgets_and_bqplot(notebook_page, served_dir):
    write_notebook(served_dir / "smoke.ipynb", *SMOKE_CELLS)
    _check(notebook_page, "smoke.ipynb", move="mouse")


# A widget whose JavaScript does not exist, a line on stderr and an exception: what the checks must catch.
BROKEN_CELLS = (
    """\
import ipywidgets, traitlets

class Missing(ipywidgets.DOMWidget):
    _model_module = traitlets.Unicode("cnnviz-no-such-module").tag(sync=True)
    _model_name = traitlets.Unicode("NoSuchModel").tag(sync=True)
    _view_module = traitlets.Unicode("cnnviz-no-such-module").tag(sync=True)
    _view_name = traitlets.Unicode("NoSuchView").tag(sync=True)

Missing()""",
    "import sys\nprint('something went wrong', file=sys.stderr)",
    "raise ValueError('a failing cell')",
)


def test_checks_catch_broken_widgets_and_failing_cells(lab_page, served_dir):
    """Control for `assert_healthy`: each kind of problem it looks for is seen when it is there."""
    write_notebook(served_dir / "broken.ipynb", *BROKEN_CELLS)
    page = lab_page
    page.open("broken.ipynb").run_all()
    page.wait_all_executed()
    page.page.wait_for_function("() => document.body.innerText.includes('a failing cell')")
    problems = page.output_errors()
    assert any(p.startswith("widget error:") for p in problems), problems
    assert any("something went wrong" in p for p in problems), problems
    assert any("a failing cell" in p for p in problems), problems
    assert any("cnnviz-no-such-module" in error for error in page.unexpected_js_errors()), page.js_errors
