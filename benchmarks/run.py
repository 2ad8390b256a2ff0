"""Benchmarks of cnnviz_widgets: speed and memory against a plain forward pass and the naive approach.

Run ``python benchmarks/run.py`` (``make bench``): it prints one table and writes it, with every sample, to
``benchmarks/results/latest.json``. CPU only, on the offline VGG16 conv weights and the astronaut sample.

Every time is the median (p95 where a target names it) of repeated runs after a warm-up; every comparison is a
ratio of two things measured in the same process, interleaved (A, B, A, B, ...), because absolute times drift
on shared machines. Nothing in ``make test`` depends on these numbers; ``tests/test_benchmarks_smoke.py`` only
runs the functions below on a tiny model so that this script cannot rot.

Each ``bench_*`` function takes the model (or a model spec for the subprocess figures) and repeat counts, and
returns a list of `Row`: one line of the table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "results" / "latest.json"

GRID_TILE_PX = 112
"""Longest side of one tile of the activation mosaic timed in `bench_scaling` (ActivationGrid's default)."""


# --------------------------------------------------------------------------------------------- results


@dataclass
class Row:
    """One line of the table: a figure, the case it was measured on, its value and its target."""

    figure: str
    case: str
    value: float
    unit: str
    target: str = ""  # e.g. "≤ 1.25"; empty: report only
    met: bool | None = None  # None: no target
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)  # the numbers behind the value (medians, samples)

    def cells(self) -> list[str]:
        verdict = {True: "yes", False: "NO", None: ""}[self.met]
        target = f"{self.target} {self.unit}".strip() if self.target else ""
        return [self.figure, self.case, f"{_fmt(self.value)} {self.unit}".strip(), target, verdict, self.note]


def _fmt(value: float) -> str:
    if value != value:  # NaN: not measured
        return "n/a"
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    if abs(value) >= 1:
        return f"{value:.2f}"
    return f"{value:.2g}"  # 0.0031 s, 0.06 ms: two significant digits


def at_most(value: float, limit: float) -> tuple[str, bool]:
    """(target text, met) for a "value ≤ limit" target."""
    return f"≤ {_fmt(limit)}", bool(value <= limit)


def format_table(rows: Sequence[Row]) -> str:
    """A Markdown table of `rows` (it reads as plain text too)."""
    head = ["figure", "case", "value", "target", "met", "note"]
    lines = [head] + [r.cells() for r in rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]

    def fmt(line: list[str]) -> str:
        return "| " + " | ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)) + " |"

    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([fmt(lines[0]), rule, *(fmt(line) for line in lines[1:])])


# ---------------------------------------------------------------------------------------------- timing


def stats(samples: Sequence[float]) -> dict[str, float]:
    """Median, p95, min and count of `samples` (seconds)."""
    arr = np.asarray(samples, dtype=float)
    return dict(median=float(np.median(arr)), p95=float(np.percentile(arr, 95)), min=float(arr.min()),
                n=int(arr.size))


def time_calls(fn: Callable[[], Any], repeats: int, warmup: int = 1) -> list[float]:
    """Seconds taken by each of `repeats` calls of `fn`, after `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return samples


def time_interleaved(fns: dict[str, Callable[[], Any]], repeats: int, warmup: int = 1) -> dict[str, list[float]]:
    """Time several functions in turns (a, b, a, b, ...) so that drift in machine speed hits them alike."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            samples[name].append(time.perf_counter() - start)
    return samples


# ---------------------------------------------------------------------------------------------- inputs


def astronaut(side: int | None = None) -> np.ndarray:
    """The astronaut sample (512×512 RGB uint8), optionally resized to side×side."""
    from cnnviz_widgets import images

    picture = images.sample_image("astronaut")
    return picture if side is None else images.resize_image(picture, (side, side))


