"""CompareMethods, driven as a user would: each picture is the state's own explanation, drawn over the input."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

import cnnviz_widgets as cw
from cnnviz_widgets import CnnvizError, ModelState
from cnnviz_widgets.attribution import catalogue
from cnnviz_widgets.attribution.classes import Target
from cnnviz_widgets.attribution.heatmaps import overlay
from cnnviz_widgets.widgets import CompareMethods
from cnnviz_widgets.widgets.attribution import HEAT_CMAP
from cnnviz_widgets.widgets.compare_methods import COMPARE_OPACITY, COMPARED_BY_DEFAULT
from tests.conftest import notifier_counts


def picture(figure) -> np.ndarray:
    """The picture the browser gets: the PNG in the figure's Image mark, decoded."""
    return np.asarray(Image.open(io.BytesIO(figure.image_mark.image.value)))


def drawn(state, method: str) -> np.ndarray:
    """What the view must show for `method`: the state's own heat map over the input picture."""
    return overlay(state.model_input.picture, state.explanation(method).heatmap, HEAT_CMAP, COMPARE_OPACITY,
                   weighted=True)


@pytest.fixture
def state(softmax_model, rng):
    return ModelState(softmax_model, image=rng.integers(0, 256, (12, 12, 3), dtype=np.uint8))


def test_the_default_methods_side_by_side_each_its_own_heat_map(state):
    before = notifier_counts(state)
    view = CompareMethods(state)
    assert cw.CompareMethods is CompareMethods
    assert view.shown == COMPARED_BY_DEFAULT and "score-cam" not in view.shown and "occlusion" not in view.shown
    assert [value for _, value in view.methods.options] == list(catalogue.METHODS)  # the slow ones can be added
    assert view.methods.description == "methods"
    assert list(view.grid.children) == [view.figure(name) for name in COMPARED_BY_DEFAULT]
    top = state.predictions(1).indices[0]
    for name in COMPARED_BY_DEFAULT:
        result = view.explanations[name]
        assert result.method == name and result.target == Target("class", top)
        reference = state.explanation(name)  # the same computation the view asked for (kept by the explainer)
        np.testing.assert_array_equal(result.heatmap, reference.heatmap)
        assert reference.heatmap.max() > 0  # a real map, not a flat one: the comparison below means something
        shown = picture(view.figure(name))
        np.testing.assert_array_equal(shown, drawn(state, name))
        assert not np.array_equal(shown, state.model_input.picture)
        title = view.figure(name).title.value
        title_words = catalogue.method(name).title
        assert title_words in title and f"{result.seconds * 1000:.0f} ms" in title
        assert (" on c2" in title) == catalogue.method(name).uses_layer
    # each picture is its own method's (on this tiny model two CAMs may coincide, a CAM and a gradient do not)
    pictures = {name: picture(view.figure(name)).tobytes() for name in COMPARED_BY_DEFAULT}
    assert len({pictures["grad-cam"], pictures["saliency"], pictures["input-x-gradient"],
                pictures["guided-backprop"]}) == 4
    assert "scaled to its own range" in view.scale_note.value and "do not mean equal values" in view.scale_note.value
    assert f"class {top}" in view.heading.value and view.problem == "" and view.failures == {}
    view.close()
    assert notifier_counts(state) == before


def test_adding_and_removing_methods_and_following_the_class(state):
    view = CompareMethods(state, methods=["saliency", "grad-cam"])
    assert view.shown == ("grad-cam", "saliency")  # catalogue order
    saliency_figure, passes = view.figure("saliency"), state.explainer.gradient_passes
    said = []  # what the busy note says while it is shown

    def on_note(_change):
        if view.frame.note.layout.display is None:
            said.append(view.frame.note.value)

    view.frame.note.observe(on_note, "value")
    view.frame.note.layout.observe(on_note, "display")
    view.methods.value = ("grad-cam", "saliency", "score-cam", "occlusion")  # the slow ones, added by the user
    assert view.shown == ("grad-cam", "saliency", "score-cam", "occlusion")
    assert view.figure("saliency") is saliency_figure  # kept, not drawn again
    # the note names each method while it runs, and is gone once they are drawn
    assert "computing Score-CAM …" in said and "computing Occlusion …" in said
    assert said.index("computing Score-CAM …") < said.index("computing Occlusion …")
    assert view.frame.note.layout.display == "none"
    for name in view.shown:
        np.testing.assert_array_equal(picture(view.figure(name)), drawn(state, name))
    assert state.explainer.gradient_passes >= passes
    removed = view.figure("grad-cam")
    view.methods.value = ("saliency", "occlusion")
    assert list(view.grid.children) == [view.figure("saliency"), view.figure("occlusion")]
    assert "grad-cam" not in view.figures and "grad-cam" not in view.explanations
    assert removed.image_mark.comm is None  # closed, not left behind

    other = state.predictions(3).indices[2]
    state.explained_class = int(other)  # e.g. a click in Predictions: every picture follows
    for name in view.shown:
        assert view.explanations[name].target == Target("class", int(other))
        np.testing.assert_array_equal(picture(view.figure(name)),
                                      overlay(state.model_input.picture,
                                              state.explanation(name, class_index=int(other)).heatmap, HEAT_CMAP,
                                              COMPARE_OPACITY, weighted=True))
    drawn_before = view.redraws
    view.active = False
    state.set_image(np.full((12, 12, 3), 90, np.uint8))
    assert view.redraws == drawn_before  # a closed tab computes nothing
    view.active = True
    assert view.redraws == drawn_before + 1
    assert view.explanations["saliency"].heatmap is state.explanation("saliency", class_index=int(other)).heatmap
    view.close()
    with pytest.raises(CnnvizError, match="unknown method 'cam'"):
        CompareMethods(state, methods=["cam"])


def test_a_filter_target_and_a_method_that_cannot_explain_it(vgg_state):
    state = vgg_state  # no classifier: the current filter is explained
    state.layer, state.filter = "block1_conv2", 3
    view = CompareMethods(state, methods=["grad-cam", "saliency"])
    # Grad-CAM weighs block1_conv1; saliency needs no layer
    assert view.explanations["grad-cam"].layer == "block1_conv1"
    assert view.explanations["saliency"].target == Target("filter", 3, "block1_conv2")
    for name in view.shown:
        np.testing.assert_array_equal(picture(view.figure(name)),
                                      overlay(state.model_input.picture,
                                              state.explanation(name, of="filter").heatmap, HEAT_CMAP,
                                              COMPARE_OPACITY, weighted=True))
    state.layer = "block1_conv1"  # nothing before it to weigh: Grad-CAM says so in its own title, saliency draws
    assert "grad-cam" in view.failures and "no conv layer before block1_conv1" in view.failures["grad-cam"]
    assert "no map" in view.figure("grad-cam").title.value
    np.testing.assert_array_equal(picture(view.figure("grad-cam")), state.model_input.picture)
    assert view.explanations["saliency"].target == Target("filter", 3, "block1_conv1")
    state.layer = state.input_layer  # nothing to explain at all: one sentence, no pictures
    assert "is the model input" in view.message.value and view.frame.layout.display == "none"
    state.layer = "block1_conv2"
    assert view.frame.layout.display is None and view.failures == {}
    view.close()
