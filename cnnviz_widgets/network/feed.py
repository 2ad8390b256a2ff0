"""What feeding a model needs, as a small public protocol that the core functions take.

`scan.top_examples` and `maximization.maximize` need a model with its layer graph, the way a picture becomes
its input, and the activation extractor; `ModelState` implements all of it, and a test (or another front end)
can pass any object that does. The core reads nothing private of what it is given. `ExplainedFeed` adds the
current picture and its explanations, for what evaluates attribution maps (`attribution.sanity`,
`attribution.faithfulness`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from cnnviz_widgets.network.extractor import ActivationExtractor
from cnnviz_widgets.network.graph import ModelGraph
from cnnviz_widgets.pictures.preprocessing import ModelInput, Preprocess


class ModelFeed(Protocol):
    """A model, its graph and how a picture is fed to it (`ModelState` is one)."""

    model: Any
    graph: ModelGraph
    extractor: ActivationExtractor
    max_side: int

    @property
    def layers(self) -> Sequence[str]:
        """The visualised layers in network order, the input first."""

    @property
    def input_layer(self) -> str: ...

    @property
    def preprocessing(self) -> Preprocess:
        """How a picture's RGB values become the model's input (a Keras mode name, a callable, or None)."""

    def prepare(self, picture: np.ndarray) -> ModelInput:
        """The model input for an RGB uint8 picture (size policy, channels, preprocessing)."""

    def layer_kind(self, layer: str | None = None) -> str: ...

    def n_filters(self, layer: str | None = None) -> int: ...

    def previous_layer(self, layer: str | None = None) -> str: ...

    def weights(self, layer: str | None = None) -> tuple[np.ndarray, np.ndarray]: ...


class ExplainedFeed(ModelFeed, Protocol):
    """A `ModelFeed` with a current picture and its attribution maps (`ModelState` is one)."""

    @property
    def model_input(self) -> ModelInput:
        """The current picture as the model's input (`array`: (H, W, C) float32)."""

    def explain_target(self, class_index: int | None = None, of: str | None = None) -> Any:
        """What the maps explain (an `attribution.classes.Target`): a class, or the current filter."""

    def explanation(self, method: str = "grad-cam", class_index: int | None = None, layer: str | None = None,
                    score: str | None = None, of: str | None = None, **options: Any) -> Any:
        """`method`'s map (an `attribution.explanation.Explanation`) of `explain_target` for the current picture."""
