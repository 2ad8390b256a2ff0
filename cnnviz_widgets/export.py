"""Keep what a view shows: its pictures as one PNG, and the Python lines that rebuild the state behind it.

`export_png` takes a view (any widget holding `MosaicFigure`s: ActivationGrid, WeightGrid, FilterEffect,
ClassActivationMap, CompareImages, the Explorer...) or a single figure, and writes the pictures it currently
shows, each under its title and above its colour bar, into one PNG whose metadata carry the titles and the
code. `reproduce_code` writes the lines that load the same model and image and set the same layer, channel,
filter and display options. Views are found by what they have (duck typing), so this module imports no widget
library; Pillow draws the text.
"""

from __future__ import annotations

import html
import os
import re
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont, PngImagePlugin

from . import __version__, images, render
from .errors import CnnvizError

MARGIN = 8
"""Pixels around and between the pictures of an exported PNG."""
MIN_WIDTH = 320
"""An exported PNG is at least this wide, so titles stay readable next to small pictures (kernels)."""
PICTURE_PX = 384
"""Pictures narrower than this are enlarged by a whole factor (nearest neighbour: crisp cells) towards it, as
the views show them enlarged on screen."""
# Pillow's built-in font has no glyph for these: drawn as their ASCII spelling (the metadata keep the originals)
_ASCII = str.maketrans({"×": "x", "→": "->", "−": "-", "–": "-", "—": "-", "…": "...", "±": "+/-", "≤": "<=",
                        "≥": ">=", "⋆": "*", "‘": "'", "’": "'", "“": '"', "”": '"'})
_TEXT_PX = 13
_BAR_PX = 12
_BACKGROUND = (255, 255, 255)
_INK = (20, 20, 20)


# --------------------------------------------------------------------------------------------- pictures


class Panel:
    """One picture to export: an (H, W) or (H, W, 3) uint8 image, its title, and an optional colour bar
    (colour map, value at the low end, value at the high end, words for the two ends or None)."""

    def __init__(self, image: np.ndarray, title: str = "", colorbar: tuple | None = None,
                 colorbar_ends: tuple[str, str] | None = None, colorbar_label: str = ""):
        arr = np.asarray(image)
        if arr.dtype != np.uint8 or not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] == 3)) or arr.size == 0:
            raise CnnvizError(f"a panel's image must be uint8 (H, W) or (H, W, 3); got shape {arr.shape}, "
                              f"dtype {arr.dtype}")
        self.image = arr if arr.ndim == 3 else np.repeat(arr[..., None], 3, axis=2)
        self.title = str(title)
        self.colorbar = colorbar
        self.colorbar_ends = colorbar_ends
        self.colorbar_label = str(colorbar_label)


def figures_of(view: Any) -> list[Any]:
    """The figures (objects with `mosaic`, `title` and `image_mark`, i.e. `MosaicFigure`s) inside `view` that
    show a picture now, in display order; hidden parts (layout.display "none", the tabs not selected) are left
    out."""
    found: list[Any] = []

    def walk(widget: Any) -> None:
        layout = getattr(widget, "layout", None)
        if layout is not None and getattr(layout, "display", None) == "none":
            return
        if all(hasattr(widget, name) for name in ("mosaic", "title", "image_mark")):
            if widget.mosaic is not None:
                found.append(widget)
            return
        children = list(getattr(widget, "children", ()) or ())
        selected = getattr(widget, "selected_index", None)
        if isinstance(selected, int) and 0 <= selected < len(children):  # a Tab or Stack: only the page shown
            children = [children[selected]]
        for child in children:
            walk(child)

    walk(view)
    return found


def panel_of(figure: Any) -> Panel:
    """What a `MosaicFigure` shows, as a `Panel`: its mosaic picture, title (HTML stripped) and colour bar."""
    title = html.unescape(re.sub(r"<[^>]+>", "", str(figure.title.value)))
    return Panel(figure.mosaic.image, title, figure.colorbar_values, figure.colorbar_ends, figure.colorbar_label)


def compose(panels: Sequence[Panel], heading: str = "") -> np.ndarray:
    """Stack panels top to bottom, each under its (wrapped) title and above its colour bar: (H, W, 3) uint8."""
    if not panels:
        raise CnnvizError("nothing to export: the view shows no picture")
    font = _font()
    pictures = [render.scale_up(p.image, enlargement(p.image.shape[1])) for p in panels]
    width = max(MIN_WIDTH, *(picture.shape[1] for picture in pictures)) + 2 * MARGIN
    chars = max(20, int((width - 2 * MARGIN) / (_TEXT_PX * 0.55)))
    blocks: list[np.ndarray] = []
    if heading:
        blocks.append(_text_block(heading, width, chars, font))
    for panel, picture in zip(panels, pictures, strict=True):
        if panel.title:
            blocks.append(_text_block(panel.title, width, chars, font))
        blocks.append(_centred(picture, width))
        if panel.colorbar is not None:
            blocks.append(_colorbar_block(panel, picture.shape[1], width, font))
        blocks.append(np.full((MARGIN, width, 3), 255, np.uint8))
    return np.concatenate([np.full((MARGIN, width, 3), 255, np.uint8), *blocks], axis=0)


