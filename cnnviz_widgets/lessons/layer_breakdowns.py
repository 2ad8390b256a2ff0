"""A layer of a `ModelGraph` taken apart as the views show it: one filter's effect, one output value.

`filter_effect` and `pixel_breakdown` compute from arrays; these functions feed them from a graph: they check
that the layer can be taken apart (a conv layer, channels last, one that slides a kernel for a single value),
read its weights and geometry from its config, and add the words a picture needs (the layer's type, what its
input channels are, notes on expanded kernels or an activation computed by the layer itself). They read what
they need through `LayerSource`, a small protocol `ModelState` implements (a `TrainingState` gives the weights
and activations of the step it shows). Pure numpy.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Protocol

import numpy as np

from cnnviz_widgets.checks import check_filter
from cnnviz_widgets.errors import CnnvizError, LayerError
from cnnviz_widgets.lessons.arithmetic import activation_name
from cnnviz_widgets.lessons.filter_effect import FilterBreakdown, break_down_filter
from cnnviz_widgets.lessons.pixel_breakdown import SLIDING_CONVS, PixelBreakdown, pixel_breakdown
from cnnviz_widgets.network.graph import ModelGraph
from cnnviz_widgets.pictures.preprocessing import ModelInput, describe_preprocessing, input_channel_labels


class LayerSource(Protocol):
    """A model's graph, the current image's activations and the weights to take apart (`ModelState` is one)."""

    graph: ModelGraph

    @property
    def layers(self) -> Sequence[str]:
        """The visualised layers in network order (named in errors as the ones to pick)."""

    @property
    def model_input(self) -> ModelInput:
        """The current image as fed (its `preprocess` names the input's channels)."""

    def activation(self, layer: str | None = None) -> np.ndarray:
        """(H, W, C) float32 output of `layer` for the current image (the input layer: the fed array)."""

    def weights(self, layer: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(kernel (kh, kw, c_in, c_out), bias (c_out,)) of a conv layer."""


def layer_filter_effect(source: LayerSource, layer: str, filter: int, *, channels: Sequence[int] | None = None,
                        top_k: int = 3) -> FilterBreakdown:
    """`filter` of the conv `layer` taken apart by input channel (`filter_effect.break_down_filter`).

    LayerError for the input and pooling layers, which have no filters.
    """
    graph, layers, activation = source.graph, source.layers, source.activation
    preprocess = source.model_input.preprocess
    node = graph.node(layer)
    if node.kind != "conv":
        what = {"input": "the model input", "pool": "a pooling layer"}.get(node.kind, f"a {node.class_name}")
        convs = [n for n in layers if graph.node(n).kind == "conv"]
        listed = ", ".join(convs[:4]) + (f" and {len(convs) - 4} more" if len(convs) > 4 else "")
        raise LayerError(f"{layer} is {what}: it has no filters to take apart. A filter's effect is shown "
                         f"for conv layers: {listed}")
    config = channels_last_config(graph, layer, "filter effects are")
    f = check_filter(filter, layer, int(node.output_shape[-1]))
    previous = graph.previous_layer(layer)
    kernel, bias = source.weights(layer)
    transposed = node.class_name == "Conv2DTranspose"
    try:
        result = break_down_filter(
            activation(previous), kernel, bias, f, channels=channels, top_k=top_k,
            strides=config.get("strides", 1), padding=config.get("padding", "valid"),
            dilation=config.get("dilation_rate", 1), activation=activation_name(config.get("activation")),
            transposed=transposed, output_padding=config.get("output_padding") if transposed else None)
    except CnnvizError as err:
        raise LayerError(f"{layer}, filter {f}: {err}") from None
    notes = [] if node.class_name == "Conv2D" else [graph.weights(layer)[2]]
    output = result.output
    if not result.activation_reproduced:
        output = activation(layer)[..., f]
        notes.append(f"the activation {result.activation!r} is not reproduced per filter; the output shown "
                     "is the layer's own")
    if previous == graph.input_name:
        notes.insert(0, describe_preprocessing(preprocess, kernel.shape[2]))
    labels = channel_labels(graph, previous, preprocess, kernel.shape[2], result.channels)
    return dataclasses.replace(result, layer=layer, layer_type=node.class_name, previous_layer=previous,
                               channel_labels=labels, note="; ".join(notes), output=output)


def layer_pixel_breakdown(source: LayerSource, layer: str, filter: int, row: int, col: int, *,
                          top_k: int = 8) -> PixelBreakdown:
    """The output of `layer` at (row, col) of `filter` taken apart (`pixel_breakdown.pixel_breakdown`).

    LayerError for layers that do not slide a kernel over their input (input, pooling, transposed convolutions).
    """
    graph, activation = source.graph, source.activation
    config = sliding_conv_config(graph, layer, "the convolution at one pixel", source.layers)
    f = check_filter(filter, layer, int(graph.node(layer).output_shape[-1]))
    previous = graph.previous_layer(layer)
    kernel, bias = source.weights(layer)
    try:
        result = pixel_breakdown(
            activation(previous), kernel, bias, f, row, col, strides=config.get("strides", 1),
            padding=config.get("padding", "valid"), dilation=config.get("dilation_rate", 1),
            activation=activation_name(config.get("activation")), top_k=top_k)
    except CnnvizError as err:
        raise type(err)(f"{layer}, filter {f}: {err}") from None
    notes = [] if graph.node(layer).class_name == "Conv2D" else [graph.weights(layer)[2]]
    output = result.output
    if not result.activation_reproduced:
        output = float(activation(layer)[result.row, result.col, f])
        notes.append(f"the activation {result.activation!r} is not reproduced per value; the output shown "
                     "is the layer's own")
    labels = channel_labels(graph, previous, source.model_input.preprocess, kernel.shape[2], result.channels)
    return dataclasses.replace(result, layer=layer, previous_layer=previous, channel_labels=labels,
                               note="; ".join(notes), output=output)


def sliding_conv_config(graph: ModelGraph, layer: str, what: str, layers: Sequence[str] = ()) -> dict:
    """The config of a conv layer that correlates a kernel with its input; LayerError otherwise, naming a few
    of `layers` that do."""
    node = graph.node(layer)
    if node.kind != "conv" or node.class_name == "Conv2DTranspose":
        convs = [n for n in layers if graph.node(n).class_name in SLIDING_CONVS][:3]
        raise LayerError(f"{layer} ({node.class_name}) does not slide a kernel over its input, so {what} is not "
                         f"shown for it; pick a {', '.join(SLIDING_CONVS)} layer"
                         + (f", e.g. {', '.join(convs)}" if convs else ""))
    return channels_last_config(graph, layer, f"{what} is")


def channels_last_config(graph: ModelGraph, layer: str, what: str) -> dict:
    """The layer's config; LayerError for a channels_first layer, which these computations do not handle."""
    config = graph.node(layer).layer.get_config()
    if config.get("data_format", "channels_last") != "channels_last":
        raise LayerError(f"{layer} is channels_first; {what} computed for channels_last layers")
    return config


def channel_labels(graph: ModelGraph, previous: str, preprocess: str, n_channels: int,
                   channels: Sequence[int]) -> tuple[str, ...]:
    """Words for input channels of a filter: the fed colour channels, or maps of the previous layer."""
    if previous == graph.input_name:
        every = input_channel_labels(preprocess, n_channels)
        return tuple(every[c] for c in channels)
    return tuple(f"{previous} channel {c}" for c in channels)
