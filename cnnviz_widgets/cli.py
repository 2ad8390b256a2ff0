"""`cnnviz`: the pictures of the widgets, rendered to PNG files from a terminal (no notebook, no widgets).

    cnnviz summary                                      # the layer table of VGG16 (offline weights)
    cnnviz activations --layer block3_conv1 -o a.png    # 64 activation maps of the astronaut picture
    cnnviz weights --layer block1_conv1 --channel 2     # the 64 3×3 kernels at input channel 2
    cnnviz effect --layer block1_conv2 --filter 1       # what filter 1 does to its input, channel by channel
    cnnviz predict --weights none                       # top-5 classes (needs a classifier)
    cnnviz cam --layer block4_conv1 --filter 10         # Grad-CAM of a filter (or of a class) over the picture

The pictures come from the same core functions the widgets use (`render`, `ModelState`, `explain`); each
PNG carries its titles and the Python lines that rebuild it in its metadata (see `export`). Bad arguments end
with exit status 2 and one line on standard error.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

from cnnviz_widgets import __version__
from cnnviz_widgets.errors import CnnvizError
from cnnviz_widgets.export.code import reproduce_code
from cnnviz_widgets.export.panels import Panel, compose
from cnnviz_widgets.export.saving import save_png
from cnnviz_widgets.pictures import images, render

ACTIVATION_TILE_PX = 112
"""Activation maps are average-pooled to at most this many pixels a side (as ActivationGrid sends them)."""
KERNEL_TILE_PX = 24
"""A kernel tile is enlarged to about this many pixels (crisp cells), as WeightGrid shows it."""
EFFECT_MAP_PX = 192
PAGE_SIZE = 64
_WEIGHT_CMAP, _SIGNED_CMAP, _HEAT_CMAP = "coolwarm", "coolwarm", "magma"
_MODE_WORDS = {"per_map": "each map scaled to its own min..max", "per_layer": "one min..max for the layer",
               "symmetric": "symmetric around 0"}


class _UsageError(Exception):
    """A bad command line: reported in one line, exit status 2."""


class _NothingToShow(Exception):
    """The arguments are fine but the model has nothing of the kind (no classifier): exit status 1."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise _UsageError(f"{self.prog}: error: {message} (see {self.prog} --help)")


