"""One forward pass per image, every visualised layer at once, cached under a memory budget.

The extractor is a single multi-output Keras model built once per model from the flattened graph, so
changing layer, channel or filter never runs the network again.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np

from ._keras import keras
from .errors import ImageError, LayerError
from .memory import DEFAULT_CACHE_BYTES, cache_budget, check_fits
from .models import ModelGraph, short_list

DEFAULT_BUDGET_BYTES = DEFAULT_CACHE_BYTES
"""The cache's size where memory allows; `memory.cache_budget` gives less on a machine short of memory."""


def input_key(x: np.ndarray) -> str:
    """A cache key for a prepared input: equal arrays give equal keys (shape and dtype included)."""
    digest = hashlib.blake2b(np.ascontiguousarray(x).data, digest_size=16)
    digest.update(repr((x.shape, x.dtype.str)).encode())
    return digest.hexdigest()


class ActivationExtractor:
    """Outputs of `layers` of a `ModelGraph` for one input, from a single forward pass.

    Results are kept per input while their total size stays within `budget_bytes`. The newest input keeps
    every layer; older inputs first lose the layers nobody asked for (least recently used input first), and
    only then whole inputs, so going back to a recent image shows the layers that were on screen without
    running the network again. An input whose outputs alone exceed the budget keeps what fits, in network
    order after the layer asked for, and recomputes the rest when asked.
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
        self.budget_bytes = int(budget_bytes)
        self._output_bytes: dict[tuple, int] = {}
        self.forward_passes = 0
        self.last_forward_seconds = 0.0
        self._cache: OrderedDict[str, dict[str, np.ndarray]] = OrderedDict()
        self._asked: dict[str, set[str]] = {}  # per input: the layers asked for (what a view showed)
        outputs = [graph.nodes[name].tensor for name in self.layers]
        self._model = keras().Model(graph.input_tensor, outputs, name="cnnviz_extractor")

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
        try:
            specs = self._model.compute_output_spec(keras().KerasTensor((1, *shape)))
        except (ValueError, TypeError):  # a size the model refuses: the forward pass says why
            return 0
        specs = specs if isinstance(specs, (list, tuple)) else [specs]
        self._output_bytes[shape] = int(sum(np.prod(spec.shape[1:], dtype=np.int64) * 4 for spec in specs))
        return self._output_bytes[shape]

    @property
    def cached_bytes(self) -> int:
        return sum(a.nbytes for entry in self._cache.values() for a in entry.values())

    def get(self, x: np.ndarray, layer: str, key: str | None = None) -> np.ndarray:
        """(H, W, C) float32 output of `layer` for the prepared input `x` (H, W, C_in)."""
        if layer not in self.layers:
            raise LayerError(f"{layer} is not among the extracted layers: {short_list(self.layers)}")
        key = key or input_key(x)
        entry = self._cache.get(key)
        if entry is None or layer not in entry:
            entry = self._run(x, key, wanted=layer)
        self._cache.move_to_end(key)
        self._asked.setdefault(key, set()).add(layer)
        return entry[layer]

    def cached_layers(self, key: str) -> tuple[str, ...]:
        """The layers held for the input with cache key `key` (empty if none)."""
        return tuple(self._cache.get(key, ()))

    def _run(self, x: np.ndarray, key: str, wanted: str) -> dict[str, np.ndarray]:
        import tensorflow as tf  # loaded with Keras already; its errors are what a bad input size raises

        check_fits(2 * self.output_bytes(x.shape), f"a forward pass on a {x.shape[1]}×{x.shape[0]} input",
                   "choose a smaller max_side, or a smaller image")
        start = time.perf_counter()
        try:
            outputs = self._model(x[np.newaxis], training=False)
        except (ValueError, tf.errors.OpError) as err:  # e.g. an image too small for the pooling layers
            raise ImageError(f"the model cannot take this {x.shape[1]}×{x.shape[0]} input: {err}") from err
        arrays = [np.asarray(out)[0] for out in (outputs if isinstance(outputs, list) else [outputs])]
        self.forward_passes += 1
        self.last_forward_seconds = time.perf_counter() - start
        result = dict(zip(self.layers, arrays, strict=False))
        self._cache.pop(key, None)
        # After the asked-for layer, the ones after it (what a user steps to next; also the smaller maps).
        at = self.layers.index(wanted)
        order = [wanted, *self.layers[at + 1 :], *self.layers[:at][::-1]]
        kept: dict[str, np.ndarray] = {}
        used = 0
        for name in order:  # keep what fits in the budget; the asked-for layer always
            if name == wanted or used + result[name].nbytes <= self.budget_bytes:
                kept[name] = result[name]
                used += result[name].nbytes
        self._evict(room_for=used)
        self._cache[key] = kept
        return kept

    def _evict(self, room_for: int) -> None:
        """Make room for `room_for` bytes of a new entry: older inputs' unasked layers first, then whole inputs."""
        total = self.cached_bytes
        if self.policy == "layers":
            for key, entry in self._cache.items():  # least recently used input first
                asked = self._asked.get(key, set())
                for name in [n for n in entry if n not in asked]:
                    if total + room_for <= self.budget_bytes:
                        return
                    total -= entry.pop(name).nbytes
        while self._cache and total + room_for > self.budget_bytes:
            key, dropped = self._cache.popitem(last=False)
            self._asked.pop(key, None)
            total -= sum(a.nbytes for a in dropped.values())

    def clear(self) -> None:
        self._cache.clear()
        self._asked.clear()
