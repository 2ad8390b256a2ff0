"""A Keras model's structure: every layer, its output shape, what feeds it, and its kernels.

A model is flattened once into a `ModelGraph`: every layer (nested models included, so a Sequential holding a
VGG16 base exposes `block1_conv1`) with its output shape and the layers that feed it, plus a single symbolic
graph from which `extractor` builds its one multi-output model. Depthwise, separable and grouped kernels are
expanded to the plain (kh, kw, in, out) form the lessons show.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cnnviz_widgets.errors import LayerError, ModelError
from cnnviz_widgets.lru import LruCache
from cnnviz_widgets.network.backend import keras
from cnnviz_widgets.network.loading import PRESETS
from cnnviz_widgets.network.segments import Segments

CONV_TYPES = ("Conv2D", "DepthwiseConv2D", "SeparableConv2D", "Conv2DTranspose")


POOL_TYPES = ("MaxPooling2D", "AveragePooling2D")


INPUT_TYPE = "InputLayer"


_KERNELS_KEPT = 4  # expanded depthwise / separable / grouped kernels kept by a ModelGraph (see _expanded)
_SIZES_KEPT = 16  # input sizes whose every output shape a ModelGraph keeps (see output_shapes)


@dataclass
class LayerNode:
    """One layer of the flattened model.

    ``name`` is unique in the graph (a nested layer whose name clashes is qualified as ``outer/inner``);
    ``inputs`` names the layers whose outputs feed it, in call order.
    """

    name: str
    layer: Any
    class_name: str
    output_shape: tuple
    params: int
    inputs: list[str] = field(default_factory=list)
    tensor: Any = None  # symbolic output in the flattened graph

    @property
    def kind(self) -> str:
        if self.class_name == INPUT_TYPE:
            return "input"
        if self.class_name in CONV_TYPES:
            return "conv"
        if self.class_name in POOL_TYPES:
            return "pool"
        return "other"

    @property
    def is_map(self) -> bool:
        """True when the output is a stack of 2-D maps, (batch, H, W, C)."""
        return len(self.output_shape) == 4


class ModelGraph:
    """A Keras model flattened into named layers and one symbolic graph (nested models expanded).

    The layers are called again on a fresh `keras.Input`, in graph order, so every layer's output
    (inner layers of nested models too) is a tensor of one graph; `activations.py` builds its single
    multi-output extractor from it. The model's own layer objects (and weights) are reused, not copied.
    """

    def __init__(self, model: Any):
        k = keras()
        if not isinstance(model, k.Model):
            raise ModelError(f"expected a keras.Model or a preset name ({', '.join(PRESETS)}), "
                             f"got {type(model).__name__}")
        if not isinstance(model, k.Sequential) and not hasattr(model, "_inputs_struct"):
            raise ModelError(f"{model.name} is a subclassed Keras model without a layer graph; "
                             "build it as a Sequential or functional model to inspect its layers")
        try:
            inputs = model.inputs
        except (AttributeError, ValueError):
            raise ModelError(f"{model.name} has no defined input yet: build it (e.g. model.build(shape)) "
                             "or give its first layer an input shape") from None
        if len(inputs) != 1:
            raise ModelError(f"{model.name} has {len(inputs)} inputs; cnnviz_widgets shows models "
                             "with one image input")
        shape = tuple(inputs[0].shape)
        if len(shape) != 4:
            one_d = [layer.name for layer in model.layers if "1D" in layer.__class__.__name__]
            why = f" ({', '.join(one_d[:3])}: 1-D layers are not supported)" if one_d else ""
            raise ModelError(f"{model.name} takes input of shape {shape}{why}; cnnviz_widgets shows models "
                             "whose input is an image batch (batch, height, width, channels)")
        self.model = model
        self.nodes: dict[str, LayerNode] = {}
        self._kernels: LruCache[tuple[tuple[np.ndarray, ...], np.ndarray]] = LruCache(_KERNELS_KEPT)
        self._output_shapes: LruCache[dict[str, tuple]] = LruCache(_SIZES_KEPT)
        self.input_tensor = k.Input(batch_shape=shape, dtype=inputs[0].dtype)
        outputs = self._trace(model, [self.input_tensor], sources=[], prefix="")
        self.output_tensors = [tensor for tensor, _ in outputs]
        self.input_name = next(iter(self.nodes))
        self.segments = Segments(self)
        """Sub-models of this graph, from any layer's output to others', built once (`network.segments`)."""

    # -- public queries -------------------------------------------------------------------------------

    @property
    def input_shape(self) -> tuple:
        """(height, width, channels) of the model input; height/width are None for any size."""
        return tuple(self.input_tensor.shape[1:])

    def node(self, name: str) -> LayerNode:
        try:
            return self.nodes[name]
        except KeyError:
            raise LayerError(f"no layer named {name!r} in {self.model.name}.{closest_names(name, self.nodes)} "
                             f"Layers shown: {short_list(self.visualisable())}") from None

    def visualisable(self) -> list[str]:
        """Names of the layers worth showing, in network order: the input, conv and 2-D pooling layers."""
        return [n.name for n in self.nodes.values() if n.is_map and n.kind in ("input", "conv", "pool")]

    def why_not_visualisable(self, name: str) -> str | None:
        """None if the layer can be shown as maps, else the reason in words."""
        node = self.node(name)
        if not node.is_map:
            return (f"{name} ({node.class_name}) is not visualisable because its output {node.output_shape} "
                    "is not a stack of 2-D maps (batch, height, width, channels)")
        return None

    def previous_layers(self, name: str) -> list[str]:
        """All layers whose outputs feed `name`, in call order."""
        return list(self.node(name).inputs)

    def previous_layer(self, name: str) -> str:
        """The single layer whose output feeds `name`."""
        node = self.node(name)
        if node.kind == "input":
            raise LayerError(f"{name} is the model input: no layer feeds it")
        if len(node.inputs) != 1:
            raise LayerError(f"{name} ({node.class_name}) has {len(node.inputs)} inputs "
                             f"({', '.join(node.inputs)}), so it has no single previous layer; "
                             "use previous_layers() to get all of them")
        return node.inputs[0]

    def summary(self) -> list[dict]:
        """The layer table, one row per layer (inner layers of nested models included), in network order.

        Each row: name, type, output_shape (with None for the batch), params, counts_as_layer (True for
        the rows with parameters: those are what the "16" in VGG16 counts).
        """
        return [dict(name=n.name, type=n.class_name, output_shape=n.output_shape, params=n.params,
                     counts_as_layer=n.params > 0) for n in self.nodes.values()]

    def parameter_totals(self) -> dict:
        """total, trainable and non_trainable parameter counts, and counted_rows: summary rows with parameters."""
        total = int(self.model.count_params())
        trainable = int(sum(int(np.prod(w.shape)) for w in self.model.trainable_weights))
        counted = sum(1 for row in self.summary() if row["counts_as_layer"])
        return dict(total=total, trainable=trainable, non_trainable=total - trainable, counted_rows=counted)

    def output_shapes(self, height: int, width: int) -> dict[str, tuple]:
        """Every layer's output shape, batch left out, for one (height, width) input: the sizes a model that
        takes any size gives this picture. Keras' shape inference, no forward pass; cached per size. Empty if
        the model refuses that size (the forward pass then says why)."""
        key = (int(height), int(width))
        shapes = self._output_shapes.peek(key)
        if shapes is None:
            k = keras()
            names = [name for name in self.nodes if name != self.input_name]
            try:
                specs = self.segments.model(None, names, name="cnnviz_shapes").compute_output_spec(
                    k.KerasTensor((1, *key, self.input_shape[-1])))
            except (ValueError, TypeError):
                return {}
            specs = specs if isinstance(specs, (list, tuple)) else [specs]
            shapes = {self.input_name: (*key, self.input_shape[-1]),
                      **{name: tuple(spec.shape[1:]) for name, spec in zip(names, specs, strict=True)}}
        self._output_shapes.put(key, shapes)
        return dict(shapes)

    def weights(self, name: str) -> tuple[np.ndarray, np.ndarray, str]:
        """The layer's kernel as an equivalent regular convolution, its bias, and a note.

        Returns (kernel (kh, kw, c_in, c_out) float32, bias (c_out,) float32, note). Depthwise and separable
        kernels are expanded to the full (kh, kw, c_in, c_out) kernel of the same linear map; a transposed
        convolution's kernel is given as (kh, kw, c_in, c_out) with a note that it scatters rather than
        correlates. A layer without bias gets zeros.
        """
        node = self.node(name)
        if node.kind != "conv":
            raise LayerError(f"{name} ({node.class_name}) has no convolution kernel: weights are shown for "
                             f"{', '.join(CONV_TYPES)} layers")
        layer = node.layer
        groups = int(getattr(layer, "groups", 1) or 1)
        if node.class_name == "Conv2D" and groups > 1:
            kernel = self._expanded(name, (np.asarray(layer.kernel),), lambda k: _expand_grouped(k, groups))
            note = (f"Conv2D in {groups} groups: each filter sees the input channels of its group; shown as the "
                    "equivalent full kernel (zero for the channels a filter does not see)")
        elif node.class_name == "Conv2D":
            kernel = np.asarray(layer.kernel)
            note = "Conv2D kernel"
        elif node.class_name == "DepthwiseConv2D":
            kernel = self._expanded(name, (np.asarray(layer.kernel),), _expand_depthwise)
            note = ("DepthwiseConv2D: each filter sees one input channel; shown as the equivalent full kernel "
                    "(zero for the channels a filter does not see)")
        elif node.class_name == "SeparableConv2D":
            kernel = self._expanded(name, (np.asarray(layer.depthwise_kernel), np.asarray(layer.pointwise_kernel)),
                                    _combine_separable)
            note = "SeparableConv2D: depthwise then pointwise kernels, shown combined as one full kernel"
        else:  # Conv2DTranspose stores (kh, kw, c_out, c_in)
            kernel = np.transpose(np.asarray(layer.kernel), (0, 1, 3, 2))
            note = ("Conv2DTranspose: each input value scatters this kernel into the output "
                    "(a transposed convolution), rather than the output correlating the input with it")
        kernel = np.ascontiguousarray(kernel, dtype=np.float32)
        if getattr(layer, "use_bias", False):
            bias = np.asarray(layer.bias, dtype=np.float32)
        else:
            bias = np.zeros(kernel.shape[3], np.float32)
        return kernel, bias, note

    def _expanded(self, name: str, stored: tuple[np.ndarray, ...], expand: Callable) -> np.ndarray:
        """`expand(*stored)` as a read-only float32 array, kept for the last few layers.

        An expanded kernel is large (Xception's block14_sepconv2: 3×3×1536×2048, 113 MB, ~0.4 s to form) and
        a slider step asks for it again; the stored arrays are compared (milliseconds) so that weights changed
        in place, e.g. by training, are never served stale.
        """
        cached = self._kernels.peek(name)
        if cached is not None and all(a.shape == b.shape and np.array_equal(a, b)
                                      for a, b in zip(cached[0], stored, strict=True)):
            self._kernels.touch(name)
            return cached[1]
        kernel = np.ascontiguousarray(expand(*stored), dtype=np.float32)
        kernel.flags.writeable = False  # shared by every caller: none may change it
        self._kernels.put(name, (stored, kernel))
        return kernel

    # -- tracing ---------------------------------------------------------------------------------------
    # Each step returns (tensor, name of the node that produced it). A nested model's input layer passes
    # the outer tensor through, so it gets no node: the first inner conv's previous layer is the outer
    # layer that really feeds it.

    def _trace(self, model: Any, inputs: list, sources: list[str], prefix: str) -> list[tuple[Any, str]]:
        if isinstance(model, keras().Sequential):
            if sources:
                produced = (inputs[0], sources[0])
            else:
                first = getattr(model, "_layers", [None])[0]  # Sequential keeps its InputLayer out of .layers
                name = first.name if first.__class__.__name__ == INPUT_TYPE else f"{model.name}_input"
                produced = (inputs[0], self._record(name, first, INPUT_TYPE, inputs[0], [], prefix, 0))
            for layer in model.layers:
                outputs = self._call(layer, [produced], prefix)
                produced = outputs[0]
            return [produced]
        return self._trace_functional(model, inputs, sources, prefix)

    def _trace_functional(self, model: Any, inputs: list, sources: list[str],
                          prefix: str) -> list[tuple[Any, str]]:
        # The graph is read from Keras' own nodes, in the order Keras runs them (deepest first), not from
        # get_config(): a model class may override that (KerasHub backbones return their constructor
        # arguments), and raw ops (`x + y`, `keras.ops.*` calls) are nodes too, though not layers.
        try:
            nodes_by_depth = model._nodes_by_depth
            model_inputs = list(model.inputs)
        except (AttributeError, ValueError) as err:
            raise ModelError(f"cannot read the layer graph of {model.name}: {err}") from err
        produced: dict[int, tuple[Any, str]] = {}  # id of a tensor of `model` -> (flattened tensor, its node)
        tensors: dict[int, Any] = {}  # the same, tensors only (what Keras' fill_in takes)
        for i, tensor in enumerate(model_inputs):
            layer = tensor._keras_history[0]  # the InputLayer
            name = sources[i] if sources else self._record(layer.name, layer, INPUT_TYPE, inputs[i], [], prefix, 0)
            produced[id(tensor)], tensors[id(tensor)] = (inputs[i], name), inputs[i]
        for depth in sorted(nodes_by_depth, reverse=True):
            for node in nodes_by_depth[depth]:
                if node.operation is None or node.is_input:
                    continue
                if any(id(t) not in produced for t in node.input_tensors):
                    continue  # not fed by the model input: Keras skips it as well
                inbound = [produced[id(t)] for t in node.input_tensors]
                args, kwargs = node.arguments.fill_in(tensors)
                for original, out in zip(node.outputs, self._call(node.operation, inbound, prefix, args, kwargs),
                                         strict=False):
                    produced[id(original)], tensors[id(original)] = out, out[0]
        try:
            return [produced[id(tensor)] for tensor in model.outputs]
        except KeyError:
            raise ModelError(f"cannot read the layer graph of {model.name}: an output is not computed from "
                             "its input") from None

    def _call(self, layer: Any, inbound: list[tuple[Any, str]], prefix: str, args: Any = None,
              kwargs: dict | None = None) -> list[tuple[Any, str]]:
        tensors = [tensor for tensor, _ in inbound]
        sources = [name for _, name in inbound]
        if isinstance(layer, keras().Model):
            return self._trace(layer, tensors, sources, f"{prefix}{layer.name}/")
        run = _depthwise_stand_in(layer) or layer
        out = run(tensors[0] if len(tensors) == 1 else tensors) if args is None else run(*args, **(kwargs or {}))
        outs = keras().tree.flatten(out)
        # a raw op has no weights (and no count_params); an unbuilt layer has none yet
        params = int(layer.count_params()) if getattr(layer, "built", False) and hasattr(layer, "count_params") else 0
        name = self._record(layer.name, layer, layer.__class__.__name__, outs[0], sources, prefix, params)
        return [(tensor, name) for tensor in outs]

    def _record(self, name: str, layer: Any, class_name: str, tensor: Any, sources: list[str],
                prefix: str, params: int) -> str:
        unique = name if name not in self.nodes else f"{prefix}{name}"
        while unique in self.nodes:  # a shared layer called again, or a clash the prefix does not solve
            unique = f"{unique}_{len(self.nodes)}"
        self.nodes[unique] = LayerNode(name=unique, layer=layer, class_name=class_name,
                                       output_shape=tuple(tensor.shape), params=params,
                                       inputs=list(sources), tensor=tensor)
        return unique


def closest_names(name: str, names: Any, n: int = 5) -> str:
    """The hint " Did you mean a, b?": up to `n` of `names` closest to `name` (difflib), or "" if none is."""
    names = list(names)
    close = difflib.get_close_matches(str(name), names, n=n, cutoff=0.6)
    close += [other for other in names if str(name).lower() in other.lower() and other not in close]
    return f" Did you mean {', '.join(close[:n])}?" if close else ""


def short_list(names: Any, limit: int = 12) -> str:
    """Names joined by commas; a long list is cut to its first and last few, with the count, never dumped."""
    names = list(names)
    if len(names) <= limit:
        return ", ".join(names)
    head, tail = names[: limit - 3], names[-2:]
    return f"{', '.join(head)}, …, {', '.join(tail)} ({len(names)} in all)"


def _depthwise_stand_in(layer: Any) -> Any:
    """A layer computing `layer`'s output as a depthwise convolution, for a Conv2D with one group per input channel
    (ConvNeXt's "depthwise" convs), else None.

    TensorFlow runs grouped convolutions on the CPU through XLA, whose gradient of them is slow: a Grad-CAM step
    on ConvNeXtTiny took 3-20 s. The same map as a depthwise convolution takes milliseconds. It reads the
    layer's own variables when called, so weights changed later (training) are used.
    """
    if layer.__class__.__name__ != "Conv2D" or int(getattr(layer, "groups", 1) or 1) == 1:
        return None
    kernel_shape = tuple(layer.kernel.shape)  # (kh, kw, c_in / groups, filters)
    if kernel_shape[2] != 1 or getattr(layer, "data_format", "channels_last") != "channels_last":
        return None
    k = keras()

    class _GroupedAsDepthwise(k.layers.Layer):
        def call(self, inputs: Any) -> Any:
            kh, kw, _, filters = kernel_shape
            groups = int(layer.groups)
            # (kh, kw, 1, groups*m) and (kh, kw, groups, m) hold the same numbers in the same order
            kernel = k.ops.reshape(layer.kernel, (kh, kw, groups, filters // groups))
            out = k.ops.depthwise_conv(inputs, kernel, strides=layer.strides, padding=layer.padding,
                                       data_format="channels_last", dilation_rate=layer.dilation_rate)
            if layer.use_bias:
                out = out + layer.bias
            return layer.activation(out)

        def compute_output_shape(self, input_shape: Any) -> Any:
            return layer.compute_output_shape(input_shape)

    return _GroupedAsDepthwise(name=f"{layer.name}_as_depthwise")


def _combine_separable(depthwise: np.ndarray, pointwise: np.ndarray) -> np.ndarray:
    """(kh, kw, c_in, m) depthwise and (1, 1, c_in*m, c_out) pointwise kernels -> (kh, kw, c_in, c_out).

    full[h, w, i, o] = sum_j depthwise[h, w, i, j] * pointwise[i*m + j, o]: a broadcast product. (An einsum with
    the mostly-zero expanded depthwise kernel took 15 s on Xception's block14_sepconv2.)
    """
    c_in, multiplier = depthwise.shape[2:]
    per_input = pointwise[0, 0].reshape(c_in, multiplier, -1)  # (c_in, m, c_out)
    if multiplier == 1:
        return depthwise[:, :, :, 0, None] * per_input[None, None, :, 0, :]
    return np.einsum("hwij,ijo->hwio", depthwise, per_input)


def _expand_grouped(kernel: np.ndarray, groups: int) -> np.ndarray:
    """(kh, kw, c_in / groups, c_out) grouped kernel -> (kh, kw, c_in, c_out); filter o sees its group's inputs."""
    kh, kw, per_group, c_out = kernel.shape
    full = np.zeros((kh, kw, per_group * groups, c_out), dtype=kernel.dtype)
    out_per_group = c_out // groups
    for g in range(groups):
        outs = slice(g * out_per_group, (g + 1) * out_per_group)
        full[:, :, g * per_group:(g + 1) * per_group, outs] = kernel[:, :, :, outs]
    return full


def _expand_depthwise(depthwise: np.ndarray) -> np.ndarray:
    """(kh, kw, c_in, m) depthwise kernel -> (kh, kw, c_in, c_in*m) full kernel; output c*m+j sees input c."""
    kh, kw, c_in, multiplier = depthwise.shape
    full = np.zeros((kh, kw, c_in, c_in * multiplier), dtype=depthwise.dtype)
    for c in range(c_in):
        full[:, :, c, c * multiplier:(c + 1) * multiplier] = depthwise[:, :, c, :]
    return full
