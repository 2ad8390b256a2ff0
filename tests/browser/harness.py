"""Drive a real Jupyter front end: start a server, open a notebook in headless Chromium, read widgets back.

Used by the browser tests (``tests/browser/``); nothing here is part of the package. The server listens on
127.0.0.1 only, with no token (it is reachable only from this machine, for the few seconds a test runs), and
`JupyterServer.stop` always ends it and its kernels.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

DOCS = Path(__file__).resolve().parents[2] / "docs"
CHROMIUM = Path(os.environ.get("CNNVIZ_CHROMIUM", "/usr/bin/chromium"))
# From FIELD_NOTES: headless Debian Chromium as root, with nothing reaching out to the network.
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
# Console errors that are not ours and break nothing; anything else fails a test.
# - bqplot lays a Figure out when it is created; one created hidden (a Tab page not shown, a colour bar with
#   display "none") measures 0 px, so its plot area is 0 minus the margins, and Chromium logs the negative
#   <rect> size. bqplot hides such a figure and lays it out again once it is shown.
# - Notebook 7.6.5's settings registry throws this on load, on a notebook holding only `1+1`.
_BQPLOT_HIDDEN_FIGURE = ("<rect> attribute width: A negative value is not valid",
                         "<rect> attribute height: A negative value is not valid")
KNOWN_FRONTEND_ERRORS = {
    "lab": (),
    "notebook": ("Cannot read properties of undefined (reading 'schema')",),
}
# What the front end shows in an output area when a widget's JavaScript is missing or broken.
WIDGET_ERROR_TEXTS = ("Error displaying widget", "Failed to load model class", "Error creating widget",
                      "Could not create a view", "Class not found", "is not defined in module",
                      "Click to show javascript error")
# The window widths a teacher's screen may have (a laptop, a classroom projector, a desktop).
WIDTHS = (1100, 1500, 1920)
# Texts that must not run into each other, for `NotebookPage.measure`: the Explorer's controls and tab titles.
EXPLORER_CONTROL_TEXTS = (".cnnviz-controls .widget-label, .cnnviz-controls .widget-readout, .cnnviz-controls button, "
                          ".lm-TabBar-tab")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_notebook(path: Path, *code_cells: str) -> Path:
    """Write a notebook of code cells (no outputs) to `path`."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(source) for source in code_cells]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
    nbformat.write(nb, path)
    return path


