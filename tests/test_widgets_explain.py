"""Predictions, ClassActivationMap and CompareImages, driven as a user would, checked on the widgets' data."""

from __future__ import annotations

import html
import io

import ipywidgets
import numpy as np
import pytest
from PIL import Image

from cnnviz_widgets import CnnvizError, ImageError, ModelState
from cnnviz_widgets.attribution.classes import Target, imagenet_class_names
from cnnviz_widgets.attribution.heatmaps import overlay
from cnnviz_widgets.pictures import render
from cnnviz_widgets.widgets.attribution import COMPARE_SIDE, HEAT_CMAP, ClassActivationMap, CompareImages, Predictions
from tests.conftest import notifier_counts


def picture(figure) -> np.ndarray:
    """The picture the browser gets: the PNG in the figure's Image mark, decoded."""
    return np.asarray(Image.open(io.BytesIO(figure.image_mark.image.value)))


def open_widgets() -> set:
    """ids of the widgets whose comm is open (ipywidgets keeps them in this registry until close())."""
    return set(ipywidgets.widgets.widget._instances)


@pytest.fixture
def state(softmax_model, rng):
    return ModelState(softmax_model, image=rng.integers(0, 256, (12, 12, 3), dtype=np.uint8))


# -- Predictions ---------------------------------------------------------------------------------------


def test_predictions_list_the_top_classes_and_a_click_explains_one(state):
    before = notifier_counts(state)
    view = Predictions(state, top=5)
    expected = state.predictions(5)
    assert len(view.buttons) == 3  # the model has 3 classes
    assert [b.description for b in view.buttons] == [f"{i}: class {i}" for i in expected.indices]
    bars = [row.children[1].value for row in view.rows.children]
    np.testing.assert_allclose(bars, expected.probabilities, rtol=1e-6)
    assert sum(bars) == pytest.approx(1.0, abs=1e-5)
    assert [b.button_style for b in view.buttons] == ["info", "", ""]  # the top class is explained by default
    assert "Top 3 of 3 classes" in view.heading.value and "softmax output" in view.heading.value

    view.click(2)
    assert state.explained_class == expected.indices[2]
    assert [b.button_style for b in view.buttons] == ["", "", "info"]
    drawn = view.redraws
    notes = []
    view.frame.note.layout.observe(lambda change: notes.append((change["new"], view.frame.note.value)), "display")
    state.set_image(np.full((12, 12, 3), 30, np.uint8))  # a new image: new predictions
    assert view.redraws == drawn + 1 and view.predictions.outputs is not expected.outputs
    assert notes == [(None, "computing the predictions …"), ("none", "computing the predictions …")]  # said, gone
    state.set_class_names(["ant", "bee", "cat"])
    assert view.buttons[0].description.split(": ")[1] in {"ant", "bee", "cat"}
    view.close()
    assert notifier_counts(state) == before
    view.close()  # harmless


def test_predictions_say_when_the_model_has_no_classifier(vgg_state):
    view = Predictions(vgg_state)
    assert view.rows.layout.display == "none" and view.predictions is None
    assert "has no classifier" in view.message.value and "ImageNet weights" in view.message.value
    view.close()


def test_predictions_and_grad_cam_on_vgg16_with_its_classifier(vgg16_full):
    state = ModelState(vgg16_full, image="astronaut")
    predictions = Predictions(state)
    top = state.predictions(5)
    names = imagenet_class_names()
    assert [b.description for b in predictions.buttons] == [f"{i}: {names[i]}" for i in top.indices]
    assert "ImageNet class names" in predictions.heading.value and "random" in predictions.heading.value
    cam = ClassActivationMap(state)
    result = cam.explanation
    assert result.target == Target("class", top.indices[0]) and result.layer == "block5_conv3"
    assert result.score == "logit"
    np.testing.assert_array_equal(picture(cam.figure),
                                  overlay(state.model_input.picture, result.heatmap, HEAT_CMAP, 0.5,
                                          weighted=True))
    assert [v for _, v in cam.class_picker.options] == [-1, *top.indices]
    predictions.click(3)  # one view sets the class, the other follows through the state
    assert cam.explanation.target == Target("class", top.indices[3]) and cam.class_picker.value == top.indices[3]
    predictions.close()
    cam.close()


