"""Safety: no code from a saved model runs unless the user says so, no URL is fetched, nothing uploaded is
written to disk, and what a user names a file cannot inject HTML into the page."""

from __future__ import annotations

import datetime
import io
import json
import os
import socket
import sys
import urllib.request
import zipfile

import h5py
import ipywidgets
import numpy as np
import pytest
from PIL import Image

from cnnviz_widgets import ImageError, ModelError, ModelState, load_image, load_model
from cnnviz_widgets.widgets import Explorer
from cnnviz_widgets.widgets.explorer import MAX_UPLOAD_BYTES

# -- saved models: Keras' safe mode stays on unless the call turns it off ------------------------------------


def double(t):
    return t * 2.0


@pytest.fixture(scope="module")
def lambda_models(k, tmp_path_factory):
    """The same small model with a Lambda layer, saved as .keras (zip) and as legacy .h5."""
    folder = tmp_path_factory.mktemp("lambda")
    inputs = k.Input((8, 8, 3), name="pixels")
    x = k.layers.Lambda(lambda t: t * 2.0, name="doubler")(inputs)
    outputs = k.layers.Conv2D(2, 3, name="conv")(x)
    model = k.Model(inputs, outputs, name="with_lambda")
    paths = {}
    for suffix in (".keras", ".h5"):
        paths[suffix] = folder / f"lambda{suffix}"
        model.save(paths[suffix])
    return paths


@pytest.mark.parametrize("suffix", [".keras", ".h5"], ids=["keras-zip", "legacy-h5"])
def test_lambda_layers_need_an_explicit_opt_out(lambda_models, suffix):
    path = lambda_models[suffix]
    with pytest.raises(ModelError, match=r"Lambda.*load_model\(path, safe_mode=False\)"):
        load_model(path)
    with pytest.raises(ModelError, match="safe_mode=False"):
        ModelState(str(path))  # a path given to the state goes through the same safe default
    model = load_model(path, safe_mode=False)  # the user trusts this file
    assert [layer.name for layer in model.layers] == ["pixels", "doubler", "conv"]
    x = np.ones((1, 8, 8, 3), np.float32)
    np.testing.assert_allclose(np.asarray(model(x)), np.asarray(model.get_layer("conv")(2 * x)), rtol=1e-6)
    with pytest.raises(ModelError, match="safe_mode=False"):  # the opt-out was for that call only
        load_model(path)


@pytest.fixture
def planted_module(tmp_path, monkeypatch):
    """An importable module whose import would leave a marker file: proof if a model file could run code."""
    marker = tmp_path / "code-ran"
    (tmp_path / "cnnviz_planted.py").write_text(
        f"open({str(marker)!r}, 'w').close()\n\ndef run(t):\n    return t\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield marker
    sys.modules.pop("cnnviz_planted", None)


def test_a_model_file_naming_a_function_elsewhere_runs_nothing(k, tmp_path, planted_module):
    inputs = k.Input((8, 8, 3))
    path = tmp_path / "named.h5"
    k.Model(inputs, k.layers.Lambda(double, name="doubler")(inputs)).save(path)
    with h5py.File(path, "r+") as f:  # point the Lambda at a function of the planted module
        config = json.loads(f.attrs["model_config"])
        lambda_layer = next(layer for layer in config["config"]["layers"] if layer["class_name"] == "Lambda")
        lambda_layer["config"]["function"] = {"module": "cnnviz_planted", "class_name": "function",
                                              "config": "run", "registered_name": "run"}
        f.attrs["model_config"] = json.dumps(config)
    # Keras refuses to look the function up ("Could not locate function 'run'"); load_model passes that on as
    # a TypeError today, a ModelError once it catches TypeError (see test_unreadable_model_files_are_model_errors)
    with pytest.raises((ModelError, TypeError), match="Could not locate function 'run'"):
        load_model(path)
    assert not planted_module.exists() and "cnnviz_planted" not in sys.modules


def _zip_without_config(path):
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("notes.txt", "not a model")


def _weights_only_h5(path):
    with h5py.File(path, "w") as f:
        f["weights"] = np.zeros(3)


@pytest.mark.parametrize(("name", "write", "match"), [
    pytest.param("text.keras", lambda p: p.write_text("not a zip"), "could not load text.keras", id="text-as-keras"),
    pytest.param("text.h5", lambda p: p.write_text("not hdf5"), "could not load text.h5", id="text-as-h5"),
    pytest.param("empty.h5", lambda p: p.write_bytes(b""), "could not load empty.h5", id="empty-h5"),
    pytest.param("other.keras", _zip_without_config, "could not load other.keras", id="zip-without-config"),
    pytest.param("weights.h5", _weights_only_h5, "No model config", id="weights-only-h5"),
])
def test_unreadable_model_files_are_model_errors(tmp_path, name, write, match):
    path = tmp_path / name
    write(path)
    with pytest.raises(ModelError, match=match):
        load_model(path)


# -- URLs are refused, and no connection is even tried -------------------------------------------------------

@pytest.fixture
def no_network(monkeypatch):
    """Records (and blocks) every attempt to resolve a name or open a connection."""
    attempts: list[tuple] = []

    def refuse(what):
        def blocked(*args, **kwargs):
            attempts.append((what, args))
            raise OSError(f"test: network use ({what}) is not allowed")
        return blocked

    monkeypatch.setattr(socket.socket, "connect", refuse("connect"))
    monkeypatch.setattr(socket, "create_connection", refuse("create_connection"))
    monkeypatch.setattr(socket, "getaddrinfo", refuse("getaddrinfo"))
    monkeypatch.setattr(urllib.request, "urlopen", refuse("urlopen"))
    return attempts


URLS = {
    "http": "http://example.com/cat.png",
    "https": "https://example.com/cat.png",
    "https-upper-case": "HTTPS://EXAMPLE.COM/CAT.PNG",
    "leading-space": "  http://example.com/cat.png",
    "ftp": "ftp://example.com/cat.png",
    "s3": "s3://bucket/cat.png",
    "data-uri": "data:image/png;base64,iVBORw0KGgo=",
}


@pytest.mark.parametrize("url", URLS.values(), ids=URLS.keys())
def test_urls_are_refused_without_a_connection(tiny_model, no_network, url):
    with pytest.raises(ImageError, match=r"URLs are not loaded: .*download the file and pass its path or its bytes"):
        load_image(url)
    state = ModelState(tiny_model, image=np.zeros((16, 16, 3), np.uint8))
    before = state.image
    with pytest.raises(ImageError, match="URLs are not loaded"):
        state.set_image(url)
    assert state.image is before and no_network == []


def test_file_urls_are_refused_and_the_path_is_suggested(tmp_path, no_network):
    path = tmp_path / "cat.png"
    Image.new("RGB", (8, 8)).save(path)
    with pytest.raises(ImageError, match=rf"URLs are not loaded: 'file://{path}'; pass the local path \('{path}'\)"):
        load_image(f"file://{path}")
    assert load_image(str(path)).shape == (8, 8, 3)  # the path itself is fine
    assert no_network == []


def test_a_windows_drive_is_a_path_not_a_url(no_network):
    with pytest.raises(ImageError, match="no such file: 'C:/pictures/cat.png'"):
        load_image("C:/pictures/cat.png")


def test_model_urls_are_refused_without_a_connection(no_network):
    with pytest.raises(ModelError):
        load_model("https://example.com/models/vgg16.keras")
    assert no_network == []


# -- uploads: capped, and never written to disk --------------------------------------------------------------

WRITE_EVENTS = ("os.mkdir", "os.rename", "os.link", "os.symlink", "os.truncate", "shutil.copyfile",
                "shutil.move", "tempfile.mkstemp", "tempfile.mkdtemp")
_WRITES: dict = {"on": False, "seen": []}


def _audit(event: str, args: tuple) -> None:
    if not _WRITES["on"]:
        return
    if event == "open":
        path, mode, flags = args
        writing = (mode is not None and any(c in str(mode) for c in "wax+")) or (
            isinstance(flags, int) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT))
        if writing:
            _WRITES["seen"].append((event, path, mode))
    elif event in WRITE_EVENTS:
        _WRITES["seen"].append((event, *args))


