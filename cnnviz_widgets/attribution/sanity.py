"""Do the maps depend on what the network learned? The model parameter randomisation test (Adebayo et al. 2018).

`sanity_check` re-draws the network's weights one layer at a time, from the top down (the classifier first,
the first conv layer last), and after each step recomputes every chosen method's map for the same picture and
the same target. A map that stays alike while the network forgets what it learned shows the picture, not the
model: an edge detector would pass for an explanation. `SanityReport` keeps the maps and their similarity to the
trained network's maps: the Spearman rank correlation of the heat maps (`spearman`) and their SSIM (`ssim`).

The user's model is never changed. The re-drawn values live in a `keras.StatelessScope` (as
`training.snapshots` reads past weights): inside it, in this thread only, Keras reads them instead of the
variables, which nothing writes to. The cost is the re-drawn values of the layers randomised so far, at most
one copy of the weights the score depends on (the original weights are not copied, no model is cloned), plus
one gradient pass; `network.memory.check_fits` checks both before anything is drawn. Each variable is re-drawn
by its layer's own initializer (``kernel`` by ``kernel_initializer``, seeded), as a fresh model would start;
a variable without one (a custom layer's) by a seeded normal with its own mean and standard deviation.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from cnnviz_widgets.attribution import catalogue
from cnnviz_widgets.attribution.classes import Target, output_node
from cnnviz_widgets.attribution.explainer import Explainer
from cnnviz_widgets.attribution.explanation import Explanation
from cnnviz_widgets.checks import check_int
from cnnviz_widgets.errors import CnnvizError
from cnnviz_widgets.network.backend import keras
from cnnviz_widgets.network.extractor import input_key
from cnnviz_widgets.network.feed import ExplainedFeed
from cnnviz_widgets.network.graph import ModelGraph
from cnnviz_widgets.network.memory import check_fits
from cnnviz_widgets.progress import cancelled, progress_bar

MEASURES = ("spearman", "ssim")
"""How a map is compared with the trained network's map (see `spearman`, `ssim`)."""

RANDOMISATION = ("each variable re-drawn by its layer's own initializer (seeded); a variable without one by a "
                 "seeded normal with its own mean and standard deviation")


@dataclass(frozen=True, eq=False)
class SanityReport:
    """What randomising the network's layers, top first, did to each method's map.

    target : what every map explains (the same at every step). methods : the methods' names.
    layers : the layers re-drawn, in the order they were (top first): after step i, layers[: i + 1] are random.
    original : each method's `Explanation` with the trained weights.
    maps : each method's heat maps, (H, W) float32 in [0, 1], one per step (aligned with `layers`).
    spearman, ssim : each method's similarity to its original map, (len(layers),) float64 per step.
    randomisation : how the layers were re-drawn, in words. seed : the seed they were drawn with.
    seconds : how long the whole check took. complete : False when it was cancelled before the last layer.
    """

    target: Target
    methods: tuple[str, ...]
    layers: tuple[str, ...]
    original: dict[str, Explanation]
    maps: dict[str, tuple[np.ndarray, ...]]
    spearman: dict[str, np.ndarray]
    ssim: dict[str, np.ndarray]
    randomisation: str
    seed: int
    seconds: float
    complete: bool

    def similarity(self, method: str, measure: str = "spearman") -> dict[str, float]:
        """The curve for `method`: the last layer randomised (top first) -> similarity to the original map.

        measure : "spearman" (rank correlation of the heat maps, -1..1) or "ssim" (structural similarity).
        """
        if method not in self.methods:
            raise CnnvizError(f"the report has no method {method!r}; it has {', '.join(self.methods)}")
        if measure not in MEASURES:
            raise CnnvizError(f"unknown measure {measure!r}; expected one of {', '.join(MEASURES)}")
        values = (self.spearman if measure == "spearman" else self.ssim)[method]
        return {layer: float(value) for layer, value in zip(self.layers, values, strict=True)}

    def grid(self) -> np.ndarray:
        """(methods, 1 + layers, H, W) float32: each method's original heat map, then one per step (a picture grid
        of methods × layers randomised)."""
        return np.stack([np.stack([self.original[m].heatmap, *self.maps[m]]) for m in self.methods])


