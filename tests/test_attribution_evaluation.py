"""Evaluating attribution maps: the randomisation sanity check (`attribution.sanity`) and the deletion and
insertion curves (`attribution.faithfulness`), each against what is known without the code under test."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from scipy.stats import spearmanr

import cnnviz_widgets as cw
from cnnviz_widgets import CnnvizError, ModelState
from cnnviz_widgets.attribution import sanity
from cnnviz_widgets.attribution.faithfulness import FaithfulnessCurve, blur, faithfulness, make_baseline
from cnnviz_widgets.attribution.sanity import SanityReport, sanity_check
from cnnviz_widgets.network import memory

SOBEL = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], "float32")


@pytest.fixture(scope="module")
def edge_model(k):
    """16×16×3 classifier whose first conv layer is 8 Sobel edge detectors (negative bias: flat regions give 0),
    then conv(8) -> pool -> conv(8) -> GAP -> Dense(3) with seeded random weights."""
    k.utils.set_random_seed(0)
    inputs = k.Input((16, 16, 3), name="pixels")
    x = k.layers.Conv2D(8, 3, padding="same", activation="relu", name="edges")(inputs)
    x = k.layers.MaxPooling2D(name="pool1")(x)
    x = k.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv2")(x)
    x = k.layers.MaxPooling2D(name="pool2")(x)
    x = k.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv3")(x)
    x = k.layers.GlobalAveragePooling2D(name="gap")(x)
    model = k.Model(inputs, k.layers.Dense(3, name="logits")(x), name="edge_net")
    kernel = np.zeros((3, 3, 3, 8), "float32")
    for i, f in enumerate([SOBEL, -SOBEL, SOBEL.T, -SOBEL.T, SOBEL + SOBEL.T, -SOBEL - SOBEL.T, SOBEL - SOBEL.T,
                           SOBEL.T - SOBEL]):
        kernel[:, :, :, i] = f[:, :, None] / 3
    model.get_layer("edges").set_weights([kernel, np.full(8, -0.05, "float32")])
    return model


@pytest.fixture(scope="module")
def edge_state(edge_model):
    picture = np.zeros((16, 16, 3), np.uint8)  # two bright rectangles on black: strong edges
    picture[4:12, 5:11] = 255
    picture[2:4, 12:15] = 180
    return ModelState(edge_model, image=picture, preprocess="unit")


@pytest.fixture(scope="module")
def linear_model(k):
    """A linear classifier on 10×9×3: conv 1×1 (4 maps, biased, no activation) -> GAP -> Dense(3, linear)."""
    k.utils.set_random_seed(5)
    inputs = k.Input((10, 9, 3), name="pixels")
    x = k.layers.Conv2D(4, 1, name="mix", bias_initializer="random_normal")(inputs)
    x = k.layers.GlobalAveragePooling2D(name="gap")(x)
    return k.Model(inputs, k.layers.Dense(3, name="logits", bias_initializer="random_normal")(x), name="linear")


@pytest.fixture(scope="module")
def linear_state(linear_model):
    picture = np.random.default_rng(3).integers(0, 256, (10, 9, 3), dtype=np.uint8)
    return ModelState(linear_model, image=picture, preprocess="unit")


def contributions(model, x: np.ndarray, c: int) -> tuple[np.ndarray, float]:
    """Per pixel p: what x_p adds to class c's logit, (1/HW) x_p · (W_mix W_dense[:, c]); and the logit at x = 0."""
    (w1, b1), (wd, bd) = model.get_layer("mix").get_weights(), model.get_layer("logits").get_weights()
    w1, b1, wd, bd = (np.asarray(a, np.float64) for a in (w1, b1, wd, bd))
    per_pixel = np.asarray(x, np.float64) @ (w1[0, 0] @ wd[:, c]) / (x.shape[0] * x.shape[1])
    return per_pixel, float(b1 @ wd[:, c] + bd[c])


# -- the sanity check ------------------------------------------------------------------------------------------


def test_spearman_and_ssim_agree_with_their_definitions(rng):
    a, b = rng.normal(size=(9, 7)), rng.normal(size=(9, 7))
    b[:3] = 0.0  # ties, ranked by their mean rank as scipy does
    assert sanity.spearman(a, b) == pytest.approx(spearmanr(np.abs(a).ravel(), np.abs(b).ravel())[0], abs=1e-12)
    assert sanity.spearman(a, -a) == pytest.approx(1.0)  # of |map|
    assert sanity.spearman(a, np.zeros_like(a)) == 0.0  # a flat map ranks nothing
    assert sanity.ssim(a, a) == pytest.approx(1.0)
    assert sanity.ssim(a, b) < 0.5


