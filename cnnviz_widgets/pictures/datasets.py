"""Small datasets that come with the package, for lessons that train a network with no download."""

from __future__ import annotations

from importlib import resources
from typing import NamedTuple

import numpy as np


class Digits(NamedTuple):
    """Handwritten digits: `images` (1797, 8, 8) uint8 with values 0..16 (ink counts), `target` (1797,) 0..9."""

    images: np.ndarray
    target: np.ndarray


def load_digits() -> Digits:
    """The 1,797 8×8 handwritten digits of the UCI "Optical Recognition of Handwritten Digits" test set.

    The same arrays as scikit-learn's `sklearn.datasets.load_digits()` (`images`, `target`), bundled here so
    a lesson needs neither a download nor scikit-learn (which Keras imports at start-up wherever it is
    installed: 1.3 s and ~60 MB more per kernel). Source and licence (CC BY 4.0): `data/CREDITS.md`.
    """
    with resources.files("cnnviz_widgets").joinpath("data/digits.npz").open("rb") as file, np.load(file) as data:
        return Digits(images=data["images"].copy(), target=data["target"].astype(np.int64))
