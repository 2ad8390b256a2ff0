"""The attribution methods as one catalogue: names, options checked and remembered, what each result carries."""

from __future__ import annotations

import numpy as np
import pytest

from cnnviz_widgets import CnnvizError, ModelState
from cnnviz_widgets.attribution import catalogue
from cnnviz_widgets.attribution.methods import Method, options_key


@pytest.fixture
def state(tiny_model, rng):
    return ModelState(tiny_model, image=rng.integers(0, 256, (16, 16, 3), dtype=np.uint8))


def test_every_method_has_a_name_a_family_and_a_sentence():
    assert catalogue.METHODS[0] == "grad-cam" and "saliency" in catalogue.METHODS
    families = [catalogue.method(name).family for name in catalogue.METHODS]
    assert families == sorted(families, key=["cam", "gradient", "perturbation"].index)  # the picker's order
    for name in catalogue.METHODS:
        method = catalogue.method(name)
        assert method.name == name and method.family in ("cam", "gradient", "perturbation")
        assert method.summary.endswith(".") and len(method.summary) < 200


def test_an_unknown_method_or_option_names_what_is_accepted(state):
    with pytest.raises(CnnvizError, match=r"unknown method 'gradcam'; expected one of grad-cam, grad-cam\+\+, "):
        state.explanation("gradcam")
    with pytest.raises(CnnvizError, match="grad-cam has no option 'samples'; its options: none"):
        state.explanation("grad-cam", samples=8)


def test_options_take_defaults_and_key_the_cache():
    method = Method("demo", "gradient", "A demo.", lambda *args, **options: None, {"steps": 8, "baseline": "black"})
    assert method.with_options({"steps": 16}) == {"steps": 16, "baseline": "black"}
    assert options_key({"baseline": np.zeros(3)}) == options_key({"baseline": np.zeros(3)})
    assert options_key({"baseline": np.zeros(3)}) != options_key({"baseline": np.ones(3)})


def test_saliency_carries_signed_attributions_and_its_time(state):
    result = state.explanation("saliency")
    assert result.attributions.shape == state.model_input.array.shape
    np.testing.assert_array_equal(result.raw, np.abs(result.attributions).max(axis=2))
    assert result.seconds > 0 and result.options == {}
    cam = state.explanation("grad-cam")
    assert cam.attributions is None and cam.weights is not None


def test_a_black_baseline_is_black_as_the_state_feeds_it(tiny_model, rng):
    from cnnviz_widgets.attribution import integrated

    state = ModelState(tiny_model, image=rng.integers(0, 256, (16, 16, 3), dtype=np.uint8), preprocess="caffe")
    fed_black = state.prepare(np.zeros((16, 16, 3), np.uint8)).array
    baseline = integrated.baseline_for(state.explainer.paths, state.model_input.array, "black")
    np.testing.assert_allclose(baseline, fed_black, rtol=1e-6)
    assert np.abs(fed_black).max() > 100  # caffe: black is minus the ImageNet mean, not 0


def test_the_readme_table_lists_every_method():
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    table = readme[readme.index("| method | what the map shows"):].split("\n\n")[0]
    listed = [line.split("|")[1].strip().strip("`") for line in table.splitlines()[2:]]
    assert listed == list(catalogue.METHODS)