def test_edges_survive_randomisation_and_grad_cam_does_not(edge_state, edge_model):
    before = [np.array(v.numpy()) for v in edge_model.weights]
    outputs = np.asarray(edge_model(edge_state.model_input.array[None]))
    cam_before = edge_state.explanation("grad-cam").heatmap.copy()
    for seed in (0, 1, 2):
        report = sanity_check(edge_state, ["grad-cam", "saliency"], seed=seed)
        assert report.layers == ("logits", "conv3", "conv2", "edges") and report.complete
        saliency_curve = np.array(list(report.similarity("saliency").values()))
        cam_curve = np.array(list(report.similarity("grad-cam").values()))
        # Saliency follows the edges, which the edge detectors' ReLU and the max pooling pick out whatever
        # the layers above compute (seen: 0.84..0.89 with the top layers random, 0.72..0.80 with all).
        assert saliency_curve.min() > 0.65 and saliency_curve[:3].min() > 0.8
        # Grad-CAM follows the classifier: once the two top layers are random it is another map (seen: |rho|
        # 0.00..0.44 after conv3, and 0 where the random layers leave no positive evidence: a flat map).
        assert abs(cam_curve[1]) < 0.5 and np.abs(cam_curve[1:]).mean() < 0.4
        assert np.abs(cam_curve).mean() < saliency_curve.mean() - 0.4
    # The user's model is untouched: every variable bit-identical, the same outputs, the same map.
    assert all(np.array_equal(a, np.asarray(v.numpy())) for a, v in zip(before, edge_model.weights, strict=True))
    np.testing.assert_array_equal(np.asarray(edge_model(edge_state.model_input.array[None])), outputs)
    np.testing.assert_array_equal(edge_state.explanation("grad-cam").heatmap, cam_before)


def test_the_randomised_network_is_what_a_copy_with_those_weights_computes(edge_state, edge_model, k, monkeypatch):
    drawn, redrawn = {}, sanity.redrawn

    def recorded(layer, variable, seed):
        drawn[variable.path] = value = np.asarray(redrawn(layer, variable, seed))
        return value

    monkeypatch.setattr(sanity, "redrawn", recorded)
    report = sanity_check(edge_state, ["grad-cam", "saliency"], layers=["logits", "conv3"], seed=7)
    copy = k.models.clone_model(edge_model)
    copy.set_weights([drawn.get(v.path, np.asarray(v.numpy())) for v in edge_model.weights])
    assert len(drawn) == 4  # two kernels, two biases
    copied = ModelState(copy, image=edge_state.image, preprocess="unit")
    for method in report.methods:
        np.testing.assert_allclose(copied.explanation(method, report.target.index).heatmap, report.maps[method][1],
                                   atol=1e-6)


def test_a_filter_target_randomises_only_the_layers_under_it(tiny_model, rng):
    state = ModelState(tiny_model, image=rng.integers(0, 256, (16, 16, 3), dtype=np.uint8), layer="conv_b")
    report = sanity_check(state, ["saliency"], of="filter")
    assert report.target == cw.Target("filter", 0, "conv_b") and report.layers == ("conv_b", "conv_a")


def test_the_report_keeps_maps_times_and_how(edge_state):
    report = sanity_check(edge_state, "saliency", layers=["logits", "conv3"], seed=4)
    assert isinstance(report, SanityReport) and report.methods == ("saliency",)
    assert report.grid().shape == (1, 3, 16, 16) and report.seconds > 0
    assert "initializer" in report.randomisation and report.seed == 4
    assert report.similarity("saliency", "ssim").keys() == {"logits", "conv3"}
    again = sanity_check(edge_state, "saliency", layers=["logits", "conv3"], seed=4)
    np.testing.assert_array_equal(again.spearman["saliency"], report.spearman["saliency"])  # seeded
    with pytest.raises(CnnvizError, match="no method 'grad-cam'; it has saliency"):
        report.similarity("grad-cam")
    with pytest.raises(CnnvizError, match="unknown measure 'pearson'"):
        report.similarity("saliency", "pearson")


def test_the_sanity_check_refuses_what_it_cannot_do(edge_state):
    with pytest.raises(CnnvizError, match="unknown method 'gradcam'; expected one of grad-cam, "):
        sanity_check(edge_state, ["gradcam"])
    with pytest.raises(CnnvizError, match="pool1 has no weights .*: logits, conv3, conv2, edges"):
        sanity_check(edge_state, ["saliency"], layers=["pool1"])
    with pytest.raises(CnnvizError, match="options given for 'grad-cam'"):
        sanity_check(edge_state, ["saliency"], options={"grad-cam": {}})


def test_the_sanity_check_stops_when_cancelled(edge_state):
    stop = threading.Event()
    report = sanity_check(edge_state, ["saliency"], progress=lambda done, total: stop.set(), cancel=stop)
    assert report.layers == ("logits",) and not report.complete and len(report.maps["saliency"]) == 1


def test_a_sanity_check_that_does_not_fit_says_so_before_it_draws(edge_state, edge_model, monkeypatch):
    monkeypatch.setattr(memory, "memory_facts", lambda: memory.MemoryFacts(available=1000))
    before = [np.array(v.numpy()) for v in edge_model.weights]
    with pytest.raises(memory.MemoryBudgetError, match=r"the sanity check \(4 layers re-drawn, 16×16 input\) "
                                                       "needs about .*: choose a smaller max_side"):
        sanity_check(edge_state, ["saliency"])
    assert all(np.array_equal(a, np.asarray(v.numpy())) for a, v in zip(before, edge_model.weights, strict=True))


