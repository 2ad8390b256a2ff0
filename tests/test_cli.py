"""`cnnviz`: the command line renders the same pictures the widgets show; bad arguments end in one line."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import cnnviz_widgets.network.loading
from cnnviz_widgets import ModelState
from cnnviz_widgets.cli import main
from cnnviz_widgets.export.panels import enlargement
from cnnviz_widgets.pictures import render
from cnnviz_widgets.widgets import ActivationGrid, FilterEffect, WeightGrid


@pytest.fixture
def loaded(monkeypatch, vgg16_bsds):
    """load_model answers with the session's VGG16 (no reload per command) and records how it was called."""
    calls = []

    def fake_load_model(name="vgg16", weights="bsds500", **kwargs):
        calls.append((name, weights))
        return vgg16_bsds

    monkeypatch.setattr(cnnviz_widgets.network.loading, "load_model", fake_load_model)
    return calls


def saved(path) -> tuple[np.ndarray, dict]:
    with Image.open(path) as png:
        return np.asarray(png.convert("RGB")), dict(png.text)


def contains(haystack: np.ndarray, needle: np.ndarray) -> bool:
    """True when `needle` ((h, w) or (h, w, 3) uint8, enlarged as an export does) appears in `haystack`."""
    needle = render.scale_up(needle, enlargement(needle.shape[1]))
    needle = needle if needle.ndim == 3 else np.repeat(needle[..., None], 3, axis=2)
    h, w = needle.shape[:2]
    starts = np.argwhere((haystack[: haystack.shape[0] - h + 1, : haystack.shape[1] - w + 1] == needle[0, 0]).all(-1))
    return any(np.array_equal(haystack[y:y + h, x:x + w], needle) for y, x in starts)


def test_help_explains_every_command_and_option(capsys):
    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    for word in ("summary", "weights", "effect", "activations", "predict", "cam", "--max-side", "-o FILE.png"):
        assert word in text
    assert main(["activations", "--help"]) == 0
    text = capsys.readouterr().out
    for option in ("--model", "--weights", "--image", "--layer", "--channel", "--filter", "--max-side", "--output"):
        assert option in text
    assert "'bsds500' (default; offline VGG16 conv weights, no classifier)" in " ".join(text.split())


