"""Fixtures for the real-browser tests: Jupyter servers on 127.0.0.1 and headless Debian Chromium.

Every test here is marked `browser` and `slow`. They skip (with the reason) when no Chromium is installed;
`tests/browser/ensure_chromium.sh` installs one where it can (as root on Debian), and `make test` runs it.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.browser.harness import CHROMIUM, CHROMIUM_ARGS, JupyterServer, NotebookPage

HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.is_relative_to(HERE):
            item.add_marker(pytest.mark.browser)
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def chromium_path() -> Path:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"no Chromium at {CHROMIUM}: run tests/browser/ensure_chromium.sh (as root it installs "
                    "Debian's chromium) or set CNNVIZ_CHROMIUM to a Chromium/Chrome binary")
    return CHROMIUM


@pytest.fixture(scope="session")
def browser(chromium_path: Path) -> Iterator:
    playwright_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (test extras)")
    with playwright_api.sync_playwright() as playwright:
        # Playwright cannot download its own browsers here: it drives the system Chromium.
        browser = playwright.chromium.launch(executable_path=str(chromium_path), headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="session")
def served_dir() -> Iterator[Path]:
    """The folder the servers serve; tests write the notebooks they open into it."""
    with tempfile.TemporaryDirectory(prefix="cnnviz-browser-") as tmp:
        root = Path(tmp) / "notebooks"
        root.mkdir()
        yield root


def _server(app: str, root: Path) -> Iterator[JupyterServer]:
    server = JupyterServer(app=app, root_dir=root, state_dir=root.parent / f"state-{app}")
    server.state_dir.mkdir(exist_ok=True)
    try:
        yield server.start()
    finally:  # always: on failures and interrupts too, nothing outlives the test run
        server.stop()


@pytest.fixture(scope="session")
def lab_server(served_dir: Path, browser) -> Iterator[JupyterServer]:
    yield from _server("lab", served_dir)


@pytest.fixture(scope="session")
def notebook_server(served_dir: Path, browser) -> Iterator[JupyterServer]:
    yield from _server("notebook", served_dir)


def _page(browser, server: JupyterServer) -> Iterator[NotebookPage]:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(60_000)
    try:
        yield NotebookPage(page, server)
    finally:
        context.close()
        server.shutdown_kernels()  # one VGG16 kernel is about 1 GB: free it before the next test


@pytest.fixture
def lab_page(browser, lab_server: JupyterServer) -> Iterator[NotebookPage]:
    yield from _page(browser, lab_server)


@pytest.fixture
def notebook_page(browser, notebook_server: JupyterServer) -> Iterator[NotebookPage]:
    yield from _page(browser, notebook_server)
