"""`LayerSummary`: the model's layer table, with the rows that count as layers marked; a click selects a layer.

Each table row is one Button (a monospaced line, columns padded with spaces), built once; a layer change only
restyles the old and the new current row, so a ResNet-sized table (~175 rows) stays cheap. Rows that cannot
be shown as maps are disabled and say why on hover.
"""

from __future__ import annotations

import html
import re
from collections import Counter
from typing import Any

import ipywidgets

from cnnviz_widgets.state.model_state import ModelState
from cnnviz_widgets.widgets.about import model_line
from cnnviz_widgets.widgets.theme import SUMMARY_CSS
from cnnviz_widgets.widgets.view import View, as_state

_ROW_CLASS = "cnnviz-summary-row"
_CURRENT_STYLE = "info"  # restyled in the theme's colours by SUMMARY_CSS
_CSS = f"<style>{SUMMARY_CSS}</style>"


class LayerSummary(View):
    """The layer table of a model: name, type, output shape, parameters; click a row to select that layer.

    Parameters
    ----------
    state_or_model
        A `ModelState` (shared with other views), or anything `ModelState` takes as a model.
    css_class
        Added to the root box (browser tests find the view by it).

    The "#" column numbers the rows that count as layers (those with parameters: what the 16 of VGG16
    counts). The current layer's row is highlighted and follows `state.layer`; the output sizes follow the size of
    the image fed, where the model takes any size.
    """

    def __init__(self, state_or_model: Any, *, css_class: str = "cnnviz-layer-summary"):
        self.state = as_state(state_or_model)
        self.rows = self.state.summary()
        self.restyles = 0
        shown = set(self.state.layers)
        self.header = ipywidgets.HTML("")
        self.column_head = ipywidgets.HTML("")
        self.buttons: dict[str, ipywidgets.Button] = {}
        for row in self.rows:
            name = row["name"]
            clickable = name in shown
            button = ipywidgets.Button(
                disabled=not clickable,
                tooltip=f"Show {name}" if clickable else self._why_not(name),
                layout=ipywidgets.Layout(width="auto", height="22px", margin="0", flex="0 0 auto"),
            )
            button.add_class(_ROW_CLASS)
            if clickable:
                button.on_click(lambda _button, name=name: self._select(name))
            self.buttons[name] = button
        self.table = ipywidgets.VBox(list(self.buttons.values()),
                                     layout=ipywidgets.Layout(max_height="440px", overflow="auto"))
        self.totals = ipywidgets.HTML(_totals(self.state, self.rows))
        super().__init__([self.header, self.column_head, self.table, self.totals], css_class=css_class)
        self._current: str | None = None
        self.follow_state(["layer", "image"])
        self.redraw()

    @property
    def current(self) -> str | None:
        """Name of the highlighted row (the state's current layer)."""
        return self._current

    def click(self, name: str) -> None:
        """What a click on `name`'s row does (for tests and code): select it if it can be shown."""
        button = self.buttons[name]
        if not button.disabled:
            button.click()

    def _why_not(self, name: str) -> str:
        reason = self.state.graph.why_not_visualisable(name)
        if reason:
            return reason
        kind = self.state.graph.node(name).class_name
        return f"{name} ({kind}) is not shown as maps: only the input, conv and pooling layers are"

    def _fed_size(self) -> tuple[int, int]:
        return tuple(self.state.model_input.picture.shape[:2])  # type: ignore[return-value]

    def _shapes(self) -> dict[str, tuple]:
        """Output shapes for the image fed now where the model takes any size (else the model's own)."""
        if all(self.state.graph.input_shape[:2]):
            return {}
        return self.state.graph.output_shapes(*self._fed_size())

    def _key(self) -> tuple:
        return (self.state.layer, self._fed_size())

    def _draw(self) -> None:
        # another image size changes the sizes in the table (and the header's sentence); the same size, nothing
        if self.part_changed("sizes", self._fed_size()):
            self.header.value = _CSS + _describe(self.state)
            texts = _format_rows(self.rows, self._shapes())
            self.column_head.value = _head_html(texts[0])
            for button, text in zip(self.buttons.values(), texts[1:], strict=True):
                button.description = text
        self._restyle(self.state.layer)

    def _select(self, name: str) -> None:
        self.state.layer = name

    def _restyle(self, name: str) -> None:
        if name == self._current:
            return
        old = self.buttons.get(self._current) if self._current else None
        if old is not None:
            old.button_style = ""
        new = self.buttons.get(name)
        if new is not None:
            new.button_style = _CURRENT_STYLE
        self._current = name
        self.restyles += 1


def _format_rows(rows: list[dict], shapes: dict[str, tuple] | None = None) -> list[str]:
    """Header line, then one space-padded line per row: #, layer, type, output size, parameters.

    The output size is height × width × channels without Keras' batch dimension, taken from `shapes` (the
    sizes for the image fed now) where given; a size Keras leaves open shows as "any".
    """
    counted = 0
    cells = []
    for row in rows:
        counted += bool(row["counts_as_layer"])
        mark = str(counted) if row["counts_as_layer"] else ""
        dims = (shapes or {}).get(row["name"]) or tuple(row["output_shape"])[1:]
        shape = " × ".join("any" if d is None else str(d) for d in dims)
        cells.append((mark, row["name"], row["type"], shape, f"{row['params']:,}"))
    head = ("#", "Layer", "Type", "Output (H × W × channels)" if shapes else "Output size", "Param #")
    widths = [max(len(c[i]) for c in [head, *cells]) for i in range(5)]

    def line(c: tuple[str, ...]) -> str:
        return (f"{c[0]:>{widths[0]}}  {c[1]:<{widths[1]}}  {c[2]:<{widths[2]}}  {c[3]:<{widths[3]}}  "
                f"{c[4]:>{widths[4]}}")

    return [line(head)] + [line(c) for c in cells]


def _head_html(text: str) -> str:
    return f'<div class="cnnviz-summary-head">{html.escape(text)}</div>'


def _describe(state: ModelState) -> str:
    height, width = state.model_input.picture.shape[:2]
    if all(state.graph.input_shape[:2]):
        sizes = "The output sizes are height × width × channels."
    else:  # Keras would print (None, None, None, 512): say once what that means, and show the real sizes
        sizes = (f"This network takes images of any size: the output sizes (height × width × channels) are the "
                 f"ones for this {width}×{height} image, and change with it.")
    return (f'<div style="line-height: 1.45">{model_line(state)}<br><small>Click a row to show that layer '
            f"(greyed rows cannot be shown as maps). {html.escape(sizes)}</small></div>")


def _totals(state: ModelState, rows: list[dict]) -> str:
    totals = state.parameter_totals()
    kinds = Counter(row["type"] for row in rows if row["counts_as_layer"])
    without = list(dict.fromkeys(row["type"] for row in rows if not row["counts_as_layer"]))
    n = totals["counted_rows"]
    lines = [f"Total params: {totals['total']:,} · trainable: {totals['trainable']:,} · "
             f"non-trainable: {totals['non_trainable']:,}",
             f"{n} rows have parameters and count as layers (numbered in the # column)"
             + (f"; {', '.join(without)} rows have none and do not count." if without else ".")]
    name = state.describe()["model"]
    number = re.search(r"(\d+)$", name)
    if number and int(number.group(1)) == n:  # the sentence only where the name's number is this count
        parts = " + ".join(f"{count} {kind}" for kind, count in kinds.items())
        lines.append(f"That is the {n} in {name}: {parts} = {n} layers with weights.")
    return "<div><small>" + "<br>".join(html.escape(line) for line in lines) + "</small></div>"
