"""Benchmark group "attribution": the CAM family against tf-keras-vis (issue 21).

A picture already in the Explorer (the astronaut at 512×512 on VGG16 with the offline bsds500 conv weights, no
classifier), and a new filter of the last conv layer each time (its mean activation is the score): Grad-CAM++,
LayerCAM and Score-CAM on the conv layer before it, ours (`ModelState.explanation`, from the cached maps)
against tf-keras-vis with its defaults (a heat map at the input's size, normalised) on the same sub-model (the
input to that last conv layer, then each filter's mean), the same layer and the same score, timed in turns
(ours, theirs, ours, ...) in one process. Score-CAM is Faster Score-CAM on both sides, the same `max_n` maps of
largest variance (tf-keras-vis reads its score from the softmax of the sub-model's output, which costs the
same). Each value is theirs ÷ ours (medians). Targets: ≥ 3× for the gradient CAMs, ≥ 1.5× for Score-CAM.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from typing import Any

import numpy as np
from harness import Row, astronaut, conv_layers, format_table, stats, time_in_turns

GRADIENT_TARGET = 3.0
SCORE_TARGET = 1.5


def _row(figure: str, case: str, value: float, unit: str, target: str = "", met: bool | None = None,
         note: str = "", **extra: Any) -> dict:
    return dict(figure=figure, case=case, value=float(value), unit=unit, target=target, met=met, note=note,
                extra=extra)


def bench_cams(model: Any, side: int = 512, repeats: int = 5, score_repeats: int = 3, max_n: int = 8) -> list[dict]:
    """Rows: Grad-CAM++, LayerCAM and Score-CAM (max_n maps), ours against tf-keras-vis, a new filter each run."""
    import cnnviz_widgets as cw
    from cnnviz_widgets.network.backend import keras

    warnings.filterwarnings("ignore", category=DeprecationWarning)  # tf-keras-vis imports scipy's old paths
    warnings.filterwarnings("ignore", message="The structure of `inputs`")
    from tf_keras_vis.gradcam_plus_plus import GradcamPlusPlus
    from tf_keras_vis.layercam import Layercam
    from tf_keras_vis.scorecam import Scorecam

    k = keras()
    state = cw.ModelState(model, image=astronaut(), max_side=side)
    convs = conv_layers(state)
    last, layer = convs[-1], convs[-2]
    state.layer = last
    state.activation(layer)  # the picture is in the Explorer: its maps are cached
    x = state.model_input.array
    n_filters = int(state.graph.node(last).output_shape[-1])
    # tf-keras-vis' Score-CAM needs one score per class: the sub-model ends in each filter's mean activation
    means = k.layers.GlobalAveragePooling2D(name="filter_means")(model.get_layer(last).output)
    cut = k.Model(model.inputs, means, name="until_last_conv")

    def score(f: int) -> Any:
        return lambda output: output[:, f]

    def ours(method: str, **options: Any) -> Any:
        def run(step: int) -> None:
            state.filter = step % n_filters
            result = state.explanation(method, of="filter", layer=layer, **options)
            assert result.heatmap.shape == x.shape[:2]
        return run

    def theirs(kind: Any, **options: Any) -> Any:
        def run(step: int) -> None:
            with contextlib.redirect_stdout(io.StringIO()):  # Score-CAM's model.predict prints a progress bar
                cam = kind(cut)(score(step % n_filters), x[None], penultimate_layer=layer, **options)
            assert np.asarray(cam).shape[-2:] == x.shape[:2]
        return run

    cases = [("Grad-CAM++", ours("grad-cam++"), theirs(GradcamPlusPlus), GRADIENT_TARGET, repeats),
             ("LayerCAM", ours("layer-cam"), theirs(Layercam), GRADIENT_TARGET, repeats),
             (f"Score-CAM, max_n={max_n}", ours("score-cam", max_n=max_n), theirs(Scorecam, max_N=max_n),
              SCORE_TARGET, score_repeats)]
    rows = []
    height, width = x.shape[:2]
    for name, mine, peer, target, n in cases:
        samples = time_in_turns({"ours": mine, "tf-keras-vis": peer}, repeats=n)
        ours_s, theirs_s = stats(samples["ours"]), stats(samples["tf-keras-vis"])
        ratio = theirs_s["median"] / ours_s["median"]
        rows.append(_row("CAM vs tf-keras-vis", f"{name}, new filter of {last} on {layer}, {width}×{height}", ratio,
                         "×", f"≥ {target:g}", bool(ratio >= target),
                         f"{ours_s['median'] * 1e3:.0f} vs {theirs_s['median'] * 1e3:.0f} ms",
                         ours=ours_s, theirs=theirs_s, samples=samples))
    return rows


def bench_attribution(model: Any = None, quick: bool = False) -> list[dict]:
    """The group's rows (dicts of `harness.Row`'s fields). `model`: VGG16 with the bsds500 weights by default."""
    import cnnviz_widgets as cw

    model = model if model is not None else cw.load_model("vgg16", weights="bsds500")
    return bench_cams(model, repeats=2 if quick else 5, score_repeats=2 if quick else 3)


if __name__ == "__main__":
    import sys

    print(format_table([Row(**r) for r in bench_attribution(quick="--quick" in sys.argv)]))
