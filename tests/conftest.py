"""Shared fixtures: tiny Keras models (fast) and one real VGG16 with the offline weights (session-wide)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import h5py
import numpy as np
import pytest

import cnnviz_widgets as cw
from cnnviz_widgets import ModelState
from cnnviz_widgets.network.backend import keras


@pytest.fixture(scope="session")
def k():
    return keras()


@pytest.fixture(scope="session")
def tiny_model(k):
    """Sequential CNN on 16×16×3: conv(4) -> pool -> conv(6, no bias) -> pool -> dense(2)."""
    k.utils.set_random_seed(0)
    model = k.Sequential([
        k.Input((16, 16, 3), name="pixels"),
        k.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv_a"),
        k.layers.MaxPooling2D(name="pool_a"),
        k.layers.Conv2D(6, 3, padding="same", activation="relu", use_bias=False, name="conv_b"),
        k.layers.MaxPooling2D(name="pool_b"),
        k.layers.Flatten(name="flat"),
        k.layers.Dense(2, name="logits"),
    ], name="tiny")
    # Non-zero biases so the tests see them used.
    kernel, bias = model.get_layer("conv_a").get_weights()
    model.get_layer("conv_a").set_weights([kernel, np.linspace(-0.2, 0.2, bias.size).astype("float32")])
    return model


@pytest.fixture(scope="session")
def nested_model(k):
    """Functional transfer model: a small conv base (a model of its own) inside, then a head."""
    k.utils.set_random_seed(1)
    base_in = k.Input((None, None, 3), name="base_in")
    x = k.layers.Conv2D(5, 3, padding="same", activation="relu", name="inner_conv1")(base_in)
    x = k.layers.MaxPooling2D(name="inner_pool")(x)
    x = k.layers.Conv2D(7, 3, padding="same", activation="relu", name="inner_conv2")(x)
    base = k.Model(base_in, x, name="base")
    inputs = k.Input((24, 24, 3), name="image")
    y = k.layers.Rescaling(1 / 255, name="scale")(inputs)
    y = base(y)
    y = k.layers.GlobalAveragePooling2D(name="gap")(y)
    outputs = k.layers.Dense(3, name="head")(y)
    return k.Model(inputs, outputs, name="transfer")


@pytest.fixture(scope="session")
def softmax_model(k):
    """Functional 12×12×3 classifier: conv(5) -> pool -> conv(4) -> GAP -> Dense(3, softmax)."""
    k.utils.set_random_seed(7)
    inputs = k.Input((12, 12, 3), name="pixels")
    x = k.layers.Conv2D(5, 3, padding="same", activation="relu", name="c1")(inputs)
    x = k.layers.MaxPooling2D(name="p1")(x)
    x = k.layers.Conv2D(4, 3, padding="same", activation="relu", name="c2")(x)
    x = k.layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = k.layers.Dense(3, activation="softmax", name="probs")(x)
    return k.Model(inputs, outputs, name="softmax_tiny")


@pytest.fixture(scope="session")
def vgg16_bsds(k):
    from cnnviz_widgets import load_model

    return load_model("vgg16", weights="bsds500")


@pytest.fixture(scope="session")
def vgg16_full(k):
    """VGG16 with its classifier (138,357,544 parameters), seeded random weights: 1000 softmax outputs."""
    from cnnviz_widgets import load_model

    k.utils.set_random_seed(3)
    return load_model("vgg16", weights=None)


@pytest.fixture(scope="session")
def rng():
    return np.random.default_rng(42)


def correlate_same(previous: np.ndarray, kernel: np.ndarray, bias: np.ndarray, filters) -> np.ndarray:
    """Independent "same"-padded stride-1 cross-correlation + bias, per filter: (H, W, C) -> (H, W, len(filters))."""
    kh, kw = kernel.shape[:2]
    padded = np.pad(previous.astype(np.float64), ((kh // 2, kh // 2), (kw // 2, kw // 2), (0, 0)))
    windows = np.lib.stride_tricks.sliding_window_view(padded, (kh, kw), axis=(0, 1))  # (H, W, C, kh, kw)
    out = [np.einsum("hwcij,ijc->hw", windows, kernel[:, :, :, f].astype(np.float64)) + bias[f] for f in filters]
    return np.stack(out, axis=-1)


def notifier_counts(state) -> dict:
    """(trait, kind) -> number of callbacks on the state (emptied entries left by unobserve count as none)."""
    return {(name, kind): len(handlers) for name, kinds in state._trait_notifiers.items()
            for kind, handlers in kinds.items() if handlers}


@pytest.fixture(scope="module")
def vgg_state_shared(vgg16_bsds):
    return ModelState(vgg16_bsds, image="astronaut", max_side=96)


@pytest.fixture
def vgg_state(vgg_state_shared):
    state = vgg_state_shared
    with state.hold_trait_notifications():
        state.layer, state.filter, state.channel = "block1_conv1", 0, 0
        state.normalization, state.colormap = "per_map", "grey"
    before = notifier_counts(state)
    yield state
    assert notifier_counts(state) == before, "a view left observers on the shared state"


# ------------------------------------------------------------------------- ImageNet-shaped weights file


def write_legacy_weights(model, path: Path, seed: int = 0, scale: float = 0.01) -> dict[str, list[np.ndarray]]:
    """A weights file in the layout of Keras' ImageNet application files (layer_names / weight_names), with
    seeded random values of the model's shapes; returns what it wrote for the layers with weights."""
    rng = np.random.default_rng(seed)
    written: dict[str, list[np.ndarray]] = {}
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = [layer.name.encode() for layer in model.layers]
        for layer in model.layers:
            group = f.create_group(layer.name)
            names = [f"{layer.name}_W_{i}:0".encode() for i in range(len(layer.weights))]
            group.attrs["weight_names"] = names
            for name, variable in zip(names, layer.weights, strict=True):
                values = (rng.standard_normal(tuple(variable.shape), dtype=np.float32) * scale)
                group.create_dataset(name.decode(), data=values)
                if layer.name in ("block1_conv1", "conv_a", "fc2", "dense_out"):  # kept to compare, not all
                    written.setdefault(layer.name, []).append(values)
    return written


@pytest.fixture(scope="session")
def fake_imagenet_home(tmp_path_factory, k) -> Path:
    """A Keras home whose cache holds files of the ImageNet VGG16 weights' shapes and layout (random values)."""
    home = tmp_path_factory.mktemp("keras_home")
    (home / "models").mkdir()
    write_legacy_weights(cw.architecture("vgg16", include_top=True),
                         home / "models" / "vgg16_weights_tf_dim_ordering_tf_kernels.h5")
    return home


def load_benchmark(path: Path, name: str) -> ModuleType:
    """A benchmarks/ script imported as a module (registered by name: dataclasses look their module up).

    Its folder goes on sys.path, as when it runs as a script, so that it finds the modules beside it by name
    (``from harness import Row``, the groups that run.py picks).
    """
    if str(path.parent) not in sys.path:
        sys.path.append(str(path.parent))
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module
