"""The gradient and perturbation methods (smoothgrad, integrated, guided, occlusion, input x gradient), checked
against tf-keras-vis given the same noise, closed forms on linear models and a guided gradient written in numpy."""

from __future__ import annotations

import numpy as np
import pytest

from cnnviz_widgets import CnnvizError, ModelGraph
from cnnviz_widgets.attribution import catalogue, integrated, smoothgrad
from cnnviz_widgets.attribution.classes import Target
from cnnviz_widgets.attribution.explainer import Explainer
from cnnviz_widgets.attribution.guided import guided_relus
from cnnviz_widgets.attribution.heatmaps import upsample
from cnnviz_widgets.network import memory
from cnnviz_widgets.network.memory import MemoryBudgetError, MemoryFacts

NEW = ("smoothgrad", "vargrad", "input-x-gradient", "integrated-gradients", "guided-backprop", "guided-grad-cam",
       "occlusion")

# tf-keras-vis imports scipy.ndimage.interpolation (deprecated) and calls models with a list of inputs
pytestmark = [pytest.mark.filterwarnings("ignore::DeprecationWarning"),
              pytest.mark.filterwarnings("ignore:The structure of `inputs`:UserWarning")]


@pytest.fixture(scope="module")
def linear_model(k):
    """12×10×3 -> conv 1×1 (4, linear) -> global average -> Dense(2): every score is linear in the input."""
    k.utils.set_random_seed(11)
    inputs = k.Input((12, 10, 3), name="pixels")
    x = k.layers.Conv2D(4, 1, name="mix")(inputs)
    x = k.layers.GlobalAveragePooling2D(name="gap")(x)
    return k.Model(inputs, k.layers.Dense(2, name="logits")(x), name="linear")


@pytest.fixture(scope="module")
def relu_net(k):
    """3×3×2 -> Flatten -> Dense(6) -> ReLU layer -> Dense(5, relu) -> Dense(2): two ReLUs, both kinds."""
    k.utils.set_random_seed(5)
    inputs = k.Input((3, 3, 2), name="pixels")
    x = k.layers.Flatten(name="flat")(inputs)
    x = k.layers.ReLU(name="relu_1")(k.layers.Dense(6, name="d1")(x))
    x = k.layers.Dense(5, activation="relu", name="d2")(x)
    return k.Model(inputs, k.layers.Dense(2, name="logits")(x), name="relu_net")


def dense(model, name):
    layer = model.get_layer(name)
    return np.asarray(layer.kernel, np.float64), np.asarray(layer.bias, np.float64)


def linear_direction(model, c):
    """v (3,): d logit_c / d x[i, j] * (H W) of `linear_model`, the same at every pixel."""
    kernel = np.asarray(model.get_layer("mix").kernel, np.float64)[0, 0]  # (3, 4)
    return kernel @ dense(model, "logits")[0][:, c]


def test_the_catalogue_lists_the_new_methods_after_the_cams():
    names = catalogue.METHODS
    assert names[-len(NEW):] == NEW
    for name in NEW:
        method = catalogue.method(name)
        assert method.family == ("perturbation" if name == "occlusion" else "gradient")
        assert method.summary.endswith(".") and not method.uses_layer


# -- SmoothGrad and VarGrad ---------------------------------------------------------------------------------


