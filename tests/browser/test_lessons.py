"""The lessons as a teacher gives them: notebooks 01–04 in JupyterLab in Chromium, Run All, then read at 1100,
1500 and 1920 px.

Each notebook is opened as it is committed and run with Run → Run All Cells, as a person would. Once its kernel
is idle, the window is set to each width in turn (no re-run) and the page is measured:
- no clipped or overlapping text (`NotebookPage.measure`, the same measurements as the Explorer's in
  test_look.py: DOM text boxes, and SVG text boxes inside their bqplot figures);
- no output wider than its cell, and the views' pictures use the cell's width;
- no mosaic with an empty slot where its tile count fills a grid (notebook 02's 8 filters once sat in 3×3);
- no broken image, no widget error, no traceback or stderr in any output;
- notebooks 03 and 04: the view the lesson's text describes still names the layer and filter that text names,
  after later cells ran (the expected values are tests/test_notebooks.py's `LESSON_VIEWS`); in 04 the PNG
  exported from that view, shown in the page, too; notebook 01: each view's title names what the tour's text
  says it shows (`TOUR_VIEWS`).
Notebook 05 trains and has its own browser test (test_training.py). All four share one JupyterLab server and run
two at a time, each in a page and a kernel of its own (`LessonRunner`), so the file takes about as long as its two
longest lessons' Run All rather than the sum of all four.
"""

from __future__ import annotations

import base64
import contextlib
import io
import math
import os
import re
import shutil
import urllib.error
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest

from tests.browser.harness import PAGE_HELPERS_JS, WIDTHS, NotebookPage
from tests.test_notebooks import LESSON_VIEWS

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
LESSONS = ("01_tour.ipynb", "02_your_own_model.ipynb", "03_how_a_convolution_computes.ipynb",
           "04_why_the_network_decides.ipynb")
HEIGHT = 1000
# CNNVIZ_LESSON_SHOTS=<folder>: also save a picture of each view at each width there, to look at.
SHOTS = os.environ.get("CNNVIZ_LESSON_SHOTS", "")
# A view's pictures use the cell: the widest row of its mosaic figures spans at least this share of the output
# area, unless the picture already reaches the height the views cap it at (72 % of the window) and so would no
# longer fit on the screen if it were wider.
PICTURE_SHARE = 0.5
TALL_SHARE = 0.6
# The tour's views and what its text says they show (the code that makes each view: a title it must show after
# Run All). Later cells move `state` to another image and back, and the Explorer to block3_conv1 from code.
TOUR_VIEWS = {"01_tour.ipynb": {
    "WeightGrid(state)": "block1_conv1 filters at input channel 2",
    "FilterEffect(conv1)": "block1_conv1 (Conv2D), filter 34",
    "FilterEffect(conv2)": "block1_conv2 (Conv2D), filter 1",
    "grid = ActivationGrid(state)": "block1_conv1 activations for astronaut",
    "explorer = Explorer(": "block3_conv1 activations for cat",
}}
# Findings in views another change is still fixing, reported by this test but not failing it yet:
# WeightGrid's "filter N whole" picture puts a 3-channel kernel in a 2×2 grid with one slot empty
# (cnnviz_widgets/widgets/grids.py, `_draw_side`: its `tile_maps` call lacks the grid's `cols=full_rows(...)`).
OPEN_ELSEWHERE: tuple[str, ...] = ()
# ipywidgets gives every widget a 2 px margin, so a full-width figure overhangs its cell by 2 px, on blank space.
OVERHANG_PX = 4
# Texts that must not run into each other inside a lesson's outputs: every view's labels, readouts, buttons,
# tab titles and picture titles.
LESSON_CONTROL_TEXTS = ".widget-label, .widget-readout, button, .lm-TabBar-tab, .cnnviz-mosaic-title"

