"""Benchmark group "interactive" (issue 13): what still made a user wait, each before and after its fix.

Run ``python benchmarks/run.py --only interactive`` (part of ``make bench``) or ``python benchmarks/interactive.py``.
Kernel side only: a step is one assignment to the state (or one view built) and everything the open view
draws for it, up to the picture's bytes in its bqplot mark, as ``harness.drive`` times it. "Before" is the old
code path, still in the library as an option, measured in the same process on the same inputs:

- FilterEffect filter step: ``break_down_filter(method="exhaustive")`` (every channel's partial sum) against
  the default bounded ranking, in turns (A, B, A, B, ...), a new filter each step.
- Grad-CAM / saliency of a new filter: ``Explainer.reuse = False`` (the whole network from the input) against
  the layers between the cached maps and the filter, in turns, a new filter each step.
- Back to one of the last 3 images: the activation cache's ``policy = "images"`` (whole images evicted)
  against ``"layers"``, each on its own state with the default budget, the Explorer on its Activations tab.
- CompareImages: the second image's first draw, at a size the network has not run at yet and at one it has,
  beside the main view taking a new image of that size.
- First paint: a fresh interpreter timing each stage from ``import cnnviz_widgets`` to the Explorer's first
  picture (the front end not counted).

Returns rows as dicts of ``harness.Row``'s fields.
"""

from __future__ import annotations

import functools
import json
import subprocess
import sys
import time
from typing import Any

import numpy as np
from harness import REPO, astronaut, load_vgg16, stats, time_in_turns


def _fmt(value: float) -> str:
    return f"{value:.0f}" if abs(value) >= 100 else f"{value:.1f}" if abs(value) >= 10 else f"{value:.2g}"


def _row(figure: str, case: str, value: float, unit: str, limit: float | None = None, note: str = "",
         extra: dict | None = None, target: str | None = None, met: bool | None = None) -> dict[str, Any]:
    if limit is not None and target is None:
        target, met = f"≤ {_fmt(limit)}", bool(value <= limit)
    return dict(figure=figure, case=case, value=float(value), unit=unit, target=target or "", met=met, note=note,
                extra=extra or {})


def _layers(state: Any, *wanted: str) -> list[str]:
    """`wanted` where the model has them, else its conv layers from the second on (a tiny model in the smoke test)."""
    if all(name in state.layers for name in wanted):
        return list(wanted)
    convs = [n for n in state.layers if state.layer_kind(n) == "conv"]
    return [convs[min(i + 1, len(convs) - 1)] for i in range(len(wanted))]


# ------------------------------------------------------------------------------------------ FilterEffect


def bench_filter_effect(model: Any, side: int, repeats: int, median_ms: float,
                        p95_ms: float | None) -> dict[str, Any]:
    """FilterEffect, filter step on block1_conv2: the exhaustive ranking (before) and the bounded one, in turns."""
    from cnnviz_widgets import ModelState
    from cnnviz_widgets.lessons import filter_effect as effects
    from cnnviz_widgets.lessons import layer_breakdowns as breakdowns
    from cnnviz_widgets.widgets.effect import FilterEffect

    state = ModelState(model, image=astronaut(), max_side=side)
    (layer,) = _layers(state, "block1_conv2")
    state.layer = layer
    state.activation(state.previous_layer()), state.activation()
    view = FilterEffect(state)
    bounded = breakdowns.break_down_filter
    exhaustive = functools.partial(effects.break_down_filter, method="exhaustive")
    n_filters = state.n_filters()

    def step(i: int, before: bool) -> None:
        breakdowns.break_down_filter = exhaustive if before else bounded
        try:
            state.filter = (state.filter + 1 + i % 2) % n_filters  # always a new filter
        finally:
            breakdowns.break_down_filter = bounded

    try:
        samples = time_in_turns({"before": functools.partial(step, before=True),
                             "after": functools.partial(step, before=False)}, repeats, warmup=2)
    finally:
        view.close()
    before, after = stats(samples["before"]), stats(samples["after"])
    # the arithmetic alone (the rest of a step is drawing four figures), in turns on the same filters
    previous, (kernel, bias) = state.activation(state.previous_layer()), state.weights()
    compute = time_in_turns({"before": lambda i: exhaustive(previous, kernel, bias, i % n_filters),
                         "after": lambda i: effects.break_down_filter(previous, kernel, bias, i % n_filters)},
                        repeats, warmup=1)
    compute_before, compute_after = stats(compute["before"]), stats(compute["after"])
    case = "{1}×{0}".format(*state.model_input.array.shape[:2])
    met = after["median"] * 1e3 <= median_ms and (p95_ms is None or after["p95"] * 1e3 <= p95_ms)
    target = f"median ≤ {_fmt(median_ms)}" + (f", p95 ≤ {_fmt(p95_ms)}" if p95_ms is not None else "")
    return _row("interactive", f"FilterEffect filter step, {layer} ({case})", after["median"] * 1e3, "ms",
                note=f"before {before['median'] * 1e3:.0f} ms (p95 {before['p95'] * 1e3:.0f}), after p95 "
                f"{after['p95'] * 1e3:.0f} ms: {before['median'] / after['median']:.1f}× faster; the breakdown "
                f"alone {compute_before['median'] * 1e3:.1f} → {compute_after['median'] * 1e3:.1f} ms, the rest is "
                "drawing four figures",
                extra=dict(before=before, after=after, samples=samples, compute_before=compute_before,
                           compute_after=compute_after), target=target, met=met)


