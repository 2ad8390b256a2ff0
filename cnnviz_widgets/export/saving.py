"""Write what a view shows to a PNG file, with its titles and the code that rebuilds it.

`export_png` takes a view (any widget holding `MosaicFigure`s) or a single figure, lays it out as a slide
(`slide.layout_slide`) and writes it with `save_png`; the PNG's metadata carry the titles and the code of
`code.reproduce_code`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, PngImagePlugin

from cnnviz_widgets import __version__
from cnnviz_widgets.errors import CnnvizError
from cnnviz_widgets.export.code import reproduce_code
from cnnviz_widgets.export.panels import figures_of, panel_of
from cnnviz_widgets.export.slide import layout_slide

MARGIN = 8
"""Pixels around and between the pictures of an exported PNG."""


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
    # level 1: a slide-sized export (1920 px wide) encodes faster than at level 6, for ~30 % more bytes
    Image.fromarray(np.ascontiguousarray(image)).save(target, format="PNG", pnginfo=info, compress_level=1)
    return target


def export_png(view_or_figure: Any, path: str | os.PathLike, *, state: Any = None) -> Path:
    """Save the pictures a view (or one `MosaicFigure`) shows now as one slide-sized PNG at `path`.

    The picture is `layout_slide(view_or_figure).image`. The PNG's metadata hold the titles ("Title") and,
    when the view has a `state` (or one is given), the Python lines that rebuild it ("Description", see
    `reproduce_code`). Returns the path written.
    """
    slide = layout_slide(view_or_figure)
    panels = [panel_of(figure) for figure in figures_of(view_or_figure)]
    state = state if state is not None else getattr(view_or_figure, "state", None)
    metadata = {"Title": " | ".join(p.title for p in panels if p.title)}
    if state is not None and hasattr(state, "layer"):
        metadata["Description"] = reproduce_code(state)
    return save_png(slide.image, path, metadata)
