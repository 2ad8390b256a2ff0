"""`ModelState`: the one source of truth that every control and view of cnnviz_widgets binds to.

It holds the model, the image and the current layer / input channel / filter, validates what is set (a
layer must exist; indices are clamped to the layer's shape), and hands out the computed arrays by calling
the compute core. It knows nothing of widgets: views observe its traits.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np
import traitlets

from . import images
from .activations import DEFAULT_BUDGET_BYTES, ActivationExtractor, input_key
from .effects import (
    FilterBreakdown,
    activation_name,
    break_down_filter,
)
from .errors import CnnvizError, LayerError
from .inputs import (
    ModelInput,
    Preprocess,
    describe_preprocessing,
    fed_channel_names,
    input_channel_labels,
    prepare_input,
)
from .models import ModelGraph, load_model, model_info
from .render import COLORMAPS, NORMALIZATIONS


class ModelState(traitlets.HasTraits):
    """What is being looked at: a model, an image, a layer, an input channel and a filter.

    Parameters
    ----------
    model
        A `keras.Model` (Sequential or functional, nested models included) or a preset name ("vgg16",
        loaded with its offline weights).
    image
        Anything `load_image` accepts, or a sample name; default: the astronaut sample.
    layer
        The layer to start on; default: the first conv layer.
    preprocess
        How pixels become model input: a mode of `inputs.PREPROCESSING`, None (raw 0..255) or a function.
        Default: what `load_model` recorded for a preset (VGG16: "caffe"), else "none".
    max_side
        Longest side of the input fed to a fully convolutional model (fixed-size models get their own size).
    cache_budget_mb
        Memory for cached activations of recent images.
    """

    layer = traitlets.Unicode(help="Name of the current layer (one of `layers`).")
    channel = traitlets.Int(0, help="Input channel of the current filter: a channel of the previous layer's output.")
    filter = traitlets.Int(0, help="Current filter: an output channel of the current layer.")
    image = traitlets.Any(help="The current image, RGB uint8 (H, W, 3); anything `load_image` takes can be set.")
    image_name = traitlets.Unicode("", help="What the current image is called (sample name or file name).")
    normalization = traitlets.Enum(NORMALIZATIONS, "per_map", help="How maps are scaled to grey levels.")
    colormap = traitlets.Enum(COLORMAPS, "grey", help="Colour map for activation maps.")
    busy = traitlets.Bool(False, read_only=True, help="True while a forward pass runs.")
    status = traitlets.Unicode("", read_only=True, help="What the state last did, for a status line.")

    def __init__(self, model: Any = "vgg16", image: Any = None, *, layer: str | None = None,
                 preprocess: Preprocess | str = "auto", max_side: int = 512,
                 cache_budget_mb: float = DEFAULT_BUDGET_BYTES / 2**20, **kwargs: Any):
        if isinstance(model, str):
            model = load_model(model)
        self.model = model
        self.graph = ModelGraph(model)
        self.info = model_info(model)
        self._preprocess = self.info.preprocess if preprocess == "auto" else preprocess
        self.max_side = int(max_side)
        self._layers = self.graph.visualisable()
        if len(self._layers) < 2:
            raise LayerError(f"{model.name} has no layer that can be shown as maps (conv or 2-D pooling "
                             "layers with (batch, height, width, channels) output)")
        extracted = list(self._layers)
        for name in self._layers:  # the layer feeding each conv: its channels are the filter's inputs
            extracted.extend(self.graph.previous_layers(name))
        self.extractor = ActivationExtractor(self.graph, extracted, int(cache_budget_mb * 2**20))
        self._input: ModelInput | None = None
        self._input_key = ""
        first_conv = next((n for n in self._layers if self.graph.node(n).kind == "conv"), self._layers[1])
        super().__init__(**kwargs)
        self.set_image(images.sample_image("astronaut") if image is None else image,
                       name="astronaut" if image is None else None)
        self.layer = layer or first_conv

    # -- what the user can look at --------------------------------------------------------------------

    @property
    def layers(self) -> list[str]:
        """Names of the layers worth visualising, in network order (input, conv and pooling layers)."""
        return list(self._layers)

    @property
    def input_layer(self) -> str:
        return self.graph.input_name

    def describe(self) -> dict:
        """Model name, weights and input, as words for a header."""
        h, w = self.model_input.array.shape[:2]
        return dict(model=self.info.name, weights=self.info.weights, input_size=f"{w}×{h}",
                    preprocess=self.model_input.preprocess, input_note=self.model_input.note or "")

    def summary(self) -> list[dict]:
        """Layer table rows: name, type, output_shape, params, counts_as_layer."""
        return self.graph.summary()

    def layer_kind(self, layer: str | None = None) -> str:
        """'input', 'conv' or 'pool'."""
        return self.graph.node(self._name(layer)).kind

    def n_filters(self, layer: str | None = None) -> int:
        """Output channels of `layer`."""
        return int(self.graph.node(self._name(layer)).output_shape[-1])

    def n_channels(self, layer: str | None = None) -> int:
        """Input channels of `layer`'s filters (for pooling and the input: its own channels)."""
        node = self.graph.node(self._name(layer))
        if node.kind == "conv":  # a conv filter has one kernel slice per channel of the layer feeding it
            return int(self.graph.node(node.inputs[0]).output_shape[-1])
        return int(node.output_shape[-1])

    def previous_layer(self, layer: str | None = None) -> str:
        """The layer whose output feeds `layer`."""
        return self.graph.previous_layer(self._name(layer))

    def previous_layers(self, layer: str | None = None) -> list[str]:
        return self.graph.previous_layers(self._name(layer))

    def weights(self, layer: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(kernel (kh, kw, c_in, c_out), bias (c_out,)) of a conv layer, as float32 numpy arrays."""
        kernel, bias, _ = self.graph.weights(self._name(layer))
        return kernel, bias

    def fed_channel_names(self) -> tuple[str, ...] | None:
        """Which colour each channel of the fed input holds (("B", "G", "R") for VGG16's caffe input), or None."""
        return fed_channel_names(self.model_input.preprocess, self.n_channels(self.input_layer))

    def weights_note(self, layer: str | None = None) -> str:
        return self.graph.weights(self._name(layer))[2]

    @property
    def model_input(self) -> ModelInput:
        assert self._input is not None
        return self._input

    def activation(self, layer: str | None = None) -> np.ndarray:
        """(H, W, C) float32 output of `layer` for the current image (the input layer: the fed array)."""
        name = self._name(layer)
        if name == self.graph.input_name:
            return self.model_input.array
        if name not in self.extractor.layers:
            reason = self.graph.why_not_visualisable(name)
            raise LayerError(reason or f"{name} is not among the visualised layers: {', '.join(self._layers)}")
        cached = self.extractor.forward_passes
        self.set_trait("busy", True)
        try:
            result = self.extractor.get(self.model_input.array, name, key=self._input_key)
        finally:
            self.set_trait("busy", False)
        if self.extractor.forward_passes != cached:
            self.set_trait("status", f"forward pass: {self.extractor.last_forward_seconds * 1000:.0f} ms")
        return result

    @property
    def forward_passes(self) -> int:
        """How many times the network has run (tests and benchmarks check that scrubbing runs none)."""
        return self.extractor.forward_passes

    # -- changing the image ---------------------------------------------------------------------------

    def set_image(self, source: Any, name: str | None = None) -> None:
        """Make `source` the current image: anything `load_image` takes, or a sample name.

        On bad input the library's clear error is raised and the previous image stays.
        """
        if isinstance(source, str) and source in images.SAMPLE_IMAGES:
            name = name or source
            source = images.sample_image(source)
        picture = images.load_image(source)
        if name is None:
            name = str(getattr(source, "name", "") or (source if isinstance(source, str) else "image"))
        with self.hold_trait_notifications():  # observers see the new name and picture together
            self.image_name = name
            self.image = picture

    @traitlets.validate("image")
    def _validate_image(self, proposal: traitlets.Bunch) -> np.ndarray:
        # Prepare the model input before anything changes, so a bad image leaves the state as it was.
        picture = images.load_image(proposal["value"])
        prepared = prepare_input(picture, self.graph.input_shape, self._preprocess, self.max_side)
        self._input, self._input_key = prepared, input_key(prepared.array)
        return picture

    # -- validation -----------------------------------------------------------------------------------

    def _name(self, layer: str | None) -> str:
        if layer is None:
            return self.layer
        self.graph.node(layer)  # raises LayerError listing the valid names
        return layer

    @traitlets.validate("layer")
    def _validate_layer(self, proposal: traitlets.Bunch) -> str:
        name = proposal["value"]
        if name not in self._layers:
            self.graph.node(name)  # unknown name: error with the list of layers
            reason = self.graph.why_not_visualisable(name)
            raise LayerError(reason or f"{name} ({self.graph.node(name).class_name}) is not one of the "
                             f"visualised layers: {', '.join(self._layers)}")
        return name

    @traitlets.observe("layer")
    def _on_layer_change(self, change: traitlets.Bunch) -> None:
        with self.hold_trait_notifications():  # views redraw once, with the clamped indices
            self.filter = min(self.filter, self.n_filters() - 1)
            self.channel = min(self.channel, self.n_channels() - 1)

    @traitlets.validate("filter")
    def _validate_filter(self, proposal: traitlets.Bunch) -> int:
        return _clamp(proposal["value"], self.n_filters() - 1) if self.layer else 0

    @traitlets.validate("channel")
    def _validate_channel(self, proposal: traitlets.Bunch) -> int:
        return _clamp(proposal["value"], self.n_channels() - 1) if self.layer else 0

    # -- what one filter does, and the parameter totals (LayerSummary, FilterEffect) ------------------

    def filter_effect(self, filter: int | None = None, channels: Sequence[int] | None = None,
                      top_k: int = 3) -> FilterBreakdown:
        """The current layer's `filter` (default: the current one) taken apart by input channel.

        channels : input channels to show, in order; None shows the `top_k` largest contributors (ranked by
        mean |partial sum|, see `effects.RANKING`). The breakdown's `output` equals `activation()[..., filter]`
        (computed here from the previous layer's output, the kernel, the bias and the layer's own activation).
        LayerError for the input and pooling layers, which have no filters.
        """
        name = self.layer
        node = self.graph.node(name)
        if node.kind != "conv":
            what = {"input": "the model input", "pool": "a pooling layer"}.get(node.kind, f"a {node.class_name}")
            convs = [n for n in self._layers if self.layer_kind(n) == "conv"]
            listed = ", ".join(convs[:4]) + (f" and {len(convs) - 4} more" if len(convs) > 4 else "")
            raise LayerError(f"{name} is {what}: it has no filters to take apart. A filter's effect is shown "
                             f"for conv layers: {listed}")
        config = node.layer.get_config()
        if config.get("data_format", "channels_last") != "channels_last":
            raise LayerError(f"{name} is channels_first; filter effects are computed for channels_last layers")
        f = _clamp(self.filter if filter is None else filter, self.n_filters(name) - 1)
        if filter is not None and f != filter:
            raise LayerError(f"{name} has {self.n_filters(name)} filters (0..{self.n_filters(name) - 1}); "
                             f"got filter {filter!r}")
        previous = self.previous_layer(name)
        kernel, bias = self.weights(name)
        transposed = node.class_name == "Conv2DTranspose"
        try:
            result = break_down_filter(
                self.activation(previous), kernel, bias, f, channels=channels, top_k=top_k,
                strides=config.get("strides", 1), padding=config.get("padding", "valid"),
                dilation=config.get("dilation_rate", 1), activation=activation_name(config.get("activation")),
                transposed=transposed, output_padding=config.get("output_padding") if transposed else None)
        except CnnvizError as err:
            raise LayerError(f"{name}, filter {f}: {err}") from None
        notes = [] if node.class_name == "Conv2D" else [self.weights_note(name)]
        output = result.output
        if not result.activation_reproduced:
            output = self.activation(name)[..., f]
            notes.append(f"the activation {result.activation!r} is not reproduced per filter; the output shown "
                         "is the layer's own")
        if previous == self.input_layer:
            labels = input_channel_labels(self.model_input.preprocess, kernel.shape[2])
            labels = tuple(labels[c] for c in result.channels)
            notes.insert(0, describe_preprocessing(self.model_input.preprocess, kernel.shape[2]))
        else:
            labels = tuple(f"{previous} channel {c}" for c in result.channels)
        return dataclasses.replace(result, layer=name, layer_type=node.class_name, previous_layer=previous,
                                   channel_labels=labels, note="; ".join(notes), output=output)

    def parameter_totals(self) -> dict:
        """total, trainable and non_trainable parameter counts, and counted_rows: summary rows with parameters."""
        total = int(self.model.count_params())
        trainable = int(sum(int(np.prod(w.shape)) for w in self.model.trainable_weights))
        counted = sum(1 for row in self.summary() if row["counts_as_layer"])
        return dict(total=total, trainable=trainable, non_trainable=total - trainable, counted_rows=counted)


def _clamp(value: int, highest: int) -> int:
    return max(0, min(int(value), highest))