# -- ClassActivationMap ----------------------------------------------------------------------------------


def test_class_activation_map_of_a_filter_without_classifier(vgg_state):
    state = vgg_state
    state.layer, state.filter = "block3_conv1", 5
    view = ClassActivationMap(state)
    result = view.explanation
    assert view.of.value == "filter" and view.of.layout.display == "none"  # no classes to choose from
    assert view.class_picker.layout.display == "none"
    assert result.target == Target("filter", 5, "block3_conv1") and result.layer == "block2_conv2"
    reference = state.explanation("grad-cam", of="filter")
    np.testing.assert_array_equal(result.heatmap, reference.heatmap)
    np.testing.assert_array_equal(picture(view.figure), overlay(state.model_input.picture, result.heatmap,
                                                                HEAT_CMAP, 0.5, weighted=True))
    assert "Grad-CAM of block3_conv1 filter 5 on block2_conv2" in view.figure.title.value
    assert view.figure.colorbar_values == (HEAT_CMAP, 0.0, 1.0)

    passes = state.explainer.gradient_passes
    view.opacity.value = 0.0  # only the blend changes: the picture itself, no gradient pass
    np.testing.assert_array_equal(picture(view.figure), state.model_input.picture)
    assert state.explainer.gradient_passes == passes

    view.method.value = "saliency"
    assert view.explanation.method == "saliency" and view.layer_picker.layout.display == "none"
    assert view.explanation.raw.shape == state.model_input.picture.shape[:2]
    view.method.value = "grad-cam"
    # the menu names the layer "automatic" stands for, and offers only the conv layers before the filter's
    assert view.layer_picker.options[0] == ("automatic: block2_conv2", "")
    assert [v for _, v in view.layer_picker.options[1:]] == ["block1_conv1", "block1_conv2", "block2_conv1",
                                                             "block2_conv2"]
    view.layer_picker.value = "block1_conv2"  # an earlier layer: finer maps
    assert view.explanation.layer == "block1_conv2" and view.explanation.raw.shape == state.model_input.array.shape[:2]
    state.layer = "block1_conv1"  # nothing before it to weigh: the menu is back on automatic, which says so
    assert [tuple(o) for o in view.layer_picker.options] == [("automatic", "")] and view.layer_picker.value == ""
    assert "no conv layer before block1_conv1" in view.message.value
    # no map, but no empty panel either: the plain input picture, whose title points to the note
    np.testing.assert_array_equal(picture(view.figure), state.model_input.picture)
    assert "no Grad-CAM map for this choice" in view.figure.title.value and view.figure.colorbar_values is None
    state.layer = "block2_conv1"
    assert view.layer_picker.options[0] == ("automatic: block1_conv2", "")
    assert view.explanation.layer == "block1_conv2"
    state.layer = state.input_layer
    assert "is the model input" in view.message.value
    view.close()


def test_class_activation_map_class_picker_drives_the_state(state):
    before = notifier_counts(state)
    view = ClassActivationMap(state, method="saliency", opacity=1.0)
    top = state.predictions(5)
    assert view.explanation.target == Target("class", top.indices[0])
    np.testing.assert_array_equal(picture(view.figure)[..., :3],  # opacity 1 where the map peaks, 0 where it is 0
                                  overlay(state.model_input.picture, view.explanation.heatmap, HEAT_CMAP, 1.0,
                                          weighted=True))
    view.class_picker.value = top.indices[1]
    assert state.explained_class == top.indices[1] and view.explanation.target.index == top.indices[1]
    view.class_picker.value = -1
    assert state.explained_class is None and view.explanation.target.index == top.indices[0]
    view.of.value = "filter"  # a model with a classifier can still explain a filter
    assert view.explanation.target == Target("filter", state.filter, state.layer)
    assert view.class_picker.layout.display == "none"
    drawn = view.redraws
    view.active = False
    state.filter = 3
    assert view.redraws == drawn  # hidden: nothing computed
    view.active = True
    assert view.redraws == drawn + 1 and view.explanation.target.index == 3
    view.close()
    assert notifier_counts(state) == before
    passes = state.explainer.gradient_passes
    hidden = ClassActivationMap(state, method="grad-cam", active=False)  # e.g. a background tab of the Explorer
    assert hidden.explanation is None and hidden.redraws == 0 and state.explainer.gradient_passes == passes
    hidden.active = True
    assert hidden.explanation.method == "grad-cam" and hidden.redraws == 1
    hidden.close()
    with pytest.raises(CnnvizError, match="unknown method 'cam'"):
        ClassActivationMap(state, method="cam")
    assert notifier_counts(state) == before


