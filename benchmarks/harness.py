"""The harness every benchmark group shares: results, timers, fresh inputs, the machine, writing the results.

Every time is the median (p95 where a target names it) of repeated runs after a warm-up; every comparison is a
ratio of two things measured in the same process, interleaved (A, B, A, B, ...), because absolute times drift
on shared machines (`time_interleaved`, `time_in_turns`). Each new-image measurement feeds a picture the cache
has never seen (`new_pictures`). A figure is a list of `Row`, one line of the table; `machine` records where
the numbers came from, the load average included; `write_json` and `print_result` write and print a run.

The groups (one module each, in this folder) import it by name, as the scripts here import each other:
``from harness import Row, stats``. It imports no group and not ``run.py``.
"""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "results" / "latest.json"


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


def time_in_turns(fns: dict[str, Callable[[int], Any]], repeats: int, warmup: int = 1) -> dict[str, list[float]]:
    """Seconds per call of each function, called in turns; each call gets its own step number."""
    step = 0
    for fn in fns.values():
        for _ in range(warmup):
            fn(step)
            step += 1
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn(step)
            samples[name].append(time.perf_counter() - start)
            step += 1
    return samples


# ---------------------------------------------------------------------------------------------- inputs


def astronaut(side: int | None = None) -> np.ndarray:
    """The astronaut sample (512×512 RGB uint8), optionally resized to side×side."""
    from cnnviz_widgets.pictures import images

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


def load_vgg16() -> Any:
    import cnnviz_widgets as cw

    return cw.load_model("vgg16", weights="bsds500")


def build_model(spec: str) -> Any:
    """"vgg16" (offline weights) or "tiny" (a small fully convolutional model, for the smoke test)."""
    if spec == "vgg16":
        return load_vgg16()
    if spec == "tiny":
        from cnnviz_widgets.network.backend import keras

        k = keras()
        pixels = k.Input((None, None, 3), name="pixels")
        x = k.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv_a")(pixels)
        x = k.layers.MaxPooling2D(name="pool_a")(x)
        x = k.layers.Conv2D(6, 3, padding="same", activation="relu", name="conv_b")(x)
        return k.Model(pixels, x, name="tiny_fcn")  # functional, like VGG16: `model.input` is defined
    raise ValueError(f"unknown model spec {spec!r}: 'vgg16' or 'tiny'")


# ---------------------------------------------------------------------------------------- widget steps


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


# ----------------------------------------------------------------------------------------- the machine


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


def machine() -> dict[str, Any]:
    """Where the numbers came from: CPU, load, library versions."""
    from cnnviz_widgets.network.backend import keras

    keras()  # imports TensorFlow with its native start-up chatter silenced
    import keras
    import tensorflow as tf

    peak = cpu_peak()
    return dict(cpu=peak["model"], cpu_family=peak["family"], cores=peak["cores"], ghz=peak["ghz"],
                python=platform.python_version(), numpy=np.__version__, tensorflow=tf.__version__,
                keras=keras.__version__, load_average=os.getloadavg())


# ------------------------------------------------------------------------------------------ the result


def write_json(result: dict[str, Any], path: Path) -> None:
    """`result` as JSON at `path` (numpy numbers as numbers, anything else as text); its folder is made."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1, default=jsonable))


def print_result(result: dict[str, Any], path: Path) -> None:
    """The machine line, the table, and where the JSON went."""
    m = result["machine"]
    print(f"\n{m['cpu']} ({m['cores']} cores, {m['ghz']:.2f} GHz), TensorFlow {m['tensorflow']}, "
          f"Keras {m['keras']}; load average before {_load(result['load_average_before'])}, "
          f"after {_load(result['load_average_after'])}; {result['elapsed_s']:.0f} s\n")
    print(result["table"])
    print(f"\nwritten to {path}")


def _load(avg: Sequence[float]) -> str:
    return " ".join(f"{a:.2f}" for a in avg)


def jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)