def new_pictures(picture: np.ndarray, count: int) -> list[np.ndarray]:
    """`count` pictures that differ from `picture` and from each other after any resize (rolled sideways).

    A changed pixel or two could vanish when the model input is downscaled and then hit the cache.
    """
    step = max(1, picture.shape[1] // (count + 1))
    return [np.roll(picture, (i + 1) * step, axis=1) for i in range(count)]


def synthetic_photo(height: int = 3000, width: int = 4000, seed: int = 0) -> np.ndarray:
    """A 4000×3000 "photo" (smooth colour gradients plus sensor-like noise), RGB uint8: a 12 MP camera image."""
    rng = np.random.default_rng(seed)
    y = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None]
    x = np.linspace(0.0, 1.0, width, dtype=np.float32)[None, :]
    channels = [np.sin(6 * x + 3 * y), np.cos(5 * y - 2 * x), np.sin(9 * x * y + 1)]
    photo = np.empty((height, width, 3), dtype=np.uint8)
    for c, base in enumerate(channels):
        noise = rng.normal(0.0, 12.0, size=(height, width)).astype(np.float32)
        photo[..., c] = np.clip(127.5 + 100 * base + noise, 0, 255).astype(np.uint8)
    return photo


def conv_layers(state: Any) -> list[str]:
    """The conv layers of a ModelState, in network order (VGG16: the 13 block*_conv*)."""
    return [name for name in state.layers if state.layer_kind(name) == "conv"]


def conv_flops(state: Any) -> float:
    """Floating-point operations of the conv layers for the state's current input: 2 × multiply-adds.

    A conv output pixel costs kernel.size multiply-adds (kh·kw·c_in·c_out counts every output channel; for a
    depthwise kernel (kh, kw, c_in, multiplier) it is the same product), so a layer costs 2·H·W·kernel.size.
    """
    total = 0.0
    for name in conv_layers(state):
        height, width = state.activation(name).shape[:2]
        total += 2.0 * height * width * state.weights(name)[0].size
    return total


def load_vgg16() -> Any:
    import cnnviz_widgets as cw

    return cw.load_model("vgg16", weights="bsds500")


# --------------------------------------------------------------------------------------------- figures


def bench_forward(model: Any, sides: Sequence[int] = (224, 512), repeats: int = 7,
                  naive_repeats: int = 3) -> list[Row]:
    """New image → every conv layer's activations: ours ÷ one plain ``model(x)``, and naive ÷ ours.

    "Ours" is what a user's new image costs: ``state.set_image`` (check, fit, preprocess, hash) and
    ``state.activation(layer)`` for every conv layer, i.e. the extractor's one pass. "Plain" is
    ``np.asarray(model(x))`` on the same fed array. "Naive" builds ``keras.Model(model.input, layer.output)``
    per layer and runs it, as the original notebook's per-figure backend function did.
    """
    from cnnviz_widgets import ModelState
    from cnnviz_widgets._keras import keras

    k = keras()
    rows: list[Row] = []
    for side in sides:
        state = ModelState(model, image=astronaut(), max_side=side)
        case = "{1}×{0}".format(*state.model_input.array.shape[:2])
        x = state.model_input.array[np.newaxis]
        convs = conv_layers(state)
        # warm-up + repeats fresh pictures: each timed call of `ours` sees an image it has never seen
        pictures = iter(new_pictures(state.image, repeats + naive_repeats + 1))
        passes_before = state.forward_passes

        def ours(state=state, pictures=pictures, convs=convs) -> None:
            state.set_image(next(pictures))
            for name in convs:
                state.activation(name)

        def plain(x=x) -> None:
            np.asarray(model(x, training=False))

        samples = time_interleaved({"ours": ours, "plain": plain}, repeats)
        passes_per_image = (state.forward_passes - passes_before) / (repeats + 1)
        ours_s, plain_s = stats(samples["ours"]), stats(samples["plain"])
        overhead = ours_s["median"] / plain_s["median"]
        target, met = at_most(overhead, 1.25)
        rows.append(Row("forward overhead", case, overhead, "×", target, met,
                        f"ours {ours_s['median'] * 1e3:.0f} ms, plain model(x) {plain_s['median'] * 1e3:.0f} ms, "
                        f"{passes_per_image:g} pass/image",
                        dict(ours=ours_s, plain=plain_s, passes_per_image=passes_per_image, samples=samples)))

        def naive(x=x, convs=convs) -> None:
            for name in convs:
                sub = k.Model(model.input, model.get_layer(name).output)
                np.asarray(sub(x, training=False))

        # The plain pass has already warmed every conv kernel at this size, so naive runs need no warm-up of
        # their own (one costs as much as ~7 forward passes); ours is timed again, in turns, for the ratio.
        paired = time_interleaved({"naive": naive, "ours": ours}, naive_repeats, warmup=0)
        naive_s, ours_again = stats(paired["naive"]), stats(paired["ours"])
        ratio = naive_s["median"] / ours_again["median"]
        rows.append(Row("naive ratio", case, ratio, "×",
                        note=f"naive {naive_s['median'] * 1e3:.0f} ms ({len(convs)} sub-models) ÷ ours "
                        f"{ours_again['median'] * 1e3:.0f} ms; expected ≥ 5×",
                        extra=dict(naive=naive_s, ours=ours_again, samples=paired)))

        flops = conv_flops(state)  # activation shapes of the current (cached) image
        rows.append(Row("limit", case, flops / plain_s["median"] / 1e9, "GFLOP/s",
                        note=f"{flops / 1e9:.1f} GFLOP per pass ÷ median plain model(x); best run "
                        f"{flops / plain_s['min'] / 1e9:.0f} GFLOP/s",
                        extra=dict(gflop=flops / 1e9, plain=plain_s, best_gflops=flops / plain_s["min"] / 1e9)))
    return rows