# -- deletion and insertion ------------------------------------------------------------------------------------


def test_deletion_of_a_linear_model_is_its_closed_form(linear_state, linear_model):
    x = linear_state.model_input.array
    c = 1
    per_pixel, at_zero = contributions(linear_model, x, c)
    full = at_zero + per_pixel.sum()
    order = np.argsort(-per_pixel.ravel(), kind="stable")
    counts = np.rint(np.linspace(0, 90, 11)).astype(int)
    removed = np.concatenate([[0.0], np.cumsum(per_pixel.ravel()[order])])[counts]
    curve = faithfulness(linear_state, per_pixel, "deletion", steps=10, class_index=c, score="logit")
    assert isinstance(curve, FaithfulnessCurve) and curve.method == "given" and curve.complete
    np.testing.assert_allclose(curve.fractions, counts / 90)
    np.testing.assert_allclose(curve.scores, full - removed, atol=1e-5)
    area = float(np.sum((curve.fractions[1:] - curve.fractions[:-1]) * ((full - removed)[1:] + (full - removed)[:-1])
                        / 2))
    assert curve.auc == pytest.approx(area, abs=1e-5)
    inserted = faithfulness(linear_state, per_pixel, "insertion", steps=10, baseline=0.0, class_index=c,
                            score="logit", batch_size=4)
    np.testing.assert_allclose(inserted.scores, at_zero + removed, atol=1e-5)
    assert inserted.batch_size == 4


def test_grad_cams_order_gives_the_closed_form_too(linear_state, linear_model):
    x = linear_state.model_input.array
    per_pixel, at_zero = contributions(linear_model, x, 0)
    curve = faithfulness(linear_state, "grad-cam", steps=45, class_index=0, score="logit")
    # Grad-CAM of the 1×1 conv: relu(sum_k A_k dlogit/dA_k averaged) = relu(per-pixel contribution + a constant).
    (_, b1), (wd, _) = linear_model.get_layer("mix").get_weights(), linear_model.get_layer("logits").get_weights()
    cam = np.maximum(per_pixel + (b1 @ wd[:, 0]) / 90, 0)
    expected_map = (cam - cam.min()) / (cam.max() - cam.min())
    np.testing.assert_allclose(curve.heatmap, expected_map, atol=1e-5)
    order = np.argsort(-curve.heatmap.ravel(), kind="stable")
    removed = np.concatenate([[0.0], np.cumsum(per_pixel.ravel()[order])])[::2]  # 45 steps of 2 of the 90 pixels
    expected = at_zero + per_pixel.sum() - removed
    np.testing.assert_allclose(curve.scores, expected, atol=1e-5)
    assert curve.method == "grad-cam" and curve.score == "logit" and curve.baseline == "0 in every input channel"


def test_the_curve_starts_at_the_models_probability(linear_state):
    top = linear_state.predictions(top=1)
    curve = faithfulness(linear_state, "saliency", "insertion", steps=4)
    assert curve.score == "probability" and curve.target == cw.Target("class", top.indices[0])
    assert curve.scores[-1] == pytest.approx(top.probabilities[0], abs=1e-6)
    assert "blurred" in curve.baseline and 0.0 <= curve.auc <= 1.0


def test_baselines_and_refusals(linear_state, rng):
    x = rng.normal(size=(9, 8, 3)).astype(np.float32)
    assert make_baseline(x, "mean")[0][4, 4] == pytest.approx(x.mean(axis=(0, 1)), abs=1e-6)
    assert make_baseline(x, [1.0, 2.0, 3.0])[0][0, 0].tolist() == [1.0, 2.0, 3.0]
    smooth = blur(x, 1.0)
    assert smooth.shape == x.shape and smooth.std() < x.std() and smooth.mean() == pytest.approx(x.mean(), abs=0.05)
    with pytest.raises(CnnvizError, match="unknown metric 'removal'"):
        faithfulness(linear_state, "saliency", "removal")
    with pytest.raises(CnnvizError, match=r"baseline must be .* got shape \(2,\)"):
        faithfulness(linear_state, "saliency", baseline=[0.0, 1.0])
    with pytest.raises(CnnvizError, match=r"the map must be \(H, W\) = \(10, 9\)"):
        faithfulness(linear_state, np.zeros((9, 10)))
    stop = threading.Event()
    stop.set()
    cut = faithfulness(linear_state, "saliency", steps=10, batch_size=2, cancel=stop)
    assert not cut.complete and len(cut.scores) == 2


def test_a_curve_that_does_not_fit_says_so(linear_state, monkeypatch):
    monkeypatch.setattr(memory, "memory_facts", lambda: memory.MemoryFacts(available=1000))
    with pytest.raises(memory.MemoryBudgetError, match="8 perturbed 9×10 inputs at once needs about"):
        faithfulness(linear_state, np.zeros((10, 9)), batch_size=8)


def test_the_root_package_names_them():
    assert cw.sanity_check is sanity_check and cw.faithfulness is faithfulness
    assert cw.SanityReport is SanityReport and cw.FaithfulnessCurve is FaithfulnessCurve