# ---------------------------------------------------------------------------------------- gradient views


def bench_gradients(model: Any, side: int, repeats: int) -> list[dict[str, Any]]:
    """ClassActivationMap of a new filter (Grad-CAM on the layer before, then saliency), whole network vs between."""
    from cnnviz_widgets import ModelState
    from cnnviz_widgets.widgets.attribution import ClassActivationMap

    state = ModelState(model, image=astronaut(), max_side=side)
    (layer,) = _layers(state, "block4_conv1")
    state.layer = layer
    view = ClassActivationMap(state, method="grad-cam")
    explainer = state.explainer
    n_filters = state.n_filters()
    rows = []
    for method, limit in (("grad-cam", 300.0), ("saliency", 1000.0)):
        view.method.value = method

        def step(i: int, reuse: bool) -> None:
            explainer.reuse = reuse
            try:
                state.filter = (7 * i + 3) % n_filters  # a filter not explained yet (results are cached)
            finally:
                explainer.reuse = True

        passes = explainer.gradient_passes
        samples = time_in_turns({"before": functools.partial(step, reuse=False),
                             "after": functools.partial(step, reuse=True)}, repeats, warmup=1)
        before, after = stats(samples["before"]), stats(samples["after"])
        explained_on = view.explanation.layer if view.explanation is not None else "?"
        case = "{1}×{0}".format(*state.model_input.array.shape[:2])
        what = (f"Grad-CAM of a new filter, {layer} on {explained_on}" if method == "grad-cam"
                else f"saliency of a new filter, {layer}")
        rows.append(_row("interactive", f"{what} ({case})", after["median"] * 1e3, "ms", limit,
                         f"before (whole network) {before['median'] * 1e3:.0f} ms: "
                         f"{before['median'] / after['median']:.1f}× faster; the browser adds its drawing",
                         dict(before=before, after=after, samples=samples,
                              gradient_passes=explainer.gradient_passes - passes)))
    view.close()
    return rows


# --------------------------------------------------------------------------------------------- revisits


def bench_revisits(model: Any, side: int, repeats: int, cache_budget_mb: float | None = None) -> dict[str, Any]:
    """Back to one of the last 3 images, the Explorer on its Activations tab: whole-image eviction vs by layer."""
    from cnnviz_widgets import ModelState
    from cnnviz_widgets.widgets.explorer import Explorer

    base = astronaut()
    pictures = [np.roll(base, 97 * i, axis=1) for i in range(3)]
    result: dict[str, Any] = {}
    for policy in ("images", "layers"):
        state = ModelState(model, image=pictures[0], max_side=side, cache_budget_mb=cache_budget_mb)
        state.extractor.policy = policy
        explorer = Explorer(state)
        for picture in pictures[1:]:  # every picture seen once
            state.set_image(picture)
        passes = state.forward_passes
        samples = []
        for i in range(repeats):
            start = time.perf_counter()
            state.set_image(pictures[i % 3])
            samples.append(time.perf_counter() - start)
        result[policy] = dict(stats=stats(samples), samples=samples,
                              passes_per_step=(state.forward_passes - passes) / repeats,
                              cached_mb=state.extractor.cached_bytes / 2**20,
                              budget_mb=state.extractor.budget_bytes / 2**20)
        explorer.close()
        del state, explorer
    before, after = result["images"], result["layers"]
    case = f"{side}×{side}"
    return _row("interactive", f"back to one of the last 3 images, Explorer Activations tab ({case})",
                after["stats"]["median"] * 1e3, "ms", 50.0,
                f"before {before['stats']['median'] * 1e3:.0f} ms ({before['passes_per_step']:.1f} forward "
                f"passes/step); after {after['passes_per_step']:.1f} passes/step, cache {after['cached_mb']:.0f} "
                f"of {after['budget_mb']:.0f} MB", dict(before=before, after=after))


# ----------------------------------------------------------------------------------------- CompareImages


