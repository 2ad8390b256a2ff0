"""explain.py and ModelState's explanation section: predictions, Grad-CAM and saliency, checked against
numpy argsort, closed-form gradients and tf-keras-vis on the same model and input."""

from __future__ import annotations

import json
import re
from importlib import resources

import numpy as np
import pytest

from cnnviz_widgets import CnnvizError, LayerError, ModelError, ModelGraph, ModelState, sample_image
from cnnviz_widgets.attribution.classes import Target, find_classifier, imagenet_class_index, imagenet_class_names
from cnnviz_widgets.attribution.explainer import Explainer
from cnnviz_widgets.attribution.gradients import plain_chain
from cnnviz_widgets.attribution.heatmaps import overlay, upsample
from cnnviz_widgets.pictures.preprocessing import prepare_input
from cnnviz_widgets.pictures.render import apply_colormap


def min_max(values: np.ndarray) -> np.ndarray:
    """tf-keras-vis' normalisation, without its epsilon: (v - min) / (max - min)."""
    values = np.asarray(values, dtype=np.float64)
    span = values.max() - values.min()
    return np.zeros_like(values) if span == 0 else (values - values.min()) / span  # a flat map (a dead class): 0


@pytest.fixture(scope="module")
def astronaut_224():
    return prepare_input(sample_image("astronaut"), (224, 224, 3), "caffe").array


# -- ImageNet class names ------------------------------------------------------------------------------


def test_imagenet_classes_ship_in_keras_format():
    text = resources.files("cnnviz_widgets").joinpath("data", "imagenet_classes.json").read_text("utf-8")
    raw = json.loads(text)
    assert list(raw) == [str(i) for i in range(1000)]
    index = imagenet_class_index()
    known = {0: "tench", 1: "goldfish", 281: "tabby", 817: "sports_car", 999: "toilet_tissue"}
    assert {i: index[i][1] for i in known} == known
    assert index[0][0] == "n01440764" and index[999][0] == "n15075141"
    wnids = [index[i][0] for i in range(1000)]
    assert len(set(wnids)) == 1000 and all(re.fullmatch(r"n\d{8}", w) for w in wnids)
    assert wnids == sorted(wnids)  # Keras' order: classes sorted by WordNet id
    names = imagenet_class_names()
    assert names[817] == "sports car" and names[999] == "toilet tissue" and len(names) == 1000


# -- predictions ---------------------------------------------------------------------------------------


def test_vgg16_predictions_are_the_model_output_sorted(vgg16_full, astronaut_224):
    explainer = Explainer(ModelGraph(vgg16_full))
    classifier = explainer.classifier
    assert (classifier.layer, classifier.n_classes, classifier.activation) == ("predictions", 1000, "softmax")
    assert classifier.names_source == "ImageNet" and classifier.logit == "dense"
    predictions = explainer.predict(astronaut_224, top=5)
    reference = np.asarray(vgg16_full(astronaut_224[None], training=False))[0]
    assert predictions.outputs.sum() == pytest.approx(1.0, abs=1e-5)
    np.testing.assert_allclose(predictions.outputs, reference, rtol=1e-5, atol=1e-9)
    assert list(predictions.indices) == list(np.argsort(-reference, kind="stable")[:5])
    np.testing.assert_array_equal(predictions.probabilities, reference[list(predictions.indices)])
    assert predictions.names == tuple(imagenet_class_names()[i] for i in predictions.indices)
    assert predictions.note == "the model's softmax output"
    explainer.predict(astronaut_224, top=2)
    assert explainer.forward_passes == 1  # the same input is not run again


def test_tiny_classifier_without_softmax_gets_class_indices_or_given_names(nested_model, rng):
    graph = ModelGraph(nested_model)  # ... GlobalAveragePooling2D -> Dense(3) with no activation: logits
    explainer = Explainer(graph)
    x = rng.uniform(0, 255, (24, 24, 3)).astype(np.float32)
    predictions = explainer.predict(x, top=5)
    logits = np.asarray(nested_model(x[None]))[0].astype(np.float64)
    softmax = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    assert list(predictions.indices) == list(np.argsort(-logits)) and len(predictions.indices) == 3
    np.testing.assert_allclose(predictions.probabilities, softmax[list(predictions.indices)], rtol=1e-5)
    assert predictions.names == tuple(f"class {i}" for i in predictions.indices)
    assert "softmax of the model's linear outputs" in predictions.note
    explainer.set_class_names(["cat", "dog", "bird"])
    assert explainer.predict(x, top=1).names == (("cat", "dog", "bird")[predictions.indices[0]],)
    with pytest.raises(ModelError, match="class_names has 2 names; transfer has 3 classes"):
        explainer.set_class_names(["cat", "dog"])
    assert explainer.classifier.names == ("cat", "dog", "bird")  # unchanged by the refused names
    with pytest.raises(CnnvizError, match="top must be an integer >= 1"):
        explainer.predict(x, top=0)