def sanity_check(state: ExplainedFeed, methods: Sequence[str] = ("grad-cam", "saliency"),
                 class_index: int | None = None, *, of: str | None = None, layer: str | None = None,
                 score: str | None = None, layers: Sequence[str] | None = None, seed: int = 0,
                 options: Mapping[str, Mapping[str, Any]] | None = None, progress: Any = False,
                 cancel: Any = None) -> SanityReport:
    """The cascading model parameter randomisation test on the state's current picture.

    methods : names of `catalogue.METHODS`. class_index, of : the target (`state.explain_target`); the same for
    every step. layer : the conv layer a CAM method weighs (default: the last one); score : "logit" or
    "probability" for a class (default as `state.explanation`). layers : the layers to re-draw, in that order
    (default: every layer with weights that the score depends on, top first). seed : for the re-drawn values.
    options : each method's own options, e.g. ``{"smoothgrad": {"samples": 8}}``. progress : True (a bar),
    a callable progress(done, total) or False. cancel : a `threading.Event` or a callable; once set the report
    stops after the current layer, with `complete` False.
    """
    chosen = _check_methods(methods)
    extra = {name: dict((options or {}).get(name, {})) for name in chosen}
    unknown = sorted(set(options or {}) - set(chosen))
    if unknown:
        raise CnnvizError(f"options given for {', '.join(map(repr, unknown))}, which is not among the methods "
                          f"checked ({', '.join(chosen)})")
    seed = check_int(seed, "seed", 0)
    started = time.perf_counter()
    graph = state.graph
    target = state.explain_target(class_index, of)
    x = np.asarray(state.model_input.array, dtype=np.float32)
    order = _check_layers(graph, target, layers)
    variables = [(name, variable) for name in order for variable in graph.node(name).layer.weights]
    needed = sum(math.prod(v.shape) * np.dtype(v.dtype).itemsize for _, v in variables)
    check_fits(needed + 3 * state.extractor.output_bytes(x.shape),
               f"the sanity check ({len(order)} layers re-drawn, {x.shape[1]}×{x.shape[0]} input)",
               "choose a smaller max_side, or fewer layers")
    # A fresh explainer: the state's reuses activations and results computed with the trained weights.
    explainer = Explainer(graph)
    key = input_key(x)

    def explain(name: str, step: int) -> Explanation:
        return explainer.explain(x, target, name, layer=layer, score=score, key=f"{key}/sanity {seed} {step}",
                                 **extra[name])

    original = {name: explain(name, 0) for name in chosen}
    maps: dict[str, list[np.ndarray]] = {name: [] for name in chosen}
    done: list[str] = []
    mapping: list[tuple[Any, Any]] = []
    update, close = progress_bar(progress, len(order), 0, unit="layer", what="sanity check")
    k = keras()
    try:
        for step, name in enumerate(order, start=1):
            if cancelled(cancel):
                break
            for index, variable in enumerate(graph.node(name).layer.weights):
                mapping.append((variable, redrawn(graph.node(name).layer, variable, seed + 1009 * step + index)))
            with k.StatelessScope(state_mapping=mapping):
                for method in chosen:
                    maps[method].append(explain(method, step).heatmap)
            done.append(name)
            update(step)
    finally:
        close()
    spearmans = {m: np.array([spearman(original[m].heatmap, h) for h in maps[m]], dtype=np.float64) for m in chosen}
    ssims = {m: np.array([ssim(original[m].heatmap, h) for h in maps[m]], dtype=np.float64) for m in chosen}
    return SanityReport(target, chosen, tuple(done), original, {m: tuple(maps[m]) for m in chosen}, spearmans, ssims,
                        RANDOMISATION, seed, time.perf_counter() - started, len(done) == len(order))


def _check_methods(methods: Sequence[str]) -> tuple[str, ...]:
    names = (methods,) if isinstance(methods, str) else tuple(methods)
    if not names:
        raise CnnvizError(f"methods must name at least one of {', '.join(catalogue.METHODS)}; got none")
    for name in names:
        catalogue.method(name)  # CnnvizError naming every method for an unknown one
    return tuple(dict.fromkeys(names))


def weighted_layers(graph: ModelGraph, target: Target) -> list[str]:
    """The layers with weights that `target`'s score depends on, top (nearest the score) first."""
    end = target.layer if target.kind == "filter" else output_node(graph).name
    upstream: set[str] = set()
    pending = [graph.node(end).name]
    while pending:
        name = pending.pop()
        if name not in upstream:
            upstream.add(name)
            pending.extend(graph.node(name).inputs)
    seen: set[int] = set()
    found = []
    for name, node in graph.nodes.items():
        if name in upstream and node.layer is not None and node.layer.weights and id(node.layer) not in seen:
            seen.add(id(node.layer))
            found.append(name)
    return found[::-1]


