"""The model zoo: every `keras.applications` constructor opens in the Explorer and survives a walk of its tabs.

Run ``python benchmarks/zoo.py`` (``make zoo``). Each of the 40 constructors is built with ``weights=None``
(nothing to download) and its default input, in a fresh process of its own (one model's memory does not
weigh on the next, and a crash is one row). ``cw.Explorer(model, image="cat")`` is opened; then every tab is
opened in turn and a sample of the model's layers (4, first and last included) is walked on it, setting
another filter on each layer, as a user moving the sliders would. A step is one assignment to the state
(``state.layer = ...`` or ``state.filter = ...``) and everything the open view draws for it.

A row says "fine" when every step drew its picture or was explained inside the view by the library's own
one-sentence reason (`View.problem`); any other error (a bug: `View.failure`) or an exception escaping a
control change makes it a failure. ``--only NAME ...`` walks some models (``--update`` puts their rows into
the last table); ``--input-shape 96,96,3 --no-top`` walks them small (as ``tests/test_zoo.py`` does). The
table goes to stdout, every number to ``benchmarks/results/zoo.json``.

``--steps N --only NAME ...`` times instead what a user stepping through a big model waits for on the two
tabs that read a layer and the layer feeding it ("Filter effect", "One value"): N consecutive conv layers and
four jumps, at the model's default input, with the whole-network and partial passes each walk ran
(``benchmarks/results/zoo_steps.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "zoo.json"

CONSTRUCTORS = (
    "ConvNeXtBase", "ConvNeXtLarge", "ConvNeXtSmall", "ConvNeXtTiny", "ConvNeXtXLarge",
    "DenseNet121", "DenseNet169", "DenseNet201",
    "EfficientNetB0", "EfficientNetB1", "EfficientNetB2", "EfficientNetB3", "EfficientNetB4", "EfficientNetB5",
    "EfficientNetB6", "EfficientNetB7",
    "EfficientNetV2B0", "EfficientNetV2B1", "EfficientNetV2B2", "EfficientNetV2B3", "EfficientNetV2L",
    "EfficientNetV2M", "EfficientNetV2S",
    "InceptionResNetV2", "InceptionV3",
    "MobileNet", "MobileNetV2", "MobileNetV3Large", "MobileNetV3Small",
    "NASNetLarge", "NASNetMobile",
    "ResNet101", "ResNet101V2", "ResNet152", "ResNet152V2", "ResNet50", "ResNet50V2",
    "VGG16", "VGG19", "Xception",
)
"""Every model constructor of `keras.applications` (Keras 3.15), in its own alphabetical order."""

TIMEOUT_S = 900  # one model, opening and walking


def sample(names: list[str], count: int) -> list[str]:
    """`count` names spread evenly over `names`, first and last included (all of them if there are fewer)."""
    if len(names) <= count:
        return list(names)
    step = (len(names) - 1) / (count - 1)
    return [names[round(i * step)] for i in range(count)]


def walk(explorer: Any, layers_per_tab: int = 4, filters_per_layer: int = 1) -> dict[str, Any]:
    """Open every tab of `explorer` and walk a sample of its layers there; what each view said, and how fast.

    Returns ``{"tabs": {title: {"steps", "median_ms", "max_ms", "explained": {reason: count}, "failures":
    [text]}}, "escaped": [text]}``: "explained" are the library's own reasons shown in a view (a layer it
    cannot compute something for), "failures" are other errors shown in a view (bugs), "escaped" are
    exceptions that came out of a control change (never expected).
    """
    state = explorer.state
    layers = sample(list(state.layers), layers_per_tab)
    titles = [explorer.tabs.get_title(i) for i in range(len(explorer.views))]
    report: dict[str, Any] = {"tabs": {}, "escaped": []}
    for index, (title, view) in enumerate(zip(titles, explorer.views, strict=True)):
        tab = _Tab(title, view, report["escaped"])
        tab.step(lambda index=index: setattr(explorer.tabs, "selected_index", index), "opening the tab")
        for layer in layers:
            tab.step(lambda layer=layer: setattr(state, "layer", layer), f"layer {layer}")
            n = state.n_filters()
            for f in sample(list(range(n)), filters_per_layer + 1)[1:]:  # filter 0 is where a new layer starts
                tab.step(lambda f=f: setattr(state, "filter", f), f"{state.layer} filter {f}")
        times, explained, failures = tab.times, tab.explained, tab.failures
        ordered = sorted(times)
        report["tabs"][title] = {
            "steps": len(times),
            "median_ms": 1000 * ordered[len(ordered) // 2] if ordered else float("nan"),
            "max_ms": 1000 * ordered[-1] if ordered else float("nan"),
            "explained": explained,
            "failures": failures,
        }
    return report


class _Tab:
    """The steps walked on one tab: their times, the reasons its view gave, its failures."""

    def __init__(self, title: str, view: Any, escaped: list[str]):
        self.title, self.view, self.escaped = title, view, escaped
        self.times: list[float] = []
        self.explained: dict[str, int] = {}
        self.failures: list[str] = []

    def step(self, action: Any, what: str) -> None:
        start = time.perf_counter()
        try:
            action()
        except Exception as error:  # the walk records what escaped instead of stopping
            self.escaped.append(f"{self.title}, {what}: {type(error).__name__}: {str(error)[:300]}")
            return
        self.times.append(time.perf_counter() - start)
        failure, problem = getattr(self.view, "failure", ""), getattr(self.view, "problem", "")
        if failure:
            self.failures.append(f"{what}: {failure}")
        elif problem:
            self.explained[problem] = self.explained.get(problem, 0) + 1


STEP_TABS = ("Filter effect", "One value")
"""The tabs whose every step reads two layers: the one shown and the one feeding it."""


def step_walk(explorer: Any, steps: int = 6, tabs: tuple[str, ...] = STEP_TABS) -> dict[str, Any]:
    """Per-step times on the tabs that read a layer and its previous layer, as a user steps and jumps.

    On each tab in `tabs`: `steps` consecutive conv layers from the middle of the network (the arrow keys),
    then four jumps (to 90 %, 10 %, 60 % and 30 % of the conv layers). A step is ``state.layer = ...`` and
    everything the open view draws. Returns ``{"<tab> <walk>": {"median_s", "max_s", "times", "forward",
    "partial"}}``, with the whole-network (`forward_passes`) and partial (`partial_passes`) passes it ran.
    """
    state = explorer.state
    extractor = state.extractor
    titles = [explorer.tabs.get_title(i) for i in range(len(explorer.views))]
    convs = [name for name in state.layers if state.graph.node(name).kind == "conv"]
    jumps = [convs[int(f * (len(convs) - 1))] for f in (0.9, 0.1, 0.6, 0.3)]
    result: dict[str, Any] = {}
    for offset, tab in enumerate(tabs):
        explorer.tabs.selected_index = titles.index(tab)
        middle = len(convs) // 2 + offset * steps  # each tab steps over layers of its own
        for walk, layers in (("consecutive", convs[middle:middle + steps]), ("jumps", jumps)):
            passes = extractor.forward_passes, getattr(extractor, "partial_passes", 0)
            times = []
            for layer in layers:
                start = time.perf_counter()
                state.layer = layer
                times.append(time.perf_counter() - start)
            ordered = sorted(times)
            result[f"{tab} {walk}"] = dict(
                median_s=ordered[len(ordered) // 2], max_s=ordered[-1], times=times, layers=layers,
                forward=extractor.forward_passes - passes[0],
                partial=getattr(extractor, "partial_passes", 0) - passes[1])
    return result


def run_steps(name: str, steps: int) -> dict[str, Any]:
    """Build one model at its default input, open the Explorer and time `step_walk` on it."""
    import cnnviz_widgets as cw

    start = time.perf_counter()
    model = build(name)
    row: dict[str, Any] = {"model": name, "build_s": time.perf_counter() - start}
    start = time.perf_counter()
    explorer = cw.Explorer(model, image="cat")
    row["open_s"] = time.perf_counter() - start
    extractor = explorer.state.extractor
    row.update(input=list(explorer.state.model_input.array.shape), budget_mb=extractor.budget_bytes / 2**20,
               outputs_mb=extractor.output_bytes(explorer.state.model_input.array.shape) / 2**20,
               walk=step_walk(explorer, steps), load_average=os.getloadavg()[0])
    explorer.close()
    return row


def build(name: str, input_shape: tuple[int, ...] | None = None, include_top: bool = True) -> Any:
    """`keras.applications.<name>(weights=None)`, at its default input unless `input_shape` is given."""
    from cnnviz_widgets.network.backend import keras

    kwargs: dict[str, Any] = {"weights": None, "include_top": include_top}
    if input_shape is not None:
        kwargs["input_shape"] = input_shape
    return getattr(keras().applications, name)(**kwargs)


def run_one(name: str, input_shape: tuple[int, ...] | None = None, include_top: bool = True,
            layers_per_tab: int = 4, filters_per_layer: int = 1) -> dict[str, Any]:
    """Build, open and walk one model in this process; the row of the table, with the walk's details."""
    import cnnviz_widgets as cw

    row: dict[str, Any] = {"model": name}
    start = time.perf_counter()
    try:
        model = build(name, input_shape, include_top)
        row["build_s"] = time.perf_counter() - start
        start = time.perf_counter()
        explorer = cw.Explorer(model, image="cat")
        row["open_s"] = time.perf_counter() - start
    except Exception as error:  # a row of the table, not the end of the run
        row.update(result=f"does not open: {type(error).__name__}: {str(error)[:300]}", ok=False)
        return row
    state = explorer.state
    row.update(layers=len(state.graph.nodes), shown=len(state.layers), params=int(model.count_params()),
               input=list(state.graph.input_shape))
    start = time.perf_counter()
    report = walk(explorer, layers_per_tab=layers_per_tab, filters_per_layer=filters_per_layer)
    row["walk_s"] = time.perf_counter() - start
    row["walk"] = report
    failures = [f"{title}: {text}" for title, tab in report["tabs"].items() for text in tab["failures"]]
    explained = sorted({reason for tab in report["tabs"].values() for reason in tab["explained"]})
    slowest = max(report["tabs"].items(), key=lambda item: item[1]["median_ms"])
    row["slowest_tab"] = {"tab": slowest[0], "median_ms": slowest[1]["median_ms"]}
    row["ok"] = not failures and not report["escaped"]
    if row["ok"]:
        row["result"] = "fine" + (f" ({len(explained)} reasons explained in views)" if explained else "")
    else:
        first = (report["escaped"] + failures)[0]
        row["result"] = f"{len(report['escaped'])} escaped, {len(failures)} failed; first: {first[:200]}"
    row["explained"] = explained
    explorer.close()
    return row


