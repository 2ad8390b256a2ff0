"""A bqplot figure as a picture with its words: title, colour bar, and the plain stacking of panels.

`figures_of` finds the figures a view holds (duck typing: no widget library here), `panel_of` reads one
figure's picture, title and colour scale, and `compose` stacks panels under a heading, the layout the command
line uses. The drawing helpers (fonts, text blocks, colour bars) are shared with `slide`.
"""

from __future__ import annotations

import html
import re
import textwrap
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from cnnviz_widgets.errors import CnnvizError
from cnnviz_widgets.pictures import render

MARGIN = 8
"""Pixels around and between the pictures of an exported PNG."""


MIN_WIDTH = 320
"""An exported PNG is at least this wide, so titles stay readable next to small pictures (kernels)."""


PICTURE_PX = 384
"""Pictures narrower than this are enlarged by a whole factor (nearest neighbour: crisp cells) towards it, as
the views show them enlarged on screen."""


# Pillow's built-in font has no glyph for these: drawn as their ASCII spelling (the metadata keep the originals)
ASCII_FALLBACKS = str.maketrans({"×": "x", "→": "->", "−": "-", "–": "-", "—": "-", "…": "...", "±": "+/-", "≤": "<=",
                        "≥": ">=", "⋆": "*", "‘": "'", "’": "'", "“": '"', "”": '"'})


_TEXT_PX = 13


_BAR_PX = 12


BACKGROUND = (255, 255, 255)


INK = (20, 20, 20)


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






def _font() -> Any:
    try:
        return ImageFont.load_default(size=_TEXT_PX)
    except (TypeError, OSError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _text_block(text: str, width: int, chars: int, font: Any) -> np.ndarray:
    wrapped = textwrap.wrap(text.translate(ASCII_FALLBACKS), width=chars) or [""]
    line_px = _TEXT_PX + 4
    canvas = Image.new("RGB", (width, line_px * len(wrapped) + 4), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    for i, line in enumerate(wrapped):
        draw.text((MARGIN, 2 + i * line_px), line, fill=INK, font=font)
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
    canvas = Image.new("RGB", (width, _BAR_PX + 2 * (_TEXT_PX + 4) + 4), BACKGROUND)
    x0 = (width - bar_width) // 2
    canvas.paste(Image.fromarray(np.ascontiguousarray(np.repeat(strip[None], _BAR_PX, axis=0))), (x0, 2))
    draw = ImageDraw.Draw(canvas)
    ends = panel.colorbar_ends or (f"{float(lo):.3g}", f"{float(hi):.3g}")
    left, right = (end.translate(ASCII_FALLBACKS) for end in ends)
    y = _BAR_PX + 4
    draw.text((x0, y), left, fill=INK, font=font)
    draw.text((x0 + bar_width - int(draw.textlength(right, font=font)), y), right, fill=INK, font=font)
    if panel.colorbar_label:
        label = panel.colorbar_label.translate(ASCII_FALLBACKS)
        draw.text((x0 + (bar_width - int(draw.textlength(label, font=font))) // 2, y + _TEXT_PX + 4), label,
                  fill=INK, font=font)
    return np.asarray(canvas)