def test_conv_only_model_says_it_has_no_classifier(vgg16_bsds):
    explainer = Explainer(ModelGraph(vgg16_bsds))
    assert not explainer.has_classifier
    with pytest.raises(ModelError, match=r"has no classifier: its output is 512 maps, not one score per class"):
        explainer.predict(np.zeros((32, 32, 3), np.float32))
    with pytest.raises(ModelError, match="The offline VGG16 weights .* keep only its 13 conv layers"):
        find_classifier(ModelGraph(vgg16_bsds))


# -- Grad-CAM and saliency -----------------------------------------------------------------------------


def test_grad_cam_of_a_logit_is_the_cam_closed_form(nested_model, rng):
    """conv -> global average pooling -> Dense: d logit_c / d A_k = W[k, c] / (h w) everywhere, so Grad-CAM is
    relu(sum_k W[k, c] A_k) / (h w): the class activation map of Zhou et al., computed here without gradients."""
    state = ModelState(nested_model, image=rng.integers(0, 256, (24, 24, 3), dtype=np.uint8))
    explainer = state.explainer
    x = state.model_input.array
    for c in range(3):
        result = explainer.grad_cam(x, Target("class", c))
        assert result.layer == "inner_conv2" and result.score == "logit"  # the last conv layer by default
        maps = state.activation("inner_conv2").astype(np.float64)
        kernel = np.asarray(nested_model.get_layer("head").kernel, dtype=np.float64)
        h, w = maps.shape[:2]
        np.testing.assert_allclose(result.weights, kernel[:, c] / (h * w), rtol=1e-5, atol=1e-9)
        expected = np.maximum(maps @ kernel[:, c], 0) / (h * w)
        np.testing.assert_allclose(result.raw, expected, rtol=1e-4, atol=1e-4 * expected.max())  # float32 sums
        assert result.heatmap.shape == (24, 24)
        np.testing.assert_allclose(result.heatmap, min_max(upsample(expected, (24, 24))), atol=1e-4)
        logit = np.asarray(nested_model(x[None]))[0, c]
        assert result.score_value == pytest.approx(float(logit), rel=1e-5)


# tf-keras-vis imports scipy.ndimage.interpolation (deprecated) and calls models with a list of inputs
TF_KERAS_VIS_NOISE = (pytest.mark.filterwarnings("ignore::DeprecationWarning"),
                      pytest.mark.filterwarnings("ignore:The structure of `inputs`:UserWarning"))


@TF_KERAS_VIS_NOISE[0]
@TF_KERAS_VIS_NOISE[1]
@pytest.mark.parametrize("score", ["logit", "probability"])
def test_grad_cam_and_saliency_equal_tf_keras_vis_on_a_softmax_classifier(softmax_model, k, rng, score):
    tf_keras_vis = pytest.importorskip("tf_keras_vis")
    from tf_keras_vis.gradcam import Gradcam
    from tf_keras_vis.saliency import Saliency
    from tf_keras_vis.utils.scores import CategoricalScore

    def to_logits(model):  # what tf-keras-vis' ReplaceToLinear does (it reads output_names, gone in Keras 3)
        model.get_layer("probs").activation = k.activations.linear

    modifier = to_logits if score == "logit" else None
    x = rng.normal(0, 1, (12, 12, 3)).astype(np.float32)
    explainer = Explainer(ModelGraph(softmax_model))
    for c in range(3):
        mine = explainer.grad_cam(x, Target("class", c), layer="c2", score=score)
        assert mine.score == score
        theirs = np.asarray(Gradcam(softmax_model, model_modifier=modifier)(
            CategoricalScore([c]), x[None], penultimate_layer="c2", expand_cam=False, normalize_cam=False))[0]
        np.testing.assert_allclose(mine.raw, theirs, rtol=1e-4, atol=1e-5 * float(np.abs(theirs).max()))
        full = Gradcam(softmax_model, model_modifier=modifier)(CategoricalScore([c]), x[None], penultimate_layer="c2",
                                                                normalize_cam=False)[0]
        # tf-keras-vis upsamples with the corners aligned (scipy.ndimage.zoom); its epsilon is left out here
        np.testing.assert_allclose(min_max(upsample(mine.raw, (12, 12), align_corners=True)), min_max(full),
                                   atol=1e-4)
        saliency = explainer.saliency(x, Target("class", c), score=score)
        theirs = Saliency(softmax_model, model_modifier=modifier)(CategoricalScore([c]), x[None],
                                                                   normalize_map=False)[0]
        np.testing.assert_allclose(saliency.raw, theirs, rtol=1e-4, atol=1e-5 * float(theirs.max()))
        # tf-keras-vis divides by (max - min + 1e-7): compare the scaled maps without that epsilon
        np.testing.assert_allclose(saliency.heatmap, min_max(theirs), atol=1e-4)
    assert tf_keras_vis.__version__


