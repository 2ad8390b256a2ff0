"""What a teacher sees: every tab of the Explorer in JupyterLab at 1100, 1500 and 1920 px, checked and pictured.

For each width and tab it measures, in the page:
- no clipped text: an element whose text is wider than its box and hides the rest (DOM), an SVG text that
  sticks out of its figure (bqplot axis labels and ticks, measured with getBoundingClientRect);
- no overlapping text: label, readout, tab title and button boxes of the controls, and SVG texts of one
  figure, pairwise;
- the pictures use the width: the largest picture of a mosaic tab is at least half the tab's width;
- no broken images: every <img> decoded, every bqplot picture has an href;
- no stale message: the Explorer's message line is empty after a tab change.
It writes a gallery, one PNG per tab in the light and the dark theme at 1500 px, to docs/gallery/ when run
with CNNVIZ_UPDATE_GALLERY=1 (`make screenshot`), otherwise into the test's temporary folder.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from tests.browser.harness import DOCS, WIDTHS

NOTEBOOK = "look_check.ipynb"
CELLS = (
    "import cnnviz_widgets as cw\nfrom cnnviz_widgets.widgets import Explorer",
    'explorer = Explorer(cw.ModelState("vgg16", max_side=128, layer="block2_conv2"))\nexplorer',
)
GALLERY_WIDTH, GALLERY_HEIGHT = 1500, 1000
GALLERY = DOCS / "gallery"
# Tabs whose main content is a picture: its largest picture must take at least this share of the tab's width.
# Findings in views another change is still building, reported by this test but not failing it yet (none now:
# "What it looks for" says in words what it will show, where it showed empty <img> boxes before a scan).
OPEN_ELSEWHERE: set[tuple[str, str]] = set()
PICTURE_TABS = {"Activations": 0.5, "Weights": 0.5, "One value": 0.5, "Why (Grad-CAM)": 0.4,
                "Compare images": 0.6, "Filter effect": 0.5}

def _tabs(page) -> list[str]:
    return [t.strip() for t in page.widget(".cnnviz-tabs").locator(".lm-TabBar-tab").all_inner_texts()]


def _open_tab(page, title: str) -> None:
    page.open_tab(title)
    _wait_settled(page)


def _wait_settled(page) -> None:
    """Until the kernel is idle and the open tab's pictures carry an href (or the tab has none)."""
    page.wait_kernel_idle(60_000)
    page.page.wait_for_function(
        "(sel) => [...document.querySelectorAll(sel + ' .bqplot svg image')]"
        ".every(i => (i.getAttribute('href') || '') !== '')",
        arg=page.scoped(".cnnviz-explorer"), timeout=30_000, polling=100,
    )
    page.page.mouse.move(0, 0)  # no hover: no tooltip in the measurements or the pictures
    page.page.wait_for_timeout(400)  # bqplot lays a figure out again after a resize (debounced)


def _measure(page) -> dict:
    return page.measure(".cnnviz-explorer")


def _shot(page, folder: Path, name: str) -> None:
    """The whole Explorer: the window is made tall enough for it, so the notebook's scrolling cuts nothing."""
    explorer = page.widget(".cnnviz-explorer")
    height = 0.0
    for _ in range(3):  # a taller window lets the pictures grow (they stop at 72 % of its height): measure again
        grown = explorer.bounding_box()["height"]
        if grown <= height + 1:
            break
        height = grown
        page.page.set_viewport_size({"width": GALLERY_WIDTH, "height": max(GALLERY_HEIGHT, int(height) + 400)})
        _wait_settled(page)
    explorer.scroll_into_view_if_needed()
    explorer.screenshot(path=str(folder / name), animations="disabled", caret="hide")
    page.page.set_viewport_size({"width": GALLERY_WIDTH, "height": GALLERY_HEIGHT})


def test_every_tab_at_three_widths(lab_page, served_dir, tmp_path):
    page = lab_page
    page.run_new_notebook(served_dir / NOTEBOOK, CELLS, WIDTHS[0], timeout=120_000)
    _wait_settled(page)
    page.assert_healthy()
    tabs = _tabs(page)
    assert len(tabs) >= 9, tabs
    update = os.environ.get("CNNVIZ_UPDATE_GALLERY") == "1"
    gallery = GALLERY if update else tmp_path / "gallery"
    gallery.mkdir(parents=True, exist_ok=True)
    problems: list[str] = []
    for width in WIDTHS:
        page.page.set_viewport_size({"width": width, "height": 1000})
        for title in tabs:
            _open_tab(page, title)
            seen = _measure(page)
            where = f"{width} px, {title}:"
            problems += [f"{where} clipped {text}" for text in seen["clipped"]]
            problems += [f"{where} overlapping {pair}" for pair in seen["overlaps"]]
            if (title, "broken image") in OPEN_ELSEWHERE:
                print(f"{where} {len(seen['broken'])} broken images (open elsewhere)")
            else:
                problems += [f"{where} broken image {src}" for src in seen["broken"]]
            if seen["message"]:
                problems.append(f"{where} message line after a tab change: {seen['message']!r}")
            share = PICTURE_TABS.get(title)
            if share and seen["tab"]:
                widest = max((p["w"] for p in seen["pictures"]), default=0)
                # side-by-side pictures share the row (their heights overlap the widest's): their sum counts
                big = max(seen["pictures"], key=lambda p: p["w"], default=None)
                row = sum(p["w"] for p in seen["pictures"]
                          if big and p["y"] < big["y"] + big["h"] and big["y"] < p["y"] + p["h"])
                if max(widest, row) < share * seen["tab"]["w"]:
                    problems.append(f"{where} pictures {max(widest, row):.0f} px wide in a "
                                    f"{seen['tab']['w']:.0f} px tab (want ≥ {share:.0%})")
    # the gallery: a window tall enough for the whole Explorer, so no picture of it is cut
    page.page.set_viewport_size({"width": GALLERY_WIDTH, "height": GALLERY_HEIGHT})
    for title in tabs:
        _open_tab(page, title)
        _shot(page, gallery, f"{_slug(title)}-light.png")
    page.set_theme("JupyterLab Dark")
    try:
        for title in tabs:
            _open_tab(page, title)
            _shot(page, gallery, f"{_slug(title)}-dark.png")
    finally:
        page.set_theme("JupyterLab Light")
    page.assert_healthy()
    assert not problems, "\n".join(problems)


def _slug(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")


@pytest.fixture(autouse=True)
def _no_stale_notebook(served_dir):
    yield
    (served_dir / NOTEBOOK).unlink(missing_ok=True)