def bench_scaling(model: Any, sides: Sequence[int] = (112, 224, 448, 896), repeats: int = 3) -> list[Row]:
    """Forward + render time against input size: new image → all conv activations → the first conv layer's grid.

    The astronaut is upscaled to the largest side first (it is 512×512), so every `max_side` is really fed.
    The render part is `render_mosaic` (tiles pooled to at most `GRID_TILE_PX` px) plus PNG
    encoding of the first conv layer, what a grid shows after a new image. A plain ``model(x)`` on the same
    input is timed in turns with it, so the network's own curve is beside ours. The cache budget is raised so
    that every side keeps all its layers (at 896 px VGG16's outputs are ~1 GB, over the default 640 MB: then a
    walk through all layers costs more passes, counted in `passes_default_budget`).
    """
    from cnnviz_widgets import ModelState, render
    from cnnviz_widgets.activations import DEFAULT_BUDGET_BYTES

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


_IMPORT_PROBE = """
import json, sys, time
start = time.perf_counter()
import cnnviz_widgets
package = time.perf_counter() - start
tensorflow_loaded = "tensorflow" in sys.modules
start = time.perf_counter()
import cnnviz_widgets.widgets.explorer
widgets = time.perf_counter() - start
print(json.dumps(dict(package=package, widgets=widgets, tensorflow_loaded=tensorflow_loaded,
                      tensorflow_after_widgets="tensorflow" in sys.modules)))
"""


def bench_import(repeats: int = 5) -> list[Row]:
    """``import cnnviz_widgets`` (no model) in fresh interpreters: in-process time and whole-process wall time."""
    runs, walls = [], []
    for _ in range(repeats + 1):  # the first one warms the OS file cache
        start = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", _IMPORT_PROBE], capture_output=True, text=True, check=True,
                             cwd=REPO)
        walls.append(time.perf_counter() - start)
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    runs, walls = runs[1:], walls[1:]
    package = stats([r["package"] for r in runs])
    widgets = stats([r["widgets"] for r in runs])
    tf_loaded = any(r["tensorflow_loaded"] for r in runs)
    tf_after_widgets = any(r["tensorflow_after_widgets"] for r in runs)
    wall = stats(walls)
    target, met = at_most(package["median"], 0.5)
    return [
        Row("import", "import cnnviz_widgets", package["median"], "s", target, met and not tf_loaded,
            f"TensorFlow loaded: {'YES' if tf_loaded else 'no'}; python -c wall {wall['median']:.2f} s",
            dict(package=package, wall=wall, tensorflow_loaded=tf_loaded)),
        Row("import", "+ cnnviz_widgets.widgets.explorer", widgets["median"], "s",
            note=f"ipywidgets + bqplot; TensorFlow loaded: {'YES' if tf_after_widgets else 'no'}",
            extra=dict(widgets=widgets, tensorflow_loaded=tf_after_widgets)),
    ]


# ---------------------------------------------------------------------------------------------- memory