@dataclass
class JupyterServer:
    """A `jupyter lab` or `jupyter notebook` server on a free local port, serving `root_dir`.

    Started from the running interpreter's environment (the venv), with its own config, data and runtime
    directories under `state_dir`, so a person's settings and saved workspaces never leak into a test.
    """

    app: str  # "lab" or "notebook"
    root_dir: Path
    state_dir: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None
    log_path: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def notebook_url(self, name: str) -> str:
        if self.app == "lab":
            return f"{self.url}/lab/tree/{name}?reset"  # ?reset: no tabs restored from an old workspace
        return f"{self.url}/notebooks/{name}"

    def start(self, timeout: float = 60) -> JupyterServer:
        executable = Path(sys.executable).parent / f"jupyter-{self.app}"
        if not executable.exists():
            raise RuntimeError(f"{executable} is missing: install the test extras (jupyterlab, notebook>=7)")
        # PYTEST_CURRENT_TEST would make ipykernel stop forwarding file descriptor 2 to the page: keep the
        # kernel as a user has it.
        env = {name: value for name, value in os.environ.items() if name != "PYTEST_CURRENT_TEST"}
        for name in ("JUPYTER_CONFIG_DIR", "JUPYTER_DATA_DIR", "JUPYTER_RUNTIME_DIR", "IPYTHONDIR"):
            env[name] = str(self.state_dir / name.lower())
        env["PATH"] = f"{executable.parent}{os.pathsep}{env.get('PATH', '')}"
        # No "get notified about Jupyter news?" toast over the widgets, and no fetch of the news feed.
        labconfig = self.state_dir / "jupyter_config_dir" / "labconfig"
        labconfig.mkdir(parents=True, exist_ok=True)
        (labconfig / "page_config.json").write_text(json.dumps(
            {"disabledExtensions": {"@jupyterlab/apputils-extension:announcements": True}}))
        self.log_path = self.state_dir / f"jupyter-{self.app}.log"
        command = [
            str(executable), "--no-browser", "--ip=127.0.0.1", f"--port={self.port}", "--port-retries=0",
            "--ServerApp.token=", "--ServerApp.password=", "--ServerApp.disable_check_xsrf=True",
            "--allow-root", f"--ServerApp.root_dir={self.root_dir}",
            "--LabServerApp.workspaces_dir=" + str(self.state_dir / "workspaces"), "--LabApp.news_url=None",
        ]
        with open(self.log_path, "wb") as log:
            # A session of its own, so stop() can end the server together with the kernels it started.
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env,
                                            cwd=self.root_dir, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"jupyter {self.app} exited with {self.process.returncode}:\n{self.log()}")
            try:
                self.api("status")
                return self
            except (OSError, urllib.error.URLError):
                time.sleep(0.25)
        self.stop()
        raise RuntimeError(f"jupyter {self.app} did not answer /api/status within {timeout} s:\n{self.log()}")

    def api(self, path: str, method: str = "GET") -> object:
        request = urllib.request.Request(f"{self.url}/api/{path}", method=method)
        with urllib.request.urlopen(request, timeout=5) as response:
            body = response.read()
        return json.loads(body) if body else None

    def shutdown_kernels(self) -> None:
        """Shut every kernel down (one VGG16 kernel holds about 1 GB)."""
        for kernel in self.api("kernels"):
            try:
                self.api(f"kernels/{kernel['id']}", method="DELETE")
            except urllib.error.HTTPError as err:  # 404: it ended on its own between the list and the delete
                if err.code != 404:
                    raise

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:] if self.log_path and self.log_path.exists() else ""

    def stop(self) -> None:
        """SIGTERM (the server shuts its kernels down), then SIGKILL the whole session after 10 s."""
        if self.process is None:
            return
        pgid = self.process.pid  # session leader: its pid is the process group id
        if self.process.poll() is None:
            os.killpg(pgid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=10)
        with contextlib.suppress(ProcessLookupError):  # kernels and anything else the server left in its group
            os.killpg(pgid, signal.SIGKILL)
        self.process.wait(timeout=10)
        self.process = None