# -- CompareImages -------------------------------------------------------------------------------------


def test_compare_images_share_one_range(vgg_state):
    state = vgg_state
    state.layer = "block2_conv1"
    peaks = state.activation().max(axis=(0, 1))
    f, g = (int(i) for i in np.argsort(-peaks)[:2])  # two filters that are not dead on this image
    state.filter = f
    view = CompareImages(state, "cat")
    other = ModelState(state.model, image="cat", max_side=state.max_side)  # an independent second forward pass
    left, right = state.activation()[..., f], other.activation("block2_conv1")[..., f]
    np.testing.assert_allclose(view.maps()[1], right, rtol=1e-5, atol=1e-5 * float(right.max()))
    lo, hi = min(left.min(), right.min()), max(left.max(), right.max())
    assert hi > lo and view.value_range == pytest.approx((lo, hi), rel=1e-5)
    for figure, values in zip(view.figures, (left, right), strict=True):
        expected, _ = render.render_mosaic(values[..., None], cmap="grey", max_side=COMPARE_SIDE, pad=0,
                                           value_range=view.value_range)
        np.testing.assert_array_equal(picture(figure), expected.image)
        assert figure.colorbar_values == ("grey", pytest.approx(lo, rel=1e-5), pytest.approx(hi, rel=1e-5))
    assert "equal colours mean equal values" in view.message.value
    assert f"cat · block2_conv1 channel {f}" in view.figures[1].title.value
    # one scale for both: each side's share of the row is its map's width
    assert [side.layout.flex for side in view.sides.children] == [f"{left.shape[1]} 1 0%", f"{right.shape[1]} 1 0%"]

    state.normalization = "symmetric"
    m = max(np.abs(left).max(), np.abs(right).max())
    assert view.value_range == pytest.approx((-m, m), rel=1e-5)
    passes = state.forward_passes
    state.filter = g  # both images' outputs are cached: no forward pass
    assert state.forward_passes == passes and f"channel {g}" in view.figures[0].title.value
    notes = []
    view.frame.note.layout.observe(lambda change: notes.append((change["new"], view.frame.note.value)), "display")
    view.picker.value = "coffee"  # a new image runs the network: said over the pictures meanwhile
    assert view.other_name == "coffee" and view.other_input.picture.shape[:2] == (64, 96)
    assert notes == [(None, "running the network on coffee …"), ("none", "running the network on coffee …")]
    with pytest.raises(ImageError):
        view.set_other_image(b"not an image")
    assert view.other_name == "coffee"  # the previous image stays
    view.close()


def test_closing_the_views_closes_every_widget_they_made(state):
    state.predictions(5)
    before = open_widgets()
    views = [Predictions(state), ClassActivationMap(state), CompareImages(state, "coffee")]
    views[0].click(1)  # some redraws first, so replaced pictures and rows are counted too
    views[1].opacity.value = 0.2
    views[2].picker.value = "cat"
    assert len(open_widgets() - before) > 20
    for view in views:
        view.close()
    assert open_widgets() - before == set()


