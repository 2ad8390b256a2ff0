"""Benchmark group "looksfor": what a filter looks for, at scale (issue 15).

1. Scan throughput: `cw.top_examples` over N fresh random 224×224 pictures on VGG16 (offline bsds500 conv
   weights), all 13 conv layers in one batched pass, against a plain `model.predict` over the same pictures
   (each arm prepares its inputs from the uint8 pictures, the same way, inside its timing). Runs alternate
   (scan, predict, scan, ...). Target: scan images/s ≥ 0.8 × predict's.
2. Feature visualisation: `cw.maximize` against tf-keras-vis `ActivationMaximization` (its defaults: jitter,
   rotation, total-variation and norm regularisers, Adam) on the same filters, the same number of steps and
   the same picture size. Both maximise the filter's mean pre-activation (tf-keras-vis with `ReplaceToLinear`
   on a model cut at the layer, fed 0..255 RGB through the caffe preprocessing as a layer). Each final picture
   is scored with the same function: the filter's mean pre-activation over its map. Targets: objective ≥
   tf-keras-vis', time ≤ tf-keras-vis'.
3. The view at slider speed: `WhatItLooksFor` on a scan of notebook 06's tiles, the time from `state.filter = f` to the
   crops, weights and captions drawn (report only).
"""

from __future__ import annotations

import time
import warnings
from typing import Any

import numpy as np
from harness import Row, format_table

SCAN_TARGET = 0.8


def _row(figure: str, case: str, value: float, unit: str, target: str = "", met: bool | None = None,
         note: str = "", **extra: Any) -> dict:
    return dict(figure=figure, case=case, value=float(value), unit=unit, target=target, met=met, note=note,
                extra=extra)


def bench_scan(state: Any, n_images: int, batch_size: int, repeats: int) -> list[dict]:
    import cnnviz_widgets as cw

    rng = np.random.default_rng(0)
    model = state.model
    layers: list[int] = []

    def pictures() -> list[np.ndarray]:  # fresh each run: no cache can help
        return [rng.integers(0, 256, (224, 224, 3), dtype=np.uint8) for _ in range(n_images)]

    def scan() -> float:
        images = pictures()
        start = time.perf_counter()
        top = cw.top_examples(state, images, k=9, batch_size=batch_size, cache=False, progress=False)
        seconds = time.perf_counter() - start
        assert top.complete
        layers.append(len(top.layers))
        return seconds

    def predict() -> float:
        images = pictures()
        start = time.perf_counter()
        x = np.stack([state.prepare(p).array for p in images])
        model.predict(x, batch_size=batch_size, verbose=0)
        return time.perf_counter() - start

    scan(), predict()  # warm-up: tracing, first allocations
    samples: dict[str, list[float]] = {"scan": [], "predict": []}
    for _ in range(repeats):
        samples["scan"].append(scan())
        samples["predict"].append(predict())
    rate = {k: n_images / float(np.median(v)) for k, v in samples.items()}
    ratio = rate["scan"] / rate["predict"]
    case = f"{model.name} 224×224, {n_images} images, batch {batch_size}, {layers[-1]} conv layers"
    return [
        _row("scan throughput", case, rate["scan"], "images/s", note=f"predict: {rate['predict']:.2f} images/s",
             samples=samples),
        _row("scan / predict", case, ratio, "×", target=f"≥ {SCAN_TARGET}", met=bool(ratio >= SCAN_TARGET),
             samples=samples),
    ]


def bench_view(state: Any, repeats: int) -> list[dict]:
    """WhatItLooksFor following the filter slider once a scan exists: one filter step, state change to drawn."""
    import cnnviz_widgets as cw
    from cnnviz_widgets.widgets import WhatItLooksFor

    pictures, ids = cw.sample_collection(112, limit=160)
    state = cw.ModelState(state.model, image="coffee", max_side=112)  # the notebook's settings
    top = cw.top_examples(state, pictures, ids=ids, k=9, batch_size=8, cache=False, progress=False)
    view = WhatItLooksFor(state, top)
    rows = []
    for layer in ("block1_conv2", "block3_conv3", "block5_conv3"):
        if layer not in top.layers:
            continue
        state.layer, state.filter = layer, 0
        samples = []
        for f in range(1, repeats + 1):
            start = time.perf_counter()
            state.filter = f
            samples.append(time.perf_counter() - start)
        rows.append(_row("view: filter step", f"WhatItLooksFor, {layer}, scan of {len(pictures)} tiles",
                         float(np.median(samples)) * 1e3, "ms", note=f"max {max(samples) * 1e3:.0f} ms",
                         samples=samples))
    view.close()
    return rows


