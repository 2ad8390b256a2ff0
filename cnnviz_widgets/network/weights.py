"""Build a Keras model without materialising its weights, then give each variable its values exactly once.

Keras creates every variable with random initial values and only then overwrites them with loaded weights:
for VGG16 with its classifier that is 553 MB of random numbers (2 GB peak with the initialisers'
temporaries) thrown away at once. A model built inside ``keras.StatelessScope(initialize_variables=False)``
has variables that only know their shape. `fill_from_legacy_h5`, `fill_from_arrays` and `fill_random` then
give each one its values in a 64-byte-aligned numpy array that TensorFlow takes over through DLPack without a
copy, so loading grows the process by the weights and little more. An unfilled model (`build_unmaterialised`
alone) still answers every structural question (layers, shapes, parameter counts) and refuses to run.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from cnnviz_widgets.errors import ModelError
from cnnviz_widgets.network.backend import keras

_ALIGNMENT = 64  # TensorFlow's kernels check that a tensor's buffer is aligned this way (EIGEN_MAX_ALIGN_BYTES)


def build_unmaterialised(build: Callable[[], Any]) -> Any:
    """Call ``build()`` (which returns a keras.Model) so that no variable of it gets values.

    Running the model, or reading a variable eagerly, raises ModelError until every variable is filled;
    symbolic uses (layer graph, output shapes, `count_params`) work.
    """
    scope = keras().StatelessScope  # first: keras() imports TensorFlow quietly
    from keras.src.backend.common import global_state  # no public handle on the pending-initialisation list

    with scope(initialize_variables=False):
        model = build()
    ours = {id(v) for v in model.weights}
    pending = global_state.get_global_attribute("uninitialized_variables", [], set_to_default=True)
    # Keras initialises every pending variable when the next outermost StatelessScope closes (it opens one
    # for each symbolic call): ours must not be in that list, or the random numbers come back.
    global_state.set_global_attribute("uninitialized_variables", [v for v in pending if id(v) not in ours])
    for variable in model.weights:
        variable._initializer = _Unfilled(variable.path, variable._initializer)
    return model


def is_materialised(model: Any) -> bool:
    """True when every variable of `model` holds values."""
    return all(variable._value is not None for variable in model.weights)


def aligned_empty(shape: tuple[int, ...], dtype: Any = np.float32) -> np.ndarray:
    """An uninitialised C-contiguous array whose buffer starts on a 64-byte boundary."""
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    raw = np.empty(nbytes + _ALIGNMENT, np.uint8)
    offset = -raw.ctypes.data % _ALIGNMENT
    return raw[offset : offset + nbytes].view(dtype).reshape(shape)


def set_values(variable: Any, values: np.ndarray) -> None:
    """Give an unfilled variable `values`, handing the buffer to TensorFlow without a copy where it can.

    `values` must have the variable's shape; it should not be used afterwards (the variable owns it).
    """
    import tensorflow as tf

    if variable._value is not None:
        raise ModelError(f"{variable.path} already holds values")
    if tuple(values.shape) != tuple(variable.shape):
        raise ModelError(f"{variable.path} has shape {tuple(variable.shape)}, the values {tuple(values.shape)}")
    values = np.asarray(values, dtype=variable.dtype)
    if not values.flags.c_contiguous or values.ctypes.data % _ALIGNMENT:
        aligned = aligned_empty(values.shape, values.dtype)
        aligned[...] = values
        values = aligned
    variable._initialize(tf.experimental.dlpack.from_dlpack(values.__dlpack__()))
    variable._initializer = None


def fill_from_arrays(model: Any, arrays: Mapping[str, list[np.ndarray]]) -> None:
    """Fill each layer's variables, in the layer's own order, from ``arrays[layer name]``.

    Layers not in `arrays` keep their state; a layer whose variable count or shapes differ raises ModelError.
    """
    for name, values in arrays.items():
        layer = _layer(model, name)
        if len(values) != len(layer.weights):
            raise ModelError(f"layer {name} has {len(layer.weights)} weights, the file gives {len(values)}")
        for variable, value in zip(layer.weights, values, strict=True):
            set_values(variable, value)


def fill_from_legacy_h5(model: Any, path: Path) -> None:
    """Fill `model` from a weights file in Keras' HDF5 layout (the format of the ImageNet application files).

    Layers are matched by name; every dataset is read straight into the buffer the variable will own.
    """
    import h5py  # installed with Keras

    try:
        with h5py.File(path, "r") as f:
            names = [_text(n) for n in f.attrs["layer_names"]]
            with_weights = [name for name in names if len(f[name].attrs["weight_names"])]
            missing = [name for name in with_weights if name not in _layer_names(model)]
            if missing:
                raise ModelError(f"{path.name} holds weights for layers this model lacks: {', '.join(missing[:5])}")
            for name in with_weights:
                group = f[name]
                layer = _layer(model, name)
                datasets = [group[_text(w)] for w in group.attrs["weight_names"]]
                if len(datasets) != len(layer.weights):
                    raise ModelError(f"{path.name}: layer {name} has {len(layer.weights)} weights, "
                                     f"the file {len(datasets)}")
                for variable, dataset in zip(layer.weights, datasets, strict=True):
                    set_values(variable, _read(dataset, variable, path))
    except (OSError, KeyError) as err:
        raise ModelError(f"could not read weights from {path.name}: it is not a complete Keras HDF5 weights "
                         f"file ({err}); delete it and load again") from err
    _check_filled(model, f"{path.name} has no weights for")


def fill_random(model: Any, seed: int = 0) -> None:
    """Fill every unfilled variable with draws from its own Keras initialiser's distribution.

    Glorot/He/LeCun (variance-scaling) uniform and normal, zeros, ones and constants are drawn in place
    with numpy (no temporaries); any other initialiser runs as Keras would, then is copied once.
    """
    rng = np.random.default_rng(seed)
    for variable in model.weights:
        if variable._value is not None:
            continue
        initializer = variable._initializer.initializer
        values = aligned_empty(tuple(variable.shape), variable.dtype)
        if not _draw_in_place(initializer, values, rng):
            values[...] = np.asarray(initializer(tuple(variable.shape), dtype=variable.dtype))
        set_values(variable, values)


def fill_zeros(model: Any) -> None:
    """Fill every unfilled variable with zeros (for a loader that then assigns the real values)."""
    for variable in model.weights:
        if variable._value is None:
            values = aligned_empty(tuple(variable.shape), variable.dtype)
            values.fill(0)
            set_values(variable, values)


def _draw_in_place(initializer: Any, out: np.ndarray, rng: np.random.Generator) -> bool:
    initializers = keras().initializers
    if isinstance(initializer, initializers.Zeros):
        out.fill(0)
    elif isinstance(initializer, initializers.Ones):
        out.fill(1)
    elif isinstance(initializer, initializers.Constant):
        out.fill(float(initializer.get_config()["value"]))
    elif isinstance(initializer, initializers.VarianceScaling) and out.dtype == np.float32:
        fan_in, fan_out = _fans(out.shape)
        fan = {"fan_in": fan_in, "fan_out": fan_out}.get(initializer.mode, (fan_in + fan_out) / 2)
        variance = initializer.scale / max(1.0, fan)
        if initializer.distribution == "uniform":
            limit = math.sqrt(3.0 * variance)
            rng.random(out=out, dtype=np.float32)
            out *= 2 * limit
            out -= limit
        elif initializer.distribution == "untruncated_normal":
            rng.standard_normal(out=out, dtype=np.float32)
            out *= math.sqrt(variance)
        else:  # truncated normal, rescaled as Keras does (0.879... is the std of a normal cut at ±2)
            rng.standard_normal(out=out, dtype=np.float32)
            np.clip(out, -2, 2, out=out)
            out *= math.sqrt(variance) / 0.87962566103423978
    else:
        return False
    return True


def _fans(shape: tuple[int, ...]) -> tuple[float, float]:
    """Keras' fan-in and fan-out: a kernel's receptive field times its input / output channels."""
    if len(shape) < 1:
        return 1.0, 1.0
    if len(shape) == 1:
        return float(shape[0]), float(shape[0])
    receptive = float(np.prod(shape[:-2])) if len(shape) > 2 else 1.0
    return shape[-2] * receptive, shape[-1] * receptive


def _read(dataset: Any, variable: Any, path: Path) -> np.ndarray:
    if tuple(dataset.shape) != tuple(variable.shape):
        raise ModelError(f"{path.name}: {dataset.name} has shape {tuple(dataset.shape)}, "
                         f"the model's {variable.path} {tuple(variable.shape)}")
    values = aligned_empty(tuple(variable.shape), variable.dtype)
    if values.size:
        dataset.read_direct(values)
    return values


def _check_filled(model: Any, what: str) -> None:
    empty = [v.path for v in model.weights if v._value is None]
    if empty:
        raise ModelError(f"{what} {', '.join(empty[:4])}{' …' if len(empty) > 4 else ''}")


def _layer(model: Any, name: str) -> Any:
    try:
        return model.get_layer(name)
    except ValueError:
        raise ModelError(f"the model has no layer {name!r}") from None


def _layer_names(model: Any) -> set[str]:
    return {layer.name for layer in model.layers}


def _text(value: Any) -> str:
    return value.decode("utf8") if isinstance(value, bytes) else str(value)


class _Unfilled:
    """Stands in for an unfilled variable's initialiser: symbolic tracing may call it, eager code may not."""

    def __init__(self, path: str, initializer: Any):
        self.path = path
        self.initializer = initializer

    def __call__(self, shape: Iterable[int], dtype: Any = None) -> Any:
        import tensorflow as tf

        if tf.executing_eagerly():
            raise ModelError(f"{self.path} holds no values: this model was built for its structure only "
                             "(layer table, shapes). Load it with weights to run it.")
        return tf.zeros(tuple(shape), dtype=dtype)  # a placeholder inside a traced graph