@pytest.fixture
def disk_writes(tmp_path, monkeypatch):
    """Every file opened for writing (or created, moved, made temporary) while the test runs, from any code.

    An audit hook sees what patching `open` would miss (os.open, C extensions going through Python's io); it
    cannot be removed, so it stays installed and idle outside this fixture.
    """
    if not _WRITES.get("installed"):
        sys.addaudithook(_audit)
        _WRITES["installed"] = True
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    _WRITES["seen"] = []
    _WRITES["on"] = True
    yield _WRITES["seen"]
    _WRITES["on"] = False


def choose_file(explorer: Explorer, name: str, content: bytes) -> None:
    explorer.upload.value = ({"name": name, "type": "", "size": len(content), "content": memoryview(content),
                              "last_modified": datetime.datetime.now(datetime.timezone.utc)},)


def png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def test_nothing_uploaded_is_written_to_disk(tiny_model, tmp_path, disk_writes):
    state = ModelState(tiny_model, image=np.zeros((16, 16, 3), np.uint8))
    explorer = Explorer(state)
    photo = np.random.default_rng(4).integers(0, 256, (24, 30, 3), dtype=np.uint8)
    (tmp_path / "probe.txt").write_text("x")  # the watch works: this write is seen
    assert [os.fspath(event[1]) for event in disk_writes] == [str(tmp_path / "probe.txt")]
    disk_writes.clear()
    files_before = sorted(tmp_path.rglob("*"))
    choose_file(explorer, "photo.png", png(photo))
    np.testing.assert_array_equal(state.image, photo)
    choose_file(explorer, "notes.txt", b"not a picture")
    choose_file(explorer, "huge.png", bytes(MAX_UPLOAD_BYTES + 1))
    assert "20 MiB are accepted" in explorer.message.value and state.image_name == "photo.png"
    explorer.tabs.selected_index = 2  # the filter effect draws from the uploaded picture too
    explorer.close()
    assert disk_writes == []
    assert sorted(tmp_path.rglob("*")) == files_before


HOSTILE_NAME = '<img src=x onerror="alert(1)">.png'


def html_values(widget: ipywidgets.Widget) -> list[str]:
    """The value of every HTML widget in a widget tree: what the browser renders as markup."""
    found = [widget.value] if isinstance(widget, (ipywidgets.HTML, ipywidgets.HTMLMath)) else []
    for child in getattr(widget, "children", ()):
        found += html_values(child)
    return found


@pytest.mark.parametrize("content", [b"not a picture", png(np.zeros((12, 12, 3), np.uint8)),
                                     bytes(MAX_UPLOAD_BYTES + 1)], ids=["bad-file", "good-file", "too-big"])
def test_a_file_name_cannot_inject_markup(tiny_model, content):
    explorer = Explorer(ModelState(tiny_model, image=np.zeros((16, 16, 3), np.uint8)))
    choose_file(explorer, HOSTILE_NAME, content)
    markup = [*html_values(explorer), explorer.activation_grid.figure.title.value]
    assert not any("<img" in value for value in markup)
    if len(content) > MAX_UPLOAD_BYTES:
        assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;.png is 20.0 MiB" in explorer.message.value
    explorer.close()
