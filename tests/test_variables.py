"""Models built without materialising their weights, filled once: values, distributions and memory peaks."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import numpy as np
import pytest

import cnnviz_widgets as cw
from cnnviz_widgets.errors import ModelError
from cnnviz_widgets.network import weights as variables
from tests.conftest import write_legacy_weights

VGG16_FULL_PARAMS = 138_357_544
VGG16_FULL_BYTES = VGG16_FULL_PARAMS * 4


@pytest.fixture
def small_model(k):
    pixels = k.Input((16, 16, 3), name="pixels")
    x = k.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv_a")(pixels)
    x = k.layers.GlobalAveragePooling2D(name="pooled")(x)
    out = k.layers.Dense(5, activation="softmax", name="dense_out")(x)
    return k.Model(pixels, out, name="small")


def test_architecture_answers_the_table_without_weights(k):
    model = cw.architecture("vgg16", include_top=True)
    rows = cw.ModelGraph(model).summary()
    assert sum(row["params"] for row in rows) == VGG16_FULL_PARAMS
    assert [row["name"] for row in rows if row["counts_as_layer"]][-3:] == ["fc1", "fc2", "predictions"]
    assert len([row for row in rows if row["counts_as_layer"]]) == 16
    assert not variables.is_materialised(model)
    with pytest.raises(ModelError, match="structure only"):
        model(np.zeros((1, 224, 224, 3), np.float32))
    with pytest.raises(ModelError, match="presets are vgg16"):
        cw.architecture("resnet")


def test_unfilled_variables_are_not_initialised_later_by_keras(k):
    model = cw.architecture("vgg16", include_top=False)
    # Keras initialises pending variables when an outermost StatelessScope closes: ours are not pending.
    with k.StatelessScope():
        pass
    assert not variables.is_materialised(model)


def test_legacy_file_written_by_keras_fills_the_same_values(k, small_model, tmp_path):
    from keras.src.legacy.saving import legacy_h5_format  # Keras' own writer of the ImageNet files' layout

    k.utils.set_random_seed(3)
    for layer in small_model.layers:
        layer.set_weights([np.random.default_rng(7).standard_normal(w.shape).astype("float32")
                           for w in layer.get_weights()])
    path = tmp_path / "small.h5"
    with h5py.File(path, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, small_model)

    clone = variables.build_unmaterialised(lambda: k.models.clone_model(small_model))
    variables.fill_from_legacy_h5(clone, path)
    for mine, theirs in zip(clone.get_weights(), small_model.get_weights(), strict=True):
        np.testing.assert_array_equal(mine, theirs)
    x = np.random.default_rng(0).random((2, 16, 16, 3), dtype=np.float32)
    np.testing.assert_allclose(np.asarray(clone(x)), np.asarray(small_model(x)), rtol=1e-6)


def test_values_given_once_are_usable_and_trainable(k, small_model):
    clone = variables.build_unmaterialised(lambda: k.models.clone_model(small_model))
    variables.fill_random(clone, seed=1)
    clone.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    before = clone.get_layer("conv_a").kernel.numpy()
    x = np.random.default_rng(0).random((8, 16, 16, 3), dtype=np.float32)
    clone.fit(x, np.arange(8) % 5, epochs=1, verbose=0)
    assert not np.allclose(before, np.asarray(clone.get_layer("conv_a").kernel))  # the optimiser could write


def test_random_fill_follows_each_initialisers_distribution(k):
    model = cw.load_model("vgg16", weights=None, include_top=False)
    kernel = np.asarray(model.get_layer("block3_conv1").kernel)  # glorot uniform, fan 9·128 + 9·256
    limit = np.sqrt(6 / (9 * 128 + 9 * 256))
    assert np.abs(kernel).max() <= limit
    assert kernel.std() == pytest.approx(limit / np.sqrt(3), rel=0.01)
    assert abs(kernel.mean()) < 0.01 * limit
    assert not np.asarray(model.get_layer("block3_conv1").bias).any()  # zeros, as Keras gives


def test_file_with_other_shapes_or_layers_is_refused(k, small_model, tmp_path):
    other = k.Model(small_model.input, k.layers.Dense(3, name="dense_out")(small_model.get_layer("pooled").output))
    path = tmp_path / "other.h5"
    write_legacy_weights(other, path)
    clone = variables.build_unmaterialised(lambda: k.models.clone_model(small_model))
    with pytest.raises(ModelError, match=r"dense_out.*\(4, 3\).*\(4, 5\)"):
        variables.fill_from_legacy_h5(clone, path)
    path.write_bytes(path.read_bytes()[:2000])  # a download cut short
    clone = variables.build_unmaterialised(lambda: k.models.clone_model(small_model))
    with pytest.raises(ModelError, match="delete it and load again"):
        variables.fill_from_legacy_h5(clone, path)


PEAK_PROBE = textwrap.dedent("""
    import json, os, sys
    from cnnviz_widgets.network.backend import keras
    import cnnviz_widgets as cw

    def status(field):
        return int(open("/proc/self/status").read().split(field + ":")[1].split()[0]) * 1024

    keras()
    base = status("VmRSS")
    model = cw.load_model("vgg16", weights=json.loads(sys.argv[1]), include_top=True)
    print(json.dumps(dict(growth=status("VmHWM") - base, label=cw.model_info(model).weights,
                          fc2=float(model.get_layer("fc2").kernel.numpy()[0, :3].sum()))))
""")


def _load_peak(weights, env_home: Path | None) -> dict:
    import os

    env = dict(os.environ)
    if env_home is not None:
        env["KERAS_HOME"] = str(env_home)
    out = subprocess.run([sys.executable, "-c", PEAK_PROBE, json.dumps(weights)], capture_output=True, text=True,
                         env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow
@pytest.mark.parametrize("weights", ["imagenet", "file", None])
def test_vgg16_with_classifier_loads_with_one_copy_of_its_weights(weights, fake_imagenet_home):
    """The process grows by the weights' 553 MB and little more: no random initialisation to overwrite."""
    cached = fake_imagenet_home / "models" / "vgg16_weights_tf_dim_ordering_tf_kernels.h5"
    result = _load_peak(str(cached) if weights == "file" else weights, fake_imagenet_home)
    assert result["growth"] <= VGG16_FULL_BYTES * 1.12, f"peak grew by {result['growth'] / 1e6:.0f} MB"
    if weights == "imagenet":
        assert result["label"].startswith("ImageNet")
    if weights is not None:  # the values are the file's
        with h5py.File(cached) as f:
            expected = float(f["fc2"]["fc2_W_0:0"][0, :3].sum())
        assert result["fc2"] == pytest.approx(expected, rel=1e-6)