@pytest.mark.parametrize("samples", [1, 7])
def test_smoothgrad_and_vargrad_equal_tf_keras_vis_given_the_same_noise(softmax_model, rng, monkeypatch, samples):
    pytest.importorskip("tf_keras_vis")
    from tf_keras_vis.saliency import Saliency
    from tf_keras_vis.utils.scores import CategoricalScore

    x = rng.normal(0, 1, (12, 12, 3)).astype(np.float32)
    z = np.random.default_rng(3).standard_normal((samples, 12, 12, 3)).astype(np.float32)
    drawn = [0]

    def ours(generator, shape):  # the same draws, batch by batch, in order
        out = z[drawn[0] : drawn[0] + shape[0]]
        drawn[0] += shape[0]
        return out

    monkeypatch.setattr(smoothgrad, "noise_draws", ours)
    # tf-keras-vis draws np.random.normal(0, sigma, (samples, 1, H, W, C)) with sigma = noise * (max - min)
    monkeypatch.setattr(np.random, "normal", lambda loc, scale, size: loc + scale * z.reshape(tuple(size)))
    explainer = Explainer(ModelGraph(softmax_model))
    saliency = Saliency(softmax_model)
    for c in range(3):
        drawn[0] = 0
        mine = explainer.explain(x, Target("class", c), "smoothgrad", score="probability", samples=samples,
                                 noise=0.3)
        assert mine.options["samples"] == samples and mine.attributions.shape == x.shape
        call = dict(smooth_samples=samples, smooth_noise=0.3, normalize_map=False)
        theirs = np.asarray(saliency(CategoricalScore([c]), x[None], **call))[0]  # mean |g|, max over channels
        np.testing.assert_allclose(mine.raw, theirs, rtol=1e-4, atol=1e-5 * float(theirs.max()))
        mean = np.asarray(saliency(CategoricalScore([c]), x[None], keepdims=True, gradient_modifier=None, **call))[0]
        np.testing.assert_allclose(mine.attributions, mean, rtol=1e-4, atol=1e-5 * float(np.abs(mean).max()))
        drawn[0] = 0
        var = explainer.explain(x, Target("class", c), "vargrad", score="probability", samples=samples, noise=0.3)
        square = np.asarray(saliency(CategoricalScore([c]), x[None], keepdims=True, gradient_modifier=lambda g: g * g,
                                     **call))[0].astype(np.float64)
        expected = square - mean.astype(np.float64) ** 2
        scale = float(square.max())  # float32 sums of g^2: the difference is known to ~1e-6 of it
        np.testing.assert_allclose(var.attributions, expected, atol=1e-5 * scale)
        np.testing.assert_allclose(var.raw, expected.max(axis=2), atol=1e-5 * scale)
        if samples == 1:
            assert np.all(var.attributions == 0)