def run_subprocess(name: str, args: argparse.Namespace) -> dict[str, Any]:
    command = [sys.executable, __file__, "--one", name, "--layers-per-tab", str(args.layers_per_tab),
               "--filters-per-layer", str(args.filters_per_layer)]
    if args.input_shape:
        command += ["--input-shape", args.input_shape]
    if args.no_top:
        command.append("--no-top")
    start = time.perf_counter()
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        return {"model": name, "ok": False, "result": f"no result in {TIMEOUT_S} s"}
    for line in reversed(done.stdout.splitlines()):
        if line.startswith("{"):
            row = json.loads(line)
            row["process_s"] = time.perf_counter() - start
            return row
    tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
    return {"model": name, "ok": False, "result": f"process ended with {done.returncode}: {' '.join(tail)[:300]}"}


def format_table(rows: list[dict[str, Any]]) -> str:
    """The Markdown table of the README: model, layers (shown / all), times, slowest tab, result."""
    lines = ["| model | layers shown / all | open | walk | slowest tab (median step) | result |",
             "|---|---|---|---|---|---|"]
    for row in rows:
        if "layers" not in row:
            lines.append(f"| {row['model']} | | | | | {row['result']} |")
            continue
        slow = row["slowest_tab"]
        lines.append(f"| {row['model']} | {row['shown']} / {row['layers']} | {row['open_s']:.1f} s | "
                     f"{row['walk_s']:.1f} s | {slow['tab']} ({slow['median_ms']:.0f} ms) | {row['result']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", choices=CONSTRUCTORS, metavar="NAME", help="walk only these models")
    parser.add_argument("--one", choices=CONSTRUCTORS, help=argparse.SUPPRESS)  # the child process
    parser.add_argument("--input-shape", help="e.g. 96,96,3 (default: each model's own)")
    parser.add_argument("--no-top", action="store_true", help="include_top=False")
    parser.add_argument("--layers-per-tab", type=int, default=4)
    parser.add_argument("--filters-per-layer", type=int, default=1)
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--steps", type=int, metavar="N",
                        help="instead of the zoo table: time N consecutive layer steps and 4 jumps on the tabs that "
                             "read two layers (Filter effect, One value), per model (needs --only)")
    parser.add_argument("--update", action="store_true",
                        help="replace only the rows of the models walked in the existing output file")
    args = parser.parse_args(argv)
    shape = tuple(int(v) for v in args.input_shape.split(",")) if args.input_shape else None
    if args.steps:
        return steps_main(args)
    if args.one:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        row = run_one(args.one, shape, not args.no_top, args.layers_per_tab, args.filters_per_layer)
        print(json.dumps(row, default=str))
        return 0
    rows = []
    for name in args.only or CONSTRUCTORS:
        row = run_subprocess(name, args)
        rows.append(row)
        print(f"{name}: {row['result']} ({row.get('process_s', 0):.0f} s)", file=sys.stderr, flush=True)
    if args.update and args.output.is_file():  # the other models keep their rows, in the table's order
        walked = {row["model"]: row for row in rows}
        kept = {row["model"]: row for row in json.loads(args.output.read_text())["rows"]}
        rows = [walked.get(name) or kept[name] for name in CONSTRUCTORS if name in walked or name in kept]
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps({
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": platform.platform(),
        "cpus": os.cpu_count(), "input_shape": args.input_shape, "include_top": not args.no_top,
        "layers_per_tab": args.layers_per_tab, "filters_per_layer": args.filters_per_layer, "rows": rows},
        indent=1, default=str))
    print(format_table(rows))
    return 0 if all(row["ok"] for row in rows) else 1