def _check_layers(graph: ModelGraph, target: Target, layers: Sequence[str] | None) -> list[str]:
    default = weighted_layers(graph, target)
    if layers is None:
        if not default:
            raise CnnvizError(f"{graph.model.name} has no layer with weights under {target.words()}: nothing to "
                              "randomise")
        return default
    names = [graph.node(name).name for name in ([layers] if isinstance(layers, str) else layers)]
    for name in names:
        if name not in default:
            raise CnnvizError(f"{name} has no weights that {target.words()} depends on; layers that can be "
                              f"randomised: {', '.join(default)}")
    if len(set(names)) != len(names):
        raise CnnvizError(f"layers names a layer twice: {', '.join(names)}")
    return names


def redrawn(layer: Any, variable: Any, seed: int) -> Any:
    """A fresh value for `variable` of `layer`: its layer's initializer for it (``<name>_initializer``) seeded
    with `seed`, or a seeded normal with the variable's own mean and standard deviation. Nothing is assigned."""
    initializer = getattr(layer, f"{variable.name}_initializer", None)
    config = getattr(initializer, "get_config", lambda: None)()
    if callable(initializer) and isinstance(config, dict):
        if "seed" in config:
            initializer = type(initializer).from_config({**config, "seed": seed})
        try:
            return initializer(tuple(variable.shape), dtype=variable.dtype)
        except (TypeError, ValueError):  # an initializer that cannot draw this shape: the normal below
            pass
    values = np.asarray(variable.numpy(), dtype=np.float64)
    drawn = np.random.default_rng(seed).normal(values.mean(), values.std(), values.shape)
    return keras().ops.convert_to_tensor(drawn.astype(np.dtype(variable.dtype)))


def ranks(values: np.ndarray) -> np.ndarray:
    """The ranks of `values` (flattened), 0-based, ties given their mean rank, float64."""
    flat = np.asarray(values, dtype=np.float64).ravel()
    order = np.argsort(flat, kind="stable")
    position = np.empty(flat.size)
    position[order] = np.arange(flat.size)
    _, group, counts = np.unique(flat, return_inverse=True, return_counts=True)
    return (np.bincount(group, weights=position) / counts)[group.ravel()]


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of |a| and |b| (same shape), ties ranked by their mean rank.

    A flat map ranks nothing: its correlation with any map is 0 (not NaN), as in Xplique.
    """
    a, b = np.abs(np.asarray(a)), np.abs(np.asarray(b))
    if a.shape != b.shape:
        raise CnnvizError(f"maps of different shapes cannot be compared: {a.shape} and {b.shape}")
    ra, rb = ranks(a) - (a.size - 1) / 2, ranks(b) - (b.size - 1) / 2
    scale = math.sqrt(float((ra * ra).sum()) * float((rb * rb).sum()))
    return float((ra * rb).sum() / scale) if scale > 0 else 0.0


def ssim(a: np.ndarray, b: np.ndarray, window: int = 7, data_range: float = 1.0) -> float:
    """Mean structural similarity (Wang et al. 2004) of two (H, W) maps over `window`×`window` windows.

    As scikit-image's default: a uniform window, sample covariances, K1 = 0.01, K2 = 0.03, the mean over the
    windows that fit inside the map (a map smaller than the window is one window).
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 2:
        raise CnnvizError(f"ssim compares two (H, W) maps of one shape; got {a.shape} and {b.shape}")
    size = max(1, min(window, *a.shape))
    n = size * size

    def means(values: np.ndarray) -> np.ndarray:
        sums = np.pad(values, ((1, 0), (1, 0))).cumsum(0).cumsum(1)
        return (sums[size:, size:] - sums[:-size, size:] - sums[size:, :-size] + sums[:-size, :-size]) / n

    mean_a, mean_b = means(a), means(b)
    correction = n / (n - 1) if n > 1 else 1.0
    var_a = (means(a * a) - mean_a**2) * correction
    var_b = (means(b * b) - mean_b**2) * correction
    cov = (means(a * b) - mean_a * mean_b) * correction
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    index = ((2 * mean_a * mean_b + c1) * (2 * cov + c2)) / ((mean_a**2 + mean_b**2 + c1) * (var_a + var_b + c2))
    return float(index.mean())