def test_smoothgrad_is_reproducible_by_seed_and_zero_noise_is_saliency(tiny_model, rng):
    x = rng.normal(0, 50, (16, 16, 3)).astype(np.float32)
    explainer = Explainer(ModelGraph(tiny_model))
    target = Target("class", 1)
    first = explainer.explain(x, target, "smoothgrad", samples=3, seed=4)
    again = Explainer(ModelGraph(tiny_model)).explain(x, target, "smoothgrad", samples=3, seed=4)
    np.testing.assert_array_equal(first.attributions, again.attributions)
    other = explainer.explain(x, target, "smoothgrad", samples=3, seed=5)
    assert not np.array_equal(first.attributions, other.attributions)
    plain = explainer.explain(x, target, "saliency")
    still = explainer.explain(x, target, "smoothgrad", samples=2, noise=0.0)
    np.testing.assert_allclose(still.attributions, plain.attributions, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(still.raw, plain.raw, rtol=1e-5, atol=1e-6)
    with pytest.raises(CnnvizError, match="noise must be a number >= 0"):
        explainer.explain(x, target, "vargrad", noise=-1)


# -- input x gradient ---------------------------------------------------------------------------------------


def test_input_x_gradient_is_the_input_times_the_gradient(tiny_model, rng):
    x = rng.normal(0, 50, (16, 16, 3)).astype(np.float32)
    explainer = Explainer(ModelGraph(tiny_model))
    for c in range(2):
        result = explainer.explain(x, Target("class", c), "input-x-gradient")
        gradient = explainer.explain(x, Target("class", c), "saliency").attributions
        np.testing.assert_array_equal(result.attributions, x * gradient)
        np.testing.assert_array_equal(result.raw, (x * gradient).sum(axis=2))


# -- Integrated Gradients -----------------------------------------------------------------------------------


def test_integrated_gradients_are_complete_on_a_relu_network(tiny_model):
    """The attributions sum to f(x) - f(baseline) within 1 % at 64 steps, and delta says by how much. Inputs of
    the size of conv_a's biases, so that the path from black crosses ReLU and max-pooling kinks (far larger inputs
    make the network nearly linear along the path, and any step count exact)."""
    x = np.random.default_rng(3).normal(0, 1, (16, 16, 3)).astype(np.float32)
    explainer = Explainer(ModelGraph(tiny_model))
    for c in range(2):
        coarse = explainer.explain(x, Target("class", c), "integrated-gradients", steps=4)
        result = explainer.explain(x, Target("class", c), "integrated-gradients", steps=64)
        outputs = np.asarray(tiny_model(np.stack([np.zeros_like(x), x])), np.float64)[:, c]
        change = outputs[1] - outputs[0]
        total = float(result.attributions.astype(np.float64).sum())
        assert abs(total - change) <= 0.01 * abs(change)
        assert result.delta == pytest.approx(abs(total - change), rel=1e-3, abs=1e-6 * abs(change))
        assert result.score_value == pytest.approx(outputs[1], rel=1e-5)
        np.testing.assert_allclose(result.raw, result.attributions.sum(axis=2), rtol=1e-5, atol=1e-6)
        assert coarse.delta > 10 * result.delta and "more steps bring them closer" in coarse.note
        assert result.note == ""


def test_integrated_gradients_on_a_linear_model_are_the_closed_form(linear_model, rng):
    """f linear: IG = (x - b) * gradient exactly, whatever the steps; the gradient is v / (H W) at every pixel."""
    x = rng.normal(0, 1, (12, 10, 3)).astype(np.float32)
    explainer = Explainer(ModelGraph(linear_model))
    base = rng.normal(0, 1, (12, 10, 3)).astype(np.float32)
    for baseline, b in [("black", np.zeros_like(x)), (base, base), (0.5, np.full_like(x, 0.5))]:
        result = explainer.explain(x, Target("class", 1), "integrated-gradients", score="logit", steps=3,
                                   baseline=baseline)
        expected = (x - b).astype(np.float64) * linear_direction(linear_model, 1) / (12 * 10)
        np.testing.assert_allclose(result.attributions, expected, rtol=1e-4, atol=1e-6)
        assert result.delta < 1e-5


def test_baselines_are_in_the_models_input_space(tiny_model, rng):
    from cnnviz_widgets.pictures.preprocessing import apply_preprocessing

    explainer = Explainer(ModelGraph(tiny_model))
    paths = explainer.paths
    x = rng.normal(0, 50, (16, 16, 3)).astype(np.float32)
    np.testing.assert_array_equal(integrated.baseline_for(paths, x, "black"), 0)  # fed as is
    paths.preprocessing = "caffe"
    np.testing.assert_allclose(integrated.baseline_for(paths, x, "black")[3, 4], [-103.939, -116.779, -123.68])
    paths.preprocessing = "tf"
    np.testing.assert_array_equal(integrated.baseline_for(paths, x, "black"), -1)
    noise = integrated.baseline_for(paths, x, "noise", seed=2)
    pixels = np.random.default_rng(2).integers(0, 256, x.shape, dtype=np.uint8)
    np.testing.assert_array_equal(noise, apply_preprocessing(pixels, "tf"))
    blur = integrated.baseline_for(paths, x, "blur")
    assert blur.shape == x.shape and blur.std() < x.std() / 3
    assert blur.mean() == pytest.approx(float(x.mean()), abs=2.0)
    flat = np.full((16, 16, 3), 7.0, np.float32)
    np.testing.assert_allclose(integrated.gaussian_blur(flat, 2.0), flat, rtol=1e-6)
    with pytest.raises(CnnvizError, match="unknown baseline 'white'; expected one of black, blur, noise"):
        integrated.baseline_for(paths, x, "white")
    with pytest.raises(CnnvizError, match=r"broadcasts to the input's shape \(16, 16, 3\); got \(4,\)"):
        integrated.baseline_for(paths, x, np.zeros(4))


# -- Guided Backpropagation and Guided Grad-CAM -------------------------------------------------------------


def test_guided_backprop_equals_tf_keras_vis_guided_modifier(softmax_model, k, rng):
    pytest.importorskip("tf_keras_vis")
    from tf_keras_vis.saliency import Saliency
    from tf_keras_vis.utils.model_modifiers import GuidedBackpropagation
    from tf_keras_vis.utils.scores import CategoricalScore

    x = rng.normal(0, 1, (12, 12, 3)).astype(np.float32)
    explainer = Explainer(ModelGraph(softmax_model))
    guided = Saliency(softmax_model, model_modifier=GuidedBackpropagation())  # on its own clone of the model
    for c in range(3):
        mine = explainer.explain(x, Target("class", c), "guided-backprop", score="probability")
        theirs = np.asarray(guided(CategoricalScore([c]), x[None], keepdims=True, gradient_modifier=None,
                                   normalize_map=False))[0]
        np.testing.assert_allclose(mine.attributions, theirs, rtol=1e-4, atol=1e-5 * float(np.abs(theirs).max()))
        np.testing.assert_array_equal(mine.raw, np.abs(mine.attributions).max(axis=2))
    assert softmax_model.get_layer("c1").activation is k.activations.relu  # put back


def test_guided_backprop_equals_a_guided_gradient_written_in_numpy(relu_net, k, rng):
    """Through a ReLU layer and a Dense(relu): each ReLU passes back relu(incoming gradient) where its input > 0."""
    x = rng.normal(0, 1, (3, 3, 2)).astype(np.float32)
    (w1, b1), (w2, b2), (w3, _) = dense(relu_net, "d1"), dense(relu_net, "d2"), dense(relu_net, "logits")
    h1 = x.reshape(-1).astype(np.float64) @ w1 + b1
    h2 = np.maximum(h1, 0) @ w2 + b2
    explainer = Explainer(ModelGraph(relu_net))
    relu_layer = relu_net.get_layer("relu_1")
    for c in range(2):
        g_h2 = np.maximum(w3[:, c], 0) * (h2 > 0)
        g_h1 = np.maximum(w2 @ g_h2, 0) * (h1 > 0)
        expected = (w1 @ g_h1).reshape(x.shape)
        mine = explainer.explain(x, Target("class", c), "guided-backprop", score="logit")
        np.testing.assert_allclose(mine.attributions, expected, rtol=1e-5, atol=1e-6)
        plain = explainer.explain(x, Target("class", c), "saliency", score="logit").attributions
        g_plain = (w1 @ ((w2 @ (w3[:, c] * (h2 > 0))) * (h1 > 0))).reshape(x.shape)
        np.testing.assert_allclose(plain, g_plain, rtol=1e-5, atol=1e-6)  # the layers are plain again
    assert "call" not in vars(relu_layer) and relu_net.get_layer("d2").activation is k.activations.relu
    with guided_relus(explainer.graph) as changed:
        assert changed == 2 and "call" in vars(relu_layer)
        np.testing.assert_array_equal(np.asarray(relu_net(x[None])), np.asarray(relu_net(x[None])))
    assert "call" not in vars(relu_layer)


def test_guided_grad_cam_is_guided_backprop_times_upsampled_grad_cam(softmax_model, rng):
    x = rng.normal(0, 1, (12, 12, 3)).astype(np.float32)
    explainer = Explainer(ModelGraph(softmax_model))
    for c in range(3):
        target = Target("class", c)
        result = explainer.explain(x, target, "guided-grad-cam")
        backprop = explainer.explain(x, target, "guided-backprop")
        cam = explainer.explain(x, target, "grad-cam", layer="c2")
        assert result.layer == "c2" and result.options == {"cam_layer": None}
        expected = backprop.attributions * upsample(cam.raw, (12, 12))[..., None]
        np.testing.assert_allclose(result.attributions, expected, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(result.raw, np.abs(expected).max(axis=2), rtol=1e-5, atol=1e-7)
        np.testing.assert_array_equal(result.weights, cam.weights)
    first = explainer.explain(x, Target("class", 0), "guided-grad-cam", cam_layer="c1")
    assert first.layer == "c1"
    with pytest.raises(CnnvizError, match="gap .* has no maps for Grad-CAM to weigh"):
        explainer.explain(x, Target("class", 0), "guided-grad-cam", cam_layer="gap")


# -- Occlusion ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("patch", "stride"), [(3, 2), ((4, 5), (3, 4)), (None, None)])
def test_occlusion_on_a_linear_model_is_the_closed_form(linear_model, rng, patch, stride):
    """f linear: hiding window S changes logit_c by sum over S of v . (x_p - b_p) / (H W); each pixel gets the
    mean change of the windows that cover it."""
    x = rng.normal(0, 1, (12, 10, 3)).astype(np.float32)
    b = rng.normal(0, 1, (12, 10, 3)).astype(np.float32)
    explainer = Explainer(ModelGraph(linear_model))
    v = linear_direction(linear_model, 0)
    per_pixel = ((x - b).astype(np.float64) @ v) / (12 * 10)
    ph, pw = (1, 1) if patch is None else (patch, patch) if isinstance(patch, int) else patch
    sh, sw = (1, 1) if stride is None else (stride, stride) if isinstance(stride, int) else stride
    total, count = np.zeros((12, 10)), np.zeros((12, 10))
    for r in sorted({*range(0, 12 - ph + 1, sh), 12 - ph}):
        for c in sorted({*range(0, 10 - pw + 1, sw), 10 - pw}):
            total[r : r + ph, c : c + pw] += per_pixel[r : r + ph, c : c + pw].sum()
            count[r : r + ph, c : c + pw] += 1
    expected = total / count
    result = explainer.explain(x, Target("class", 0), "occlusion", score="logit", patch=patch, stride=stride,
                               baseline=b)
    np.testing.assert_allclose(result.raw, expected, rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(result.attributions, np.repeat(result.raw[..., None], 3, axis=2))
    with pytest.raises(CnnvizError, match=r"patch must be None, an integer or \(height, width\) integers"):
        explainer.explain(x, Target("class", 0), "occlusion", patch=13)


# -- batches: memory, progress, cancel ----------------------------------------------------------------------


@pytest.mark.parametrize(("method", "words"), [("smoothgrad", "SmoothGrad"), ("vargrad", "VarGrad"),
                                               ("integrated-gradients", "Integrated Gradients"),
                                               ("occlusion", "Occlusion")])
def test_a_step_that_does_not_fit_is_refused_before_it_runs(tiny_model, rng, monkeypatch, method, words):
    x = rng.normal(0, 50, (16, 16, 3)).astype(np.float32)
    explainer = Explainer(ModelGraph(tiny_model))
    passes = explainer.gradient_passes
    monkeypatch.setattr(memory, "memory_facts", lambda: MemoryFacts(available=4096))
    with pytest.raises(MemoryBudgetError, match=rf"^{words} on a 16×16 input \(1 input at a time\) needs about "
                       r"0\.0 GB, but this session has 0\.0 GB of memory left: choose a smaller max_side"):
        explainer.explain(x, Target("class", 0), method)
    assert explainer.gradient_passes == passes


def test_batches_are_sized_from_the_memory_left(tiny_model, rng, monkeypatch):
    x = rng.normal(0, 50, (16, 16, 3)).astype(np.float32)
    explainer = Explainer(ModelGraph(tiny_model))
    per_input = explainer.paths.bytes_per_input(x.shape)
    monkeypatch.setattr(memory, "memory_facts", lambda: MemoryFacts(available=int(3.5 * per_input / 0.25)))
    seen = []
    result = explainer.explain(x, Target("class", 0), "integrated-gradients", steps=10,
                               progress=lambda done, total: seen.append((done, total)))
    assert seen == [(3, 10), (6, 10), (9, 10), (10, 10)] and result.delta is not None
    with pytest.raises(CnnvizError, match="Occlusion was cancelled after 0 of 9 windows; nothing is kept"):
        explainer.explain(x, Target("class", 0), "occlusion", patch=8, stride=4, cancel=lambda: True)


def test_every_new_method_runs_through_the_state(tiny_model):
    from cnnviz_widgets import ModelState

    state = ModelState(tiny_model, image=np.random.default_rng(1).integers(0, 256, (16, 16, 3), dtype=np.uint8))
    small = {"smoothgrad": {"samples": 2}, "vargrad": {"samples": 2}, "integrated-gradients": {"steps": 4}}
    for name in NEW:
        result = state.explanation(name, **small.get(name, {}))
        assert result.method == name and result.attributions.shape == (16, 16, 3)
        assert result.attributions.dtype == np.float32 and result.raw.shape == (16, 16)
        assert result.heatmap.shape == (16, 16) and 0 <= result.heatmap.min() <= result.heatmap.max() <= 1
        assert result.seconds > 0 and (result.delta is not None) == (name == "integrated-gradients")