class NotebookPage:
    """A notebook opened in JupyterLab or Notebook 7, with the page's JavaScript errors collected."""

    def __init__(self, page, server: JupyterServer):
        self.page = page
        self.server = server
        self.js_errors: list[str] = []
        self.own_kernel_path: str | None = None  # see `open`
        page.on("console", self._on_console)
        page.on("pageerror", lambda error: self.js_errors.append(f"pageerror: {error}"))

    def _on_console(self, message) -> None:
        if message.type == "error":
            self.js_errors.append(f"console.error: {message.text}")

    def unexpected_js_errors(self) -> list[str]:
        known = KNOWN_FRONTEND_ERRORS[self.server.app]
        return [error for error in self.js_errors if not any(text in error for text in known)]

    @property
    def panel(self):
        # JupyterLab keeps other (hidden) documents in the DOM: look only inside the visible notebook.
        return self.page.locator(".jp-NotebookPanel:not(.lm-mod-hidden)").first

    def open(self, name: str, timeout: float = 60_000, *, own_kernel_only: bool = False) -> NotebookPage:
        """Open notebook `name` and wait until its kernel is idle.

        own_kernel_only: from now on `wait_kernel_idle` looks at this notebook's kernel alone, not at every
        kernel of the server (for pages that run notebooks side by side).
        """
        self.own_kernel_path = name if own_kernel_only else None
        self.page.goto(self.server.notebook_url(name))
        self.panel.locator(".jp-Cell").first.wait_for(timeout=timeout)
        self.wait_kernel_idle(timeout)
        return self

    def _kernels(self) -> list[dict]:
        if self.own_kernel_path is None:
            return self.server.api("kernels")
        return [session["kernel"] for session in self.server.api("sessions")
                if session["path"] == self.own_kernel_path and session.get("kernel")]

    def wait_kernel_idle(self, timeout: float = 60_000) -> None:
        """Wait until the notebook's kernel exists and says it is idle (server side, so it works in both apps).

        Every kernel of the server must be idle, unless the notebook was opened with `own_kernel_only`.
        """
        deadline = time.monotonic() + timeout / 1000
        while time.monotonic() < deadline:
            try:
                kernels = self._kernels()
            except urllib.error.HTTPError as err:
                # jupyter_server answers 500 when a kernel it is listing goes away mid-list (the previous
                # test's kernel being shut down): ask again.
                if err.code != 500:
                    raise
                time.sleep(0.2)
                continue
            if kernels and all(k["execution_state"] == "idle" for k in kernels):
                return
            time.sleep(0.2)
        raise TimeoutError(f"kernel not idle after {timeout / 1000:.0f} s: {self.server.api('sessions')}")

    def run_all(self) -> None:
        """Run → Run All Cells, as a person would (the command has no default shortcut)."""
        self.page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
        self.page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()

    def set_theme(self, theme: str) -> None:
        """Settings → Theme → `theme` (e.g. "JupyterLab Dark"), and wait until the page wears it."""
        self.page.locator(".lm-MenuBar-itemLabel", has_text="Settings").first.click()
        self.page.locator(".lm-Menu-itemLabel", has_text="Theme").first.hover()
        self.page.locator(".lm-Menu-itemLabel", has_text=theme).first.click()
        self.page.wait_for_function("(t) => document.body.dataset.jpThemeName === t", arg=theme, timeout=20_000)
        self.page.wait_for_timeout(500)

    def run_new_notebook(self, path: Path, cells: Sequence[str], width: int, timeout: float = 120_000) -> None:
        """Write a notebook of `cells` at `path` (in the served folder), open it in a `width`-px window, Run All
        and wait until every cell has run, healthy (no error output, no unexpected browser error)."""
        write_notebook(path, *cells)
        self.page.set_viewport_size({"width": width, "height": 1000})
        self.open(path.name).run_all()
        self.wait_all_executed(timeout=timeout)

    def wait_all_executed(self, timeout: float = 120_000) -> None:
        """Wait until every code cell has an execution count (none queued or running, "[*]")."""
        self.page.wait_for_function(
            """(sel) => {
                const panel = document.querySelector(sel);
                if (!panel) return false;
                const prompts = [...panel.querySelectorAll('.jp-CodeCell .jp-InputPrompt')];
                return prompts.length > 0 && prompts.every(p => /\\[\\d+\\]/.test(p.textContent));
            }""",
            arg=".jp-NotebookPanel:not(.lm-mod-hidden)", timeout=timeout, polling=100,
        )

    def output_errors(self) -> list[str]:
        """Widget error messages, stderr lines and tracebacks shown in the notebook's outputs."""
        texts = self.panel.locator(".jp-OutputArea-output").all_inner_texts()
        found = [t for t in texts if any(marker in t for marker in WIDGET_ERROR_TEXTS)]
        # ipywidgets 8 draws a widget it could not create as this icon ("Click to show javascript error.")
        found += [f"widget error: {t}" for t in self.panel.locator(".jupyter-widgets-error-widget").all_inner_texts()]
        found += self.panel.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']"
                                    ", .jp-OutputArea-output[data-mime-type='application/vnd.jupyter.error']"
                                    ).all_inner_texts()
        return found

    def assert_healthy(self) -> None:
        problems = self.unexpected_js_errors() + self.output_errors()
        assert not problems, "errors in the page:\n" + "\n".join(problems)

    # -- widgets ---------------------------------------------------------------------------------------
    # `selector` is a CSS selector inside the visible notebook, e.g. ".cnnviz-activation-grid .cnnviz-mosaic-figure".

    def open_tab(self, title: str) -> None:
        """Click the Explorer tab titled `title` and wait until it is the current one."""
        tab = self.widget(".cnnviz-tabs").locator(".lm-TabBar-tab", has_text=title).first
        tab.scroll_into_view_if_needed()
        tab.click()
        self.page.wait_for_function(
            "([sel, title]) => [...document.querySelectorAll(sel + ' .lm-TabBar-tab.lm-mod-current')]"
            ".some(t => t.textContent.includes(title))",
            arg=[self.scoped(".cnnviz-tabs"), title], timeout=10_000,
        )

    def widget(self, selector: str):
        return self.panel.locator(selector).first

    def image_href(self, selector: str) -> str:
        """The `href` of the first `<image>` (a bqplot Image mark) in the SVG under `selector` ('' if none)."""
        return self.page.evaluate(f"([sel]) => ({_HREF_JS})(sel)", [self.scoped(selector)])

    def wait_image(self, selector: str, not_equal: str = "", timeout: float = 60_000) -> str:
        """Wait until the image under `selector` has an `href` other than '' and `not_equal`; return it."""
        self.page.wait_for_function(
            f"([sel, old]) => {{ const href = ({_HREF_JS})(sel); return href !== '' && href !== old; }}",
            arg=[self.scoped(selector), not_equal], timeout=timeout, polling="raf",
        )
        return self.image_href(selector)

    def wait_text(self, selector: str, contains: str, timeout: float = 60_000) -> str:
        """Wait until the element's visible text contains `contains`; return the text."""
        self.page.wait_for_function(
            "([sel, text]) => { const el = document.querySelector(sel); "
            "return !!el && el.textContent.includes(text); }",
            arg=[self.scoped(selector), contains], timeout=timeout, polling="raf",
        )
        return self.widget(selector).text_content()

    def press_on_slider(self, selector: str, key: str = "ArrowRight") -> None:
        """Focus the slider's handle and press `key` (how a keyboard user moves an ipywidgets slider)."""
        handle = self.widget(selector).locator(".noUi-handle").first
        handle.scroll_into_view_if_needed()
        handle.focus()
        self.page.keyboard.press(key)

    def click_slider_at(self, selector: str, fraction: float) -> None:
        """Click the slider's track at `fraction` (0 = left end, 1 = right end) with the mouse.

        Notebook 7.6 binds a bare ArrowRight in command mode (notebook:move-cursor-heading-below-or-expand)
        and swallows the key before the slider sees it, so there a pointer is the way to move a slider.
        """
        track = self.widget(selector).locator(".noUi-base").first
        track.scroll_into_view_if_needed()
        box = track.bounding_box()
        self.page.mouse.click(box["x"] + fraction * box["width"], box["y"] + box["height"] / 2)

    def slider_readout(self, selector: str) -> str:
        return self.widget(selector).locator(".widget-readout").first.inner_text().strip()

    def scoped(self, selector: str) -> str:
        """`selector` limited to the visible notebook (for JavaScript's querySelector)."""
        return f".jp-NotebookPanel:not(.lm-mod-hidden) {selector}"

    def measure(self, root: str, controls: str = EXPLORER_CONTROL_TEXTS) -> dict:
        """What a reader would see go wrong under every element matching `root` in the visible notebook.

        Returns plain data: `clipped` (text cut off: DOM text wider than its box that hides the rest, SVG text
        outside its bqplot figure), `overlaps` (pairs of `controls` texts, or SVG texts of one figure, on top of
        each other), `broken` (an <img> that did not decode, a bqplot picture without a href), `pictures`
        (boxes of the visible mosaic figures), and for the first match: `root` (its box), `tab` (the box of
        its tab contents, if any) and `message` (the text of its `.cnnviz-message`, '' if none).
        """
        return self.page.evaluate(_MEASURE_JS, [self.scoped(root), controls])


