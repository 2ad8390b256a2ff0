"""A view laid out as one slide-sized picture: pictures where the view puts them, with their words.

`layout_slide` keeps pictures side by side where the view puts them side by side, each under its title and
above its colour bar, every tile enlarged by a whole factor (nearest neighbour: map pixels stay crisp) with its
hover label written under it, since a PNG has no hover. Views are found by what they have (duck typing), so
this module imports no widget library; Pillow draws the text.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from cnnviz_widgets.errors import CnnvizError
from cnnviz_widgets.export.panels import ASCII_FALLBACKS, BACKGROUND, INK, Panel, figures_of, panel_of
from cnnviz_widgets.pictures import render

SLIDE_PX = 1920
"""An exported slide is at least this wide (a full-HD slide); its pictures are enlarged to fill it."""


SLIDE_MAX_PICTURE_PX = 1600
"""No picture of a slide is enlarged past this height (a single tall picture would not fit a slide)."""


SLIDE_MARGIN = 32


FIGURE_MIN_PX = 320  # a figure's column is at least this wide, for its title and colour bar


SLIDE_GAP = 16  # between tiles


SLIDE_PANEL_GAP = 48  # between pictures side by side


TITLE_PX = 22


CAPTION_PX = 17


SMALL_CAPTION_PX = 14


CAPTION_LINES = 8  # a longer hover label is cut with "..." (the view still has it whole)


# Phrases that only make sense on screen, as the PNG says them instead.
_ON_SCREEN = ((re.compile(r"\s*\(hover[^)]*\)"), " (values under each tile)"),
              (re.compile(r"\s*\((?:click|drag)[^)]*\)"), ""),
              (re.compile(r"\s*·\s*(?:click|hover|drag)\b[^·|]*"), ""))


class TileBox:
    """Where one tile of a view's picture went on a slide: `figure` (its index in `figures_of`), `index` (the
    map it shows), `factor` (whole enlargement), `tile` and `caption` as (y0, x0, y1, x1) pixel boxes, end
    exclusive, and the caption's `text` (the tile's hover label; "" for none)."""

    def __init__(self, figure: int, index: int, factor: int, tile: tuple[int, int, int, int],
                 caption: tuple[int, int, int, int], text: str):
        self.figure, self.index, self.factor = figure, index, factor
        self.tile, self.caption, self.text = tile, caption, text

    def shifted(self, dy: int, dx: int) -> TileBox:
        (a, b, c, d), (e, f, g, h) = self.tile, self.caption
        return TileBox(self.figure, self.index, self.factor, (a + dy, b + dx, c + dy, d + dx),
                       (e + dy, f + dx, g + dy, h + dx), self.text)


class Slide:
    """A laid-out export: `image` (H, W, 3) uint8 and `tiles`, one `TileBox` per tile shown."""

    def __init__(self, image: np.ndarray, tiles: list[TileBox]):
        self.image, self.tiles = image, tiles


def layout_slide(view_or_figure: Any) -> Slide:
    """The slide-sized picture of what a view (or one `MosaicFigure`) shows now, and where each tile went.

    Figures side by side in the view (in one horizontal box) stay side by side; the others are stacked. The
    width is shared among the figures of a row by their own widths, and each figure's tiles are enlarged by
    the largest whole factor that fits its share (at most 16, and no picture taller than
    `SLIDE_MAX_PICTURE_PX`); the slide is at least `SLIDE_PX` wide. A figure with hover labels gets each
    label written under its tile.
    """
    figures = figures_of(view_or_figure)
    if not figures:
        raise CnnvizError(f"{type(view_or_figure).__name__} shows no picture to export (nothing drawn yet, or "
                          "every picture hidden)")
    tree = _arrangement(view_or_figure)
    fonts = _slide_fonts()
    order = {id(figure): i for i, figure in enumerate(figures)}
    block, tiles = _draw_item(tree, _factors(tree, SLIDE_PX - 2 * SLIDE_MARGIN), fonts, order)
    width = max(SLIDE_PX, block.shape[1] + 2 * SLIDE_MARGIN)
    canvas = np.full((block.shape[0] + 2 * SLIDE_MARGIN, width, 3), 255, np.uint8)
    x0 = (width - block.shape[1]) // 2
    canvas[SLIDE_MARGIN:SLIDE_MARGIN + block.shape[0], x0:x0 + block.shape[1]] = block
    return Slide(canvas, [tile.shifted(SLIDE_MARGIN, x0) for tile in tiles])


def _is_figure(widget: Any) -> bool:
    return all(hasattr(widget, name) for name in ("mosaic", "title", "image_mark"))


def _arrangement(view: Any) -> Any:
    """The shown figures as a tree: a figure, or ("row" | "column", [items]); None for nothing shown.
    The walk is the one of `figures_of` (same figures, same order)."""

    def walk(widget: Any) -> Any:
        layout = getattr(widget, "layout", None)
        if layout is not None and getattr(layout, "display", None) == "none":
            return None
        if _is_figure(widget):
            return widget if widget.mosaic is not None else None
        children = list(getattr(widget, "children", ()) or ())
        selected = getattr(widget, "selected_index", None)
        if isinstance(selected, int) and 0 <= selected < len(children):
            children = [children[selected]]
        items = [item for item in map(walk, children) if item is not None]
        if len(items) <= 1:
            return items[0] if items else None
        side_by_side = getattr(widget, "_view_name", "") in ("HBoxView", "GridBoxView")
        return ("row" if side_by_side else "column", items)

    return walk(view)


def _leaves(item: Any) -> list[Any]:
    return [item] if _is_figure(item) else [leaf for child in item[1] for leaf in _leaves(child)]


def _width(item: Any, factors: dict[int, int]) -> int:
    """Width of an item's pictures with each figure's tiles enlarged by `factors[id(figure)]`."""
    if _is_figure(item):
        mosaic = item.mosaic
        return max(FIGURE_MIN_PX, mosaic.cols * mosaic.tile_width * factors[id(item)] + (mosaic.cols - 1) * SLIDE_GAP)
    kind, items = item
    widths = [_width(child, factors) for child in items]
    return sum(widths) + SLIDE_PANEL_GAP * (len(items) - 1) if kind == "row" else max(widths)


def _factors(tree: Any, budget: int) -> dict[int, int]:
    """A whole enlargement per figure: the smallest factor grows first (the first figure on ties), one step at a
    time, while the whole stays within `budget` pixels wide, up to 16 and `SLIDE_MAX_PICTURE_PX` high. Small
    pictures beside a large one (a zoom beside the map) thus grow too, rather than keep a share of their size."""
    leaves = _leaves(tree)
    factors = {id(leaf): 1 for leaf in leaves}
    highest = {id(leaf): max(1, min(16, SLIDE_MAX_PICTURE_PX // max(leaf.mosaic.rows * leaf.mosaic.tile_height, 1)))
               for leaf in leaves}
    growing = [leaf for leaf in leaves if highest[id(leaf)] > 1]
    while growing:
        leaf = min(growing, key=lambda item: factors[id(item)])  # min() keeps the first of equals
        factors[id(leaf)] += 1
        if _width(tree, factors) > budget:
            factors[id(leaf)] -= 1
            growing.remove(leaf)
        elif factors[id(leaf)] >= highest[id(leaf)]:
            growing.remove(leaf)
    return factors


def _draw_item(item: Any, factors: dict[int, int], fonts: tuple, order: dict) -> tuple[np.ndarray, list[TileBox]]:
    if _is_figure(item):
        return _draw_figure(item, factors[id(item)], fonts, order[id(item)])
    kind, items = item
    if kind == "row":
        drawn = [_draw_item(child, factors, fonts, order) for child in items]
        height = max(block.shape[0] for block, _ in drawn)
        parts, tiles, x = [], [], 0
        for i, (block, boxes) in enumerate(drawn):
            if i:
                parts.append(np.full((height, SLIDE_PANEL_GAP, 3), 255, np.uint8))
                x += SLIDE_PANEL_GAP
            parts.append(np.concatenate([block, np.full((height - block.shape[0], block.shape[1], 3), 255,
                                                        np.uint8)]))  # tops aligned
            tiles += [box.shifted(0, x) for box in boxes]
            x += block.shape[1]
        return np.concatenate(parts, axis=1), tiles
    drawn = [_draw_item(child, factors, fonts, order) for child in items]
    width = max(block.shape[1] for block, _ in drawn)
    parts, tiles, y = [], [], 0
    for i, (block, boxes) in enumerate(drawn):
        if i:
            parts.append(np.full((SLIDE_PANEL_GAP // 2, width, 3), 255, np.uint8))
            y += SLIDE_PANEL_GAP // 2
        x0 = (width - block.shape[1]) // 2  # centred, like the views' own column
        padded = np.full((block.shape[0], width, 3), 255, np.uint8)
        padded[:, x0:x0 + block.shape[1]] = block
        parts.append(padded)
        tiles += [box.shifted(y, x0) for box in boxes]
        y += block.shape[0]
    return np.concatenate(parts, axis=0), tiles


def _draw_figure(figure: Any, factor: int, fonts: tuple, number: int) -> tuple[np.ndarray, list[TileBox]]:
    """One figure: title, its tiles enlarged (captions under them) in the mosaic's grid, colour bar."""
    title_font, caption_font, small_font = fonts
    panel = panel_of(figure)
    mosaic = figure.mosaic
    picture = panel.image  # (H, W, 3)
    rows, cols, th, tw = mosaic.rows, mosaic.cols, mosaic.tile_height, mosaic.tile_width
    labels = list(getattr(figure, "tooltips", []) or [])
    captioned = getattr(figure, "hover_labels", True) and len(labels) == len(mosaic.indices)
    cell_w = tw * factor
    if cell_w < 160:  # narrow tiles (64 kernels): a smaller font keeps a label's parts whole on their lines
        caption_font = small_font
    captions = [_caption_lines(label, cell_w, caption_font) if captioned else [] for label in
                (labels if captioned else mosaic.indices)]
    line_px = int(caption_font.getbbox("Ag")[3]) + 5 if captioned else 0
    caption_h = (max((len(lines) for lines in captions), default=0) * line_px + 4) if captioned else 0
    row_gap = SLIDE_GAP if rows > 1 else 0
    grid_w = cols * cell_w + (cols - 1) * SLIDE_GAP
    grid_h = rows * (th * factor + caption_h) + (rows - 1) * row_gap
    title = _on_paper(panel.title, captioned)
    width = max(grid_w, FIGURE_MIN_PX)  # room for a title and a colour bar beside a small picture
    title_lines = _wrap(title, width, title_font) if title else []
    title_px = TITLE_PX + 7
    top = len(title_lines) * title_px + (8 if title_lines else 0)
    canvas = Image.new("RGB", (width, top + grid_h), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    for i, line in enumerate(title_lines):
        _text(draw, (0, i * title_px), line, title_font)
    gx = (width - grid_w) // 2
    boxes: list[TileBox] = []
    for k, index in enumerate(mosaic.indices):
        row, col = divmod(k, cols)
        y0, x0, y1, x1 = mosaic.tile_box(index)
        tile = render.scale_up(picture[y0:y1, x0:x1], factor)
        ty = top + row * (th * factor + caption_h + row_gap)
        tx = gx + col * (cell_w + SLIDE_GAP)
        canvas.paste(Image.fromarray(np.ascontiguousarray(tile)), (tx, ty))
        cy = ty + th * factor + 2
        for j, line in enumerate(captions[k]):
            _text(draw, (tx, cy + j * line_px), line, caption_font)
        boxes.append(TileBox(number, int(index), factor, (ty, tx, ty + th * factor, tx + cell_w),
                             (cy, tx, cy + caption_h - 2, tx + cell_w), " ".join(captions[k])))
    block = np.asarray(canvas)
    if panel.colorbar is not None:
        label = _on_paper(panel.colorbar_label, captioned)
        bar = _slide_colorbar(panel, label, grid_w, width, fonts[1])
        block = np.concatenate([block, np.full((10, width, 3), 255, np.uint8), bar])
    return block, boxes


def _caption_lines(label: str, width: int, font: Any) -> list[str]:
    """A hover label wrapped to its tile's width, at most `CAPTION_LINES` lines (a cut one ends in "...")."""
    lines = _wrap(_on_paper(str(label), False), width, font)
    if len(lines) > CAPTION_LINES:
        lines = [*lines[:CAPTION_LINES - 1], _fit_line(lines[CAPTION_LINES - 1] + "...", width, font)]
    return lines


def _on_paper(text: str, captioned: bool) -> str:
    """`text` without what only a screen can do (hover, click); a hover hint points to the written captions."""
    for pattern, replacement in _ON_SCREEN:
        text = pattern.sub(replacement if captioned else "", text)
    return text.strip()


def _slide_fonts() -> tuple[Any, Any, Any]:
    """(title font, caption font, small caption font): DejaVu Sans where the system has it (every glyph the
    views use), else Pillow's own."""
    fonts = []
    for name, size in (("DejaVuSans-Bold.ttf", TITLE_PX), ("DejaVuSans.ttf", CAPTION_PX),
                       ("DejaVuSans.ttf", SMALL_CAPTION_PX)):
        try:
            fonts.append(ImageFont.truetype(name, size))
        except OSError:
            try:
                fonts.append(_AsciiFont(ImageFont.load_default(size=size)))
            except (TypeError, OSError):  # Pillow without FreeType: the fixed bitmap font
                fonts.append(_AsciiFont(ImageFont.load_default()))
    return fonts[0], fonts[1], fonts[2]


class _AsciiFont:
    """A font without glyphs for "×", "→"...: draws their ASCII spelling (see `ASCII_FALLBACKS`)."""

    def __init__(self, font: Any):
        self.font = font

    def getlength(self, text: str) -> float:
        return self.font.getlength(text.translate(ASCII_FALLBACKS))

    def getbbox(self, text: str) -> Any:
        return self.font.getbbox(text.translate(ASCII_FALLBACKS))


def _text(draw: Any, xy: tuple[int, int], text: str, font: Any) -> None:
    if isinstance(font, _AsciiFont):
        draw.text(xy, text.translate(ASCII_FALLBACKS), fill=INK, font=font.font)
    else:
        draw.text(xy, text, fill=INK, font=font)


def _wrap(text: str, width: int, font: Any) -> list[str]:
    """Wrap to `width` pixels, breaking after a label's separators first ("·", ":", ",", "/": a 3×3 kernel's
    rows land on lines of their own), then between words; a word longer than a line is cut where it must be."""
    lines: list[str] = []

    def fill(pieces: list[str], line: str, smaller: Any) -> str:
        """Add `pieces` to `line` while they fit; a piece that does not starts a line, broken by `smaller`."""
        for piece in pieces:
            trial = f"{line} {piece}" if line else piece
            if font.getlength(trial) <= width:
                line = trial
                continue
            if line:
                lines.append(line)
            line = smaller(piece)
        return line

    def cut(word: str) -> str:
        while font.getlength(word) > width and len(word) > 1:
            end = len(word) - 1
            while end > 1 and font.getlength(word[:end]) > width:
                end -= 1
            lines.append(word[:end])
            word = word[end:]
        return word

    line = fill(re.split(r"(?<=[·:,/]) +", " ".join(text.split())), "",
                lambda chunk: fill(chunk.split(" "), "", cut))
    if line:
        lines.append(line)
    return [line.removesuffix(" ·").removesuffix("·").rstrip() for line in lines]


def _fit_line(text: str, width: int, font: Any) -> str:
    while len(text) > 4 and font.getlength(text) > width:
        text = text[:-4].rstrip() + "..."
    return text


def _slide_colorbar(panel: Panel, label: str, bar_width: int, width: int, font: Any) -> np.ndarray:
    cmap, lo, hi = panel.colorbar
    bar_width = min(width, max(bar_width, FIGURE_MIN_PX))
    strip = render.colormap_lut(cmap)[np.linspace(0, 255, bar_width).round().astype(int)]
    line_px = CAPTION_PX + 6
    bar_px = 20
    canvas = Image.new("RGB", (width, bar_px + 2 * line_px + 8), BACKGROUND)
    x0 = (width - bar_width) // 2
    canvas.paste(Image.fromarray(np.ascontiguousarray(np.repeat(strip[None], bar_px, axis=0))), (x0, 0))
    draw = ImageDraw.Draw(canvas)
    left, right = panel.colorbar_ends or (f"{float(lo):.3g}", f"{float(hi):.3g}")
    y = bar_px + 4
    _text(draw, (x0, y), left, font)
    _text(draw, (x0 + bar_width - int(font.getlength(right)), y), right, font)
    if label:
        label = _fit_line(label, bar_width, font)
        _text(draw, (x0 + (bar_width - int(font.getlength(label))) // 2, y + line_px), label, font)
    return np.asarray(canvas)