def test_summary_prints_the_layer_table(loaded, capsys):
    assert main(["summary"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert loaded == [("vgg16", "bsds500")]
    assert lines[0].split() == ["#", "name", "type", "output", "shape", "params"]
    rows = {line.split()[1] if line.split()[0].isdigit() else line.split()[0]: line for line in lines[1:-1]}
    assert rows["block1_conv1"].split()[0] == "1" and rows["block1_conv1"].endswith("1,792")
    assert rows["block5_conv3"].split()[0] == "13" and rows["block5_conv3"].endswith("2,359,808")
    assert rows["block1_pool"].split()[0] == "block1_pool"  # no parameters: not counted
    assert lines[-1].startswith("Total params: 14,714,688 (trainable: 14,714,688") and "13 rows" in lines[-1]


def test_activations_png_is_the_activation_grid_picture(loaded, vgg16_bsds, tmp_path, capsys):
    out = tmp_path / "maps.png"
    assert main(["activations", "--layer", "block2_conv1", "--image", "cat", "--max-side", "64",
                 "--colormap", "viridis", "--page", "2", "-o", str(out)]) == 0
    assert capsys.readouterr().out.startswith(f"wrote {out} (")
    picture, metadata = saved(out)
    state = ModelState(vgg16_bsds, image="cat", max_side=64)
    state.layer, state.colormap, state.filter = "block2_conv1", "viridis", 64  # filter 64 is on page 2
    grid = ActivationGrid(state)
    assert grid.shown == list(range(64, 128))
    assert contains(picture, grid.figure.mosaic.image)  # the widget's own picture, pixel for pixel
    assert metadata["Title"].startswith("block2_conv1 activations for cat")
    assert "state.layer = 'block2_conv1'" in metadata["Description"] and "image='cat'" in metadata["Description"]
    grid.close()


def test_weights_and_effect_pngs_are_the_widget_pictures(loaded, vgg16_bsds, tmp_path):
    assert main(["weights", "--layer", "block1_conv2", "--channel", "5", "-o", str(tmp_path / "w.png")]) == 0
    state = ModelState(vgg16_bsds, max_side=64)
    state.layer, state.channel = "block1_conv2", 5
    grid = WeightGrid(state)
    assert contains(saved(tmp_path / "w.png")[0], grid.figure.mosaic.image)
    grid.close()

    assert main(["effect", "--layer", "block1_conv2", "--filter", "1", "--max-side", "64",
                 "-o", str(tmp_path / "e.png")]) == 0
    picture, metadata = saved(tmp_path / "e.png")
    state.filter = 1
    view = FilterEffect(state)
    for figure in (view.inputs_figure, view.kernels_figure, view.partials_figure, view.result_figure):
        assert contains(picture, figure.mosaic.image)
    assert metadata["Title"].count(" | ") == 3
    view.close()


def test_predict_and_cam(loaded, monkeypatch, tmp_path, capsys, k):
    assert main(["predict"]) == 1  # bsds500: no classifier, said in one line
    err = capsys.readouterr().err
    assert err.startswith("cnnviz predict: vgg16 has no classifier") and err.count("\n") == 1

    k.utils.set_random_seed(5)
    inputs = k.Input((32, 32, 3))
    x = k.layers.Conv2D(4, 3, activation="relu", name="conv")(inputs)
    x = k.layers.GlobalAveragePooling2D()(x)
    classifier = k.Model(inputs, k.layers.Dense(4, activation="softmax", name="out")(x), name="small")
    monkeypatch.setattr(cnnviz_widgets.network.loading, "load_model", lambda *a, **kw: classifier)
    assert main(["predict", "--weights", "none", "--top", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    state = ModelState(classifier)
    expected = np.argsort(-np.asarray(classifier(state.model_input.array[None]))[0])[:3]
    assert [int(line.split()[1]) for line in lines[1:]] == list(expected)
    assert lines[1].split()[2:4] == ["class", str(expected[0])]

    out = tmp_path / "cam.png"
    assert main(["cam", "--class", str(expected[1]), "--opacity", "1", "-o", str(out)]) == 0
    picture, metadata = saved(out)
    heat = state.explanation("grad-cam", class_index=int(expected[1])).heatmap
    assert contains(picture, render.apply_colormap(heat, "magma"))
    assert metadata["Title"].startswith(f"Grad-CAM of class {expected[1]} on conv (logit")


@pytest.mark.parametrize(("argv", "message"), [
    (["activations", "--layer", "nope"], "cnnviz activations: error: no layer named 'nope' in vgg16."),
    (["weights", "--channel", "9"], "cnnviz weights: error: --channel 9 is out of range: block1_conv1's filters "
                                    "have 3 input channels (0..2)"),
    (["effect", "--layer", "block1_pool"], "cnnviz effect: error: block1_pool is a pooling layer"),
    (["activations", "--filter", "64"], "cnnviz activations: error: --filter 64 is out of range"),
    (["activations", "--page", "2"], "cnnviz activations: error: --page 2 is out of range: 64 tiles make 1 page "
                                     "of 64 (1..1)"),
    (["activations", "--image", "missing.png"], "cnnviz activations: error: no such file: 'missing.png'"),
    (["activations", "--model", "net.keras", "--weights", "none"], "error: --weights applies to --model vgg16"),
    (["activations", "--colormap", "jet"], "cnnviz activations: error: argument --colormap: invalid choice: 'jet'"),
    (["activations", "--channel", "x"], "error: argument --channel: invalid int value: 'x'"),
    (["draw"], "cnnviz: error: argument COMMAND: invalid choice: 'draw'"),
    ([], "cnnviz: error: the following arguments are required: COMMAND"),
])
def test_bad_arguments_exit_2_with_one_line(loaded, capsys, argv, message):
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert message in captured.err and captured.err.count("\n") == 1 and captured.out == ""
    assert "Traceback" not in captured.err


def test_runs_as_a_module(tmp_path):
    out = tmp_path / "w.png"
    done = subprocess.run([sys.executable, "-m", "cnnviz_widgets.cli", "weights", "--layer", "block1_conv1", "-o",
                           str(out)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"wrote {out}") and out.is_file()
    done = subprocess.run([sys.executable, "-m", "cnnviz_widgets.cli", "weights", "--bogus"], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr == "cnnviz: error: unrecognized arguments: --bogus (see cnnviz --help)\n"