# The href of the first <image> under a selector: bqplot sets `href` (blob: or data: URL) on its Image mark.
_HREF_JS = """(sel) => {
    const root = document.querySelector(sel);
    const image = root && root.querySelector('svg image');
    return image ? (image.getAttribute('href') || image.getAttribute('xlink:href') || '') : '';
}"""


# Functions the page-measuring scripts share: is an element shown, and its box in the window.
PAGE_HELPERS_JS = r"""
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
"""

# Everything `NotebookPage.measure` reports, in one pass over the page.
_MEASURE_JS = r"""([root, controlTexts]) => {
    const roots = [...document.querySelectorAll(root)];
/*PAGE_HELPERS*/
    const name = (el) => (el.textContent || '').trim().slice(0, 60);
    const clipped = [], overlaps = [], broken = [], pictures = [];
    for (const scope of roots) {
        const textual = scope.querySelectorAll(
            '.widget-label, .widget-readout, .lm-TabBar-tabLabel, .widget-button, .jupyter-button, ' +
            '.widget-html-content, .widget-dropdown select, label');
        for (const el of textual) {
            if (!visible(el) || !name(el)) continue;
            const s = getComputedStyle(el);
            const hides = ['hidden', 'clip'].includes(s.overflowX) || s.textOverflow === 'ellipsis';
            if (hides && el.scrollWidth > el.clientWidth + 1)
                clipped.push(`${name(el)} (${el.scrollWidth} > ${el.clientWidth} px)`);
        }
        // texts of one row of controls must not run into each other
        const controls = [...scope.querySelectorAll(controlTexts)].filter(visible);
        for (let i = 0; i < controls.length; i++) for (let j = i + 1; j < controls.length; j++) {
            const a = controls[i].getBoundingClientRect(), b = controls[j].getBoundingClientRect();
            if (controls[i].contains(controls[j]) || controls[j].contains(controls[i])) continue;
            const dx = Math.min(a.right, b.right) - Math.max(a.left, b.left);
            const dy = Math.min(a.bottom, b.bottom) - Math.max(a.top, b.top);
            if (dx > 1 && dy > 1) overlaps.push(`"${name(controls[i])}" / "${name(controls[j])}"`);
        }
        // SVG texts: inside their figure, and not on top of each other
        for (const fig of scope.querySelectorAll('.bqplot')) {
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
        broken.push(...[...scope.querySelectorAll('img')]
            .filter(i => visible(i) && !(i.complete && i.naturalWidth > 0))
            .map(i => (i.getAttribute('src') || '').slice(0, 40)));
        for (const image of scope.querySelectorAll('.bqplot svg image')) {
            const href = image.getAttribute('href') || image.getAttribute('xlink:href') || '';
            if (visible(image.closest('.bqplot')) && !href) broken.push('bqplot image without a picture');
        }
        pictures.push(...[...scope.querySelectorAll('.cnnviz-mosaic-figure')].filter(visible).map(box));
    }
    const first = roots[0];
    const tab = first && first.querySelector('.cnnviz-tabs .widget-tab-contents, .cnnviz-tabs .lm-StackedPanel');
    const message = first && first.querySelector('.cnnviz-message');
    return {clipped, overlaps, broken, pictures, tab: tab ? box(tab) : null,
            root: first ? box(first) : null, message: message ? message.textContent.trim() : ''};
}"""
_MEASURE_JS = _MEASURE_JS.replace("/*PAGE_HELPERS*/", PAGE_HELPERS_JS)