MEMORY_CASES = ("224", "512", "photo")
"""Explorer on the astronaut at max_side 224 and 512, and on a synthesised 4000×3000 photo (max_side 512)."""


def _proc_status_kb(field_name: str) -> int:
    """A "VmHWM"/"VmRSS" line of /proc/self/status in KiB; ru_maxrss where /proc is missing (HWM only)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)  # KiB on Linux


def _build_model(spec: str) -> Any:
    """"vgg16" (offline weights) or "tiny" (a small fully convolutional model, for the smoke test)."""
    if spec == "vgg16":
        return load_vgg16()
    if spec == "tiny":
        from cnnviz_widgets._keras import keras

        k = keras()
        pixels = k.Input((None, None, 3), name="pixels")
        x = k.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv_a")(pixels)
        x = k.layers.MaxPooling2D(name="pool_a")(x)
        x = k.layers.Conv2D(6, 3, padding="same", activation="relu", name="conv_b")(x)
        return k.Model(pixels, x, name="tiny_fcn")  # functional, like VGG16: `model.input` is defined
    raise ValueError(f"unknown model spec {spec!r}: 'vgg16' or 'tiny'")


def memory_child(spec: str, case: str) -> dict[str, Any]:
    """Run in a fresh process: load the model, then show it in an Explorer; peak RSS after each step."""
    from cnnviz_widgets import ModelState

    model = _build_model(spec)
    after_model = _proc_status_kb("VmHWM")
    picture = synthetic_photo() if case == "photo" else astronaut()
    max_side = 224 if case == "224" else 512
    state = ModelState(model, image=picture, max_side=max_side)
    view = _explorer(state)
    for name in conv_layers(state):  # everything a user could scrub to: the whole cache
        state.activation(name)
    return dict(after_model_kb=after_model, peak_kb=_proc_status_kb("VmHWM"), rss_kb=_proc_status_kb("VmRSS"),
                cached_bytes=state.extractor.cached_bytes, budget_bytes=state.extractor.budget_bytes,
                fed="{1}×{0}".format(*state.model_input.array.shape[:2]), picture_bytes=int(state.image.nbytes),
                view=type(view).__name__, forward_passes=state.forward_passes)


def _explorer(state: Any) -> Any:
    """The Explorer on `state` if the widgets import, else the state alone (what it holds is what counts)."""
    try:
        from cnnviz_widgets.widgets.explorer import Explorer
    except ImportError:
        return state
    return Explorer(state)


def bench_memory(spec: str = "vgg16", cases: Sequence[str] = MEMORY_CASES) -> list[Row]:
    """Peak RSS of a fresh process holding an Explorer: the model alone, then with the image's activations."""
    rows = []
    for case in cases:
        out = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--memory-child", spec, case],
                             capture_output=True, text=True, cwd=REPO)
        if out.returncode != 0:
            raise RuntimeError(f"memory child {spec} {case} failed:\n{out.stderr[-3000:]}")
        child = json.loads(out.stdout.strip().splitlines()[-1])
        peak_mb, model_mb = child["peak_kb"] / 1024, child["after_model_kb"] / 1024
        budget_mb = child["budget_bytes"] / 2**20
        added_mb = peak_mb - model_mb
        target, met = at_most(added_mb, budget_mb)
        label = {"224": "astronaut", "512": "astronaut", "photo": "4000×3000 photo"}.get(case, case)
        rows.append(Row("memory", f"{label} → {child['fed']}", peak_mb, "MB", note=(
            f"model+TF {model_mb:.0f} MB, +{added_mb:.0f} MB over it (target ≤ budget {budget_mb:.0f} MB: "
            f"{'yes' if met else 'NO'}); cache {child['cached_bytes'] / 2**20:.0f} MB; {child['view']}"),
            extra=dict(child, added_mb=added_mb, added_target=target, added_met=met)))
    return rows


# ------------------------------------------------------------------------------------------- the limit


