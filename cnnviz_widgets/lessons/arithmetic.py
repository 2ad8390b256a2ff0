"""Convolution arithmetic as Keras computes it, and the activation functions layers apply.

Output sizes and paddings for "same" and "valid" (TensorFlow puts the odd pad at the end), strides and
dilation, for plain and transposed convolutions; the input pixels each kernel tap reads; and numpy versions of
Keras' activations by name, so that a value taken apart here equals the layer's own output.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from cnnviz_widgets.errors import CnnvizError

PADDINGS = ("same", "valid")


_SELU_ALPHA, _SELU_SCALE = 1.6732632423543772848170429916717, 1.0507009873554804934193349852946

def _sigmoid(x: np.ndarray) -> np.ndarray:
    return np.exp(-np.logaddexp(0.0, -x))  # 1 / (1 + exp(-x)) without overflow for large |x|


def _hard_sigmoid(x: np.ndarray) -> np.ndarray:
    return np.clip(x + 3.0, 0.0, 6.0) / 6.0  # Keras 3: relu6(x + 3) / 6


def _elu(x: np.ndarray) -> np.ndarray:
    return np.where(x > 0, x, np.expm1(np.minimum(x, 0.0)))


_erf = np.vectorize(math.erf, otypes=[np.float64])


ACTIVATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "linear": lambda x: x,
    "relu": lambda x: np.maximum(x, 0.0),
    "relu6": lambda x: np.clip(x, 0.0, 6.0),
    "leaky_relu": lambda x: np.where(x > 0, x, 0.2 * x),  # Keras' default negative_slope
    "elu": _elu,
    "selu": lambda x: _SELU_SCALE * np.where(x > 0, x, _SELU_ALPHA * np.expm1(np.minimum(x, 0.0))),
    "sigmoid": _sigmoid,
    "hard_sigmoid": _hard_sigmoid,
    "tanh": np.tanh,
    "softplus": lambda x: np.logaddexp(0.0, x),
    "softsign": lambda x: x / (1.0 + np.abs(x)),
    "silu": lambda x: x * _sigmoid(x),
    "swish": lambda x: x * _sigmoid(x),
    "hard_silu": lambda x: x * _hard_sigmoid(x),
    "hard_swish": lambda x: x * _hard_sigmoid(x),
    "gelu": lambda x: 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0))),  # Keras' default: exact, not tanh
    "exponential": np.exp,
}
"""Activations reproduced per filter (element-wise ones, with Keras' default arguments). Softmax and the like
mix all filters at each position, so they are not reproduced for one filter."""


def pair(value: int | Sequence[int], name: str) -> tuple[int, int]:
    """An int or a pair of ints >= 1, as (rows, cols)."""
    items = (value, value) if isinstance(value, (int, np.integer)) else tuple(value)
    if len(items) != 2 or not all(isinstance(v, (int, np.integer)) and v >= 1 for v in items):
        raise CnnvizError(f"{name} must be a positive int or a pair of them; got {value!r}")
    return int(items[0]), int(items[1])


def check_padding(padding: str) -> str:
    mode = padding.lower() if isinstance(padding, str) else padding
    if mode not in PADDINGS:
        raise CnnvizError(f"padding must be one of {PADDINGS}; got {padding!r}")
    return mode


def conv_geometry(size: int, kernel: int, stride: int, dilation: int, padding: str) -> tuple[int, int, int]:
    """(output size, pad before, pad after) of a convolution along one axis, as Keras on TensorFlow does it.

    "same": output ceil(size / stride), the total padding split with the odd pixel at the END (TensorFlow's
    rule, which is why an even kernel or a stride of 2 is padded asymmetrically). "valid": no padding.
    """
    span = (kernel - 1) * dilation + 1
    if check_padding(padding) == "same":
        out = -(-size // stride)
        total = max((out - 1) * stride + span - size, 0)
        return out, total // 2, total - total // 2
    out = -(-(size - span + 1) // stride)
    if out < 1:
        raise CnnvizError(f"a {size}-pixel side is smaller than the {span}-pixel (dilated) kernel with "
                          "padding 'valid': the layer has no output")
    return out, 0, 0


def transposed_geometry(size: int, kernel: int, stride: int, dilation: int, padding: str,
                        output_padding: int | None = None) -> tuple[int, int]:
    """(output size, crop before) of a transposed convolution along one axis (Keras' Conv2DTranspose rules).

    The input scatters into a full buffer of (size - 1) * stride + span pixels; the output is the slice
    starting at `crop before`, zero-extended at the end if longer than the buffer.
    """
    span = (kernel - 1) * dilation + 1
    if check_padding(padding) == "valid":
        extra = max(span, stride) - span if output_padding is None else output_padding
        return (size - 1) * stride + span + extra, 0
    out = size * stride if output_padding is None else (size - 1) * stride + span % 2 + output_padding
    # TensorFlow computes it as the gradient of a "same" convolution from `out` pixels down to `size`.
    return out, max((size - 1) * stride + span - out, 0) // 2


def apply_activation(x: np.ndarray, name: str) -> np.ndarray | None:
    """`x` through the named Keras activation, as float32; None when it is not reproduced here (see ACTIVATIONS)."""
    fn = ACTIVATIONS.get(name)
    if fn is None:
        return None
    with np.errstate(over="ignore"):  # exp of a huge value is inf, as in Keras
        return np.asarray(fn(np.asarray(x, dtype=np.float64)), dtype=np.float32)


def activation_name(config_value: object) -> str:
    """The activation's name from a layer's get_config()["activation"] (a name, or a serialised object)."""
    if config_value is None:
        return "linear"
    if isinstance(config_value, str):
        return config_value
    if isinstance(config_value, dict):
        inner = config_value.get("config")
        name = config_value.get("registered_name") or config_value.get("class_name") or ""
        return str(inner if isinstance(inner, str) else name or config_value)
    return str(getattr(config_value, "__name__", config_value))


def tap_positions(size: int, kernel: int, stride: int, dilation: int, padding: str) -> np.ndarray:
    """(kernel, size) 0/1 float32: row i marks the input positions that tap i reads over the whole output."""
    out, before, _ = conv_geometry(size, kernel, stride, dilation, padding)
    marks = np.zeros((kernel, size), np.float32)
    for i in range(kernel):
        where = np.arange(out) * stride + i * dilation - before
        marks[i, where[(where >= 0) & (where < size)]] = 1.0
    return marks
