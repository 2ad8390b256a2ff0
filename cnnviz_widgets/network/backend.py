"""The one place that imports Keras, lazily.

`import cnnviz_widgets` stays fast (no TensorFlow) until a model is actually used. TensorFlow's native
libraries print start-up lines straight to file descriptor 2 while they load (oneDNN, CUDA stubs, absl),
which a notebook kernel forwards into the user's cell output. They say nothing about the user's work, so
the first import runs with descriptor 2 pointed at /dev/null; Python-level warnings and errors are unaffected.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from types import ModuleType


def keras() -> ModuleType:
    """Return the `keras` module (Keras 3 on TensorFlow), importing it quietly on first use."""
    if "keras" not in sys.modules:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        os.environ.setdefault("KERAS_BACKEND", "tensorflow")
        with _native_stderr_silenced():
            import keras as keras_module
            import tensorflow  # loaded here so its native start-up output is silenced

            # tensorflow-cpu logs its CPU features when the first device is made, not at import: make it here.
            tensorflow.config.list_logical_devices("CPU")
        return keras_module
    import keras as keras_module

    return keras_module


@contextlib.contextmanager
def _native_stderr_silenced() -> Iterator[None]:
    try:
        saved = os.dup(2)
    except OSError:  # no usable descriptor 2 (some embedded interpreters): nothing to silence
        yield
        return
    sys.stderr.flush()
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