# Per output area of every cell: its box, what sticks out of it, its mosaic figures (box, title, tile grid read
# from the invisible hover marker bqplot draws at the centre of each tile) and its images.
_LAYOUT_JS = r"""([panelSelector, SLACK]) => {
    const panel = document.querySelector(panelSelector);
/*PAGE_HELPERS*/
    const outputs = [];
    [...panel.querySelectorAll('.jp-Cell')].forEach((cell, index) => {
        for (const output of cell.querySelectorAll('.jp-OutputArea-output')) {
            const o = output.getBoundingClientRect();
            const sticking = [];
            if (output.scrollWidth > output.clientWidth + 1)
                sticking.push(`the output scrolls sideways (${output.scrollWidth} > ${output.clientWidth} px)`);
            for (const el of output.querySelectorAll('img, .bqplot, .widget-html-content, .widget-box')) {
                if (!visible(el)) continue;
                const r = el.getBoundingClientRect();
                if (r.right > o.right + SLACK || r.left < o.left - SLACK)
                    sticking.push(`${el.tagName.toLowerCase()}.${[...el.classList].slice(0, 2).join('.')} ` +
                                  `spans ${r.left.toFixed(0)}..${r.right.toFixed(0)} px, the cell ` +
                                  `${o.left.toFixed(0)}..${o.right.toFixed(0)} px`);
            }
            const figures = [...output.querySelectorAll('.cnnviz-mosaic-figure')].filter(visible).map(fig => {
                const centres = [...fig.querySelectorAll('g.object_grp')].map(dot => {
                    const m = /translate\(\s*([-\d.e]+)[ ,]+([-\d.e]+)/.exec(dot.getAttribute('transform') || '');
                    return m ? [Math.round(+m[1]), Math.round(+m[2])] : null;
                }).filter(Boolean);
                const view = fig.closest('.cnnviz-mosaic-figure').parentElement;
                const title = view && view.querySelector('.cnnviz-mosaic-title');
                return {...box(fig), title: title ? title.textContent.trim() : '', tiles: centres.length,
                        cols: new Set(centres.map(c => c[0])).size, rows: new Set(centres.map(c => c[1])).size};
            });
            outputs.push({cell: index, ...box(output), sticking, figures,
                          images: [...output.querySelectorAll('img')].map(i => i.getAttribute('src') || ''),
                          titles: [...output.querySelectorAll('.cnnviz-mosaic-title, .widget-html-content')]
                                  .filter(visible).map(t => t.textContent.trim()).filter(Boolean)});
        }
    });
    return outputs;
}""".replace("/*PAGE_HELPERS*/", PAGE_HELPERS_JS)


