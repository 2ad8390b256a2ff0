"""One forward pass per image, every visualised layer at once, cached under a memory budget.

The extractor is a single multi-output Keras model built once per model from the flattened graph, so
changing layer, channel or filter never runs the network again. An input whose outputs do not all fit in the
budget (a big network on a big picture) keeps the asked-for layer, its neighbours and a few checkpoints; a
layer it dropped is then computed on from the deepest checkpoint before it (a layer whose output alone
determines everything after it), up to the next one: a partial pass of a few layers, not the whole network.
"""

from __future__ import annotations

import hashlib
import time
from collections import deque
from collections.abc import Sequence
from typing import Any

import numpy as np

from cnnviz_widgets.errors import ImageError, LayerError
from cnnviz_widgets.lru import LruCache
from cnnviz_widgets.network.backend import keras
from cnnviz_widgets.network.graph import ModelGraph, short_list
from cnnviz_widgets.network.memory import DEFAULT_CACHE_BYTES, cache_budget, check_fits
from cnnviz_widgets.network.segments import SegmentError

DEFAULT_BUDGET_BYTES = DEFAULT_CACHE_BYTES
"""The cache's size where memory allows; `memory.cache_budget` gives less on a machine short of memory."""
CHECKPOINT_SHARE = 0.25
"""The share of the budget an over-budget input gives to checkpoints spread over the network (what a jump to
a far layer computes on from), before the layers next to the one asked for."""


def input_key(x: np.ndarray) -> str:
    """A cache key for a prepared input: equal arrays give equal keys (shape and dtype included)."""
    digest = hashlib.blake2b(np.ascontiguousarray(x).data, digest_size=16)
    digest.update(repr((x.shape, x.dtype.str)).encode())
    return digest.hexdigest()


def separators(graph: ModelGraph) -> list[str]:
    """Names of the nodes whose output alone determines every node after them, in network order.

    No edge of the graph jumps over such a node (no skip connection or branch runs around it), so a forward
    pass can start from its output: in VGG16 every layer, in a ResNet or EfficientNet the block outputs.
    The input is left out (it is always at hand). Node order is the graph's, which is topological.
    """
    names = list(graph.nodes)
    position = {name: i for i, name in enumerate(names)}
    last_use = list(range(len(names)))  # the last node that reads each node's output
    for i, name in enumerate(names):
        for source in graph.nodes[name].inputs:
            j = position[source]
            if j >= i:  # not in topological order: claim nothing rather than something wrong
                return []
            last_use[j] = max(last_use[j], i)
    found, reach = [], 0
    for i, name in enumerate(names):
        if i > 0 and reach <= i:
            found.append(name)
        reach = max(reach, last_use[i])
    return found


def _spread(items: list[str]) -> list[str]:
    """`items` in an order whose every prefix is spread over the list: the middle one, then the quarters, …"""
    order, spans = [], deque([(0, len(items))])
    while spans:
        low, high = spans.popleft()
        if low < high:
            middle = (low + high) // 2
            order.append(items[middle])
            spans.extend(((low, middle), (middle + 1, high)))
    return order