def cpu_peak() -> dict[str, Any]:
    """Estimated FP32 peak of this machine from `lscpu`/cpuinfo: cores × GHz × SIMD lanes × 2 (FMA) × FMA units.

    Lanes: 16 with avx512f, 8 with avx2/fma, else 4. FMA units per core: 2 (Intel Xeon Scalable since
    Skylake-SP and AMD Zen 4/5 server parts issue two vector FMAs per cycle; on Zen 4 each 512-bit FMA is
    split into two 256-bit halves, so this overestimates Zen 4 by 2×). GHz: "CPU max MHz" if the hypervisor
    shows it, else the current "cpu MHz" (often the base/TSC clock in a VM: turbo would be higher).
    """
    info = {}
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        info = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
        info = {k.strip(): v.strip() for k, v in info.items()}
    except (OSError, subprocess.CalledProcessError):
        pass
    flags = set(info.get("Flags", "").split())
    cores = os.cpu_count() or 1
    mhz_text = info.get("CPU max MHz") or info.get("CPU MHz")
    if not mhz_text:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
            mhz_text = re.search(r"cpu MHz\s*:\s*([\d.]+)", cpuinfo).group(1)  # type: ignore[union-attr]
        except (OSError, AttributeError):
            mhz_text = "0"
    ghz = float(mhz_text) / 1000
    lanes = 16 if "avx512f" in flags else 8 if ("avx2" in flags or "fma" in flags) else 4
    fma_units = 2
    peak = cores * ghz * lanes * 2 * fma_units
    model_name = info.get("Model name", platform.processor())
    family = info.get("CPU family", "")
    return dict(cores=cores, ghz=ghz, lanes=lanes, fma_units=fma_units, gflops=peak, model=model_name,
                family=family, how=f"{cores} cores × {ghz:.2f} GHz × {lanes} fp32 lanes × 2 (FMA) × "
                f"{fma_units} FMA units/core")


def bench_gemm(n: int = 2048, repeats: int = 5) -> list[Row]:
    """A large float32 matrix product through TensorFlow (oneDNN): the speed this machine really reaches."""
    from cnnviz_widgets._keras import keras

    ops = keras().ops
    rng = np.random.default_rng(0)
    a = ops.convert_to_tensor(rng.standard_normal((n, n), dtype=np.float32))
    b = ops.convert_to_tensor(rng.standard_normal((n, n), dtype=np.float32))
    gemm = stats(time_calls(lambda: np.asarray(ops.matmul(a, b)), repeats, warmup=2))
    # a ceiling: the best run (other processes on a shared machine only ever slow a run down)
    best, typical = 2.0 * n**3 / gemm["min"] / 1e9, 2.0 * n**3 / gemm["median"] / 1e9
    peak = cpu_peak()
    return [
        Row("limit", f"sgemm {n}² (TF), best of {repeats}", best, "GFLOP/s",
            note=f"{best / peak['gflops']:.0%} of the estimate below; median run {typical:.0f} GFLOP/s",
            extra=dict(gemm=gemm, median_gflops=typical)),
        Row("limit", "peak estimate", peak["gflops"], "GFLOP/s", note=peak["how"], extra=peak),
    ]


# ---------------------------------------------------------------------------------------------- widgets


def mosaic_figures(widget: Any) -> list[Any]:
    """Every `MosaicFigure` inside a widget (a view, or the Explorer's tabs), in display order."""
    from cnnviz_widgets.widgets.mosaic import MosaicFigure

    if isinstance(widget, MosaicFigure):
        return [widget]
    found = []
    for child in getattr(widget, "children", ()):
        found += mosaic_figures(child)
    return found