def bench_compare(model: Any, side: int) -> list[dict[str, Any]]:
    """CompareImages' second image: the first draw at a size the network has not run at yet, then at one it has."""
    from cnnviz_widgets import ModelState
    from cnnviz_widgets.pictures import images
    from cnnviz_widgets.widgets.attribution import CompareImages
    from cnnviz_widgets.widgets.grids import ActivationGrid

    state = ModelState(model, image=astronaut(), max_side=side)
    grid = ActivationGrid(state)
    coffee = images.sample_image("coffee")  # 400×600: another aspect, so another input size than the astronaut
    shifted = [np.roll(coffee, 50 * (i + 1), axis=1) for i in range(3)]
    times = {}
    start = time.perf_counter()
    view = CompareImages(state, shifted[0])
    times["compare_new_size"] = time.perf_counter() - start
    view.close()
    start = time.perf_counter()
    view = CompareImages(state, shifted[1])
    times["compare_seen_size"] = time.perf_counter() - start
    view.close()
    start = time.perf_counter()
    state.set_image(shifted[2])
    times["main_view_seen_size"] = time.perf_counter() - start
    grid.close()
    size = "{1}×{0}".format(*state.model_input.array.shape[:2])
    return [
        _row("interactive", f"CompareImages, second image of a new size ({size})",
             times["compare_new_size"] * 1e3, "ms",
             note="the network's first run at an input size (TensorFlow prepares its kernels for it)",
             extra=times),
        _row("interactive", "CompareImages, second image of a size already run", times["compare_seen_size"] * 1e3,
             "ms", target="main view", met=bool(times["compare_seen_size"] <= 1.25 * times["main_view_seen_size"]),
             note=f"main view, a new image of that size: {times['main_view_seen_size'] * 1e3:.0f} ms", extra=times),
    ]


# -------------------------------------------------------------------------------------------- first paint

_FIRST_PAINT = """
import json, sys, time
marks = [("start", time.perf_counter())]
import cnnviz_widgets as cw
marks.append(("import cnnviz_widgets", time.perf_counter()))
from cnnviz_widgets.network.backend import keras
keras()
marks.append(("import TensorFlow + Keras", time.perf_counter()))
model = cw.load_model(SPEC)
marks.append(("load_model (build + weights)", time.perf_counter()))
state = cw.ModelState(model, max_side=SIDE)
marks.append(("ModelState (graph, extractor, image)", time.perf_counter()))
state.activation()
marks.append(("first forward pass", time.perf_counter()))
from cnnviz_widgets.widgets.explorer import Explorer
marks.append(("import the widgets", time.perf_counter()))
explorer = Explorer(state)
marks.append(("Explorer: first picture drawn", time.perf_counter()))
print(json.dumps([(name, t - marks[0][1]) for name, t in marks]))
"""


def bench_first_paint(spec: str = "vgg16", side: int = 512) -> list[dict[str, Any]]:
    """A fresh interpreter: each stage from the import to the Explorer's first picture (kernel side)."""
    code = _FIRST_PAINT.replace("SPEC", repr(spec)).replace("SIDE", str(side))
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    wall = time.perf_counter() - start
    marks = json.loads(out.stdout.strip().splitlines()[-1])
    rows = []
    previous = 0.0
    for name, at in marks[1:]:
        rows.append(_row("first paint", f"{name} ({side} px)", (at - previous) * 1e3, "ms",
                         note=f"at {at:.2f} s"))
        previous = at
    total = marks[-1][1]
    rows.append(_row("first paint", f"kernel total to the first picture ({side} px)", total, "s", 5.0,
                     f"python -c wall {wall:.1f} s (interpreter start and exit included); the browser adds its "
                     "JupyterLab start and drawing", dict(marks=marks, wall=wall)))
    return rows


# ------------------------------------------------------------------------------------------------- main


def bench_interactive(model: Any = None, quick: bool = False) -> list[dict[str, Any]]:
    """Every row of issue 13's table that the kernel side can measure (see the module docstring)."""
    vgg = model is None
    model = load_vgg16() if vgg else model
    n = 2 if quick else None
    rows = [bench_filter_effect(model, 224, n or 30, 10.0, 25.0),
            bench_filter_effect(model, 512, n or 15, 25.0, None)]
    rows += bench_gradients(model, 512 if vgg else 64, n or 5)
    rows.append(bench_revisits(model, 512 if vgg else 64, n or 9))
    rows += bench_compare(model, 512 if vgg else 64)
    if vgg:  # a fresh interpreter loads the model by name
        rows += bench_first_paint("vgg16", 512)
    return rows


if __name__ == "__main__":
    for row in bench_interactive(quick="--quick" in sys.argv):
        print(f"{row['case']}: {_fmt(row['value'])} {row['unit']} {row['target']} {row['met']} · {row['note']}")
