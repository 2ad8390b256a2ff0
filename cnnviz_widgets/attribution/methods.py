"""What an attribution method is to the rest of the package: a name, a one-line summary, options, a function.

Each family module (`gradcam`, `saliency`, ...) describes its methods as `Method`s; `catalogue` lists them all.
The `Explainer` looks a method up by name, checks the options a user gave against the method's own (with their
defaults), and calls `compute(paths, x, target, layer, score, key, **options)`, which returns an `Explanation`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cnnviz_widgets.attribution.explanation import Explanation
from cnnviz_widgets.errors import CnnvizError

Compute = Callable[..., Explanation]
"""(paths: GradientPaths, x (H, W, C), target, layer (None for input methods), score, key, **options)."""


@dataclass(frozen=True)
class Method:
    """One attribution method.

    name : what a user passes (`state.explanation("grad-cam++")`).
    family : "cam" (weighs a conv layer's maps: `layer` applies), "gradient" (input gradients: per pixel and
        channel `attributions`) or "perturbation" (changes the input and watches the score).
    summary : one sentence for a student: what the map shows, and how it is made.
    compute : the function (see `Compute`).
    options : each option's name and default; a user may pass only these.
    title : the name as a person writes it, for menus and picture titles ("Grad-CAM++"); default: made from
        `name` (`title_of`).
    """

    name: str
    family: str
    summary: str
    compute: Compute
    options: Mapping[str, Any] = field(default_factory=dict)
    title: str = ""

    def __post_init__(self) -> None:
        if not self.title:
            object.__setattr__(self, "title", title_of(self.name))

    @property
    def uses_layer(self) -> bool:
        return self.family == "cam"

    def with_options(self, given: Mapping[str, Any]) -> dict[str, Any]:
        """The method's options: its defaults, overridden by `given` (CnnvizError for an option it has not)."""
        unknown = sorted(set(given) - set(self.options))
        if unknown:
            accepted = ", ".join(sorted(self.options)) or "none"
            raise CnnvizError(f"{self.name} has no option {', '.join(map(repr, unknown))}; its options: {accepted}")
        return {**self.options, **given}


_TITLE_WORDS = {"grad-cam": "Grad-CAM", "grad-cam++": "Grad-CAM++", "layer-cam": "LayerCAM", "score-cam": "Score-CAM",
                "smoothgrad": "SmoothGrad", "vargrad": "VarGrad", "backprop": "Backprop", "x": "×"}


def title_of(name: str) -> str:
    """A method's name as a person writes it: "guided-grad-cam" -> "Guided Grad-CAM", "input-x-gradient" ->
    "Input × gradient"."""
    parts, words = name.split("-"), []
    while parts:
        pair = "-".join(parts[:2])
        if len(parts) > 1 and pair in _TITLE_WORDS:
            words.append(_TITLE_WORDS[pair])
            del parts[:2]
        else:
            words.append(_TITLE_WORDS.get(parts[0], parts[0]))
            del parts[0]
    text = " ".join(words)
    return text[:1].upper() + text[1:]


def options_key(options: Mapping[str, Any]) -> tuple:
    """A hashable key for a method's options (arrays by content), for caching its results."""
    def frozen(value: Any) -> Any:
        if isinstance(value, np.ndarray):
            return ("array", value.shape, str(value.dtype), hash(value.tobytes()))
        if isinstance(value, (list, tuple)):
            return tuple(frozen(v) for v in value)
        return value
    return tuple(sorted((name, frozen(value)) for name, value in options.items()))
