"""Benchmark group "scaling": forward + render time against the input size, beside a plain ``model(x)``."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np
from harness import Row, astronaut, conv_layers, new_pictures, stats, time_interleaved

GRID_TILE_PX = 112
"""Longest side of one tile of the activation mosaic timed in `bench_scaling` (ActivationGrid's default)."""


def bench_scaling(model: Any, sides: Sequence[int] = (112, 224, 448, 896), repeats: int = 3) -> list[Row]:
    """Forward + render time against input size: new image → all conv activations → the first conv layer's grid.

    The astronaut is upscaled to the largest side first (it is 512×512), so every `max_side` is really fed.
    The render part is `render_mosaic` (tiles pooled to at most `GRID_TILE_PX` px) plus PNG
    encoding of the first conv layer, what a grid shows after a new image. A plain ``model(x)`` on the same
    input is timed in turns with it, so the network's own curve is beside ours. The cache budget is raised so
    that every side keeps all its layers (at 896 px VGG16's outputs are ~1 GB, over the default 640 MB: then a
    walk through all layers costs more passes, counted in `passes_default_budget`).
    """
    from cnnviz_widgets import ModelState
    from cnnviz_widgets.network.extractor import DEFAULT_BUDGET_BYTES
    from cnnviz_widgets.pictures import render

    picture = astronaut(max(sides))
    rows: list[Row] = []
    per_mpx: dict[int, tuple[float, float]] = {}  # side -> (ours, plain) seconds per megapixel
    for side in sides:
        state = ModelState(model, image=picture, max_side=side, cache_budget_mb=4096)
        height, width = state.model_input.array.shape[:2]
        x = state.model_input.array[np.newaxis]
        convs = conv_layers(state)
        pictures = iter(new_pictures(picture, repeats + 1))
        parts: dict[str, list[float]] = {"forward": [], "render": []}

        def forward_and_render(state=state, pictures=pictures, convs=convs, parts=parts) -> None:
            start = time.perf_counter()
            state.set_image(next(pictures))
            for name in convs:
                state.activation(name)
            middle = time.perf_counter()
            mosaic, _ = render.render_mosaic(state.activation(convs[0]), max_side=GRID_TILE_PX)
            render.encode_png(mosaic.image)
            parts["forward"].append(middle - start)
            parts["render"].append(time.perf_counter() - middle)

        def plain(x=x) -> None:
            np.asarray(model(x, training=False))

        samples = time_interleaved({"ours": forward_and_render, "plain": plain}, repeats)
        total, plain_s = stats(samples["ours"]), stats(samples["plain"])
        forward_s = stats(parts["forward"][1:])  # [0] is the warm-up
        render_s = stats(parts["render"][1:])
        mpx = height * width / 1e6
        per_mpx[side] = (total["median"] / mpx, plain_s["median"] / mpx)
        extra = dict(total=total, forward=forward_s, render=render_s, plain=plain_s, megapixels=mpx,
                     ms_per_megapixel=per_mpx[side][0] * 1e3, plain_ms_per_megapixel=per_mpx[side][1] * 1e3)
        del state
        if side == max(sides) and len(sides) > 1:  # what the default budget does at the largest size
            budgeted = ModelState(model, image=picture, max_side=side, cache_budget_mb=DEFAULT_BUDGET_BYTES / 2**20)
            for name in convs:
                budgeted.activation(name)
            extra["passes_default_budget"] = budgeted.forward_passes
            extra["partial_passes_default_budget"] = budgeted.extractor.partial_passes  # from a kept layer on
            del budgeted
        rows.append(Row("scaling", f"{width}×{height}", total["median"] * 1e3, "ms",
                        note=f"forward {forward_s['median'] * 1e3:.0f} + render {render_s['median'] * 1e3:.1f} ms "
                        f"(plain model(x) {plain_s['median'] * 1e3:.0f} ms); {per_mpx[side][0] * 1e3:.0f} ms/Mpx"
                        + (f"; default budget: {extra['passes_default_budget']} whole + "
                           f"{extra['partial_passes_default_budget']} partial passes for all layers"
                           if "passes_default_budget" in extra else ""),
                        extra=extra))
    if len(sides) > 1:
        large = max(sides)
        base = 224 if 224 in sides and large != 224 else min(sides)
        growth, plain_growth = (per_mpx[large][i] / per_mpx[base][i] for i in (0, 1))
        rows.append(Row("scaling", f"time/px {large} ÷ {base}", growth, "×",
                        note=f"1.0 = linear in pixels; plain model(x) alone: {plain_growth:.2f}×",
                        extra=dict(plain_growth=plain_growth, ms_per_megapixel={
                            str(s): [v * 1e3 for v in pair] for s, pair in per_mpx.items()})))
    return rows
