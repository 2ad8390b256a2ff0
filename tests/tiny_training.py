"""The tiny classifier and learnable data the training tests share (each fit takes well under a second)."""

from __future__ import annotations

import numpy as np


def tiny_cnn(k, seed: int = 0, metrics=("accuracy",), learning_rate: float = 0.01):
    """1-channel 16×16 classifier: conv(4) -> pool -> conv(6) -> flatten -> dense(3)."""
    k.utils.set_random_seed(seed)
    model = k.Sequential([
        k.Input((16, 16, 1), name="pixels"),
        k.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv_a"),
        k.layers.MaxPooling2D(name="pool_a"),
        k.layers.Conv2D(6, 3, padding="same", activation="relu", name="conv_b"),
        k.layers.Flatten(name="flat"),
        k.layers.Dense(3, activation="softmax", name="probs"),
    ], name="trainee")
    model.compile(k.optimizers.Adam(learning_rate), "sparse_categorical_crossentropy", metrics=list(metrics))
    return model


def learnable_data(n: int = 64, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """n 16×16 pictures of 3 classes: class 0 bright on top, class 1 on the left, class 2 neither."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    x = rng.random((n, 16, 16, 1)).astype("float32") * 60
    x[y == 0, :8] += 150
    x[y == 1, :, :8] += 150
    return x, y