@TF_KERAS_VIS_NOISE[0]
@TF_KERAS_VIS_NOISE[1]
def test_vgg16_grad_cam_equals_tf_keras_vis(vgg16_full, astronaut_224, k):
    pytest.importorskip("tf_keras_vis")
    from tf_keras_vis.gradcam import Gradcam
    from tf_keras_vis.utils.scores import CategoricalScore

    explainer = Explainer(ModelGraph(vgg16_full))
    target = explainer.class_target(astronaut_224)
    assert target.index == int(np.argmax(np.asarray(vgg16_full(astronaut_224[None]))))
    mine = explainer.grad_cam(astronaut_224, target, score="probability")
    assert mine.layer == "block5_conv3" and mine.raw.shape == (14, 14) and mine.raw.max() > 0
    # the model's softmax output, no modifier: tf-keras-vis needs no clone of the 138M-parameter model
    theirs = np.asarray(Gradcam(vgg16_full)(CategoricalScore([target.index]), astronaut_224[None],
                                            penultimate_layer="block5_conv3", expand_cam=False,
                                            normalize_cam=False))[0]
    np.testing.assert_allclose(mine.raw, theirs, rtol=1e-3, atol=1e-4 * float(theirs.max()))
    np.testing.assert_allclose(mine.heatmap, min_max(upsample(theirs, (224, 224))), atol=1e-3)
    logit = explainer.grad_cam(astronaut_224, target)  # the default score: the logit, recomputed from fc2
    assert logit.score == "logit" and logit.raw.shape == (14, 14)
    fc2 = k.Model(vgg16_full.inputs, vgg16_full.get_layer("fc2").output)
    features = np.asarray(fc2(astronaut_224[None]), dtype=np.float64)[0]
    dense = vgg16_full.get_layer("predictions")
    logits = features @ np.asarray(dense.kernel, dtype=np.float64) + np.asarray(dense.bias, dtype=np.float64)
    assert logit.score_value == pytest.approx(logits[target.index], rel=1e-4, abs=1e-6)
    softmax = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    np.testing.assert_allclose(softmax, np.asarray(vgg16_full(astronaut_224[None]))[0], rtol=1e-4, atol=1e-8)


def test_saliency_of_a_filter_is_its_closed_form_gradient(tiny_model, rng):
    """Without a classifier the score is a filter's mean activation. For conv_a (3×3, same padding, relu) on
    the input: d mean / d x[i, j, c] = sum over the output pixels p where the filter is active of
    K[i - p_y + 1, j - p_x + 1, c] / (H W); the saliency is its max |.| over the channels."""
    state = ModelState(tiny_model, image=rng.integers(0, 256, (16, 16, 3), dtype=np.uint8))
    state.layer, state.filter = "conv_a", 2
    target = state.explain_target(of="filter")  # the model has a classifier: classes are the default
    assert target == Target("filter", 2, "conv_a")
    result = state.explanation("saliency", of="filter")
    kernel, _ = state.weights("conv_a")
    active = (state.activation("conv_a")[..., 2] > 0).astype(np.float64)
    grad = np.zeros((18, 18, 3))
    for dy in range(3):
        for dx in range(3):
            grad[dy:dy + 16, dx:dx + 16] += active[..., None] * kernel[dy, dx, :, 2]
    expected = np.abs(grad[1:17, 1:17] / 256).max(axis=2)
    np.testing.assert_allclose(result.raw, expected, rtol=1e-4, atol=1e-7)
    assert result.score == "mean activation" and result.layer == "pixels"
    assert result.score_value == pytest.approx(float(state.activation("conv_a")[..., 2].mean()), rel=1e-5)

    state.layer = "conv_b"  # Grad-CAM of conv_b's filter weighs the last conv layer before it
    cam = state.explanation("grad-cam", of="filter")
    assert cam.layer == "conv_a" and cam.target == Target("filter", state.filter, "conv_b")
    state.layer = "conv_a"
    with pytest.raises(LayerError, match="no conv layer before conv_a for Grad-CAM to weigh"):
        state.explanation("grad-cam", of="filter")
    state.layer = state.input_layer
    with pytest.raises(LayerError, match="is the model input"):
        state.explanation("saliency", of="filter")
    with pytest.raises(CnnvizError, match="of must be 'class' or 'filter'; got 'channel'"):
        state.explanation("saliency", of="channel")


