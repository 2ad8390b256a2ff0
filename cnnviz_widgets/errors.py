"""The library's own exceptions and warnings.

Every error a user can trigger with bad input is one of these, so a notebook shows one clear sentence
naming what was wrong and what is accepted, instead of a traceback from numpy, PIL or Keras.
"""

from __future__ import annotations


class CnnvizError(ValueError):
    """Base class: bad input given to cnnviz_widgets (a ValueError, so generic handlers still catch it)."""


class ImageError(CnnvizError):
    """Something given as an image is not one, or cannot be used as one (empty, too small, too big)."""


class LayerError(CnnvizError):
    """A layer name that does not exist, or a layer that cannot be shown the way that was asked."""


class ModelError(CnnvizError):
    """A model (or model name, or weights option) that cannot be loaded or used."""


class WeightsUnavailableError(ModelError):
    """Pretrained weights that cannot be had here (e.g. ImageNet weights without internet access)."""


class CnnvizWarning(UserWarning):
    """Something was done on the user's behalf that they should know about (an image was downscaled, ...)."""