def steps_main(args: argparse.Namespace) -> int:
    """``--steps N --only NAME ...``: `run_steps` for each model, each in a process of its own."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if args.one:
        print(json.dumps(run_steps(args.one, args.steps), default=str))
        return 0
    if not args.only:
        raise SystemExit("--steps needs --only NAME ...: it times big models one by one")
    rows = []
    for name in args.only:
        done = subprocess.run([sys.executable, __file__, "--one", name, "--steps", str(args.steps)],
                              capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
        lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
        if not lines:
            print(f"{name}: process ended with {done.returncode}: {done.stderr.strip()[-300:]}", file=sys.stderr)
            continue
        row = json.loads(lines[-1])
        rows.append(row)
        print(f"{name} at {row['input'][1]}×{row['input'][0]} (outputs {row['outputs_mb']:.0f} MB, cache "
              f"{row['budget_mb']:.0f} MB, load average {row['load_average']:.1f}): open {row['open_s']:.1f} s")
        for walk, cell in row["walk"].items():
            print(f"  {walk:26s} median {cell['median_s']:6.2f} s  max {cell['max_s']:6.2f} s  "
                  f"passes: {cell['forward']} whole, {cell['partial']} partial")
    output = args.output.with_name("zoo_steps.json") if args.output == RESULTS else args.output
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps({"when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                                  "machine": platform.platform(), "cpus": os.cpu_count(), "steps": args.steps,
                                  "rows": rows}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