def test_explanation_errors_name_what_is_accepted(softmax_model, rng):
    explainer = Explainer(ModelGraph(softmax_model))
    x = rng.normal(size=(12, 12, 3)).astype(np.float32)
    with pytest.raises(CnnvizError, match=r"class_index must be an integer in 0..2; got 3"):
        explainer.class_target(x, 3)
    with pytest.raises(CnnvizError, match="unknown score 'logits'; expected one of"):
        explainer.grad_cam(x, Target("class", 0), score="logits")
    with pytest.raises(CnnvizError, match="unknown method 'cam'"):
        explainer.explain(x, Target("class", 0), method="cam")
    with pytest.raises(LayerError, match="gap .GlobalAveragePooling2D. has no maps"):
        explainer.grad_cam(x, Target("class", 0), layer="gap")
    with pytest.raises(CnnvizError, match=r"c1 has 5 filters \(0..4\); got filter 5"):
        explainer.filter_target("c1", 5)
    with pytest.raises(LayerError, match="does not depend on c2"):  # c1's filter is computed before c2
        explainer.grad_cam(x, explainer.filter_target("c1", 0), layer="c2")


# -- pictures ------------------------------------------------------------------------------------------


def test_upsample_matches_scipy_and_pillow(rng):
    from PIL import Image
    from scipy import ndimage

    small = rng.random((7, 5)).astype(np.float32)
    centred = upsample(small, (32, 20))
    np.testing.assert_allclose(centred, ndimage.zoom(small.astype(np.float64), (32 / 7, 4), order=1,
                                                     grid_mode=True, mode="nearest"), atol=1e-6)
    pil = np.asarray(Image.fromarray(small, mode="F").resize((20, 32), Image.Resampling.BILINEAR))
    np.testing.assert_allclose(centred, pil, atol=1e-6)
    corners = upsample(small, (32, 20), align_corners=True)
    np.testing.assert_allclose(corners, ndimage.zoom(small, (32 / 7, 4), order=1), atol=1e-6)
    assert corners[0, 0] == small[0, 0] and corners[-1, -1] == small[-1, -1]
    with pytest.raises(CnnvizError, match="values must be a non-empty"):
        upsample(np.zeros((2, 2, 2)), (4, 4))


def test_overlay_blends_the_picture_and_the_coloured_map(rng):
    picture = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
    heat = rng.random((6, 8))
    np.testing.assert_array_equal(overlay(picture, heat, "magma", 0.0), picture)
    np.testing.assert_array_equal(overlay(picture, heat, "magma", 1.0), apply_colormap(heat, "magma"))
    half = overlay(picture, heat, "viridis", 0.5)
    expected = np.rint(0.5 * picture + 0.5 * apply_colormap(heat, "viridis").astype(np.float64))
    assert np.abs(half.astype(int) - expected).max() <= 1
    grey = overlay(picture, heat, "grey", 1.0)
    np.testing.assert_array_equal(grey[..., 0], apply_colormap(heat, "grey"))
    # weighted: each pixel's opacity is 2 * opacity * heat up to 1, so where the map is 0 the picture is untouched
    # and the peak is full colour from opacity 0.5 on
    heat[:3] = 0.0
    heat[5, 7] = 1.0
    weighted = overlay(picture, heat, "magma", 0.6, weighted=True)
    alpha = np.minimum(1.0, 1.2 * heat[..., None])
    np.testing.assert_array_equal(weighted[5, 7], apply_colormap(heat, "magma")[5, 7])
    expected = np.rint((1 - alpha) * picture + alpha * apply_colormap(heat, "magma").astype(np.float64))
    assert np.abs(weighted.astype(int) - expected).max() <= 1
    np.testing.assert_array_equal(weighted[:3], picture[:3])
    with pytest.raises(CnnvizError, match="opacity must be a number in 0..1"):
        overlay(picture, heat, opacity=1.5)
    with pytest.raises(CnnvizError, match=r"heatmap must be \(H, W\) = \(6, 8\)"):
        overlay(picture, heat.T)


