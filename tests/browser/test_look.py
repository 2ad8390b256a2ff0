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

from tests.browser.harness import DOCS, write_notebook

NOTEBOOK = "look_check.ipynb"
CELLS = (
    "import cnnviz_widgets as cw\nfrom cnnviz_widgets.widgets import Explorer",
    'explorer = Explorer(cw.ModelState("vgg16", max_side=128, layer="block2_conv2"))\nexplorer',
)
WIDTHS = (1100, 1500, 1920)
GALLERY_WIDTH, GALLERY_HEIGHT = 1500, 1000
GALLERY = DOCS / "gallery"
# Tabs whose main content is a picture: its largest picture must take at least this share of the tab's width.
# Findings in views another change is still building, reported by this test but not failing it yet (none now:
# "What it looks for" says in words what it will show, where it showed empty <img> boxes before a scan).
OPEN_ELSEWHERE: set[tuple[str, str]] = set()
PICTURE_TABS = {"Activations": 0.5, "Weights": 0.5, "One value": 0.5, "Why (Grad-CAM)": 0.4,
                "Compare images": 0.6, "Filter effect": 0.5}

# Everything measured in one pass over the Explorer; returns plain data for the assertions.
_MEASURE_JS = r"""(root) => {
    const explorer = document.querySelector(root);
    const visible = (el) => {
        const r = el.getBoundingClientRect();
        if (r.width < 1 || r.height < 1) return false;
        for (let e = el; e && e !== document.body; e = e.parentElement) {
            const s = getComputedStyle(e);
            if (s.display === 'none' || s.visibility === 'hidden') return false;
        }
        return true;
    };
    const box = (el) => { const r = el.getBoundingClientRect();
                          return {x: r.left, y: r.top, w: r.width, h: r.height}; };
    const name = (el) => (el.textContent || '').trim().slice(0, 60);
    const clipped = [];
    const textual = explorer.querySelectorAll(
        '.widget-label, .widget-readout, .lm-TabBar-tabLabel, .widget-button, .jupyter-button, ' +
        '.widget-html-content, .widget-dropdown select, label');
    for (const el of textual) {
        if (!visible(el) || !name(el)) continue;
        const s = getComputedStyle(el);
        const hides = ['hidden', 'clip'].includes(s.overflowX) || s.textOverflow === 'ellipsis';
        if (hides && el.scrollWidth > el.clientWidth + 1)
            clipped.push(`${name(el)} (${el.scrollWidth} > ${el.clientWidth} px)`);
    }
    // labels of one row of controls must not run into each other
    const overlaps = [];
    const controls = [...explorer.querySelectorAll(
        '.cnnviz-controls .widget-label, .cnnviz-controls .widget-readout, .cnnviz-controls button, ' +
        '.lm-TabBar-tab')].filter(visible);
    for (let i = 0; i < controls.length; i++) for (let j = i + 1; j < controls.length; j++) {
        const a = controls[i].getBoundingClientRect(), b = controls[j].getBoundingClientRect();
        if (controls[i].contains(controls[j]) || controls[j].contains(controls[i])) continue;
        const dx = Math.min(a.right, b.right) - Math.max(a.left, b.left);
        const dy = Math.min(a.bottom, b.bottom) - Math.max(a.top, b.top);
        if (dx > 1 && dy > 1) overlaps.push(`"${name(controls[i])}" / "${name(controls[j])}"`);
    }
    // SVG texts: inside their figure, and not on top of each other
    for (const fig of explorer.querySelectorAll('.bqplot')) {
        if (!visible(fig)) continue;
        const f = fig.getBoundingClientRect();
        const texts = [...fig.querySelectorAll('svg text')].filter(t => visible(t) && name(t));
        for (const t of texts) {
            const r = t.getBoundingClientRect();
            if (r.left < f.left - 1 || r.right > f.right + 1 || r.top < f.top - 1 || r.bottom > f.bottom + 1)
                clipped.push(`svg text "${name(t)}" outside its figure`);
        }
        for (let i = 0; i < texts.length; i++) for (let j = i + 1; j < texts.length; j++) {
            const a = texts[i].getBoundingClientRect(), b = texts[j].getBoundingClientRect();
            const dx = Math.min(a.right, b.right) - Math.max(a.left, b.left);
            const dy = Math.min(a.bottom, b.bottom) - Math.max(a.top, b.top);
            if (dx > 1 && dy > 1) overlaps.push(`svg "${name(texts[i])}" / "${name(texts[j])}"`);
        }
    }
    const broken = [...explorer.querySelectorAll('img')].filter(i => visible(i) && !(i.complete && i.naturalWidth > 0))
        .map(i => (i.getAttribute('src') || '').slice(0, 40));
    for (const image of explorer.querySelectorAll('.bqplot svg image')) {
        const href = image.getAttribute('href') || image.getAttribute('xlink:href') || '';
        if (visible(image.closest('.bqplot')) && !href) broken.push('bqplot image without a picture');
    }
    const tab = explorer.querySelector('.cnnviz-tabs .widget-tab-contents, .cnnviz-tabs .lm-StackedPanel');
    const pictures = [...explorer.querySelectorAll('.cnnviz-mosaic-figure')].filter(visible).map(box);
    const message = explorer.querySelector('.cnnviz-message');
    return {clipped, overlaps, broken, pictures, tab: tab ? box(tab) : null,
            explorer: box(explorer), message: message ? message.textContent.trim() : ''};
}"""


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
    return page.page.evaluate(_MEASURE_JS, page.scoped(".cnnviz-explorer"))


def _set_theme(page, theme: str) -> None:
    page.page.locator(".lm-MenuBar-itemLabel", has_text="Settings").first.click()
    page.page.locator(".lm-Menu-itemLabel", has_text="Theme").first.hover()
    page.page.locator(".lm-Menu-itemLabel", has_text=theme).first.click()
    page.page.wait_for_function("(t) => document.body.dataset.jpThemeName === t", arg=theme, timeout=20_000)
    page.page.wait_for_timeout(500)


def _shot(page, folder: Path, name: str) -> None:
    """The whole Explorer: the window is made tall enough for it, so the notebook's scrolling cuts nothing."""
    explorer = page.widget(".cnnviz-explorer")
    height = explorer.bounding_box()["height"]
    page.page.set_viewport_size({"width": GALLERY_WIDTH, "height": max(GALLERY_HEIGHT, int(height) + 400)})
    _wait_settled(page)
    explorer.scroll_into_view_if_needed()
    explorer.screenshot(path=str(folder / name), animations="disabled", caret="hide")
    page.page.set_viewport_size({"width": GALLERY_WIDTH, "height": GALLERY_HEIGHT})


def test_every_tab_at_three_widths(lab_page, served_dir, tmp_path):
    page = lab_page
    write_notebook(served_dir / NOTEBOOK, *CELLS)
    page.page.set_viewport_size({"width": WIDTHS[0], "height": 1000})
    page.open(NOTEBOOK).run_all()
    page.wait_all_executed(timeout=120_000)
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
    _set_theme(page, "JupyterLab Dark")
    try:
        for title in tabs:
            _open_tab(page, title)
            _shot(page, gallery, f"{_slug(title)}-dark.png")
    finally:
        _set_theme(page, "JupyterLab Light")
    page.assert_healthy()
    assert not problems, "\n".join(problems)


def _slug(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")


@pytest.fixture(autouse=True)
def _no_stale_notebook(served_dir):
    yield
    (served_dir / NOTEBOOK).unlink(missing_ok=True)