def bench_maximize(state: Any, layer: str, filters: list[int], steps: int, size: int) -> list[dict]:
    import tensorflow as tf
    from tf_keras_vis.activation_maximization import ActivationMaximization
    from tf_keras_vis.utils.model_modifiers import ReplaceToLinear
    from tf_keras_vis.utils.scores import CategoricalScore

    import cnnviz_widgets as cw
    from cnnviz_widgets.features.visualisation import _objective_model, _to_fed
    from cnnviz_widgets.network.backend import keras

    k = keras()
    objective = _objective_model(state, layer, filters, "channel")

    def score(pictures: np.ndarray) -> np.ndarray:  # (n, H, W, 3) uint8 -> each filter's mean pre-activation
        x = _to_fed(tf, tf.constant(pictures.astype(np.float32) / 255.0), "caffe", 3)
        return np.asarray(objective(x))

    start = time.perf_counter()
    ours = cw.maximize(state, layer, filters, steps=steps, size=size, cache=False, progress=False)
    ours_s = time.perf_counter() - start
    ours_score = score(np.stack([r.image for r in ours]))

    rgb = k.Input((size, size, 3))
    mean = np.array([103.939, 116.779, 123.68], np.float32)
    x = k.layers.Lambda(lambda x: x[..., ::-1] - mean)(rgb)
    for vgg_layer in state.model.layers[1:]:  # VGG16 is a chain: its layers up to the target, shared
        if vgg_layer.name == layer:
            break
        x = vgg_layer(x)
    config = dict(state.model.get_layer(layer).get_config(), name=f"{layer}_copy")
    copy = k.layers.Conv2D.from_config(config)  # a copy, so ReplaceToLinear leaves the state's model alone
    out = copy(x)
    copy.set_weights(state.model.get_layer(layer).get_weights())
    theirs_model = k.Model(rgb, out)
    start = time.perf_counter()
    visualize = ActivationMaximization(theirs_model, model_modifier=ReplaceToLinear(), clone=False)
    seed = tf.random.uniform((len(filters), size, size, 3), 0, 255, seed=0)
    with warnings.catch_warnings():  # tf-keras-vis calls the model with a list: Keras warns about its structure
        warnings.simplefilter("ignore", UserWarning)
        theirs = visualize(CategoricalScore(filters), seed_input=seed, steps=steps)
    theirs_s = time.perf_counter() - start
    theirs_score = score(np.clip(np.asarray(theirs), 0, 255).astype(np.uint8))
    ratio = float(np.mean(ours_score) / max(np.mean(theirs_score), 1e-6)) if np.mean(theirs_score) > 0 else float(
        "inf")
    case = f"{state.model.name} {layer} filters {filters}, {steps} steps, {size}×{size}"
    return [
        _row("maximize objective", case, float(np.mean(ours_score)), "", note=(
            f"tf-keras-vis: {np.mean(theirs_score):.3g}; per filter ours {np.round(ours_score, 1).tolist()}, "
            f"theirs {np.round(theirs_score, 1).tolist()}"), ours=ours_score.tolist(), theirs=theirs_score.tolist()),
        _row("maximize / tf-keras-vis objective", case, ratio, "×", target="≥ 1", met=bool(ratio >= 1)),
        _row("maximize / tf-keras-vis time", case, ours_s / theirs_s, "×", target="≤ 1", met=bool(ours_s <= theirs_s),
             note=f"{ours_s:.1f} s vs {theirs_s:.1f} s"),
    ]


def bench_looksfor(model: Any = None, quick: bool = False) -> list[dict]:
    """The group's rows (dicts of `harness.Row`'s fields). `model`: VGG16 with the bsds500 weights by default."""
    import cnnviz_widgets as cw

    model = model if model is not None else cw.load_model("vgg16", weights="bsds500")
    state = cw.ModelState(model)
    rows = bench_scan(state, n_images=8 if quick else 32, batch_size=8, repeats=1 if quick else 3)
    rows += bench_view(state, repeats=3 if quick else 40)
    rows += bench_maximize(state, "block3_conv1", [0, 1, 2, 3], steps=4 if quick else 64, size=64 if quick else 128)
    return rows


if __name__ == "__main__":
    import sys

    print(format_table([Row(**r) for r in bench_looksfor(quick="--quick" in sys.argv)]))
