"""Benchmark group "training": what watching costs, as a share of the fit time.

The headline figure is the monitor's own cost: the time spent inside its callback hooks (bookkeeping after
each batch, snapshots, redraws; time paused excluded) as a share of the fit's wall time. Beside it, `model.fit`
runs with and without the monitor, interleaved (without, with, an empty per-batch callback, ...), each time on
a freshly built model from the same seed and data, so all arms pay the same tracing. That ratio also holds
what any per-batch callback costs (Keras then runs batch hooks in step with training instead of in a
background pool, the third arm), and on a shared machine it drifts with the load of other processes (the
table reports the load average; the CPU time of the process, also reported, is steadier). Two models: the one
of notebooks/05_watch_a_cnn_learn.ipynb (load_digits upsampled to 32×32, 8 epochs, 376 steps) and a tiny one
(16×16 inputs, a few filters) where a batch takes a few milliseconds, so the per-batch bookkeeping shows.

Run here, outside a kernel, widget updates are not sent anywhere: in a notebook each redraw also pays the
messages to the browser (measured in notebook 05: about 80 ms a redraw instead of 60). The redraws are
throttled to at most `max_overhead` (4 %) of the wall time either way.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

TARGET_OVERHEAD = 0.10


def digits_data() -> tuple[np.ndarray, np.ndarray]:
    """The notebook's data: the bundled 8×8 digits as 32×32 uint8 pictures, and their labels."""
    import cnnviz_widgets as cw
    from cnnviz_widgets.network.backend import keras

    digits = cw.load_digits()
    pixels = digits.images[..., None] * (255 / 16)
    x = np.asarray(keras().ops.image.resize(pixels, (32, 32), interpolation="bilinear")).clip(0, 255)
    return x.astype("uint8"), digits.target


def digits_model() -> Any:
    """The notebook's CNN (7,146 parameters), freshly initialised from seed 0."""
    from cnnviz_widgets.network.backend import keras

    k = keras()
    k.utils.set_random_seed(0)
    model = k.Sequential([
        k.Input((32, 32, 1), name="digit"), k.layers.Rescaling(1 / 255, name="scale"),
        k.layers.Conv2D(8, 5, activation="relu", name="conv1"), k.layers.MaxPooling2D(name="pool1"),
        k.layers.Conv2D(16, 3, activation="relu", name="conv2"), k.layers.MaxPooling2D(name="pool2"),
        k.layers.Flatten(name="flat"), k.layers.Dense(10, activation="softmax", name="digit_class"),
    ], name="digits_cnn")
    model.compile(k.optimizers.Adam(3e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def tiny_model() -> Any:
    """16×16×1 -> conv(4) -> pool -> conv(6) -> dense(3): a batch is about a millisecond."""
    from cnnviz_widgets.network.backend import keras

    k = keras()
    k.utils.set_random_seed(0)
    model = k.Sequential([
        k.Input((16, 16, 1)), k.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv_a"),
        k.layers.MaxPooling2D(), k.layers.Conv2D(6, 3, padding="same", activation="relu", name="conv_b"),
        k.layers.Flatten(), k.layers.Dense(3, activation="softmax"),
    ], name="tiny_trainee")
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def tiny_data(n: int = 512) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return (rng.random((n, 16, 16, 1)) * 255).astype("uint8"), rng.integers(0, 3, n)


def measure_overhead(build: Any, x: np.ndarray, y: np.ndarray, *, epochs: int, batch_size: int, repeats: int,
                     every: int, validation: tuple | None = None) -> dict[str, Any]:
    """Fit times without and with a monitor, interleaved; the monitor's own redraw time and count."""
    from cnnviz_widgets.network.backend import keras
    from cnnviz_widgets.widgets import TrainingMonitor

    class PerBatch(keras().callbacks.Callback):
        """Does nothing after each batch: what any per-batch callback costs (Keras then calls it in step)."""

        def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
            pass

    plain, watched, floor, built, redraw_time, redraws, hooks = [], [], [], [], [], [], []
    cpu: dict[str, list[float]] = {"plain": [], "watched": [], "per_batch": []}
    for _ in range(repeats):
        for arm in ("plain", "watched", "per_batch"):
            model = build()
            callbacks: list[Any] = [PerBatch()] if arm == "per_batch" else []
            if arm == "watched":
                start = time.perf_counter()
                monitor = TrainingMonitor(model, image=x[:4], every=every)
                built.append(time.perf_counter() - start)
                callbacks = [monitor]
            start, cpu_start = time.perf_counter(), time.process_time()
            model.fit(x, y, epochs=epochs, batch_size=batch_size, verbose=0, validation_data=validation,
                      callbacks=callbacks)
            seconds = time.perf_counter() - start
            cpu[arm].append(time.process_time() - cpu_start)
            if arm == "watched":
                watched.append(seconds)
                redraw_time.append(monitor.redraw_time)
                hooks.append(monitor.hook_time / seconds)
                redraws.append(monitor.redraws)
                steps = monitor.seen
                monitor.close()
            else:
                (floor if arm == "per_batch" else plain).append(seconds)
    overhead = float(np.median(watched) / np.median(plain) - 1)
    return dict(hook_share=hooks, plain_s=plain, watched_s=watched, per_batch_s=floor, monitor_build_s=built,
                redraw_s=redraw_time, redraws=redraws, steps=steps, overhead=overhead,
                per_batch_overhead=float(np.median(floor) / np.median(plain) - 1), cpu_s=cpu,
                cpu_overhead=float(np.median(cpu["watched"]) / np.median(cpu["plain"]) - 1))


def bench_training(quick: bool = False) -> list[dict[str, Any]]:
    """Rows (dicts of `harness.Row`'s fields): the monitor's overhead on the notebook model and a tiny one."""
    rows = []
    x, y = digits_data()
    cases = [
        (f"notebook 05 model, {1 if quick else 8} epoch(s)", digits_model, x[:1500], y[:1500], dict(
            epochs=1 if quick else 8, batch_size=32, every=5, validation=(x[1500:], y[1500:]))),
        ("tiny model (16×16, 10 filters)", tiny_model, *tiny_data(), dict(epochs=1 if quick else 5, batch_size=16,
                                                                          every=5)),
    ]
    for case, build, cx, cy, options in cases:
        result = measure_overhead(build, cx, cy, repeats=1 if quick else 3, **options)
        share = float(np.median(result["hook_share"]))
        rows.append(dict(
            figure="training monitor cost", case=case, value=share * 100, unit="% of fit",
            target=f"≤ {TARGET_OVERHEAD * 100:.0f}", met=bool(share <= TARGET_OVERHEAD),
            note=(f"time inside the monitor's hooks (bookkeeping, snapshots, {int(np.median(result['redraws']))} "
                  f"redraws taking {np.median(result['redraw_s']):.2f} s) over the fit's wall time; "
                  f"{result['steps']} steps; building the monitor {np.median(result['monitor_build_s']):.2f} s, "
                  "not counted"),
            extra=result))
        rows.append(dict(
            figure="training monitor, fit with / without", case=case, value=result["overhead"] * 100,
            unit="% of fit",
            note=(f"fit {np.median(result['plain_s']):.2f} s without, {np.median(result['watched_s']):.2f} s with; "
                  f"an empty per-batch callback alone {result['per_batch_overhead'] * 100:+.1f} %; in process CPU "
                  f"time {result['cpu_overhead'] * 100:+.1f} % (wall times drift with other processes' load)"),
            extra={}))
    return rows
