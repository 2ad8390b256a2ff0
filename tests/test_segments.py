"""network.segments: one builder of sub-models per graph, each built once, shared by whatever runs a part."""

from __future__ import annotations

import numpy as np
import pytest

from cnnviz_widgets.network.extractor import ActivationExtractor
from cnnviz_widgets.network.graph import ModelGraph
from cnnviz_widgets.network.segments import SegmentError


def test_a_segment_computes_what_the_whole_network_computes(tiny_model, rng):
    graph = ModelGraph(tiny_model)
    x = rng.normal(size=(1, 16, 16, 3)).astype(np.float32)
    whole = graph.segments.model(None, ["pool_a", "conv_b"])
    pool_a, conv_b = (np.asarray(a) for a in whole(x, training=False))
    on = graph.segments.model("pool_a", "conv_b")  # one name: one tensor back
    np.testing.assert_allclose(np.asarray(on(pool_a, training=False)), conv_b, rtol=1e-5, atol=1e-6)
    assert graph.segments.model("pool_a", "conv_b") is on  # built once


def test_the_extractor_and_others_share_one_cache(tiny_model):
    graph = ModelGraph(tiny_model)
    extractor = ActivationExtractor(graph, graph.visualisable(), budget_bytes=2**20)
    assert graph.segments.model(None, extractor.layers) is graph.segments.model(None, tuple(extractor.layers))
    assert len(graph.segments.cache) >= 1


def test_a_segment_that_needs_more_than_its_start_is_refused_and_remembered(k):
    inputs = k.Input((8, 8, 3), name="img")
    a = k.layers.Conv2D(2, 3, padding="same", name="a")(inputs)
    b = k.layers.Conv2D(2, 3, padding="same", name="b")(a)
    model = k.Model(inputs, k.layers.Add(name="skip")([a, b]), name="skipper")
    graph = ModelGraph(model)
    with pytest.raises(SegmentError, match="no sub-model from b to skip"):
        graph.segments.model("b", "skip")
    misses = graph.segments.cache.misses
    assert graph.segments.between("b", "skip") is None and graph.segments.cache.misses == misses  # kept
    assert graph.segments.between("a", "skip") is not None and graph.segments.between("a", "a") is None