class ActivationExtractor:
    """Outputs of `layers` of a `ModelGraph` for one input, from a single forward pass.

    Results are kept per input while their total size stays within `budget_bytes`. The newest input keeps
    every layer; older inputs first lose the layers nobody asked for (least recently used input first), and
    only then whole inputs, so going back to a recent image shows the layers that were on screen without
    running the network again. An input whose outputs alone exceed the budget keeps the layer asked for, the
    layers feeding it, checkpoints spread over the network (`CHECKPOINT_SHARE` of the budget) and then the
    layers nearest to it; a layer it lacks is computed by a partial pass from the deepest checkpoint before it.
    A layer missing for an older input is computed on from its deepest cached checkpoint in the same way.

    `forward_passes` counts runs of the whole network from the input; `partial_passes` the runs of a part of
    it (from a cached layer on, or from the input up to a layer short of the last).
    """

    POLICIES = ("layers", "images")
    policy = "layers"
    """"layers": evict older inputs' unasked layers before whole inputs; "images": whole inputs only (the
    behaviour before; benchmarks compare the two)."""

    def __init__(self, graph: ModelGraph, layers: Sequence[str], budget_bytes: int | None = None):
        self.graph = graph
        self.layers = list(dict.fromkeys(layers))
        for name in self.layers:
            graph.node(name)  # unknown names fail here, with the list of valid ones
        # None: sized from the memory this session has left; `budget_note` says so when that is less.
        self.budget_note: str | None = None
        if budget_bytes is None:
            budget_bytes, self.budget_note = cache_budget()
        # Per input, its layers' outputs, least recently used input first; whole inputs go past the budget.
        self._cache: LruCache[dict[str, np.ndarray]] = LruCache(
            budget=int(budget_bytes), weigh=_entry_bytes, on_evict=lambda key, _: self._asked.pop(key, None))
        self._output_bytes: dict[tuple, int] = {}
        self._layer_bytes: dict[tuple, dict[str, int]] = {}
        self.forward_passes = 0
        self.partial_passes = 0
        self.last_forward_seconds = 0.0
        # (the layer it started from, the last layer it computed) of the latest pass; the input's name from the input
        self.last_pass: tuple[str, str] = ("", "")
        self._asked: dict[str, set[str]] = {}  # per input: the layers asked for (what a view showed)
        self._model = graph.segments.model(None, self.layers, name="cnnviz_extractor")
        position = {name: i for i, name in enumerate(graph.nodes)}
        self._position = {name: position[name] for name in self.layers}
        self._in_order = sorted(self.layers, key=self._position.__getitem__)
        # Where a partial pass may start: extracted layers that alone determine what follows them.
        self._starts = [name for name in separators(graph) if name in self._position]

    @property
    def budget_bytes(self) -> int:
        """Bytes the cached outputs may take (the input asked for last may take more on its own)."""
        return int(self._cache.budget or 0)

    @budget_bytes.setter
    def budget_bytes(self, value: int) -> None:
        self._cache.budget = int(value)

    def min_input_side(self, limit: int = 4096) -> int:
        """Smallest square input side for which every extracted output still has at least one pixel.

        Found by bisection on Keras' shape inference (no forward pass): 32 for VGG16's five 2×2 poolings.
        """
        k = keras()
        channels = self.graph.input_shape[-1]

        def fits(side: int) -> bool:
            try:
                specs = self._model.compute_output_spec(k.KerasTensor((1, side, side, channels)))
            except (ValueError, TypeError):
                return False
            specs = specs if isinstance(specs, (list, tuple)) else [specs]
            return all(d is None or d > 0 for spec in specs for d in spec.shape[1:])

        low, high = 1, limit
        if not fits(high):
            return high
        while low < high:
            middle = (low + high) // 2
            if fits(middle):
                high = middle
            else:
                low = middle + 1
        return low

    def output_bytes(self, input_shape: tuple[int, ...]) -> int:
        """Bytes of every extracted output for one input of `input_shape` (H, W, C).

        Exact (Keras shape inference, a few ms) for the first size asked for; other sizes are scaled from it by
        their pixel count, which is what the outputs of a convolutional network grow with: an estimate for the
        memory check that costs nothing per new image.
        """
        shape = tuple(int(d) for d in input_shape)
        if shape in self._output_bytes:
            return self._output_bytes[shape]
        if self._output_bytes:
            (height, width, _), known = next(iter(self._output_bytes.items()))
            return int(known * shape[0] * shape[1] / max(1, height * width))
        per_layer = self.layer_bytes(shape)
        if not per_layer:  # a size the model refuses: the forward pass says why
            return 0
        self._output_bytes[shape] = sum(per_layer.values())
        return self._output_bytes[shape]

    def layer_bytes(self, input_shape: tuple[int, ...]) -> dict[str, int]:
        """Bytes of each extracted layer's output for one input of `input_shape` (H, W, C); see `output_bytes`.

        Empty for a size the model refuses."""
        shape = tuple(int(d) for d in input_shape)
        if shape in self._layer_bytes:
            return self._layer_bytes[shape]
        if self._layer_bytes:
            (height, width, _), known = next(iter(self._layer_bytes.items()))
            scale = shape[0] * shape[1] / max(1, height * width)
            return {name: int(size * scale) for name, size in known.items()}
        try:
            specs = self._model.compute_output_spec(keras().KerasTensor((1, *shape)))
        except (ValueError, TypeError):
            return {}
        specs = specs if isinstance(specs, (list, tuple)) else [specs]
        self._layer_bytes[shape] = {name: int(np.prod(spec.shape[1:], dtype=np.int64) * 4)
                                    for name, spec in zip(self.layers, specs, strict=True)}
        return self._layer_bytes[shape]

    @property
    def cached_bytes(self) -> int:
        return self._cache.weight

    def get(self, x: np.ndarray, layer: str, key: str | None = None) -> np.ndarray:
        """(H, W, C) float32 output of `layer` for the prepared input `x` (H, W, C_in)."""
        if layer not in self.layers:
            raise LayerError(f"{layer} is not among the extracted layers: {short_list(self.layers)}")
        key = key or input_key(x)
        entry = self._cache.peek(key)
        if entry is None or layer not in entry:
            entry = self._run(x, key, wanted=layer)
        self._cache.touch(key)
        self._asked.setdefault(key, set()).add(layer)
        return entry[layer]

    def cached_layers(self, key: str) -> tuple[str, ...]:
        """The layers held for the input with cache key `key` (empty if none)."""
        return tuple(self._cache.peek(key) or ())

    # -- running the network ---------------------------------------------------------------------------

    def _run(self, x: np.ndarray, key: str, wanted: str) -> dict[str, np.ndarray]:
        entry = self._cache.peek(key) or {}
        fits = self.output_bytes(x.shape) <= self.budget_bytes
        start = self._start(entry, wanted)
        if start is None and fits:
            computed = self._forward(x)
        else:
            # Past the asked-for layer to the next checkpoint (the next step's start); to the end if it all fits.
            end = self._in_order[-1] if fits else self._end(wanted)
            try:
                computed = self._partial(x, entry, start, end)
            except _NoStart:
                if start is None:
                    raise
                self._starts.remove(start)  # a layer whose later users read a second output of it: not a start
                return self._run(x, key, wanted)
        kept = self._keep({**entry, **computed}, wanted)
        self._cache.pop(key, None)
        if self.policy == "layers":
            self._drop_unasked(room_for=_entry_bytes(kept))
        self._cache.put(key, kept)  # and older inputs go, least recently used first, until the budget holds
        return kept

    def _forward(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Every extracted layer's output for `x`, from one pass of the whole network."""
        arrays = self._call(self._model, x, self.output_bytes(x.shape), f"a forward pass on a {_size(x)} input",
                            _size(x))
        self.forward_passes += 1
        self.last_pass = (self.graph.input_name, self._in_order[-1])
        return dict(zip(self.layers, arrays, strict=True))

    def _partial(self, x: np.ndarray, entry: dict[str, np.ndarray], start: str | None,
                 end: str) -> dict[str, np.ndarray]:
        """The extracted layers after `start` (None: the input `x`) up to `end`, computed from `entry[start]`."""
        first = -1 if start is None else self._position[start]
        names = [name for name in self._in_order if first < self._position[name] <= self._position[end]]
        model = self._segment(start, names)
        sizes = self.layer_bytes(x.shape)
        what = f"a forward pass on a {_size(x)} input" if start is None else \
            f"a pass from {start} to {end} on a {_size(x)} input"
        arrays = self._call(model, x if start is None else entry[start], sum(sizes.get(n, 0) for n in names), what,
                            _size(x))
        if start is None and end == self._in_order[-1]:
            self.forward_passes += 1  # the whole network after all
        else:
            self.partial_passes += 1
        self.last_pass = (start or self.graph.input_name, end)
        return dict(zip(names, arrays, strict=True))

    def _call(self, model: Any, fed: np.ndarray, output_bytes: int, what: str, size: str) -> list[np.ndarray]:
        import tensorflow as tf  # loaded with Keras already; its errors are what a bad input size raises

        check_fits(2 * output_bytes, what, "choose a smaller max_side, or a smaller image")
        started = time.perf_counter()
        try:
            outputs = model(fed[np.newaxis], training=False)
        except (ValueError, tf.errors.OpError) as err:  # e.g. an image too small for the pooling layers
            raise ImageError(f"the model cannot take this {size} input: {err}") from err
        self.last_forward_seconds = time.perf_counter() - started
        return [np.asarray(out)[0] for out in (outputs if isinstance(outputs, list) else [outputs])]

    def _start(self, entry: dict[str, np.ndarray], wanted: str) -> str | None:
        """The deepest checkpoint held in `entry` before `wanted`, or None (start from the input)."""
        here = self._position[wanted]
        held = [name for name in self._starts if name in entry and self._position[name] < here]
        return held[-1] if held else None

    def _end(self, wanted: str) -> str:
        """The first checkpoint at or after `wanted` (the last extracted layer if none)."""
        here = self._position[wanted]
        return next((name for name in self._starts if self._position[name] >= here), self._in_order[-1])

    def _segment(self, start: str | None, names: list[str]) -> Any:
        """The Keras model from `start`'s output (None: the input) to `names`' outputs (`network.segments`)."""
        try:
            return self.graph.segments.model(start, names, name="cnnviz_partial")
        except SegmentError as err:  # an output not connected to `start` alone
            raise _NoStart(start) from err

    # -- what is kept ----------------------------------------------------------------------------------

    def _keep(self, arrays: dict[str, np.ndarray], wanted: str) -> dict[str, np.ndarray]:
        """What one input keeps of `arrays` within the budget: all if it fits, else the asked-for layer first.

        Then the layers feeding it (what a filter's breakdown reads), the checkpoints either side of those, more
        checkpoints spread over the network within `CHECKPOINT_SHARE` of the budget, and then the layers
        nearest to it in network order (what a user steps to next).
        """
        if sum(a.nbytes for a in arrays.values()) <= self.budget_bytes:
            return arrays
        here = self._position[wanted]
        feeding = [name for name in self.graph.previous_layers(wanted) if name in arrays]
        order = [wanted, *feeding]
        held = [name for name in self._starts if name in arrays]
        # the checkpoint a step back starts from (before what feeds `wanted`), and the one a step on starts from
        first = min((self._position[name] for name in feeding), default=here)
        order += [name for name in held if self._position[name] < first][-1:]
        order += [name for name in held if self._position[name] > here][:1]
        share, used = CHECKPOINT_SHARE * self.budget_bytes, 0
        for name in _spread(held):
            if used + arrays[name].nbytes <= share:
                order.append(name)
                used += arrays[name].nbytes
        order += sorted(arrays, key=lambda name: (abs(self._position[name] - here), self._position[name] < here))
        kept: dict[str, np.ndarray] = {}
        used = 0
        for name in dict.fromkeys(order):  # the asked-for layer always
            if name == wanted or used + arrays[name].nbytes <= self.budget_bytes:
                kept[name] = arrays[name]
                used += arrays[name].nbytes
        return kept

    def _drop_unasked(self, room_for: int) -> None:
        """Make room for `room_for` bytes of a new entry from older inputs' unasked layers (least recently used
        input first); what is still short, the cache frees by dropping whole inputs."""
        total = self.cached_bytes
        for key, entry in self._cache.items():
            asked = self._asked.get(key, set())
            for name in [n for n in entry if n not in asked]:
                if total + room_for <= self.budget_bytes:
                    return
                total -= entry.pop(name).nbytes

    def clear(self) -> None:
        self._cache.clear()
        self._asked.clear()


class _NoStart(Exception):
    """A checkpoint whose output alone does not feed a layer after it (a layer with several outputs)."""


def _entry_bytes(entry: dict[str, np.ndarray]) -> int:
    return sum(a.nbytes for a in entry.values())


def _size(x: np.ndarray) -> str:
    return f"{x.shape[1]}×{x.shape[0]}"
