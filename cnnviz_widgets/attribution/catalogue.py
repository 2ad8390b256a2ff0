"""Every attribution method the package has, by name (see `methods.Method`); the one list to add a method to."""

from __future__ import annotations

from cnnviz_widgets.attribution.gradcam import GRAD_CAM, GRAD_CAM_PLUS_PLUS, LAYER_CAM
from cnnviz_widgets.attribution.guided import GUIDED_BACKPROP, GUIDED_GRAD_CAM
from cnnviz_widgets.attribution.integrated import INTEGRATED_GRADIENTS
from cnnviz_widgets.attribution.methods import Method
from cnnviz_widgets.attribution.occlusion import OCCLUSION
from cnnviz_widgets.attribution.saliency import INPUT_X_GRADIENT, SALIENCY
from cnnviz_widgets.attribution.scorecam import SCORE_CAM
from cnnviz_widgets.attribution.smoothgrad import SMOOTHGRAD, VARGRAD
from cnnviz_widgets.errors import CnnvizError

# By family: the CAMs, then the input gradients, then perturbation.
CATALOGUE: dict[str, Method] = {m.name: m for m in (GRAD_CAM, GRAD_CAM_PLUS_PLUS, LAYER_CAM, SCORE_CAM, SALIENCY,
                                                    SMOOTHGRAD, VARGRAD, INPUT_X_GRADIENT, INTEGRATED_GRADIENTS,
                                                    GUIDED_BACKPROP, GUIDED_GRAD_CAM, OCCLUSION)}

METHODS = tuple(CATALOGUE)
"""The attribution methods' names, in the order a method picker lists them."""


def method(name: str) -> Method:
    """The method called `name` (CnnvizError naming every method for an unknown one)."""
    try:
        return CATALOGUE[name]
    except (KeyError, TypeError):
        raise CnnvizError(f"unknown method {name!r}; expected one of {', '.join(METHODS)}") from None
