"""The Explorer as an app: Voila renders notebooks/explorer_app.ipynb in Chromium, and a closed page's kernel is
freed by the kernel culling that binder/ ships.

Voila's own shutdown request on page close is refused (a missing `_xsrf` argument: voila-dashboards/voila#1458),
so every visit would leave a ~1 GB kernel behind on a 2 GB Binder session. The shipped
binder/jupyter_server_config.json culls idle kernels nobody is connected to; here the same file is Voila's
config, with shorter timeouts on the command line so the test does not wait a minute.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from tests.browser.harness import WIDGET_ERROR_TEXTS, free_port

ROOT = Path(__file__).resolve().parents[2]
APP = ROOT / "notebooks" / "explorer_app.ipynb"
MOSAIC_IMAGE = ".cnnviz-activation-grid .cnnviz-mosaic-figure svg image"
# Not ours, and nothing on the page depends on them:
# - Voila's page template loads Font Awesome from a CDN, which this offline machine cannot resolve;
# - Voila 0.5's extension loader logs webpack's RUNTIME-012 for a JupyterLab extension it cannot share a
#   module with; the widgets render all the same.
KNOWN_VOILA_ERRORS = ("net::ERR_NAME_NOT_RESOLVED", "#RUNTIME-012")


def _kernels(server: subprocess.Popen) -> list[psutil.Process]:
    found = []
    for child in psutil.Process(server.pid).children(recursive=True):
        try:
            if "ipykernel_launcher" in " ".join(child.cmdline()):
                found.append(child)
        except psutil.NoSuchProcess:
            continue
    return found


@pytest.fixture
def voila(tmp_path: Path):
    executable = Path(sys.executable).parent / "voila"
    if not executable.exists():
        pytest.skip("voila is not installed (it is in the lab and test extras)")
    config_dir = tmp_path / "jupyter_config"
    config_dir.mkdir()
    shutil.copy(ROOT / "binder" / "jupyter_server_config.json", config_dir / "voila.json")  # as postBuild does
    port = free_port()
    env = {name: value for name, value in os.environ.items() if name != "PYTEST_CURRENT_TEST"}
    env.update(JUPYTER_CONFIG_DIR=str(config_dir), JUPYTER_DATA_DIR=str(tmp_path / "data"),
               JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"), KERAS_HOME=str(tmp_path / "keras"))
    log = open(tmp_path / "voila.log", "wb")  # noqa: SIM115  (closed in the finally below)
    server = subprocess.Popen(
        [str(executable), str(APP), "--no-browser", "--Voila.ip=127.0.0.1", f"--port={port}",
         "--MappingKernelManager.cull_idle_timeout=4", "--MappingKernelManager.cull_interval=1"],
        stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:  # only the port: a GET of the page would render the notebook and start a kernel
                socket.create_connection(("127.0.0.1", port), timeout=5).close()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"voila did not start:\n{(tmp_path / 'voila.log').read_text()[-3000:]}")
                time.sleep(0.5)
        yield server, f"http://127.0.0.1:{port}/"
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                server.wait(timeout=10)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGKILL)
        server.wait(timeout=10)
        log.close()


def test_explorer_app_renders_in_voila_and_its_kernel_is_freed_after_the_page_closes(browser, voila, tmp_path):
    server, url = voila
    context = browser.new_context(viewport={"width": 1500, "height": 1000})
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    started = time.monotonic()
    page.goto(url, timeout=120_000)
    page.wait_for_selector(MOSAIC_IMAGE, state="attached", timeout=120_000)
    first_picture_s = time.monotonic() - started
    href = page.get_attribute(MOSAIC_IMAGE, "href") or ""
    assert href.startswith(("data:image/png", "blob:")), href[:40]
    text = page.inner_text("body")
    assert "BSDS500" in text  # the app says which weights it shows (offline here)
    assert not [message for message in WIDGET_ERROR_TEXTS if message in text]
    assert not [e for e in errors if not any(known in e for known in KNOWN_VOILA_ERRORS)], errors
    assert len(_kernels(server)) == 1
    (tmp_path / "voila_first_picture.json").write_text(json.dumps({"seconds": first_picture_s}))
    print(f"Voila: first picture {first_picture_s:.1f} s after the page was asked for")

    context.close()  # the reader leaves: Voila's own shutdown request is refused, culling frees the kernel
    deadline = time.monotonic() + 60
    while _kernels(server) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not _kernels(server), "the closed page's kernel is still running a minute later"
