"""Model input: size policy, channels and preprocessing equal Keras' own functions."""

from __future__ import annotations

import numpy as np
import pytest

from cnnviz_widgets import CnnvizError, ImageError
from cnnviz_widgets.pictures.preprocessing import apply_preprocessing, prepare_input


@pytest.fixture(scope="module")
def photo(rng):
    return rng.integers(0, 256, size=(40, 60, 3), dtype=np.uint8)


@pytest.mark.parametrize(("mode", "keras_module"), [("caffe", "vgg16"), ("tf", "mobilenet_v2")])
def test_preprocessing_equals_keras(k, photo, mode, keras_module):
    expected = getattr(k.applications, keras_module).preprocess_input(photo.astype("float32")[None])[0]
    np.testing.assert_allclose(apply_preprocessing(photo, mode), np.asarray(expected), rtol=1e-6, atol=1e-4)


def test_torch_unit_none_and_callable(photo):
    x = photo.astype(np.float32)
    np.testing.assert_allclose(apply_preprocessing(photo, "unit"), x / 255)
    np.testing.assert_array_equal(apply_preprocessing(photo, None), x)
    torch = apply_preprocessing(photo, "torch")
    np.testing.assert_allclose(torch[..., 1], (x[..., 1] / 255 - 0.456) / 0.224, rtol=1e-5)
    np.testing.assert_array_equal(apply_preprocessing(photo, lambda a: a - 1), x - 1)
    with pytest.raises(CnnvizError, match="accepted are caffe, tf, torch, unit, none"):
        apply_preprocessing(photo, "imagenet")
    with pytest.raises(CnnvizError, match="returned shape"):
        apply_preprocessing(photo, lambda a: a[0])


def test_fixed_size_model_gets_its_size_and_a_note(photo):
    prepared = prepare_input(photo, (224, 224, 3), "caffe")
    assert prepared.array.shape == (224, 224, 3) and prepared.picture.shape == (224, 224, 3)
    assert "224" in prepared.note and prepared.preprocess == "caffe"
    # what is fed is exactly the preprocessing of the picture shown
    np.testing.assert_array_equal(prepared.array, apply_preprocessing(prepared.picture, "caffe"))


def test_convolutional_model_keeps_native_size_up_to_the_cap(photo):
    assert prepare_input(photo, (None, None, 3), None).array.shape == (40, 60, 3)
    capped = prepare_input(photo, (None, None, 3), None, max_side=30)
    assert capped.array.shape == (20, 30, 3) and capped.note


def test_one_channel_model_gets_luma(photo):
    prepared = prepare_input(photo, (28, 28, 1), "unit")
    assert prepared.array.shape == (28, 28, 1) and "grey" in prepared.note
    assert prepared.array.max() <= 1.0


def test_too_small_and_odd_channel_models_are_refused(photo):
    with pytest.raises(ImageError, match="at least 32×32"):
        prepare_input(photo[:10, :10], (None, None, 3), None, min_side=32)
    with pytest.raises(ImageError, match="5-channel input"):
        prepare_input(photo, (None, None, 5), None)