def build_parser() -> argparse.ArgumentParser:
    """The `cnnviz` argument parser: one sub-command per picture, the same options on each."""
    common = argparse.ArgumentParser(add_help=False)
    what = common.add_argument_group("what to look at")
    what.add_argument("--model", default="vgg16", metavar="NAME|PATH",
                      help="'vgg16' (default) or the path of a saved Keras model (.keras or .h5)")
    what.add_argument("--weights", default=None, metavar="WHICH",
                      help="for vgg16: 'bsds500' (default; offline VGG16 conv weights, no classifier), 'imagenet' "
                           "(downloads 528 MB once, needs internet), 'none' (random, with the classifier) or the "
                           "path of a .weights.h5 file")
    what.add_argument("--image", default="astronaut", metavar="NAME|PATH",
                      help=f"a sample ({', '.join(images.sample_names())}; default astronaut) or an image file")
    what.add_argument("--layer", default=None, help="layer name (default: the first conv layer); "
                      "'cnnviz summary' lists them")
    what.add_argument("--channel", type=int, default=0,
                      help="input channel of the filters (weights): a channel of the previous layer's output")
    what.add_argument("--filter", type=int, default=0, help="filter: an output channel of the layer (effect, cam)")
    what.add_argument("--max-side", type=int, default=512, metavar="PX",
                      help="longest side of the picture fed to a fully convolutional model (default 512)")
    how = common.add_argument_group("how to draw it")
    how.add_argument("--normalization", choices=render.NORMALIZATIONS, default="per_map",
                     help="how maps are scaled to colours (default per_map)")
    how.add_argument("--colormap", choices=render.COLORMAPS, default="grey", help="colours of activation maps")
    how.add_argument("--page", type=int, default=1, help="page of 64 tiles for layers with more (default 1)")
    how.add_argument("-o", "--output", default=None, metavar="FILE.png",
                     help="where to write the PNG (default: cnnviz_<command>_<layer>.png here)")

    parser = _Parser(prog="cnnviz", description="Render cnnviz_widgets' pictures of a CNN to PNG files, without a "
                     "notebook.", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=(
        "Every command takes: --model (vgg16 or a .keras/.h5 path), --weights (bsds500, imagenet, none or a\n"
        "path), --image (sample name or file), --layer, --channel, --filter, --max-side, --normalization,\n"
        "--colormap, --page and -o FILE.png; 'cnnviz COMMAND --help' explains each.\n\n"
        "Examples:\n"
        "  cnnviz summary\n"
        "  cnnviz activations --layer block3_conv1 --colormap viridis -o maps.png\n"
        "  cnnviz effect --layer block1_conv2 --filter 1\n"
        "  cnnviz cam --layer block4_conv1 --filter 10 --image cat"))
    parser.add_argument("--version", action="version", version=f"cnnviz_widgets {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=_Parser)
    commands.add_parser("summary", parents=[common], help="print the layer table (name, type, output shape, "
                        "parameters) to standard output")
    commands.add_parser("weights", parents=[common], help="the layer's filters at one input channel (--channel), "
                        "as a grid of kernels")
    commands.add_parser("effect", parents=[common], help="one filter (--filter) taken apart by input channel: "
                        "inputs, kernel slices, partial sums, output")
    commands.add_parser("activations", parents=[common], help="the layer's activation maps for the image")
    predict = commands.add_parser("predict", parents=[common], help="the top classes for the image (the model "
                                  "needs a classifier: --weights none or imagenet)")
    predict.add_argument("--top", type=int, default=5, help="how many classes to print (default 5)")
    cam = commands.add_parser("cam", parents=[common], help="Grad-CAM or saliency over the picture: of a class "
                              "(models with a classifier) or of the layer's --filter (any model)")
    cam.add_argument("--method", choices=("grad-cam", "saliency"), default="grad-cam", help="default grad-cam")
    cam.add_argument("--class", dest="class_index", type=int, default=None,
                     help="class to explain (default: the top prediction)")
    cam.add_argument("--of", choices=("class", "filter"), default=None,
                     help="explain a class or --layer's --filter (default: class when the model has a classifier)")
    cam.add_argument("--cam-layer", default=None, help="conv layer Grad-CAM weighs (default: the last one before "
                     "the target)")
    cam.add_argument("--opacity", type=float, default=0.5, help="heat map over the picture, 0..1 (default 0.5)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run `cnnviz` with `argv` (default: sys.argv[1:]); returns the exit status (0 ok, 1 nothing to show,
    2 bad arguments)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except _UsageError as err:
        print(err, file=sys.stderr)
        return 2
    except SystemExit as done:  # --help and --version print and stop
        return int(done.code or 0)
    try:
        return _COMMANDS[args.command](args)
    except _NothingToShow as err:
        print(f"cnnviz {args.command}: {' '.join(str(err).split())}", file=sys.stderr)
        return 1
    except CnnvizError as err:
        print(f"cnnviz {args.command}: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader left (`cnnviz summary | head`): stop quietly, as Unix tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


# --------------------------------------------------------------------------------------------- commands


def _summary(args: argparse.Namespace) -> int:
    from cnnviz_widgets.network.graph import ModelGraph

    model = _load(args)
    rows = ModelGraph(model).summary()
    counted = 0
    table = [("#", "name", "type", "output shape", "params")]
    for row in rows:
        counted += row["counts_as_layer"]
        table.append((str(counted) if row["counts_as_layer"] else "", row["name"], row["type"],
                      str(row["output_shape"]), f"{row['params']:,}"))
    widths = [max(len(line[i]) for line in table) for i in range(5)]
    for line in table:
        print("  ".join(cell.rjust(w) if i in (0, 4) else cell.ljust(w)
                        for i, (cell, w) in enumerate(zip(line, widths, strict=True))).rstrip())
    total = int(model.count_params())
    trainable = int(sum(math.prod(w.shape) for w in model.trainable_weights))
    print(f"Total params: {total:,} (trainable: {trainable:,}, non-trainable: {total - trainable:,}); "
          f"{counted} rows have parameters (the '#' column: what the 16 of VGG16 counts)")
    return 0


def _activations(args: argparse.Namespace) -> int:
    state = _state(args)
    shown = _page(args, state.n_filters())  # before the forward pass: a bad page fails at once
    maps = state.activation()
    mosaic, ranges = render.render_mosaic(maps, args.normalization, args.colormap, max_side=ACTIVATION_TILE_PX,
                                          indices=shown)
    what = "fed input (after preprocessing)" if state.layer == state.input_layer else "activations"
    h, w = maps.shape[:2]
    title = (f"{state.layer} {what} for {state.image_name} · {w}×{h} maps · channels {shown[0]}–{shown[-1]} of "
             f"{maps.shape[2]} · {_MODE_WORDS[args.normalization]}")
    return _write(args, state, [Panel(mosaic.image, title, *_bar(args.colormap, args.normalization, ranges))])


def _weights(args: argparse.Namespace) -> int:
    state = _state(args)
    kernel, _ = state.weights()
    _check_index("--channel", args.channel, kernel.shape[2], f"{state.layer}'s filters have {kernel.shape[2]} input "
                 "channels")
    shown = _page(args, kernel.shape[3])
    magnitude = float(np.abs(kernel).max()) or 1.0  # an all-zero kernel still gets a valid range
    unit, _ = render.normalize(kernel[:, :, args.channel, shown[0]:shown[-1] + 1], "symmetric",
                               value_range=(-magnitude, magnitude))
    factor = max(1, math.ceil(KERNEL_TILE_PX / max(kernel.shape[:2])))
    tiles = render.scale_up(render.apply_colormap(unit, _WEIGHT_CMAP), factor)
    mosaic = render.tile_maps(tiles, indices=shown, pad=2, pad_value=64)
    title = (f"{state.layer} filters at input channel {args.channel} · filters {shown[0]}–{shown[-1]} of "
             f"{kernel.shape[3]} · symmetric over all {state.layer} kernels (blue < 0, white = 0, red > 0)")
    return _write(args, state, [Panel(mosaic.image, title, (_WEIGHT_CMAP, -magnitude, magnitude), None, "weight")])


def _effect(args: argparse.Namespace) -> int:
    state = _state(args)
    b = state.filter_effect(filter=args.filter)
    k, mode, cmap = len(b.channels), args.normalization, args.colormap
    panels = []
    mosaic, ranges = render.render_mosaic(b.previous_maps, mode, cmap, max_side=EFFECT_MAP_PX, cols=k)
    panels.append(Panel(mosaic.image, f"1 · input: {b.previous_layer} channels {', '.join(map(str, b.channels))} "
                        f"({'; '.join(b.channel_labels)}) · {_MODE_WORDS[mode]}", *_bar(cmap, mode, ranges)))
    kh, kw = b.kernels.shape[:2]
    factor = max(1, math.ceil(96 / max(kh, kw)))
    mosaic, ranges = render.render_mosaic(render.scale_up(b.kernels, factor), "symmetric", _SIGNED_CMAP, cols=k,
                                          pad=2)
    panels.append(Panel(mosaic.image, f"2 · filter {b.filter}'s {kh}×{kw} kernel slices for those channels",
                        (_SIGNED_CMAP, ranges[0, 0], ranges[0, 1]), None, "weight"))
    mosaic, ranges = render.render_mosaic(b.partials, "symmetric", _SIGNED_CMAP, max_side=EFFECT_MAP_PX, cols=k)
    panels.append(Panel(mosaic.image, "3 · each channel cross-correlated with its slice (its partial sum)",
                        (_SIGNED_CMAP, ranges[0, 0], ranges[0, 1]), None, "partial sum"))
    maps = [b.pre_activation, b.output]
    if k < b.n_channels:
        maps.insert(0, b.rest)
    mosaic, ranges = render.render_mosaic(np.stack(maps, axis=-1), mode, cmap, max_side=EFFECT_MAP_PX,
                                          cols=len(maps))  # one row, as the view draws it
    panels.append(Panel(mosaic.image, f"4 · {b.layer} filter {b.filter}: "
                        + ("[the other channels together,] " if k < b.n_channels else "")
                        + f"sum over all {b.n_channels} channels + bias → {b.activation}", *_bar(cmap, mode, ranges)))
    return _write(args, state, panels)


def _predict(args: argparse.Namespace) -> int:
    state = _state(args)
    if not state.has_classifier():
        try:
            state.explainer.classifier  # noqa: B018  (raises the ModelError that says why there are no classes)
        except CnnvizError as err:
            raise _NothingToShow(str(err)) from None
    p = state.predictions(args.top)
    print(f"top {len(p.indices)} classes for {state.image_name} ({p.note}):")
    width = max(len(name) for name in p.names)
    for rank, (index, name, probability) in enumerate(zip(p.indices, p.names, p.probabilities, strict=True), 1):
        print(f"{rank:>2}. {index:>5}  {name.ljust(width)}  {probability:8.2%}")
    return 0


def _cam(args: argparse.Namespace) -> int:
    from cnnviz_widgets.attribution.heatmaps import overlay

    state = _state(args)
    if not 0.0 <= args.opacity <= 1.0:
        raise CnnvizError(f"--opacity must be in 0..1; got {args.opacity}")
    result = state.explanation(args.method, class_index=args.class_index, layer=args.cam_layer, of=args.of)
    picture = overlay(state.model_input.picture, result.heatmap, _HEAT_CMAP, args.opacity)
    classifier = state.explainer.classifier if result.target.kind == "class" else None
    what = result.target.words(classifier)
    where = f" on {result.layer}" if result.method == "grad-cam" else ""
    title = (f"{'Grad-CAM' if result.method == 'grad-cam' else 'saliency'} of {what}{where} ({result.score} "
             f"{result.score_value:.3g}) over {state.image_name}" + (f" · {result.note}" if result.note else ""))
    args.layer = args.layer or (result.target.layer if result.target.kind == "filter" else "class")
    return _write(args, state, [Panel(picture, title, (_HEAT_CMAP, 0.0, 1.0), ("none", "most"),
                                      "share of the map's peak")])


_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "summary": _summary, "weights": _weights, "effect": _effect, "activations": _activations,
    "predict": _predict, "cam": _cam,
}


# --------------------------------------------------------------------------------------------- helpers


def _load(args: argparse.Namespace) -> Any:
    from cnnviz_widgets.network.loading import load_model

    if args.model.lower() == "vgg16":
        weights = "bsds500" if args.weights is None else args.weights
        return load_model("vgg16", weights=None if weights.lower() == "none" else weights)
    if args.weights is not None:
        raise CnnvizError(f"--weights applies to --model vgg16; {args.model} carries its own weights")
    return load_model(Path(args.model))


def _state(args: argparse.Namespace) -> Any:
    from cnnviz_widgets.state.model_state import ModelState

    if args.max_side < images.MIN_SIDE:
        raise CnnvizError(f"--max-side must be at least {images.MIN_SIDE}; got {args.max_side}")
    state = ModelState(_load(args), image=args.image, max_side=args.max_side)
    if args.layer is not None:
        state.layer = args.layer
    _check_index("--filter", args.filter, state.n_filters(), f"{state.layer} has {state.n_filters()} filters")
    state.filter, state.channel = args.filter, min(args.channel, state.n_channels() - 1)
    state.normalization, state.colormap = args.normalization, args.colormap
    return state


def _check_index(option: str, value: int, count: int, words: str) -> None:
    if not 0 <= value < count:
        raise CnnvizError(f"{option} {value} is out of range: {words} (0..{count - 1})")


def _page(args: argparse.Namespace, count: int) -> list[int]:
    pages = math.ceil(count / PAGE_SIZE)
    if not 1 <= args.page <= pages:
        raise CnnvizError(f"--page {args.page} is out of range: {count} tiles make "
                          f"{'1 page' if pages == 1 else f'{pages} pages'} of {PAGE_SIZE} (1..{pages})")
    start = (args.page - 1) * PAGE_SIZE
    return list(range(start, min(count, start + PAGE_SIZE)))


def _bar(cmap: str, mode: str, ranges: np.ndarray) -> tuple:
    """Colour bar arguments of a Panel: per-map ranges differ per tile, so the ends are words, not values."""
    if mode == "per_map":
        return (cmap, 0.0, 1.0), ("tile min", "tile max"), "each tile has its own range"
    return (cmap, float(ranges[0, 0]), float(ranges[0, 1])), None, "activation"


def _write(args: argparse.Namespace, state: Any, panels: list[Panel]) -> int:
    path = Path(args.output or f"cnnviz_{args.command}_{(args.layer or state.layer).replace('/', '_')}.png")
    picture = compose(panels)
    metadata = {"Title": " | ".join(p.title for p in panels), "Description": reproduce_code(state)}
    save_png(picture, path, metadata)
    print(f"wrote {path} ({picture.shape[1]}×{picture.shape[0]} px)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