# -- ModelState --------------------------------------------------------------------------------------------


def test_state_predictions_and_class_choice(softmax_model, rng):
    state = ModelState(softmax_model, image=rng.integers(0, 256, (12, 12, 3), dtype=np.uint8))
    assert state.has_classifier()
    predictions = state.predictions(top=3)
    assert state.status.startswith("prediction: ") and state.status.endswith(" ms")
    assert state.explain_target() == Target("class", predictions.indices[0])
    state.explained_class = predictions.indices[2]
    assert state.explain_target() == Target("class", predictions.indices[2])
    with pytest.raises(CnnvizError, match="class_index must be an integer in 0..2"):
        state.explained_class = 7
    assert state.explained_class == predictions.indices[2]
    result = state.explanation("grad-cam")
    assert result.target.index == predictions.indices[2] and state.status.startswith("Grad-CAM: ")
    passes = state.explainer.gradient_passes
    assert state.explanation("grad-cam") is result and state.explainer.gradient_passes == passes  # cached
    state.set_image(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8))
    assert state.explanation("grad-cam") is not result


def test_state_on_a_conv_only_model_refuses_classes(vgg16_bsds):
    state = ModelState(vgg16_bsds, max_side=32)
    assert not state.has_classifier()
    with pytest.raises(ModelError, match="has no classifier"):
        state.predictions()
    with pytest.raises(ModelError, match="has no classifier"):
        state.explained_class = 3
    with pytest.raises(ModelError, match="has no classifier"):
        state.explain_target(class_index=3)


def test_a_second_image_runs_through_the_same_extractor(tiny_model, rng):
    first, second = (rng.integers(0, 256, (16, 16, 3), dtype=np.uint8) for _ in range(2))
    state = ModelState(tiny_model, image=first)
    state.activation("conv_b")
    other = state.prepare_image(second)
    maps = state.activation_for(other, "conv_b")
    np.testing.assert_allclose(maps, ModelState(tiny_model, image=second).activation("conv_b"), rtol=1e-6)
    passes = state.forward_passes
    state.activation_for(other, "pool_a")
    state.activation("pool_a")
    assert state.forward_passes == passes  # both images' outputs are cached together
    np.testing.assert_array_equal(state.activation_for(other, state.input_layer), other.array)
    assert state.prepare_image("cat").picture.shape == (16, 16, 3)  # fixed-size model: resized


# -- from the activation cache: only the layers between, the same gradients -----------------------------


def _full(state):
    """An explainer on the same model that runs the whole network from the input every time."""
    return Explainer(state.graph)


def test_filter_gradients_from_cached_maps_equal_the_full_network(vgg16_bsds):
    state = ModelState(vgg16_bsds, image="astronaut", max_side=64)
    x, key = state.model_input.array, state._input_key
    full = _full(state)
    for layer, f, on in (("block4_conv1", 5, "block3_conv3"), ("block2_conv1", 17, "block1_conv2"),
                         ("block1_conv2", 3, "block1_conv1")):
        target = state.explainer.filter_target(layer, f)
        passes = state.forward_passes
        short = state.explainer.grad_cam(x, target, layer=on, key=key)
        assert state.forward_passes - passes <= 1 and state.explainer.forward_passes == 0
        reference = full.grad_cam(x, target, layer=on)
        assert short.score_value == pytest.approx(reference.score_value, rel=1e-5)
        np.testing.assert_allclose(short.weights, reference.weights, rtol=1e-4,
                                   atol=1e-6 * float(np.abs(reference.weights).max()))
        np.testing.assert_allclose(short.raw, reference.raw, rtol=1e-4, atol=1e-5 * float(reference.raw.max()))
        saliency, reference = state.explainer.saliency(x, target, key=key), full.saliency(x, target)
        np.testing.assert_allclose(saliency.raw, reference.raw, rtol=1e-4, atol=1e-5 * float(reference.raw.max()))
    assert state.forward_passes == 1  # every cached layer came from the image's one pass
    assert state.explainer.gradient_passes_from_input == 0  # saliency went back through the cache