def enlargement(width: int) -> int:
    """The whole factor a picture `width` pixels wide is enlarged by in an export (1 from `PICTURE_PX` on)."""
    return max(1, min(16, PICTURE_PX // max(int(width), 1)))


def save_png(image: np.ndarray, path: str | os.PathLike, metadata: dict[str, str] | None = None) -> Path:
    """Write an (H, W) or (H, W, 3) uint8 picture as PNG, with text metadata (e.g. Title, Description)."""
    target = Path(path)
    if target.suffix.lower() != ".png":
        raise CnnvizError(f"export writes PNG files: give a path ending in .png; got {str(target)!r}")
    if not target.parent.is_dir():
        raise CnnvizError(f"no folder {str(target.parent)!r} to write {target.name} into")
    info = PngImagePlugin.PngInfo()
    info.add_text("Software", f"cnnviz_widgets {__version__}")
    for key, value in (metadata or {}).items():
        info.add_itxt(key, value)  # iTXt: UTF-8, so "×" and "·" survive
    Image.fromarray(np.ascontiguousarray(image)).save(target, format="PNG", pnginfo=info, compress_level=6)
    return target


def export_png(view_or_figure: Any, path: str | os.PathLike, *, state: Any = None) -> Path:
    """Save the pictures a view (or one `MosaicFigure`) shows now as one PNG at `path`.

    Each picture is drawn under its title and above its colour bar. The PNG's metadata hold the titles
    ("Title") and, when the view has a `state` (or one is given), the Python lines that rebuild it
    ("Description", see `reproduce_code`). Returns the path written.
    """
    figures = figures_of(view_or_figure)
    if not figures:
        raise CnnvizError(f"{type(view_or_figure).__name__} shows no picture to export (no MosaicFigure with a "
                          "picture in it, or all of them hidden)")
    panels = [panel_of(figure) for figure in figures]
    state = state if state is not None else getattr(view_or_figure, "state", None)
    metadata = {"Title": " | ".join(p.title for p in panels if p.title)}
    if state is not None and hasattr(state, "layer"):
        metadata["Description"] = reproduce_code(state)
    return save_png(compose(panels), path, metadata)


# --------------------------------------------------------------------------------------------- code


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


# --------------------------------------------------------------------------------------------- drawing


def _font() -> Any:
    try:
        return ImageFont.load_default(size=_TEXT_PX)
    except (TypeError, OSError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _text_block(text: str, width: int, chars: int, font: Any) -> np.ndarray:
    wrapped = textwrap.wrap(text.translate(_ASCII), width=chars) or [""]
    line_px = _TEXT_PX + 4
    canvas = Image.new("RGB", (width, line_px * len(wrapped) + 4), _BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    for i, line in enumerate(wrapped):
        draw.text((MARGIN, 2 + i * line_px), line, fill=_INK, font=font)
    return np.asarray(canvas)


def _centred(image: np.ndarray, width: int) -> np.ndarray:
    out = np.full((image.shape[0], width, 3), 255, np.uint8)
    x0 = (width - image.shape[1]) // 2
    out[:, x0:x0 + image.shape[1]] = image
    return out


def _colorbar_block(panel: Panel, picture_width: int, width: int, font: Any) -> np.ndarray:
    cmap, lo, hi = panel.colorbar
    bar_width = min(width - 2 * MARGIN, max(picture_width, 256))
    strip = render.colormap_lut(cmap)[np.linspace(0, 255, bar_width).round().astype(int)]
    canvas = Image.new("RGB", (width, _BAR_PX + 2 * (_TEXT_PX + 4) + 4), _BACKGROUND)
    x0 = (width - bar_width) // 2
    canvas.paste(Image.fromarray(np.ascontiguousarray(np.repeat(strip[None], _BAR_PX, axis=0))), (x0, 2))
    draw = ImageDraw.Draw(canvas)
    left, right = (end.translate(_ASCII) for end in panel.colorbar_ends or (f"{float(lo):.3g}", f"{float(hi):.3g}"))
    y = _BAR_PX + 4
    draw.text((x0, y), left, fill=_INK, font=font)
    draw.text((x0 + bar_width - int(draw.textlength(right, font=font)), y), right, fill=_INK, font=font)
    if panel.colorbar_label:
        label = panel.colorbar_label.translate(_ASCII)
        draw.text((x0 + (bar_width - int(draw.textlength(label, font=font))) // 2, y + _TEXT_PX + 4), label,
                  fill=_INK, font=font)
    return np.asarray(canvas)