@dataclass
class Steps:
    """Per-step timings of a sequence of state changes, and what each step sent to the browser."""

    seconds: list[float] = field(default_factory=list)
    cpu_seconds: list[float] = field(default_factory=list)  # process CPU time: robust to other processes' load
    sent_bytes: list[int] = field(default_factory=list)  # png bytes of all pictures that step redrew
    picture_bytes: list[int] = field(default_factory=list)  # png bytes of each redrawn picture, one by one
    redrawn: list[int] = field(default_factory=list)  # how many figures redrew in that step
    forward_passes: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def row(self, figure: str, case: str, median_limit: float | None, p95_limit: float | None) -> Row:
        t = stats(self.seconds)
        median_ms, p95_ms = t["median"] * 1e3, t["p95"] * 1e3
        target, met = "", None
        if median_limit is not None:
            target, met = at_most(median_ms, median_limit)
            target = f"median {target}"
        if p95_limit is not None:
            met = bool(met and p95_ms <= p95_limit)
            target += f", p95 ≤ {_fmt(p95_limit)}"
        redraws = statistics_mean(self.redrawn)
        cpu = stats(self.cpu_seconds)
        note = (f"p95 {p95_ms:.1f} ms, CPU median {cpu['median'] * 1e3:.1f} ms; {redraws:.2g} figure redraws/step"
                f"{'' if not self.forward_passes else f', {self.forward_passes} forward passes (!)'}")
        return Row(figure, case, median_ms, "ms", target, met, note,
                   dict(seconds=t, samples=self.seconds, cpu=cpu, cpu_samples=self.cpu_seconds,
                        sent_bytes=self.sent_bytes, picture_bytes=self.picture_bytes,
                        redrawn=self.redrawn,
                        forward_passes=self.forward_passes, **self.extra))


def statistics_mean(values: Sequence[float]) -> float:
    return float(np.mean(values)) if len(values) else 0.0


def drive(state: Any, view: Any, changes: Sequence[tuple[str, Any]], warmup: int = 2) -> Steps:
    """Apply trait changes to `state` one by one; time each until every redrawn picture's bytes are in its mark.

    The views observe the state synchronously, so when the assignment returns the new `ipywidgets.Image`
    (what goes to the browser) is already in each redrawn bqplot mark; reading its bytes closes the timing.
    """
    figures = mosaic_figures(view)
    steps = Steps()
    passes = state.forward_passes
    for i, (trait, value) in enumerate(changes):
        before = [f.redraws for f in figures]
        start, cpu_start = time.perf_counter(), time.process_time()
        setattr(state, trait, value)
        redrawn = [f for f, b in zip(figures, before, strict=True) if f.redraws != b]
        sizes = [len(f.image_mark.image.value) for f in redrawn]
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu_start
        if i >= warmup:
            steps.seconds.append(elapsed)
            steps.cpu_seconds.append(cpu)
            steps.sent_bytes.append(sum(sizes))
            steps.picture_bytes += sizes
            steps.redrawn.append(len(redrawn))
    steps.forward_passes = state.forward_passes - passes
    return steps


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


def bench_browser(quick: bool = False) -> list[Row]:
    """Key press on the channel slider → new weight grid on screen, in JupyterLab (see benchmarks/browser.py).

    Skipped (one row saying why) where no Chromium or Playwright is installed.
    """
    sys.path.insert(0, str(HERE))
    import browser

    why = browser.unavailable()
    if why:
        return [Row("browser drag", "skipped", float("nan"), "ms", note=why)]
    result = browser.measure(steps=3 if quick else 8, burst=5 if quick else 10)
    step = stats(result["step_seconds"])
    return [
        Row("browser drag", "key → picture, WeightGrid channel", step["median"] * 1e3, "ms",
            note=f"p95 {step['p95'] * 1e3:.0f} ms over {step['n']} presses, each awaited; JupyterLab + Chromium",
            extra=dict(result, step=step)),
        Row("first paint", "Run All → first picture, fresh kernel", result["run_all_to_first_picture"], "s",
            note="JupyterLab + Chromium: TensorFlow import, VGG16 (offline), one forward pass, the Explorer",
            extra=dict(result)),
        Row("browser drag", f"{result['burst_keys']} keys at once → last picture",
            result["burst_last_key_to_picture"] * 1e3, "ms",
            note=f"{result['burst_first_key_to_picture'] * 1e3:.0f} ms from the first key",
            extra=dict(result)),
    ]

# ------------------------------------------------------------------------------------------------ main

GROUPS = ("import", "forward", "widgets", "scaling", "limit", "memory", "binder", "browser", "training",
          "interactive", "looksfor")


def machine() -> dict[str, Any]:
    """Where the numbers came from: CPU, load, library versions."""
    from cnnviz_widgets._keras import keras

    keras()  # imports TensorFlow with its native start-up chatter silenced
    import keras
    import tensorflow as tf

    peak = cpu_peak()
    return dict(cpu=peak["model"], cpu_family=peak["family"], cores=peak["cores"], ghz=peak["ghz"],
                python=platform.python_version(), numpy=np.__version__, tensorflow=tf.__version__,
                keras=keras.__version__, load_average=os.getloadavg())


