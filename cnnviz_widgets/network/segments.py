"""Sub-models of one network: from a layer's output (or the model input) to other layers' outputs, built once.

Whatever runs a piece of the network asks its graph's `Segments` for it: the extractor's whole and partial
passes, the explainer's gradient paths and predictions from a cached layer, scans, feature visualisation and
shape inference. The Keras model is built from the flattened graph (`network.graph`) on first use, a few ms
(0.2 s for EfficientNetB7 end to end), and the last `SEGMENTS_KEPT` are kept in one `lru.LruCache`. A segment
whose outputs need more than its start (a skip connection or a branch from before it) cannot be built: that
answer is kept too, and `model` raises `SegmentError` for it while `between` gives None.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from cnnviz_widgets.errors import LayerError
from cnnviz_widgets.lru import LruCache
from cnnviz_widgets.network.backend import keras

if TYPE_CHECKING:
    from cnnviz_widgets.network.graph import ModelGraph

SEGMENTS_KEPT = 64
"""Sub-models kept per graph (each a Keras model over the graph's own layers: small, nothing is copied), failed
attempts included (looking for the deepest layer a segment can start from tries a few)."""


class SegmentError(LayerError):
    """A sub-model that cannot be built: an asked-for output needs more than the segment's start."""


class Segments:
    """The sub-models of `graph`, keyed by (start, ends) and kept in one LRU cache of `size` entries."""

    def __init__(self, graph: ModelGraph, size: int = SEGMENTS_KEPT):
        self.graph = graph
        self.cache: LruCache[Any] = LruCache(size)

    def model(self, start: str | None, ends: str | Sequence[str], name: str = "cnnviz_segment") -> Any:
        """The Keras model from `start`'s output (None: the model input) to `ends`' outputs.

        ends : a layer name (the model returns one tensor) or a sequence of names (it returns a list, in that
        order; the input's name gives the input itself). `name` names a model built now. SegmentError when
        an output does not follow from `start` alone; LayerError for an unknown name.
        """
        key = (start, ends if isinstance(ends, str) else tuple(ends))
        built = self.cache.get(key, lambda: self._build(start, key[1], name))
        if isinstance(built, SegmentError):
            raise SegmentError(str(built))  # a fresh error each time: no traceback piles up on a kept one
        return built

    def between(self, start: str | None, end: str) -> Any | None:
        """The model from `start`'s output (None: the input) to `end`'s output; None where `end` needs more
        than `start` (see `model`) or `start` is `end`."""
        if start == end:
            return None
        try:
            return self.model(start, end, name="cnnviz_between")
        except SegmentError:
            return None

    def _build(self, start: str | None, ends: str | tuple[str, ...], name: str) -> Any:
        graph = self.graph
        first = graph.input_tensor if start is None else graph.node(start).tensor
        outputs = graph.node(ends).tensor if isinstance(ends, str) else [graph.node(end).tensor for end in ends]
        try:
            return keras().Model(first, outputs, name=name)
        except (ValueError, KeyError, TypeError) as err:  # Keras: "graph disconnected", an output not reached
            named = ends if isinstance(ends, str) else ", ".join(ends)
            return SegmentError(f"no sub-model from {start or graph.input_name} to {named}: {err}")
