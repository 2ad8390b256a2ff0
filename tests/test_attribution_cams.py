"""The CAM family (attribution/gradcam.py, attribution/scorecam.py): Grad-CAM++, LayerCAM and Score-CAM, each
equal to tf-keras-vis on the same model, layer and score, compared on `raw` before upsampling; where our
definition deliberately differs (Grad-CAM++'s exp(score) and alpha normalisation, Score-CAM's upsampling), the
test reproduces tf-keras-vis' variant from our result, so that the comparison is exact."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from cnnviz_widgets import CnnvizError, ModelGraph, ModelState
from cnnviz_widgets.attribution import catalogue, scorecam
from cnnviz_widgets.attribution.classes import Target
from cnnviz_widgets.attribution.explainer import Explainer
from cnnviz_widgets.attribution.heatmaps import upsample
from cnnviz_widgets.network import memory

# tf-keras-vis imports scipy.ndimage.interpolation (deprecated), calls models with a list of inputs, and its
# Score-CAM runs model.predict (a progress bar on stdout)
pytestmark = [pytest.mark.filterwarnings("ignore::DeprecationWarning"),
              pytest.mark.filterwarnings("ignore:The structure of `inputs`:UserWarning")]

CLASSES = 3


def _classifier(k, activation: str | None, seed: int):
    """12×12×3: conv(5) at the input's resolution -> pool -> conv(4) at 6×6 -> GAP -> Dense(3)."""
    k.utils.set_random_seed(seed)
    inputs = k.Input((12, 12, 3), name="pixels")
    x = k.layers.Conv2D(5, 3, padding="same", activation="relu", name="c1")(inputs)
    x = k.layers.MaxPooling2D(name="p1")(x)
    x = k.layers.Conv2D(4, 3, padding="same", activation="relu", name="c2")(x)
    x = k.layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = k.layers.Dense(CLASSES, activation=activation, name="head")(x)
    return k.Model(inputs, outputs, name=f"cams_{activation or 'logits'}")


@pytest.fixture(scope="module")
def logits_model(k):
    """Own models (the shared `softmax_model` has its activation swapped by another test module)."""
    return _classifier(k, None, 11)


@pytest.fixture(scope="module")
def probs_model(k):
    return _classifier(k, "softmax", 12)


@pytest.fixture(scope="module")
def x12():
    return np.random.default_rng(5).normal(0, 1, (12, 12, 3)).astype(np.float32)


def relative(mine: np.ndarray, theirs: np.ndarray) -> float:
    """max |mine - theirs| / max |theirs|."""
    return float(np.abs(np.asarray(mine, np.float64) - theirs).max() / max(float(np.abs(theirs).max()), 1e-30))


def assert_close(mine: np.ndarray, theirs: np.ndarray) -> bool:
    """Equal within 1e-4 of the peak; whether the map is a real one (not two zeros: the callers want some)."""
    theirs = np.asarray(theirs, np.float64)
    assert mine.shape == theirs.shape
    if theirs.max() == 0:
        np.testing.assert_array_equal(mine, 0)
        return False
    assert relative(mine, theirs) <= 1e-4
    return True


def their_score(c: int):
    from tf_keras_vis.utils.scores import CategoricalScore

    return CategoricalScore([c])


# -- the catalogue -----------------------------------------------------------------------------------------


def test_the_cams_are_in_the_catalogue():
    for name, options in (("grad-cam++", {}), ("layer-cam", {}),
                          ("score-cam", {"max_n": None, "progress": False, "cancel": None})):
        method = catalogue.method(name)
        assert method.family == "cam" and method.uses_layer and method.summary.endswith(".")
        assert dict(method.options) == options


# -- Grad-CAM++ and LayerCAM -----------------------------------------------------------------------------------


CASES = [("logits_model", "logit"), ("probs_model", "probability")]


