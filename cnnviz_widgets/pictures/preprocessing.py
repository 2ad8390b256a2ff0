"""From an RGB picture to exactly what the model is fed: size policy, channels, preprocessing.

Pure numpy (the preprocessing modes are Keras' `imagenet_utils` formulas, checked against Keras in the
tests), so this module never needs TensorFlow.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from cnnviz_widgets.errors import CnnvizError, ImageError
from cnnviz_widgets.pictures.images import fit_image, to_grey

PREPROCESSING = ("caffe", "tf", "torch", "unit", "none")
"""Named preprocessing modes: caffe (VGG16/19, ResNet50: RGB→BGR minus the ImageNet mean), tf (to -1..1,
MobileNet), torch (to 0..1, minus mean, over std), unit (to 0..1), none (raw 0..255 floats)."""

_CAFFE_MEAN_BGR = np.array([103.939, 116.779, 123.68], dtype=np.float32)
_TORCH_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
_TORCH_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)

Preprocess = str | Callable[[np.ndarray], np.ndarray] | None


@dataclass(frozen=True)
class ModelInput:
    """An image prepared for a model: `array` (H, W, C) float32 is fed as is (one batch item).

    `picture` is the RGB uint8 image at the fed size (what the user sees as "the input"), `note` says
    what was done to the user's image (resized, made grey), `preprocess` names the mode.
    """

    array: np.ndarray
    picture: np.ndarray
    preprocess: str
    note: str | None


def preprocess_name(preprocess: Preprocess) -> str:
    if preprocess is None:
        return "none"
    if callable(preprocess):
        return getattr(preprocess, "__name__", "custom")
    return preprocess


def apply_preprocessing(image: np.ndarray, preprocess: Preprocess) -> np.ndarray:
    """(H, W, C) uint8 -> (H, W, C) float32 as the model expects it."""
    x = image.astype(np.float32)
    if callable(preprocess):
        out = np.asarray(preprocess(x.copy()), dtype=np.float32)
        if out.shape != x.shape:
            raise CnnvizError(f"the preprocess function returned shape {out.shape}; expected {x.shape}")
        return out
    mode = preprocess_name(preprocess)
    if mode not in PREPROCESSING:
        raise CnnvizError(f"unknown preprocessing {preprocess!r}: accepted are {', '.join(PREPROCESSING)}, "
                          "None or a function of an (H, W, C) float32 array")
    if mode == "none":
        return x
    if x.shape[-1] != 3:  # the ImageNet modes are defined for RGB only
        if mode == "unit":
            return x / 255.0
        raise CnnvizError(f"preprocessing {mode!r} is defined for 3-channel images; this model takes "
                          f"{x.shape[-1]} channel(s): use 'unit', 'none' or a function")
    return scale_rgb(x, mode)


def scale_rgb(x: Any, mode: str) -> Any:
    """The arithmetic of preprocessing `mode` ("caffe", "tf", "torch" or "unit") on RGB values 0..255.

    x : (..., 3), a numpy array or a tensor (the feature visualisation differentiates through it).
    """
    if mode == "caffe":
        return x[..., ::-1] - _CAFFE_MEAN_BGR
    if mode == "tf":
        return x / 127.5 - 1.0
    if mode == "torch":
        return (x / 255.0 - _TORCH_MEAN) / _TORCH_STD
    return x / 255.0


def prepare_input(image: np.ndarray, input_shape: tuple, preprocess: Preprocess,
                  max_side: int = 512, min_side: int = 1) -> ModelInput:
    """Fit an RGB uint8 image to a model input of shape (H|None, W|None, C) and preprocess it.

    A fixed-size model gets the image resized to its size; a fully convolutional one keeps the native size
    up to `max_side` (longest side). A one-channel model gets the luma of the image.
    """
    height, width, channels = input_shape
    target = (height, width) if height is not None and width is not None else None
    picture, note = fit_image(image, target_size=target, max_side=max_side)
    if min(picture.shape[:2]) < min_side:
        raise ImageError(f"the image is {picture.shape[1]}×{picture.shape[0]} pixels; this model needs at "
                         f"least {min_side}×{min_side} (its pooling layers would leave nothing)")
    fed = picture
    if channels == 1:
        fed = to_grey(picture)
        note = "; ".join(filter(None, [note, "converted to grey (the model takes one channel)"]))
    elif channels != 3:
        raise ImageError(f"this model takes {channels}-channel input; cnnviz_widgets feeds 1- or 3-channel images")
    return ModelInput(array=np.ascontiguousarray(apply_preprocessing(fed, preprocess)), picture=picture,
                      preprocess=preprocess_name(preprocess), note=note or None)


_RGB = ("R", "G", "B")
_CAFFE_MEAN = {"B": "103.9", "G": "116.8", "R": "123.7"}
_HOW = {
    "caffe": lambda c: f"{c} − {_CAFFE_MEAN[c]}",
    "tf": lambda c: f"{c} scaled to −1..1",
    "torch": lambda c: f"{c} standardised",
    "unit": lambda c: f"{c} / 255",
    "none": lambda c: f"{c} (0..255)",
}
_SENTENCES = {  # shown to learners: what goes in, in words; the Keras mode's name last, for those who look it up
    "caffe": "The photo goes in as its B, G, R (in that order) minus the ImageNet mean (103.9, 116.8, 123.7), as "
             "the network was trained ('caffe' preprocessing)",
    "tf": "The photo goes in as its R, G, B scaled to −1..1 ('tf' preprocessing)",
    "torch": "The photo goes in as its R, G, B scaled to 0..1, minus the ImageNet mean (0.485, 0.456, 0.406), over "
             "its std (0.229, 0.224, 0.225) ('torch' preprocessing)",
    "unit": "The photo goes in as its R, G, B scaled to 0..1",
    "none": "The photo goes in as its R, G, B as 0..255 (no preprocessing)",
}


def fed_channel_names(preprocess: str, n_channels: int) -> tuple[str, ...] | None:
    """Which colour each channel of the fed array holds: ("B", "G", "R") for caffe, ("R", "G", "B") for the
    other named modes, ("grey",) for one channel; None when unknown (a custom function may reorder them)."""
    if n_channels == 1:
        return ("grey",)
    if n_channels == 3 and preprocess in _HOW:
        return _RGB[::-1] if preprocess == "caffe" else _RGB
    return None


def input_channel_labels(preprocess: str, n_channels: int) -> tuple[str, ...]:
    """Short names of the channels of the fed array, for a model input prepared with `preprocess`.

    "caffe" feeds B, G, R (in that order) minus the ImageNet mean: ("B − 103.9", "G − 116.8", "R − 123.7");
    the other named modes keep R, G, B. See `describe_preprocessing` for the sentence.
    """
    names = fed_channel_names(preprocess, n_channels)
    if names is None:
        return tuple(f"input channel {c}" for c in range(n_channels))
    how = _HOW.get(preprocess, lambda c: f"{c} after {preprocess}")
    return tuple(how(c) for c in names)


def describe_preprocessing(preprocess: str, n_channels: int = 3) -> str:
    """One sentence saying what the channels of the fed array are, e.g. for "caffe": B, G, R minus the mean."""
    if n_channels == 1:
        return f"the model takes one channel: the image's luma, preprocessing {preprocess!r}"
    if n_channels == 3 and preprocess in _SENTENCES:
        return _SENTENCES[preprocess]
    return f"the fed channels are the image after the preprocessing {preprocess!r}"
