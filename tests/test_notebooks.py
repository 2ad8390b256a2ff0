"""The notebooks in `notebooks/` run from top to bottom without errors, and the library adds no log noise.

Each notebook is executed in a fresh kernel of this environment (nbclient), as a reader would with Run All.
A notebook kernel shows whatever TensorFlow's native code writes to file descriptor 2 (start-up lines about
oneDNN, CUDA, absl) as red stderr output; `cnnviz_widgets._keras` silences them, and these tests check that
in a real kernel, while a user's own warnings must still show.
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest
from nbclient.exceptions import CellExecutionError

from tests.notebook_runner import KernelMemory, run_notebook

NOTEBOOKS = sorted((Path(__file__).parents[1] / "notebooks").glob("*.ipynb"))
NOTEBOOK_PEAK_BYTES = 1.5e9
"""Binder gives a session 2 GB: every notebook's kernel stays under 1.5 GB at its peak (resident, psutil)."""

# What TensorFlow / Keras print on their own when a library uses them carelessly.
LOG_NOISE = re.compile("|".join([
    r"oneDNN custom operations",
    r"cuda drivers",
    r"cuInit",
    r"absl::InitializeLog",
    r"cpu_feature_guard",
    r"This TensorFlow binary is optimized",
    r"structure of `inputs` doesn't match",
    r"^[IWEF]\d{4} [\d:.]+\s+\d+ \w+\.cc:\d+\]",  # a glog/absl line: I0000 00:00:1700000000.123 123 port.cc:153]
]), re.MULTILINE)


# The view each lesson's text describes: the code that makes it, and the layer and filter its text names (None:
# the filter that cell picks, kept in `first_filter`). tests/browser/test_lessons.py checks the page against these.
LESSON_VIEWS = {
    "03_how_a_convolution_computes.ipynb": ("pixel_view = ConvolutionAtPixel(state)", "block1_conv2", 1),
    "04_why_the_network_decides.ipynb": ("cam = ClassActivationMap(state)", "block4_conv1", None),
}
_03, _04 = (LESSON_VIEWS[name] for name in ("03_how_a_convolution_computes.ipynb", "04_why_the_network_decides.ipynb"))
# Run after the last cell of a notebook: after Run All, each lesson's views still show what their text says
# (a later cell setting a shared state's layer must not change a view further up).
LESSON_CHECKS = {
    "03_how_a_convolution_computes.ipynb": (
        f"assert (pixel_view.state.layer, pixel_view.state.filter) == {_03[1:]!r}, pixel_view.state.layer\n"
        "assert (pixel_view.row, pixel_view.col) == (row, col), (pixel_view.row, pixel_view.col, row, col)\n"
        f"_strongest = maps_first[row, col, {_03[2]}]\n"
        "assert 0 < _strongest and abs(pixel_view.breakdown.output - _strongest) <= 1e-4 * _strongest\n"
        f"assert {_03[1]!r} in pixel_view.map_figure.title.value\n"
        "print('the lesson views still show what their text says')"),
    "04_why_the_network_decides.ipynb": (
        f"assert (cam.state.layer, cam.state.filter) == ({_04[1]!r}, first_filter), cam.state.layer\n"
        f"assert {_04[1]!r} in cam.figure.title.value, cam.figure.title.value\n"
        "from PIL import Image as _Image\n"
        "_title = _Image.open(workdir / 'grad_cam.png').text['Title']\n"
        f"assert {_04[1]!r} in _title and 'block3_conv1' not in _title, _title\n"
        "print('the lesson views still show what their text says')"),
}
LESSON_SETUP = {  # values the checks compare with, taken right after the view's own cell
    "03_how_a_convolution_computes.ipynb": (_03[0], "maps_first = state.activation().copy()"),
    "04_why_the_network_decides.ipynb": (_04[0], "first_filter = state.filter"),
}


def _with_lesson_checks(nb: nbformat.NotebookNode, name: str) -> None:
    if name in LESSON_SETUP:
        marker, setup = LESSON_SETUP[name]
        index = next(i for i, cell in enumerate(nb.cells) if marker in cell.source)
        nb.cells.insert(index + 1, nbformat.v4.new_code_cell(setup + "\nprint('noted for the final check')"))
    if name in LESSON_CHECKS:
        nb.cells.append(nbformat.v4.new_code_cell(LESSON_CHECKS[name]))


