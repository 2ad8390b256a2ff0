"""The Python lines that rebuild what a view shows: the same model, image, layer and options.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cnnviz_widgets.pictures import images


def reproduce_code(state: Any) -> str:
    """Python lines that rebuild `state`: model preset and weights, image, layer, channel, filter, options.

    What cannot be known from the state (a model built in your own code, a picture given as an array, the
    folder of a file) is written as a clearly marked placeholder to fill in.
    """
    lines = ["import cnnviz_widgets as cw", ""]
    lines += _model_lines(state)
    image, comment = _image_argument(state)
    options = [f"image={image}"]
    if getattr(state, "max_side", 512) != 512:
        options.append(f"max_side={state.max_side}")
    lines.append(f"state = cw.ModelState(model, {', '.join(options)})" + (f"  # {comment}" if comment else ""))
    lines += [f"state.layer = {state.layer!r}", f"state.channel = {int(state.channel)}",
              f"state.filter = {int(state.filter)}", f"state.normalization = {state.normalization!r}",
              f"state.colormap = {state.colormap!r}"]
    explained = getattr(state, "explained_class", None)
    if explained is not None:
        lines.append(f"state.explained_class = {int(explained)}")
    lines += ["", "# to look at it: from cnnviz_widgets.widgets import Explorer; Explorer(state)"]
    return "\n".join(lines) + "\n"


def _model_lines(state: Any) -> list[str]:
    info = state.info
    weights = str(info.weights)
    has_top = any(row["name"] == "predictions" for row in state.summary())
    if info.name == "VGG16" and not weights.startswith("from "):
        if weights.startswith("ImageNet"):
            args = ['"vgg16"', 'weights="imagenet"'] + ([] if has_top else ["include_top=False"])
        elif weights.startswith("BSDS500"):
            args = ['"vgg16"', 'weights="bsds500"']
        else:
            args = ['"vgg16"', "weights=None"] + ([] if has_top else ["include_top=False"])
        return [f"model = cw.load_model({', '.join(args)})"]
    if info.name == "VGG16":  # weights from a file: only its name is known
        file = weights.removeprefix("from ")
        top = "" if has_top else ", include_top=False"
        return [f"model = cw.load_model(\"vgg16\", weights={file!r}{top})  # the path of your weights file"]
    if weights.startswith("from "):
        file = weights.removeprefix("from ")
        return [f"model = cw.load_model({file!r})  # the path of your saved model"]
    return [f"model = build_model()  # your own keras.Model {info.name!r}: the code that built it is yours"]


def _image_argument(state: Any) -> tuple[str, str]:
    """(the image argument, a comment for what the reader must fill in or "")."""
    name = str(getattr(state, "image_name", "") or "")
    if name in images.SAMPLE_IMAGES:
        return repr(name), ""
    if name and name != "image" and Path(name).suffix:
        return repr(name), "your image: give its path"
    return "my_picture", "my_picture: your image (a path, bytes, a PIL image or an array)"