def _fills_a_grid(n: int) -> bool:
    """Whether n tiles fill some grid no wider than 4:1 (8 -> 4×2, 3 -> 3×1; not 7, whose only grid is 7×1)."""
    return any(n % rows == 0 and n // rows <= 4 * rows for rows in range(1, n + 1))


def _wait_settled(page) -> None:
    """Until the notebook's kernel is idle, every bqplot picture has its href and every <img> has decoded."""
    page.wait_kernel_idle(60_000)
    page.page.wait_for_function(
        "(sel) => { const panel = document.querySelector(sel); return !!panel && "
        "[...panel.querySelectorAll('.bqplot svg image')].every(i => (i.getAttribute('href') || '') !== '') && "
        "[...panel.querySelectorAll('.jp-OutputArea-output img')].every(i => i.complete); }",
        arg=".jp-NotebookPanel:not(.lm-mod-hidden)", timeout=30_000, polling=100,
    )
    page.page.mouse.move(0, 0)  # no hover: no tooltip in the measurements
    page.page.wait_for_timeout(500)  # bqplot lays a figure out again after a resize (debounced)


class LessonRunner:
    """Runs the lessons two at a time, each in a browser page and kernel of its own: while one is looked at, the
    next one already runs. Two, not four: a lesson's kernel peaks at up to 1.5 GB, and CI has 2 cores."""

    AHEAD = 1  # lessons started before the one being looked at is done

    def __init__(self, browser, server, served_dir: Path, lessons: list[str]):
        self.browser, self.server, self.served_dir, self.lessons = browser, server, served_dir, lessons
        self.pages: dict[str, NotebookPage] = {}

    def _start(self, name: str) -> None:
        if name in self.pages:
            return
        shutil.copy(NOTEBOOKS / name, self.served_dir / name)
        context = self.browser.new_context(viewport={"width": WIDTHS[0], "height": HEIGHT})
        page = NotebookPage(context.new_page(), self.server)
        page.page.set_default_timeout(60_000)
        self.pages[name] = page
        page.open(name, own_kernel_only=True).run_all()

    def ran(self, name: str) -> NotebookPage:
        """The page of lesson `name` after Run All, settled; the lessons after it are started meanwhile."""
        at = self.lessons.index(name)
        self._start(name)
        for ahead in self.lessons[at + 1: at + 1 + self.AHEAD]:
            self._start(ahead)
        page = self.pages[name]
        page.page.bring_to_front()
        page.wait_all_executed(timeout=300_000)
        _wait_settled(page)
        return page

    def close(self, name: str) -> None:
        """Close the lesson's page and shut its kernel down (a VGG16 kernel holds about 1 GB)."""
        page = self.pages.pop(name, None)
        if page is None:
            return
        page.page.context.close()
        for session in self.server.api("sessions"):
            if session["path"] == name:
                with contextlib.suppress(urllib.error.HTTPError):  # 404: it ended on its own meanwhile
                    self.server.api(f"sessions/{session['id']}", method="DELETE")
        (self.served_dir / name).unlink(missing_ok=True)


@pytest.fixture(scope="module")
def lessons(browser, lab_server, served_dir, request) -> Iterator[LessonRunner]:
    # Only the lessons whose tests were selected (-k) are run.
    chosen = {item.callspec.params["name"] for item in request.session.items
              if item.path == Path(__file__) and hasattr(item, "callspec")}
    runner = LessonRunner(browser, lab_server, served_dir, [name for name in LESSONS if name in chosen])
    try:
        yield runner
    finally:
        for name in list(runner.pages):
            runner.close(name)


def _cell_index(nb: nbformat.NotebookNode, code: str) -> int:
    return next(i for i, cell in enumerate(nb.cells) if code in cell.source)


def _cell_text(page, index: int) -> str:
    return "\n".join(page.panel.locator(".jp-Cell").nth(index).locator(".jp-OutputArea-output").all_text_contents())


def _layout_problems(outputs: list[dict], where: str) -> list[str]:
    problems = []
    for out in outputs:
        at = f"{where} cell {out['cell']}:"
        problems += [f"{at} {text}" for text in out["sticking"]]
        figures = out["figures"]
        if figures:
            big = max(figures, key=lambda f: f["w"])
            # side-by-side pictures share the row (their heights overlap the widest's): their sum counts
            row = sum(f["w"] for f in figures if f["y"] < big["y"] + big["h"] and big["y"] < f["y"] + f["h"])
            tallest = max(f["h"] for f in figures)
            if row < PICTURE_SHARE * out["w"] and tallest < TALL_SHARE * HEIGHT:
                problems.append(f"{at} pictures {row:.0f} px wide and {tallest:.0f} px tall in a {out['w']:.0f} px "
                                f"cell (want ≥ {PICTURE_SHARE:.0%} of its width, or ≥ {TALL_SHARE * HEIGHT:.0f} px "
                                f"tall): {big['title'][:60]!r}")
        for fig in figures:
            slots = fig["rows"] * fig["cols"]
            if fig["tiles"] and slots > fig["tiles"] and _fills_a_grid(fig["tiles"]):
                problems.append(f"{at} {fig['tiles']} tiles in a {fig['rows']}×{fig['cols']} grid leave "
                                f"{slots - fig['tiles']} slot(s) empty: {fig['title'][:60]!r}")
    return problems


def _lesson_view_problems(page, nb: nbformat.NotebookNode, name: str, outputs: list[dict]) -> list[str]:
    """The view the lesson's text describes still names its layer and filter (and, in 03, its pixel)."""
    if name in TOUR_VIEWS:
        problems = []
        for code, wanted in TOUR_VIEWS[name].items():
            cell = _cell_index(nb, code)
            shown = " | ".join(t for out in outputs if out["cell"] == cell for t in out["titles"])
            if wanted not in shown:
                problems.append(f"{name}: the view of cell {cell} ({code!r}) does not show {wanted!r}: {shown[:300]!r}")
        return problems
    if name not in LESSON_VIEWS:
        return []
    code, layer, wanted_filter = LESSON_VIEWS[name]
    view_cell = _cell_index(nb, code)
    titles = [t for out in outputs if out["cell"] == view_cell for t in out["titles"]]
    assert titles, f"{name}: the view of cell {view_cell} shows no title"
    shown = " | ".join(titles)
    problems = []
    if name.startswith("03"):
        # The text before the view prints where the filter responds most and the value there.
        printed = _cell_text(page, _cell_index(nb, "row, col = np.unravel_index"))
        where = re.search(rf"filter {wanted_filter} at \((\d+), (\d+)\):", printed)
        value = re.search(r"the layer's own output: ([\d.e+-]+)", printed)
        assert where and value, printed
        header = f"{layer}, filter {wanted_filter}: the value at ({where[1]}, {where[2]}) = "
        if header not in shown:
            problems.append(f"{name}: the view does not show {header!r}…; it shows {shown[:400]!r}")
        else:
            number = float(re.search(re.escape(header) + r"([\d.e+-]+)", shown)[1])
            if not math.isclose(number, float(value[1]), rel_tol=0.01):
                problems.append(f"{name}: the view's value {number} is not the printed {value[1]}")
        if not any(t.startswith(f"{layer} filter {wanted_filter}:") for t in titles):
            problems.append(f"{name}: no picture title starts with '{layer} filter {wanted_filter}:': {shown[:400]!r}")
    if name.startswith("04"):
        # The cell after the view prints what it explains: "target: block4_conv1 filter N".
        printed = _cell_text(page, _cell_index(nb, 'print(f"target: {result.target.words()}'))
        target = re.search(rf"target: ({re.escape(layer)} filter \d+)", printed)
        assert target, printed
        if target[1] not in shown:
            problems.append(f"{name}: the Grad-CAM view does not name {target[1]!r}: {shown[:400]!r}")
        # The PNG exported from that view, shown in the page, carries its title in its metadata.
        export_cell = _cell_index(nb, "export_png(cam")
        sources = [src for out in outputs if out["cell"] == export_cell for src in out["images"]]
        assert sources and sources[0].startswith("data:image/png;base64,"), sources[:1]
        from PIL import Image

        title = Image.open(io.BytesIO(base64.b64decode(sources[0].split(",", 1)[1]))).text.get("Title", "")
        if target[1] not in title:
            problems.append(f"{name}: the exported PNG's title does not name {target[1]!r}: {title!r}")
    return problems


def _shoot_views(page, name: str, width: int, folder: Path) -> None:
    """A picture of every output that shows a widget or an image, for a person to look at.

    The notebook scrolls inside JupyterLab, so an output taller than the window is taken in window-high parts
    (`…-cellNN-K.png`), scrolled one after the other: the window keeps its size, so the views keep their layout.
    """
    folder.mkdir(parents=True, exist_ok=True)
    cells = page.panel.locator(".jp-Cell")
    scroller = page.panel.locator(".jp-WindowedPanel-outer").first
    view = scroller.bounding_box()
    for index in range(cells.count()):
        area = cells.nth(index).locator(".jp-OutputArea")
        if not (area.count() and area.locator(".jupyter-widgets, img").count()):
            continue
        # twice: a cell drawn for the first time (content-visibility) changes the heights above it
        for _ in range(2):
            area.first.evaluate("(el) => el.scrollIntoView({block: 'start'})")
            page.page.wait_for_timeout(300)  # bqplot lays out a figure that just came into view
        stem = f"{Path(name).stem}-{width}-cell{index:02d}"
        for part in range(20):
            box = area.first.bounding_box()
            top, bottom = max(box["y"], view["y"]), min(box["y"] + box["height"], view["y"] + view["height"])
            if bottom - top < 2:
                break
            page.page.screenshot(path=str(folder / f"{stem}-{part}.png"), animations="disabled", caret="hide",
                                 clip={"x": box["x"], "y": top, "width": box["width"], "height": bottom - top})
            if box["y"] + box["height"] <= view["y"] + view["height"]:
                break
            scroller.evaluate("(el, dy) => el.scrollBy(0, dy)", bottom - top)
            page.page.wait_for_timeout(300)


@pytest.mark.parametrize("name", LESSONS)
def test_lesson_after_run_all(lessons, name):
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    page = lessons.ran(name)
    try:
        page.assert_healthy()
        problems: list[str] = []
        for width in WIDTHS:
            if width != WIDTHS[0]:
                page.page.set_viewport_size({"width": width, "height": HEIGHT})
                _wait_settled(page)
            where = f"{name} at {width} px,"
            seen = page.measure(".jp-OutputArea-output", LESSON_CONTROL_TEXTS)
            problems += [f"{where} clipped {text}" for text in seen["clipped"]]
            problems += [f"{where} overlapping {pair}" for pair in seen["overlaps"]]
            problems += [f"{where} broken image {src}" for src in seen["broken"]]
            outputs = page.page.evaluate(_LAYOUT_JS, [".jp-NotebookPanel:not(.lm-mod-hidden)", OVERHANG_PX])
            problems += _layout_problems(outputs, where)
            if width == WIDTHS[0]:
                problems += _lesson_view_problems(page, nb, name, outputs)
            if SHOTS:
                _shoot_views(page, name, width, Path(SHOTS))
        page.assert_healthy()
    finally:
        lessons.close(name)
    known = [p for p in problems if any(text in p for text in OPEN_ELSEWHERE)]
    for problem in known:
        print(f"open elsewhere: {problem}")
    problems = [p for p in problems if p not in known]
    assert not problems, "\n".join(problems)