@pytest.mark.parametrize(("model_name", "score"), CASES)
@pytest.mark.parametrize("layer", ["c1", "c2"])
def test_grad_cam_plus_plus_equals_tf_keras_vis(request, model_name, score, layer, x12):
    pytest.importorskip("tf_keras_vis")
    from tf_keras_vis.gradcam_plus_plus import GradcamPlusPlus

    model = request.getfixturevalue(model_name)
    explainer, real = Explainer(ModelGraph(model)), []
    for c in range(CLASSES):
        mine = explainer.explain(x12, Target("class", c), "grad-cam++", layer=layer, score=score)
        assert mine.raw.shape == model.get_layer(layer).output.shape[1:3] and mine.heatmap.shape == (12, 12)
        assert mine.weights.shape == (model.get_layer(layer).output.shape[-1],) and mine.attributions is None
        # tf-keras-vis (as the authors' code) scales every first derivative by exp(score) and divides each map's
        # alphas by their sum over the map; the paper (and we) do neither. Their map, from ours:
        maps, grads, value = explainer.paths.gradients(x12, Target("class", c), score, layer)
        g, a = grads.astype(np.float64), maps.astype(np.float64)
        denominator = 2 * g**2 + a.sum(axis=(0, 1)) * g**3
        alphas = np.divide(g**2, denominator, out=np.zeros_like(g), where=g != 0)
        sums = alphas.sum(axis=(0, 1))
        sums[sums == 0] = 1.0
        reproduced = np.exp(value) * np.maximum(a @ (mine.weights / sums), 0.0)
        theirs = np.asarray(GradcamPlusPlus(model)(their_score(c), x12[None], penultimate_layer=layer,
                                                   expand_cam=False, normalize_cam=False))[0]
        real.append(assert_close(reproduced, theirs))
        # ours is the paper's closed form
        expected = np.maximum(a @ (alphas * np.maximum(g, 0)).sum(axis=(0, 1)), 0.0)
        np.testing.assert_allclose(mine.raw, expected, rtol=1e-5, atol=1e-7 * expected.max())
    assert any(real)


@pytest.mark.parametrize(("model_name", "score"), CASES)
@pytest.mark.parametrize("layer", ["c1", "c2"])
def test_layer_cam_equals_tf_keras_vis(request, model_name, score, layer, x12):
    pytest.importorskip("tf_keras_vis")
    from tf_keras_vis.layercam import Layercam

    model = request.getfixturevalue(model_name)
    explainer, real = Explainer(ModelGraph(model)), []
    for c in range(CLASSES):
        mine = explainer.explain(x12, Target("class", c), "layer-cam", layer=layer, score=score)
        assert mine.weights is None and mine.attributions is None and mine.layer == layer
        theirs = np.asarray(Layercam(model)(their_score(c), x12[None], penultimate_layer=layer,
                                            expand_cam=False, normalize_cam=False))[0]
        real.append(assert_close(mine.raw, theirs))
    assert any(real)


def test_filter_targets_from_the_cache_equal_tf_keras_vis(tiny_model, k, rng):
    """A filter's mean activation, from the state's cached maps (the one-filter gradient path)."""
    pytest.importorskip("tf_keras_vis")
    from tf_keras_vis.gradcam_plus_plus import GradcamPlusPlus
    from tf_keras_vis.layercam import Layercam

    state = ModelState(tiny_model, image=rng.integers(0, 256, (16, 16, 3), dtype=np.uint8))
    x = state.model_input.array
    cut = k.Model(tiny_model.inputs, tiny_model.get_layer("conv_b").output)
    state.layer, real = "conv_b", []
    for f in range(3):
        state.filter = f
        gradients_before = state.explainer.gradient_passes_from_input
        mine = {name: state.explanation(name, of="filter", layer="conv_a") for name in ("grad-cam++", "layer-cam")}
        assert state.explainer.gradient_passes_from_input == gradients_before  # from conv_a's cached maps

        def score(output, f=f):
            return k.ops.mean(output[..., f], axis=(1, 2))

        theirs = np.asarray(Layercam(cut)(score, x[None], penultimate_layer="conv_a", expand_cam=False,
                                          normalize_cam=False))[0]
        real.append(assert_close(mine["layer-cam"].raw, theirs))
        maps, grads, value = state.explainer.paths.gradients(x, Target("filter", f, "conv_b"), "mean activation",
                                                             "conv_a")
        g = grads.astype(np.float64)
        alphas = np.divide(g**2, 2 * g**2 + maps.sum(axis=(0, 1)) * g**3, out=np.zeros_like(g), where=g != 0)
        sums = alphas.sum(axis=(0, 1))
        sums[sums == 0] = 1.0
        reproduced = np.exp(value) * np.maximum(maps @ (mine["grad-cam++"].weights / sums), 0.0)
        theirs = np.asarray(GradcamPlusPlus(cut)(score, x[None], penultimate_layer="conv_a", expand_cam=False,
                                                 normalize_cam=False))[0]
        real.append(assert_close(reproduced, theirs))
    assert any(real)