def test_class_gradients_and_predictions_from_the_cache_equal_the_full_network(softmax_model, rng):
    state = ModelState(softmax_model, image=rng.integers(0, 256, (12, 12, 3), dtype=np.uint8))
    x, key = state.model_input.array, state._input_key
    full = _full(state)
    np.testing.assert_allclose(state.explainer.outputs(x, key), np.asarray(softmax_model(x[None]))[0], rtol=1e-5)
    assert state.explainer.forward_passes == 0 and state.explainer.partial_passes == 1
    for index in range(3):
        target = Target("class", index)
        for score in ("logit", "probability"):
            short = state.explainer.grad_cam(x, target, layer="c1", score=score, key=key)
            reference = full.grad_cam(x, target, layer="c1", score=score)
            np.testing.assert_allclose(short.weights, reference.weights, rtol=1e-4, atol=1e-7)
            np.testing.assert_allclose(short.raw, reference.raw, rtol=1e-4, atol=1e-7)
            # saliency: back through the cached c2, p1, c1 with TensorFlow's gradient ops, no forward pass
            short, reference = state.explainer.saliency(x, target, score, key), full.saliency(x, target, score)
            np.testing.assert_allclose(short.raw, reference.raw, rtol=1e-4, atol=1e-7)
            assert short.score_value == pytest.approx(reference.score_value, rel=1e-5)
    assert state.explainer.forward_passes == 0 and state.forward_passes == 1
    assert plain_chain(state.graph, "c2") == ["c2", "p1", "c1"]
    assert state.explainer.gradient_passes_from_input == 0  # nothing ran from the input


def test_a_skip_connection_falls_back_to_the_whole_network(k, rng):
    inputs = k.Input((10, 10, 3), name="img")
    a = k.layers.Conv2D(4, 3, padding="same", activation="relu", name="a")(inputs)
    b = k.layers.Conv2D(4, 3, padding="same", activation="relu", name="b")(a)
    c = k.layers.Conv2D(4, 3, padding="same", name="c")(b)
    d = k.layers.Add(name="skip")([c, a])  # c's output alone does not determine skip
    model = k.Model(inputs, k.layers.Conv2D(2, 3, padding="same", name="top")(d), name="skipper")
    state = ModelState(model, image=rng.integers(0, 256, (10, 10, 3), dtype=np.uint8))
    x, key = state.model_input.array, state._input_key
    target = state.explainer.filter_target("top", 1)
    short = state.explainer.grad_cam(x, target, layer="b", key=key)
    reference = _full(state).grad_cam(x, target, layer="b")
    np.testing.assert_allclose(short.raw, reference.raw, rtol=1e-4, atol=1e-7)
    short = state.explainer.grad_cam(x, state.explainer.filter_target("top", 0), layer="c", key=key)
    np.testing.assert_allclose(short.raw, _full(state).grad_cam(x, Target("filter", 0, "top"), layer="c").raw,
                               rtol=1e-4, atol=1e-7)


def test_saliency_back_through_every_conv_geometry_equals_the_tape(k, rng):
    """The input gradient of a stride-1 conv is taken as a forward conv with the turned kernel ("valid": padded
    in full; "same": odd kernels); other strides keep TensorFlow's own op. Each against the whole network's tape."""
    inputs = k.Input((15, 15, 3), name="img")
    x = k.layers.Conv2D(4, 3, padding="valid", activation="relu", name="valid3")(inputs)
    x = k.layers.Conv2D(3, 2, padding="valid", activation="relu", name="valid2")(x)
    x = k.layers.Conv2D(5, 5, padding="same", name="same5_linear")(x)
    x = k.layers.Conv2D(4, 3, strides=2, padding="same", activation="relu", name="strided")(x)
    x = k.layers.Conv2D(6, 2, padding="same", activation="relu", name="same_even")(x)
    model = k.Model(inputs, x, name="geometries")
    state = ModelState(model, image=rng.integers(0, 256, (15, 15, 3), dtype=np.uint8), preprocess="unit")
    x_in, key = state.model_input.array, state._input_key
    full = _full(state)
    for layer in ("same_even", "strided", "same5_linear", "valid2"):
        for f in (0, 2):
            target = state.explainer.filter_target(layer, f)
            short, reference = state.explainer.saliency(x_in, target, key=key), full.saliency(x_in, target)
            np.testing.assert_allclose(short.raw, reference.raw, rtol=1e-4, atol=1e-5 * float(reference.raw.max()))
    assert state.explainer.gradient_passes_from_input == 0  # every one went back through the cache