def _execute(nb: nbformat.NotebookNode, workdir: Path) -> KernelMemory:
    """Run every cell in a fresh kernel of this interpreter, in `workdir`; the kernel's memory record."""
    return run_notebook(nb, workdir)


def _streams(nb: nbformat.NotebookNode, name: str) -> str:
    return "".join(output.get("text", "") for cell in nb.cells if cell.cell_type == "code"
                   for output in cell.get("outputs", [])
                   if output.get("output_type") == "stream" and output.get("name") == name)


def test_there_are_notebooks():
    assert [path.name for path in NOTEBOOKS][:2] == ["01_tour.ipynb", "02_your_own_model.ipynb"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.name)
def test_notebook_is_committed_without_outputs(path: Path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert code, f"{path.name} has no code"
    with_outputs = [i for i, cell in enumerate(nb.cells) if cell.cell_type == "code"
                    and (cell.get("outputs") or cell.get("execution_count") is not None)]
    assert not with_outputs, f"{path.name}: clear the outputs of cells {with_outputs} before committing"
    assert "widgets" not in nb.metadata, f"{path.name}: saved widget state makes diffs huge; do not save it"
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3"


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.name)
def test_notebook_runs_cleanly(path: Path, tmp_path: Path):
    nb = nbformat.read(path, as_version=4)
    _with_lesson_checks(nb, path.name)
    try:
        memory = _execute(nb, tmp_path)
    except CellExecutionError as error:
        pytest.fail(f"{path.name} failed:\n{error}", pytrace=False)
    peak_cell = max(range(len(memory.cell_peaks)), key=memory.cell_peaks.__getitem__)
    assert memory.peak_bytes <= NOTEBOOK_PEAK_BYTES, (
        f"{path.name}: the kernel peaked at {memory.peak_bytes / 1e9:.2f} GB (budget "
        f"{NOTEBOOK_PEAK_BYTES / 1e9:.1f} GB), highest in code cell {peak_cell}")
    errors = [output for cell in nb.cells for output in cell.get("outputs", [])
              if output.get("output_type") == "error"]
    assert not errors
    stderr = _streams(nb, "stderr")
    assert not LOG_NOISE.search(stderr), f"{path.name}: TensorFlow/Keras log noise in the cell outputs:\n{stderr}"
    # Every code cell ran and most show something (text or a widget): a silent notebook teaches nothing.
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert all(cell.execution_count for cell in code)
    shown = [cell for cell in code if cell.outputs]
    assert len(shown) >= len(code) * 0.6, f"{path.name}: only {len(shown)} of {len(code)} code cells show anything"


@pytest.mark.slow
def test_library_keeps_tensorflow_quiet_but_not_the_users_warnings(tmp_path: Path):
    """Loading a model, running it and showing the Explorer print nothing on stderr; a user's warning shows."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(source) for source in (
        "import cnnviz_widgets as cw\n"
        "state = cw.ModelState(cw.load_model('vgg16', weights='bsds500'), max_side=32)\n"
        "print(state.activation('block3_conv1').shape)",
        "from cnnviz_widgets.widgets import Explorer\nExplorer(state)",
        "import keras  # the user's own import, after the library's: already loaded, silent",
        "import warnings\nwarnings.warn('a warning of the user, which must stay visible')",
    )]
    _execute(nb, tmp_path)
    assert "(8, 8, 256)" in _streams(nb, "stdout")
    stderr = _streams(nb, "stderr")
    assert "a warning of the user, which must stay visible" in stderr
    assert not LOG_NOISE.search(stderr), stderr


@pytest.mark.slow
def test_noise_detector_sees_tensorflow_imported_directly(tmp_path: Path):
    """Control: a kernel that imports TensorFlow itself does print the lines the tests above look for."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("import tensorflow as tf\nprint(tf.reduce_sum(tf.ones(3)).numpy())")]
    _execute(nb, tmp_path)
    assert "3.0" in _streams(nb, "stdout")
    if not LOG_NOISE.search(_streams(nb, "stderr")):
        pytest.skip("this TensorFlow build prints no start-up lines, so the noise checks prove nothing here")