def test_grad_cam_keeps_the_old_picture_under_a_note_while_it_computes(vgg_state):
    state = vgg_state
    state.layer, state.filter = "block2_conv2", 3
    view = ClassActivationMap(state, active=False)  # a background tab: nothing computed yet
    assert view.explanation is None
    # never an empty panel: the input picture stands in before the first pass
    np.testing.assert_array_equal(picture(view.figure), state.model_input.picture)
    seen = []

    def on_note(change):  # what the browser is sent when the note appears: the picture shown under it
        if change["new"] is None:
            seen.append((view.frame.note.value, "cnnviz-busy" in view.frame._dom_classes, picture(view.figure),
                         view.frame in view.children))

    view.frame.note.layout.observe(on_note, "display")
    view.active = True
    assert len(seen) == 1
    note, dimmed, shown, in_view = seen[0]
    assert note == "computing Grad-CAM …" and dimmed and in_view
    np.testing.assert_array_equal(shown, state.model_input.picture)  # the old picture, not an empty one
    assert view.frame.note.layout.display == "none" and "cnnviz-busy" not in view.frame._dom_classes
    first = picture(view.figure)
    assert not np.array_equal(first, state.model_input.picture)  # the heat map came over it

    state.filter = 7  # a new gradient pass: the previous heat map stays under the note meanwhile
    assert len(seen) == 2 and seen[1][0] == "computing Grad-CAM …"
    np.testing.assert_array_equal(seen[1][2], first)
    passes = state.explainer.gradient_passes
    view.opacity.value = 0.3  # a new blend of the same explanation: no pass, no note
    state.filter = 7
    assert len(seen) == 2 and state.explainer.gradient_passes == passes
    view.frame.note.layout.unobserve(on_note, "display")
    view.close()


# -- the method picker ------------------------------------------------------------------------------------


def test_every_method_of_the_catalogue_can_be_picked_and_draws(state):
    from cnnviz_widgets.attribution import catalogue

    view = ClassActivationMap(state)
    assert isinstance(view.method, ipywidgets.Dropdown) and view.method.description == "method"
    assert view.layer_picker.description and view.of.description and view.opacity.description  # accessible names
    assert list(view.method.options) == [(catalogue.method(name).title, name) for name in catalogue.METHODS]
    assert view.method.options[0] == ("Grad-CAM", "grad-cam") and ("Grad-CAM++", "grad-cam++") in view.method.options
    top = state.predictions(1).indices[0]
    for name in catalogue.METHODS:
        chosen = catalogue.method(name)
        said = []
        view.frame.note.layout.observe(lambda change, said=said: said.append(view.frame.note.value)
                                       if change["new"] is None else None, "display")
        view.method.value = name
        assert view.problem == "" and view.failure == "", (name, view.problem)
        result = view.explanation
        assert result.method == name and result.target == Target("class", top)
        assert result.options == {**chosen.options}  # the method's own defaults
        np.testing.assert_array_equal(result.heatmap, state.explanation(name).heatmap)
        np.testing.assert_array_equal(picture(view.figure),
                                      overlay(state.model_input.picture, result.heatmap, HEAT_CMAP, 0.5,
                                              weighted=True))
        # the summary for students under the menu, and the layer menu only where a layer's maps are weighed
        assert chosen.title in view.summary.value and html.escape(chosen.summary) in view.summary.value
        assert view.layer_picker.layout.display == (None if chosen.family == "cam" else "none"), name
        assert chosen.title in view.figure.title.value and f"{result.seconds * 1000:.0f} ms" in view.figure.title.value
        assert said in ([], [f"computing {chosen.title} …"]), said  # a pass that runs is said over the picture
        view.frame.note.layout.unobserve_all("display")
    view.close()


def test_the_picker_says_a_slow_method_is_computing_over_the_old_picture(state):
    view = ClassActivationMap(state, method="grad-cam")
    old = picture(view.figure)
    seen = []
    view.frame.note.layout.observe(lambda change: seen.append((view.frame.note.value, picture(view.figure)))
                                   if change["new"] is None else None, "display")
    view.method.value = "score-cam"
    assert [note for note, _ in seen] == ["computing Score-CAM …"]
    np.testing.assert_array_equal(seen[0][1], old)  # the previous map stays, dimmed, under the note
    assert "Which maps raise the score when shown alone" in view.summary.value
    assert view.layer_picker.layout.display is None and view.explanation.layer == "c2"
    view.layer_picker.value = "c1"  # every CAM method weighs the layer picked
    assert view.explanation.method == "score-cam" and view.explanation.layer == "c1"
    view.method.value = "occlusion"
    assert view.layer_picker.layout.display == "none" and view.explanation.layer != "c1"
    assert seen[-1][0] == "computing Occlusion …"
    view.close()
    kept = ClassActivationMap(state, method="saliency")  # the old way of choosing still works
    assert kept.method.value == "saliency" and kept.explanation.method == "saliency"
    kept.close()