# -- Score-CAM ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("max_n", [None, 2])
@pytest.mark.parametrize("layer", ["c1", "c2"])
def test_score_cam_equals_tf_keras_vis(logits_model, layer, max_n, x12):
    """tf-keras-vis reads softmax(model output): on a model whose output is logits, our probability score.
    c1 is at the input's resolution (no upsampling); at c2 tf-keras-vis' aligned corners are asked for."""
    pytest.importorskip("tf_keras_vis")
    from tf_keras_vis.scorecam import Scorecam

    explainer, real = Explainer(ModelGraph(logits_model)), []
    for c in range(CLASSES):
        target = Target("class", c)
        if layer == "c1":
            mine = explainer.explain(x12, target, "score-cam", layer=layer, score="probability", max_n=max_n)
            assert mine.options["max_n"] == max_n
        else:
            mine = scorecam.score_cam(explainer.paths, x12, target, layer, "probability", max_n=max_n,
                                      align_corners=True)
        theirs = np.asarray(Scorecam(logits_model)(their_score(c), x12[None], penultimate_layer=layer, max_N=max_n,
                                                   expand_cam=False, normalize_cam=False))[0]
        real.append(assert_close(mine.raw, theirs))
        n_maps = logits_model.get_layer(layer).output.shape[-1]
        assert mine.weights.shape == (n_maps,) and mine.attributions is None
        if max_n is not None:
            assert np.count_nonzero(mine.weights) <= max_n and f"of {n_maps} maps weighed" in mine.note
    assert any(real)


def test_score_cam_is_the_paper_with_half_pixel_upsampling(logits_model, x12):
    """Our default, recomputed map by map: s(Up(A_k)) masks the input, the masked input's score weighs A_k."""
    explainer = Explainer(ModelGraph(logits_model))
    maps = explainer.paths.gradients(x12, Target("class", 1), "logit", "c2")[0].astype(np.float64)
    for score in ("logit", "probability"):
        mine = explainer.explain(x12, Target("class", 1), "score-cam", layer="c2", score=score)
        weights = np.zeros(maps.shape[-1])
        for m in range(maps.shape[-1]):
            big = upsample(maps[..., m], (12, 12)).astype(np.float64)
            if big.max() == big.min():
                continue
            mask = (big - big.min()) / (big.max() - big.min())
            logits = np.asarray(logits_model((x12 * mask[..., None])[None].astype(np.float32)), np.float64)[0]
            weights[m] = logits[1] if score == "logit" else np.exp(logits[1]) / np.exp(logits).sum()
        np.testing.assert_allclose(mine.weights, weights, rtol=1e-5, atol=1e-7)
        expected = np.maximum(maps @ weights, 0.0)
        np.testing.assert_allclose(mine.raw, expected, rtol=1e-5, atol=1e-7 * expected.max())


