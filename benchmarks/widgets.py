"""Benchmark group "widgets": scrubbing, layer switching and bytes per update in the real views.

Kernel side only, no browser: each step is timed by `harness.drive` until every redrawn picture's bytes are
in its bqplot mark.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from harness import Row, Steps, astronaut, at_most, conv_layers, drive


def bench_widgets(model: Any, repeats: int = 30, sides: Sequence[int] = (224, 512)) -> list[Row]:
    """Scrubbing, layer switching and bytes per update in the real views (no browser: kernel side only).

    Scrub: a slider drag, one step at a time, on a cached layer: ActivationGrid of the first conv layer
    (filter: only the outline moves) and of a paged layer (filter +page: a new page is drawn), WeightGrid of
    the 5th conv layer (VGG16 block3_conv1; input channel), FilterEffect (filter) on three layers. Layer
    switch: the Explorer (all four views on one state) stepping through every layer, cached image.
    """
    rows: list[Row] = []
    for side in sides:
        rows += _bench_widgets_at(model, repeats, side)
    return rows


def _bench_widgets_at(model: Any, repeats: int, side: int) -> list[Row]:
    import ipywidgets

    from cnnviz_widgets import ModelState
    from cnnviz_widgets.widgets.effect import FilterEffect
    from cnnviz_widgets.widgets.explorer import Explorer
    from cnnviz_widgets.widgets.grids import ActivationGrid, WeightGrid
    from cnnviz_widgets.widgets.summary import LayerSummary

    rows: list[Row] = []
    state = ModelState(model, image=astronaut(), max_side=side)
    case_size = "{1}×{0}".format(*state.model_input.array.shape[:2])
    convs = conv_layers(state)
    for name in convs:
        state.activation(name)  # one pass: every scrub below is on cached layers
    steps_of: dict[str, Steps] = {}

    def scrub(label: str, view: Any, layer: str, trait: str, values: Sequence[int]) -> None:
        state.layer = layer
        state.filter = state.channel = 0
        steps = drive(state, view, [(trait, v) for v in values])
        view.close()
        steps_of[label] = steps
        rows.append(steps.row("scrub", f"{label} ({case_size})", 10, 25))

    first = convs[0]
    weights_layer = convs[min(4, len(convs) - 1)]
    n = repeats + 2
    scrub(f"ActivationGrid {first}, filter", ActivationGrid(state), first, "filter",
          [i % state.n_filters(first) for i in range(1, n + 1)])
    paged = next((c for c in convs if state.n_filters(c) > 64), None)
    if paged is not None:
        pages = state.n_filters(paged) // 64
        scrub(f"ActivationGrid {paged}, filter +64 (new page)", ActivationGrid(state), paged, "filter",
              [(i % pages) * 64 + i % 64 for i in range(1, n + 1)])
    scrub(f"WeightGrid {weights_layer}, channel", WeightGrid(state), weights_layer, "channel",
          [i % state.n_channels(weights_layer) for i in range(1, n + 1)])
    for layer in dict.fromkeys([first, convs[min(1, len(convs) - 1)], weights_layer]):
        scrub(f"FilterEffect {layer}, filter", FilterEffect(state), layer, "filter",
              [i % state.n_filters(layer) for i in range(1, n + 1)])

    # Layer switch: one untimed walk through every layer (each view draws each layer once), then one timed
    # walk; the samples are the layers, so the median is that of a user stepping through the network.
    layers = state.layers
    walk = [("layer", layers[i % len(layers)]) for i in range(1, 2 * len(layers) + 1)]

    def switch(label: str, view: Any) -> None:
        steps = drive(state, view, walk, warmup=len(layers))
        steps.extra["layers"] = [name for _, name in walk[len(layers):]]
        view.close()
        steps_of[f"layer switch, {label}"] = steps
        rows.append(steps.row("layer switch", f"{label}, {len(layers)} layers in turn ({case_size})", 30, None))

    explorer = Explorer(state)
    for index, tab in enumerate(("Activations", "Weights", "Filter effect")):
        explorer.tabs.selected_index = index  # background tabs do not draw (Explorer: `active` views)
        steps = drive(state, explorer, walk, warmup=len(layers))
        steps.extra["layers"] = [name for _, name in walk[len(layers):]]
        steps_of[f"layer switch, Explorer {tab} tab"] = steps
        rows.append(steps.row("layer switch", f"Explorer on the {tab} tab ({case_size})", 30, None))
    explorer.close()
    side_by_side = ipywidgets.VBox([ActivationGrid(state), WeightGrid(state), FilterEffect(state),
                                    LayerSummary(state)])
    switch("4 views side by side", side_by_side)
    for view in side_by_side.children:
        view.close()

    for label, steps in steps_of.items():  # one picture = one grid update; a step may redraw several
        sizes = steps.picture_bytes
        if not sizes:
            continue
        largest = max(sizes) / 1000
        target, met = at_most(largest, 300)
        rows.append(Row("bytes per update", f"{label} ({case_size})", largest, "KB", target, met,
                        f"largest of {len(sizes)} pictures (median {np.median(sizes) / 1000:.0f} KB); per step "
                        f"all redrawn pictures: max {max(steps.sent_bytes) / 1000:.0f} KB",
                        dict(picture_bytes=sizes, step_bytes=steps.sent_bytes)))
    return rows
