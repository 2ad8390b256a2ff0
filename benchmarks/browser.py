"""The one figure that needs a real browser: slider key press → new picture on screen, in JupyterLab.

Reuses the browser tests' harness (``tests/browser/harness.py``): a JupyterLab server on 127.0.0.1 with no
token, driven by headless Debian Chromium through Playwright. An Explorer on VGG16 (offline weights) shows
the Weights tab of block3_conv1; the input-channel slider is moved with the arrow key, as a keyboard user
drags it. Timed in the page: from the key press until the weight grid's title names the new channel AND its
`<image>` has a new `href` (both are sent in one synced update, but the browser decodes the image later).
This module is the benchmark group "browser": `bench_browser` gives its rows.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from harness import Row, stats

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
HARNESS_DIR = REPO / "tests" / "browser"

NOTEBOOK_CELLS = (
    """\
import cnnviz_widgets as cw
from cnnviz_widgets.widgets.explorer import Explorer

explorer = Explorer(cw.load_model("vgg16", weights="bsds500"))
explorer.state.layer = "block3_conv1"
explorer.tabs.selected_index = 1  # the Weights tab: the channel slider redraws its grid
explorer""",
)
GRID = "cnnviz-weight-grid-mosaic"
SLIDER = "cnnviz-channel-slider"

_HREF_JS = """(sel) => {
    const root = document.querySelector(sel);
    const image = root && root.querySelector('svg image');
    return image ? (image.getAttribute('href') || image.getAttribute('xlink:href') || '') : '';
}"""
# True once the grid's title names channel `want` and its picture is not the one it had before the key.
_SHOWN_JS = """([sel, oldHref, want]) => {
    const root = document.querySelector(sel);
    if (!root) return false;
    const title = root.querySelector('.cnnviz-mosaic-title');
    const image = root.querySelector('svg image');
    const href = image ? (image.getAttribute('href') || image.getAttribute('xlink:href') || '') : '';
    return !!title && title.innerText.includes(want) && href !== '' && href !== oldHref;
}"""


def unavailable() -> str | None:
    """Why the browser figure cannot run here, or None when it can."""
    if not (HARNESS_DIR / "harness.py").is_file():
        return f"no browser harness at {HARNESS_DIR}"
    sys.path.insert(0, str(REPO))
    try:
        import playwright.sync_api  # noqa: F401

        from tests.browser.harness import CHROMIUM
    except ImportError as err:
        return f"cannot import the harness or playwright: {err}"
    if not CHROMIUM.exists():
        return f"no Chromium at {CHROMIUM} (tests/browser/ensure_chromium.sh installs one)"
    return None


def measure(steps: int = 8, burst: int = 10) -> dict[str, Any]:
    """Per-key latencies (s) for `steps` single presses, then one burst of `burst` presses without waiting.

    Returns dict(step_seconds, burst_last_key_to_picture, burst_first_key_to_picture, startup_seconds,
    run_all_to_first_picture: Run All on a fresh kernel until the first picture is on screen).
    """
    sys.path.insert(0, str(REPO))
    from playwright.sync_api import sync_playwright

    from tests.browser.harness import CHROMIUM, CHROMIUM_ARGS, JupyterServer, NotebookPage, write_notebook

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="cnnviz-bench-browser-") as tmp:
        root = Path(tmp) / "notebooks"
        root.mkdir()
        write_notebook(root / "bench.ipynb", *NOTEBOOK_CELLS)
        server = JupyterServer(app="lab", root_dir=root, state_dir=Path(tmp))
        try:
            server.start()
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
                try:
                    context = browser.new_context(viewport={"width": 1400, "height": 1000})
                    page = NotebookPage(context.new_page(), server)
                    page.page.set_default_timeout(60_000)
                    page.open("bench.ipynb")
                    run_all = time.perf_counter()  # the kernel is fresh: nothing imported yet
                    page.run_all()
                    # Own selectors and scripts (the harness's helpers may change with the browser tests).
                    panel = ".jp-NotebookPanel:not(.lm-mod-hidden)"
                    selector = f"{panel} .{GRID}"
                    handle = page.page.locator(f"{panel} .{SLIDER} .noUi-handle").first

                    def href() -> str:
                        return page.page.evaluate(_HREF_JS, selector)

                    page.page.wait_for_selector(selector, state="attached", timeout=120_000)
                    page.page.wait_for_function(_SHOWN_JS, arg=[selector, "", "input channel 0 "], polling="raf",
                                                timeout=120_000)
                    first_picture = time.perf_counter() - run_all
                    startup = time.perf_counter() - started
                    page.wait_all_executed()

                    step_seconds = []
                    for channel in range(1, steps + 1):
                        old = href()
                        handle.scroll_into_view_if_needed()
                        handle.focus()
                        start = time.perf_counter()
                        page.page.keyboard.press("ArrowRight")
                        page.page.wait_for_function(_SHOWN_JS, arg=[selector, old, f"input channel {channel} "],
                                                    polling="raf")
                        step_seconds.append(time.perf_counter() - start)

                    old = href()
                    handle.focus()
                    first = time.perf_counter()
                    for _ in range(burst):
                        page.page.keyboard.press("ArrowRight")
                    last = time.perf_counter()
                    page.page.wait_for_function(_SHOWN_JS, arg=[selector, old, f"input channel {steps + burst} "],
                                                polling="raf")
                    shown = time.perf_counter()
                    page.assert_healthy()
                    context.close()
                finally:
                    browser.close()
        finally:
            server.stop()
    return dict(step_seconds=step_seconds, burst_keys=burst, burst_last_key_to_picture=shown - last,
                burst_first_key_to_picture=shown - first, startup_seconds=startup,
                run_all_to_first_picture=first_picture)


def bench_browser(quick: bool = False) -> list[Row]:
    """Key press on the channel slider → new weight grid on screen, in JupyterLab (see `measure`).

    Skipped (one row saying why) where no Chromium or Playwright is installed.
    """
    why = unavailable()
    if why:
        return [Row("browser drag", "skipped", float("nan"), "ms", note=why)]
    result = measure(steps=3 if quick else 8, burst=5 if quick else 10)
    step = stats(result["step_seconds"])
    return [
        Row("browser drag", "key → picture, WeightGrid channel", step["median"] * 1e3, "ms",
            note=f"p95 {step['p95'] * 1e3:.0f} ms over {step['n']} presses, each awaited; JupyterLab + Chromium",
            extra=dict(result, step=step)),
        Row("first paint", "Run All → first picture, fresh kernel", result["run_all_to_first_picture"], "s",
            note="JupyterLab + Chromium: TensorFlow import, VGG16 (offline), one forward pass, the Explorer",
            extra=dict(result)),
        Row("browser drag", f"{result['burst_keys']} keys at once → last picture",
            result["burst_last_key_to_picture"] * 1e3, "ms",
            note=f"{result['burst_first_key_to_picture'] * 1e3:.0f} ms from the first key",
            extra=dict(result)),
    ]