def test_score_cam_of_a_filter_is_the_masked_mean_activation(tiny_model, rng):
    state = ModelState(tiny_model, image=rng.integers(0, 256, (16, 16, 3), dtype=np.uint8))
    x = state.model_input.array
    state.layer, state.filter = "conv_b", 2
    mine = state.explanation("score-cam", of="filter", layer="conv_a")
    maps = state.activation("conv_a")
    for m in range(maps.shape[-1]):
        big = upsample(maps[..., m], (16, 16)).astype(np.float64)
        if big.max() == big.min():
            assert mine.weights[m] == 0
            continue
        masked = (x * ((big - big.min()) / (big.max() - big.min()))[..., None]).astype(np.float32)
        out = np.asarray(state.graph.segments.model(None, "conv_b")(masked[None]))[0]
        assert mine.weights[m] == pytest.approx(float(out[..., 2].mean()), rel=1e-5, abs=1e-7)


def test_score_cam_refuses_a_bad_max_n_and_unknown_options(tiny_model, rng):
    state = ModelState(tiny_model, image=rng.integers(0, 256, (16, 16, 3), dtype=np.uint8))
    for bad in (0, 7, 2.5, "all"):
        with pytest.raises(CnnvizError, match=r"max_n must be None \(every map\) or an integer in 1..6 \(the "
                                              rf"layer's maps\); got {bad!r}"):
            state.explanation("score-cam", layer="conv_b", max_n=bad)
    with pytest.raises(CnnvizError, match="score-cam has no option 'samples'; its options: cancel, max_n, progress"):
        state.explanation("score-cam", samples=8)
    with pytest.raises(CnnvizError, match="layer-cam has no option 'max_n'; its options: none"):
        state.explanation("layer-cam", max_n=2)


def test_score_cam_stops_before_a_batch_that_does_not_fit(logits_model, x12, monkeypatch):
    explainer = Explainer(ModelGraph(logits_model))
    segments, built = explainer.graph.segments, []
    original = segments.model
    monkeypatch.setattr(segments, "model", lambda start, ends, name="": built.append(name) or original(start, ends,
                                                                                                     name))
    monkeypatch.setattr(memory, "memory_facts", lambda: memory.MemoryFacts(available=1000, limit=2 * 10**9))
    with pytest.raises(memory.MemoryBudgetError, match=r"Score-CAM on a 12×12 input \(1 masked input at a time\) "
                                                       r"needs about 0\.0 GB, but this session has 0\.0 GB of memory "
                                                       r"left \(this session's limit is 2\.0 GB\): choose a smaller "
                                                       r"max_side, or a smaller image\."):
        scorecam.score_cam(explainer.paths, x12, Target("class", 0), "c2", "logit")
    assert "cnnviz_score_cam" not in built  # no masked input ran: refused before its segment was asked for


def test_score_cam_batches_report_progress_and_can_be_cancelled(logits_model, x12, monkeypatch):
    explainer = Explainer(ModelGraph(logits_model))
    target = Target("class", 0)
    whole = scorecam.score_cam(explainer.paths, x12, target, "c1", "logit")
    running = int(np.count_nonzero(whole.weights))
    monkeypatch.setattr(scorecam, "MAX_BATCH", 2)
    seen = []
    again = scorecam.score_cam(explainer.paths, x12, target, "c1", "logit", progress=lambda d, n: seen.append((d, n)))
    np.testing.assert_allclose(again.raw, whole.raw, rtol=1e-6)  # batches of 2 give the same map
    assert seen[-1] == (running, running) and len(seen) == -(-running // 2)
    stop = threading.Event()
    stop.set()
    with pytest.raises(CnnvizError, match=rf"Score-CAM was cancelled after 0 of {running} maps; nothing is kept"):
        scorecam.score_cam(explainer.paths, x12, target, "c1", "logit", cancel=stop)
    calls = []

    def second_call() -> bool:
        calls.append(1)
        return len(calls) > 1

    with pytest.raises(CnnvizError, match=rf"cancelled after 2 of {running} maps"):
        scorecam.score_cam(explainer.paths, x12, target, "c1", "logit", cancel=second_call)
