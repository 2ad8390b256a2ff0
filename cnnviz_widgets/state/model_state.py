"""`ModelState`: the one source of truth that every control and view of cnnviz_widgets binds to.

It holds the model, the image and the current layer / input channel / filter, validates what is set (a
layer must exist; indices are clamped to the layer's shape), and hands out the computed arrays by calling
the compute core. It knows nothing of widgets: views observe its traits.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import traitlets

from cnnviz_widgets.attribution.classes import Target, TopClasses
from cnnviz_widgets.attribution.explainer import Explainer, Explanation
from cnnviz_widgets.errors import CnnvizError, LayerError
from cnnviz_widgets.lessons.channel_stats import CHANNEL_ORDERS, channel_statistics, order_channels
from cnnviz_widgets.lessons.filter_effect import FilterBreakdown
from cnnviz_widgets.lessons.layer_breakdowns import layer_filter_effect, layer_pixel_breakdown
from cnnviz_widgets.lessons.pixel_breakdown import PixelBreakdown
from cnnviz_widgets.lessons.receptive_field import ReceptiveField, receptive_field
from cnnviz_widgets.lru import LruCache
from cnnviz_widgets.network.extractor import ActivationExtractor, input_key
from cnnviz_widgets.network.graph import ModelGraph, short_list
from cnnviz_widgets.network.loading import load_model, model_info
from cnnviz_widgets.network.memory import check_fits
from cnnviz_widgets.pictures import images
from cnnviz_widgets.pictures.preprocessing import (
    ModelInput,
    Preprocess,
    fed_channel_names,
    prepare_input,
)
from cnnviz_widgets.pictures.render import COLORMAPS, NORMALIZATIONS

RECENT_IMAGES = 3
"""Prepared inputs kept for going back to a recent image (3 × 3.8 MB at 512×512)."""
_STATISTICS_KEPT = 64  # layers' channel statistics kept (three (C,) arrays each: a few kB)


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
        How pixels become model input: a mode of `preprocessing.PREPROCESSING`, None (raw 0..255) or a function.
        Default: what `load_model` recorded for a preset (VGG16: "caffe"), else "none".
    max_side
        Longest side of the input fed to a fully convolutional model (fixed-size models get their own size).
    cache_budget_mb
        Memory for cached activations of recent images. Default: 640 MB, or a quarter of the memory this
        session has left where that is less (a Binder container); `cache_note` then says so.
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
    channel_order = traitlets.Enum(CHANNEL_ORDERS, "index", help="Order of a layer's channels in the activation "
                                   "grid: by index, or strongest first by max, mean or fewest zeros.")
    explained_class = traitlets.Int(None, allow_none=True, help="Class explained by class activation maps (an "
                                    "index of the model's output); None: the top prediction for the image.")
    class_names = traitlets.Tuple(help="One name per class of the model's output; empty: ImageNet's names for "
                                       "1000 classes, 'class i' otherwise. ModelError if the count is wrong.")

    def __init__(self, model: Any = "vgg16", image: Any = None, *, layer: str | None = None,
                 preprocess: Preprocess | str = "auto", max_side: int = 512,
                 cache_budget_mb: float | None = None, **kwargs: Any):
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
        budget = None if cache_budget_mb is None else int(cache_budget_mb * 2**20)
        self.extractor = ActivationExtractor(self.graph, extracted, budget)
        height, width, _ = self.graph.input_shape
        # A fully convolutional model refuses images its pooling would shrink to nothing: find that size once.
        self._min_side = 1 if height and width else self.extractor.min_input_side()
        self._staged: tuple[np.ndarray, tuple[ModelInput, str]] | None = None
        self._input: ModelInput | None = None
        self._input_key = ""
        self._prepared: LruCache[tuple[ModelInput, str]] = LruCache(RECENT_IMAGES)
        self._statistics: LruCache[dict[str, np.ndarray]] = LruCache(_STATISTICS_KEPT)  # (layer, image key)
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

    @property
    def cache_note(self) -> str | None:
        """A sentence for the user where the activation cache was made smaller to fit this session's memory."""
        return self.extractor.budget_note

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

    @property
    def image_key(self) -> str:
        """A content hash of the fed array: the same image (at the same size and preprocessing) gives the same
        key, so views can keep what they drew for it and show it again when the image comes back."""
        return self._input_key

    def activation(self, layer: str | None = None) -> np.ndarray:
        """(H, W, C) float32 output of `layer` for the current image (the input layer: the fed array)."""
        return self._activation_of(self.model_input, self._input_key, layer)

    def _activation_of(self, model_input: ModelInput, key: str, layer: str | None) -> np.ndarray:
        name = self._name(layer)
        if name == self.graph.input_name:
            return model_input.array
        if name not in self.extractor.layers:
            reason = self.graph.why_not_visualisable(name)
            raise LayerError(reason or f"{name} is not among the visualised layers: {short_list(self._layers)}")
        extractor = self.extractor
        cached = extractor.forward_passes, extractor.partial_passes
        self.set_trait("busy", True)
        try:
            result = extractor.get(model_input.array, name, key=key)
        finally:
            self.set_trait("busy", False)
        if extractor.forward_passes != cached[0]:
            self.set_trait("status", f"forward pass: {extractor.last_forward_seconds * 1000:.0f} ms")
        elif extractor.partial_passes != cached[1]:  # a part of the network, from a layer the cache kept
            self.set_trait("status", f"partial pass from {extractor.last_pass[0]} to {extractor.last_pass[1]}: "
                                     f"{extractor.last_forward_seconds * 1000:.0f} ms")
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
        # Prepared before any trait changes: an image the model cannot take leaves name and picture as they were.
        self._staged = (picture, self._prepare_keyed(picture))
        if name is None:
            name = str(getattr(source, "name", "") or (source if isinstance(source, str) else "image"))
        try:
            with self.hold_trait_notifications():  # observers see the new name and picture together
                self.image_name = name
                self.image = picture
        finally:
            self._staged = None

    @traitlets.validate("image")
    def _validate_image(self, proposal: traitlets.Bunch) -> np.ndarray:
        # Prepare the model input before anything changes, so a bad image leaves the state as it was.
        staged = self._staged
        if staged is not None and proposal["value"] is staged[0]:
            picture, (prepared, key) = staged
        else:
            picture = images.load_image(proposal["value"])
            prepared, key = self._prepare_keyed(picture)
        self._input, self._input_key = prepared, key
        return picture

    def prepare(self, picture: np.ndarray) -> ModelInput:
        """The model input for an RGB uint8 picture (size policy, channels, preprocessing); ImageError if unusable.

        Kept for the last few pictures, so preparing one again costs nothing (`feed.ModelFeed`).
        """
        return self._prepare_keyed(picture)[0]

    @property
    def preprocessing(self) -> Preprocess:
        """How a picture's RGB values become the model's input: a Keras mode name, a callable, or None."""
        return self._preprocess

    def _prepare_keyed(self, picture: np.ndarray) -> tuple[ModelInput, str]:
        """`_prepare`'s model input and the cache key of its fed array.

        The last few are kept by the picture's content: coming back to an image skips resizing, preprocessing
        and hashing the fed array (a custom preprocess function is always run: it may not be repeatable).
        """
        def prepare() -> tuple[ModelInput, str]:
            prepared = prepare_input(picture, self.graph.input_shape, self._preprocess, self.max_side,
                                     min_side=self._min_side)
            return prepared, input_key(prepared.array)

        if callable(self._preprocess):
            return prepare()
        return self._prepared.get((input_key(picture), self.max_side, self._preprocess), prepare)

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
                             f"visualised layers: {short_list(self._layers)}")
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

    # -- what one filter does, one output value, the input it sees, each channel's statistics ------------

    def filter_effect(self, filter: int | None = None, channels: Sequence[int] | None = None,
                      top_k: int = 3) -> FilterBreakdown:
        """The current layer's `filter` (default: the current one) taken apart by input channel.

        channels : input channels to show, in order; None shows the `top_k` largest contributors (ranked by
        mean |partial sum|, see `filter_effect.RANKING`). The breakdown's `output` equals `activation()[..., filter]`
        (computed from the previous layer's output, the kernel, the bias and the layer's own activation: see
        `layer_breakdowns.layer_filter_effect`). LayerError for the input and pooling layers, which have no filters.
        """
        return layer_filter_effect(self, self.layer, self.filter if filter is None else filter, channels=channels,
                                   top_k=top_k)

    def parameter_totals(self) -> dict:
        """total, trainable and non_trainable parameter counts, and counted_rows: summary rows with parameters."""
        return self.graph.parameter_totals()

    def pixel_breakdown(self, row: int, col: int, filter: int | None = None, top_k: int = 8) -> PixelBreakdown:
        """The current layer's output at (row, col) of `filter` (default: the current one), taken apart.

        Every input channel's patch · kernel slice, ranked by |partial sum|; the `top_k` largest are kept with
        their patches. `output` equals ``activation()[row, col, filter]``. LayerError for layers that do not
        slide a kernel over their input (input, pooling, transposed convolutions).
        """
        return layer_pixel_breakdown(self, self.layer, self.filter if filter is None else filter, row, col,
                                     top_k=top_k)

    def receptive_field(self, layer: str | None = None) -> ReceptiveField:
        """Which pixels of the fed input can change an output pixel of `layer` (see `lessons.receptive_field`)."""
        h, w = self.model_input.array.shape[:2]
        return receptive_field(self.graph, self._name(layer), (h, w))

    def receptive_box(self, row: int, col: int, layer: str | None = None) -> tuple[int, int, int, int]:
        """(y0, x0, y1, x1), end-exclusive box of `model_input.picture` seen by `layer`'s output pixel (row, col)."""
        return self.receptive_field(layer).box(row, col)

    def channel_statistics(self, layer: str | None = None) -> dict[str, np.ndarray]:
        """max, mean and fraction of zeros of each channel of `layer`'s output for the current image, (C,) each."""
        name = self._name(layer)
        return self._statistics.get((name, self._input_key), lambda: channel_statistics(self.activation(name)))

    def channel_ranking(self, layer: str | None = None, by: str | None = None) -> list[int]:
        """`layer`'s channel indices in the order `by` (default: `channel_order`), strongest first."""
        return [int(c) for c in order_channels(self.channel_statistics(layer), by or self.channel_order)]


    # -- why the network decides: predictions, Grad-CAM, saliency, a second image (cnnviz_widgets.explain) --


    @property
    def explainer(self) -> Explainer:
        """Predictions, Grad-CAM and saliency for this state's model (built on first use)."""
        if self.__dict__.get("_explainer") is None:
            self._explainer = Explainer(self.graph, activations=self._cached_activation)
            self._explainer.paths.preprocessing = self._preprocess  # baselines: "black" is black as fed
        return self._explainer

    def _cached_activation(self, x: np.ndarray, key: str | None, layer: str) -> np.ndarray | None:
        """`layer`'s output for the prepared input `x` from the activation cache (one pass per image), or None
        for a layer the cache does not hold: the explainer then runs from the input."""
        if layer not in self.extractor.layers:
            return None
        return self.extractor.get(x, layer, key=key)

    def has_classifier(self) -> bool:
        """True when the model ends in a classifier (output (batch, classes)): predictions can be shown."""
        return self.explainer.has_classifier

    def set_class_names(self, names: Sequence[str] | None) -> None:
        """Name the model's classes (None: ImageNet's for 1000 classes, "class i" otherwise)."""
        self.class_names = tuple(names or ())

    def predictions(self, top: int = 5) -> TopClasses:
        """The `top` most likely classes for the current image (one forward pass per image, then cached).

        ModelError (saying why) for a model without a classifier, e.g. VGG16 with the bsds500 weights.
        """
        with self._explaining("prediction"):
            return self.explainer.predict(self.model_input.array, top, key=self._weights_key())

    def explain_target(self, class_index: int | None = None, of: str | None = None) -> Target:
        """What the class activation maps explain now.

        of : "class" (the default with a classifier): class `class_index`, else `explained_class`, else the top
        prediction. "filter" (the default without one, e.g. VGG16 with the bsds500 weights): the mean
        activation of the current filter of the current layer (LayerError on the input layer).
        """
        explainer = self.explainer
        if of is None:
            of = "class" if explainer.has_classifier or class_index is not None else "filter"
        if of == "class":
            chosen = self.explained_class if class_index is None else class_index
            if chosen is None:
                with self._explaining("prediction"):
                    return explainer.class_target(self.model_input.array, None, key=self._weights_key())
            return explainer.class_target(self.model_input.array, chosen, key=self._weights_key())
        if of != "filter":
            raise CnnvizError(f"of must be 'class' or 'filter'; got {of!r}")
        if self.layer == self.input_layer:
            raise LayerError(f"{self.layer} is the model input: pick a conv or pooling layer, whose current filter's "
                             "mean activation is what the map explains")
        return explainer.filter_target(self.layer, self.filter)

    def explanation(self, method: str = "grad-cam", class_index: int | None = None, layer: str | None = None,
                    score: str | None = None, of: str | None = None, **options: Any) -> Explanation:
        """`method` (`attribution.catalogue.METHODS`) on `explain_target(class_index, of)` for the current image.

        layer : the conv layer a CAM method weighs; default the last conv layer (before the explained filter's
        layer for a filter). score : for a class, "logit" (default where reachable) or "probability".
        options : the method's own (`cw.attribution.catalogue.method(name).options`, e.g. ``samples=`` for
        SmoothGrad); an option the method has not is refused with the list of those it has.
        """
        target = self.explain_target(class_index, of)
        fed = self.model_input.array
        # A gradient pass keeps the layers' outputs for the way back and makes a gradient of each: about three
        # times what the forward pass returns.
        check_fits(3 * self.extractor.output_bytes(fed.shape), f"{method} on a {fed.shape[1]}×{fed.shape[0]} input",
                   "choose a smaller max_side, or a smaller image")
        with self._explaining("Grad-CAM" if method == "grad-cam" else method):
            return self.explainer.explain(self.model_input.array, target, method, layer=layer, score=score,
                                          key=self._weights_key(), **options)

    def prepare_image(self, source: Any) -> ModelInput:
        """Another image (anything `load_image` takes, or a sample name) prepared as this model's input."""
        if isinstance(source, str) and source in images.SAMPLE_IMAGES:
            source = images.sample_image(source)
        return self.prepare(images.load_image(source))

    def activation_for(self, model_input: ModelInput, layer: str | None = None) -> np.ndarray:
        """(H, W, C) float32 output of `layer` for another prepared image (see `prepare_image`).

        Shares the activation cache with the current image, whose budget holds two images' worth, so comparing
        two images runs each one through the network once.
        """
        return self._activation_of(model_input, input_key(model_input.array), layer)

    @traitlets.validate("class_names")
    def _validate_class_names(self, proposal: traitlets.Bunch) -> tuple:
        names = tuple(str(name) for name in proposal["value"])
        self.explainer.set_class_names(names or None)  # raises before anything changes on a wrong count
        return names

    @traitlets.validate("explained_class")
    def _validate_explained_class(self, proposal: traitlets.Bunch) -> int | None:
        value = proposal["value"]
        if value is not None:
            self.explainer.class_target(self.model_input.array, value)  # a classifier and an index in range
        return value

    def _weights_key(self) -> str:
        """The current image's key for results that also depend on the weights (a TrainingState adds the step)."""
        return self._input_key

    @contextlib.contextmanager
    def _explaining(self, what: str) -> Iterator[None]:
        """busy while the network runs for an explanation; the status says how long it took."""
        explainer = self.explainer
        passes = explainer.forward_passes + explainer.partial_passes + explainer.gradient_passes
        self.set_trait("busy", True)
        try:
            yield
        finally:
            self.set_trait("busy", False)
        if explainer.forward_passes + explainer.partial_passes + explainer.gradient_passes != passes:
            self.set_trait("status", f"{what}: {explainer.last_seconds * 1000:.0f} ms")


def _clamp(value: int, highest: int) -> int:
    return max(0, min(int(value), highest))
