"""Channel stats, Grad-CAM, One value and Compare images as a teacher sees them, in JupyterLab and Chromium.

What `test_look.py` checks on every tab (clipped text, width, broken images) holds here too; this file checks
what these four views promise on top, in the page:
- Channel stats: value ticks in plain decimals (0.9, not SI's "900m"); sorted, the x axis counts ranks 1, 2, …;
- Grad-CAM: while a pass computes, the previous picture stays (dimmed) under a visible "computing …" note,
  shown within 100 ms of the key press that asked for it (a screenshot is taken mid-compute);
- One value: the tiles are captioned with their channel; on a 256-wide map a click on the zoomed crop picks
  the value clicked;
- Compare images: no broken image while the other image computes; both maps start at one height and are drawn
  at one scale.
Screenshots go to the test's temporary folder, or to $CNNVIZ_VIEWS_SHOTS when set (to look at them).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

NOTEBOOK = "views_look.ipynb"
# 256-pixel input: block1's maps are 256 wide, the size where a click on the map alone is guesswork
CELLS = (
    "import cnnviz_widgets as cw\nfrom cnnviz_widgets.widgets import Explorer",
    'explorer = Explorer(cw.ModelState("vgg16", max_side=256, layer="block2_conv2"))\nexplorer',
)
WIDTHS = (1100, 1920)

# Until the note shows: the time from the key press (taken in the page) to the first frame that paints it.
_WATCH_NOTE_JS = r"""([sel, now]) => {
    window.__cnnviz = {pressed: now ? performance.now() : null, shown: null, href: null};
    document.addEventListener('keydown', () => {
        if (window.__cnnviz.pressed === null) window.__cnnviz.pressed = performance.now(); }, true);
    const tick = () => {
        const note = document.querySelector(sel + ' .cnnviz-busy-note');
        const w = window.__cnnviz;
        if (note && w.pressed !== null && getComputedStyle(note).display !== 'none' && note.offsetWidth > 0) {
            w.shown = performance.now();
            const image = document.querySelector(sel + ' .cnnviz-mosaic-figure svg image');
            w.href = image ? (image.getAttribute('href') || '') : '';
            w.note = note.textContent.trim();
            return;
        }
        requestAnimationFrame(tick);
    };
    requestAnimationFrame(tick);
}"""


def _shots() -> Path | None:
    folder = os.environ.get("CNNVIZ_VIEWS_SHOTS")
    return Path(folder) if folder else None


def _settle(page) -> None:
    page.wait_kernel_idle(120_000)
    page.page.wait_for_function(
        "(sel) => [...document.querySelectorAll(sel + ' .bqplot svg image')]"
        ".every(i => (i.getAttribute('href') || '') !== '')",
        arg=page.scoped(".cnnviz-explorer"), timeout=30_000, polling=100)
    page.page.mouse.move(0, 0)
    page.page.wait_for_timeout(400)  # bqplot lays a figure out again after a resize (debounced)


def _svg_texts(page, selector: str) -> list[str]:
    return page.page.evaluate(
        "(sel) => [...document.querySelectorAll(sel + ' svg text')].map(t => t.textContent.trim())"
        ".filter(t => t)", page.scoped(selector))


def _shot(page, folder: Path, name: str) -> None:
    """The open tab, whole: the window is made tall enough for it first."""
    view = page.widget(".cnnviz-tabs")
    size = page.page.viewport_size
    page.page.set_viewport_size({"width": size["width"], "height": max(size["height"],
                                                                        int(view.bounding_box()["height"]) + 400)})
    page.page.wait_for_timeout(400)  # bqplot lays a figure out again after a resize (debounced)
    view.scroll_into_view_if_needed()
    view.screenshot(path=str(folder / name), animations="disabled", caret="hide")
    page.page.set_viewport_size(size)


def test_stats_gradcam_one_value_and_compare_in_the_browser(lab_page, served_dir, tmp_path):
    page = lab_page
    folder = _shots() or tmp_path
    folder.mkdir(parents=True, exist_ok=True)
    page.run_new_notebook(served_dir / NOTEBOOK, CELLS, WIDTHS[0], timeout=180_000)
    _settle(page)
    page.assert_healthy()

    # -- Channel stats ------------------------------------------------------------------------------------
    page.open_tab("Channel stats")
    _settle(page)
    stats = ".cnnviz-channel-stats"
    page.widget(f"{stats} .widget-toggle-button:has-text('zeros')").click()
    _settle(page)
    ticks = _svg_texts(page, f"{stats}-chart")
    assert not [t for t in ticks if re.fullmatch(r"-?[\d.]+[mµkM]", t)], ticks  # no SI suffixes
    assert "0.5" in ticks or "0.4" in ticks, ticks
    _shot(page, folder, "channel-stats-zeros-1100.png")
    page.widget(f"{stats} select").select_option(label="max, largest first")
    _settle(page)
    ticks = _svg_texts(page, f"{stats}-chart")
    assert "1" in ticks and "9" in ticks and any("rank by max" in t for t in ticks), ticks
    assert "Activations tab" in page.widget(f"{stats}-order-note").inner_text()
    _shot(page, folder, "channel-stats-sorted-1100.png")
    page.widget(f"{stats} select").select_option(label="channel index")  # as the other tabs expect it
    _settle(page)

    # -- Grad-CAM: the old picture under a note while it computes -----------------------------------------
    page.open_tab("Why (Grad-CAM)")
    _settle(page)
    cam = ".cnnviz-class-activation-map"
    assert page.panel.locator(".cnnviz-class-picker:visible").count() == 0  # no classifier: no class menu
    layers = page.widget(".cnnviz-gradcam-layer-picker select").inner_text().replace("\xa0", " ")
    assert "automatic: block2_conv1" in layers  # names the layer it weighs for block2_conv2's filter
    before = page.image_href(f"{cam}-figure")
    page.page.evaluate(_WATCH_NOTE_JS, [page.scoped(cam), True])
    page.widget(f"{cam} .cnnviz-method-picker select").select_option(label="Saliency")  # a gradient pass: seconds
    page.page.wait_for_function("() => window.__cnnviz.shown !== null", timeout=30_000, polling="raf")
    _shot(page, folder, "grad-cam-computing-1100.png")
    seen = page.page.evaluate("() => window.__cnnviz")
    assert seen["note"].startswith("computing Saliency"), seen
    assert seen["href"], "the panel was empty while it computed"
    # now the timing the issue asks for: a filter step, key press to note painted
    page.wait_kernel_idle(120_000)
    after_saliency = page.wait_image(f"{cam}-figure", not_equal=before)
    page.page.evaluate(_WATCH_NOTE_JS, [page.scoped(cam), False])
    page.press_on_slider(".cnnviz-filter-slider", "ArrowRight")
    page.page.wait_for_function("() => window.__cnnviz.shown !== null", timeout=30_000, polling="raf")
    seen = page.page.evaluate("() => window.__cnnviz")
    delay = seen["shown"] - seen["pressed"]
    assert seen["href"] == after_saliency, "the previous picture did not stay under the note"
    _settle(page)
    page.page.wait_for_function(
        "(sel) => getComputedStyle(document.querySelector(sel)).display === 'none'",
        arg=page.scoped(f"{cam} .cnnviz-busy-note"), timeout=60_000)
    # For scale (timings are reported, not asserted: they follow the machine's load): the quickest reply a
    # picture can get, a new blend of the same map (no network), key press to new picture.
    old = page.image_href(f"{cam}-figure")
    page.page.evaluate(_WATCH_NOTE_JS, [page.scoped(cam), False])
    page.press_on_slider(".cnnviz-opacity-slider", "ArrowLeft")
    page.wait_image(f"{cam}-figure", not_equal=old)
    blend = page.page.evaluate("() => performance.now()") - page.page.evaluate("() => window.__cnnviz.pressed")
    print(f"\ncomputing note painted {delay:.0f} ms after the key press (a blend, for scale: {blend:.0f} ms; "
          f"load average {os.getloadavg()[0]:.1f})")
    page.widget(f"{cam} .cnnviz-method-picker select").select_option(label="Grad-CAM")
    _settle(page)
    _shot(page, folder, "grad-cam-1100.png")

    # -- One value: captions, and a click in the zoom on a 256-wide map ------------------------------------
    page.open_tab("One value")
    page.press_on_slider(".cnnviz-layer-slider", "Home")  # the input...
    page.press_on_slider(".cnnviz-layer-slider", "ArrowRight")  # ...block1_conv1: 256×256 maps
    _settle(page)
    pixel = ".cnnviz-pixel"
    assert "256×256 output map" in page.widget(f"{pixel}-map .cnnviz-mosaic-title").inner_text()
    captions = page.panel.locator(f"{pixel}-kernels .cnnviz-caption-grid > div").all_inner_texts()
    assert captions and all(c.startswith("channel ") for c in captions), captions
    heading = page.widget(f"{pixel} .widget-html").inner_text()
    zoom = page.widget(f"{pixel}-zoom .cnnviz-mosaic-figure svg image")
    box = zoom.bounding_box()
    assert box["width"] / 24 >= 10, f"a zoomed value is {box['width'] / 24:.1f} px wide"  # clickable
    page.page.mouse.click(box["x"] + box["width"] * 2.5 / 24, box["y"] + box["height"] * 2.5 / 24)
    page.wait_kernel_idle(60_000)
    page.page.wait_for_function("([sel, old]) => document.querySelector(sel).textContent !== old",
                                arg=[page.scoped(f"{pixel} .widget-html"), heading], timeout=20_000)
    _settle(page)
    _shot(page, folder, "one-value-1100.png")

    # -- Compare images: no broken image while the other one runs; one height, one scale ------------------
    page.open_tab("Compare images")
    _settle(page)
    compare = ".cnnviz-compare-images"
    page.widget(".cnnviz-compare-picker select").select_option(label="coffee")
    broken = page.page.evaluate(
        "(sel) => [...document.querySelectorAll(sel + ' img')].filter(i => !(i.complete && i.naturalWidth > 0))"
        ".length", page.scoped(compare))
    assert broken == 0
    _settle(page)
    boxes = page.page.evaluate(
        "(sel) => [...document.querySelectorAll(sel + ' .cnnviz-mosaic-figure')].map(f => { "
        "const r = f.getBoundingClientRect(); return {y: r.top, w: r.width}; })", page.scoped(compare))
    assert len(boxes) == 2 and abs(boxes[0]["y"] - boxes[1]["y"]) <= 1, boxes  # level
    assert abs(boxes[0]["w"] - boxes[1]["w"]) <= 2, boxes  # both maps are 256 wide: drawn at one scale
    _shot(page, folder, "compare-1100.png")

    # -- the same at 1920, and in the dark theme ----------------------------------------------------------
    page.page.set_viewport_size({"width": WIDTHS[1], "height": 1000})
    tabs = (("One value", "one-value"), ("Channel stats", "channel-stats"), ("Why (Grad-CAM)", "grad-cam"),
            ("Compare images", "compare"))
    for title, name in tabs:
        page.open_tab(title)
        _settle(page)
        _shot(page, folder, f"{name}-1920.png")
    page.set_theme("JupyterLab Dark")
    try:
        for title, name in tabs:
            page.open_tab(title)
            _settle(page)
            _shot(page, folder, f"{name}-1920-dark.png")
    finally:
        page.set_theme("JupyterLab Light")
    page.assert_healthy()


@pytest.fixture(autouse=True)
def _no_stale_notebook(served_dir):
    yield
    (served_dir / NOTEBOOK).unlink(missing_ok=True)