def run(groups: Sequence[str] = GROUPS, quick: bool = False, model: Any = None,
        log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the figure groups in order; return the JSON-able result: machine, rows, timings per group."""
    import cnnviz_widgets  # noqa: F401  (the import figure runs in subprocesses; this just checks it imports)

    unknown = set(groups) - set(GROUPS)
    if unknown:
        raise ValueError(f"unknown benchmark group(s) {sorted(unknown)}: choose from {', '.join(GROUPS)}")
    n = 2 if quick else None
    started = time.perf_counter()
    load_before = os.getloadavg()
    rows: list[Row] = []
    seconds: dict[str, float] = {}
    vgg = None

    def the_model() -> Any:
        nonlocal vgg
        if model is not None:
            return model
        if vgg is None:
            vgg = load_vgg16()
        return vgg

    for group in [g for g in GROUPS if g in groups]:
        log(f"[{time.perf_counter() - started:5.0f} s] {group} …")
        t0 = time.perf_counter()
        if group == "import":
            rows += bench_import(repeats=n or 7)
        elif group == "forward":
            rows += bench_forward(the_model(), repeats=n or 7, naive_repeats=n or 3)
        elif group == "widgets":
            rows += bench_widgets(the_model(), repeats=n or 40)
        elif group == "scaling":
            rows += bench_scaling(the_model(), repeats=n or 3)
        elif group == "limit":
            rows += bench_gemm(repeats=n or 5)
        elif group == "memory":
            rows += bench_memory("vgg16" if model is None else "tiny")
        elif group == "browser":
            rows += bench_browser(quick=quick)
        elif group == "binder":  # its own module (benchmarks/notebook_memory.py): kernel peaks per notebook
            sys.path.insert(0, str(HERE))
            import notebook_memory

            rows += [Row(**row) for row in notebook_memory.bench_binder(quick=quick)]
        elif group == "training":  # its own module (benchmarks/training.py)
            sys.path.insert(0, str(HERE))
            import training

            rows += [Row(**row) for row in training.bench_training(quick=quick)]
        elif group == "interactive":  # its own module (benchmarks/interactive.py): issue 13's table
            sys.path.insert(0, str(HERE))
            import interactive

            rows += [Row(**row) for row in interactive.bench_interactive(model, quick=quick)]
        elif group == "looksfor":  # its own module (benchmarks/looksfor.py): issue 15's scan and maximize
            sys.path.insert(0, str(HERE))
            import looksfor

            rows += [Row(**row) for row in looksfor.bench_looksfor(model, quick=quick)]
        seconds[group] = time.perf_counter() - t0
    return dict(machine=machine(), load_average_before=load_before, load_average_after=os.getloadavg(),
                seconds=seconds, elapsed_s=time.perf_counter() - started, quick=quick,
                rows=[asdict(r) for r in rows], table=format_table(rows))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(GROUPS),
                        help=f"comma-separated groups to run (default all): {', '.join(GROUPS)}")
    parser.add_argument("--quick", action="store_true", help="2 repeats each: checks the script, not the numbers")
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"JSON file to write (default {RESULTS})")
    parser.add_argument("--memory-child", nargs=2, metavar=("SPEC", "CASE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_child:
        print(json.dumps(memory_child(*args.memory_child)))
        return 0
    result = run([g.strip() for g in args.only.split(",") if g.strip()], quick=args.quick)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1, default=_jsonable))
    m = result["machine"]
    print(f"\n{m['cpu']} ({m['cores']} cores, {m['ghz']:.2f} GHz), TensorFlow {m['tensorflow']}, "
          f"Keras {m['keras']}; load average before {_load(result['load_average_before'])}, "
          f"after {_load(result['load_average_after'])}; {result['elapsed_s']:.0f} s\n")
    print(result["table"])
    print(f"\nwritten to {args.out}")
    return 0


def _load(avg: Sequence[float]) -> str:
    return " ".join(f"{a:.2f}" for a in avg)


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


if __name__ == "__main__":
    sys.exit(main())
