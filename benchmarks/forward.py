"""Benchmark group "forward": a new image's activations through `ModelState` against a plain ``model(x)``.

Three rows per input size: the overhead of ours over one plain forward pass (target ≤ 1.25×), the naive
approach (one ``keras.Model`` per layer, as the original notebook did) over ours, and the GFLOP/s the plain
pass reaches (a "limit" row: the conv FLOPs counted from the layers by `conv_flops`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from harness import Row, astronaut, at_most, conv_layers, new_pictures, stats, time_interleaved


def conv_flops(state: Any) -> float:
    """Floating-point operations of the conv layers for the state's current input: 2 × multiply-adds.

    A conv output pixel costs kernel.size multiply-adds (kh·kw·c_in·c_out counts every output channel; for a
    depthwise kernel (kh, kw, c_in, multiplier) it is the same product), so a layer costs 2·H·W·kernel.size.
    """
    total = 0.0
    for name in conv_layers(state):
        height, width = state.activation(name).shape[:2]
        total += 2.0 * height * width * state.weights(name)[0].size
    return total



def bench_forward(model: Any, sides: Sequence[int] = (224, 512), repeats: int = 7,
                  naive_repeats: int = 3) -> list[Row]:
    """New image → every conv layer's activations: ours ÷ one plain ``model(x)``, and naive ÷ ours.

    "Ours" is what a user's new image costs: ``state.set_image`` (check, fit, preprocess, hash) and
    ``state.activation(layer)`` for every conv layer, i.e. the extractor's one pass. "Plain" is
    ``np.asarray(model(x))`` on the same fed array. "Naive" builds ``keras.Model(model.input, layer.output)``
    per layer and runs it, as the original notebook's per-figure backend function did.
    """
    from cnnviz_widgets import ModelState
    from cnnviz_widgets.network.backend import keras

    k = keras()
    rows: list[Row] = []
    for side in sides:
        state = ModelState(model, image=astronaut(), max_side=side)
        case = "{1}×{0}".format(*state.model_input.array.shape[:2])
        x = state.model_input.array[np.newaxis]
        convs = conv_layers(state)
        # warm-up + repeats fresh pictures: each timed call of `ours` sees an image it has never seen
        pictures = iter(new_pictures(state.image, repeats + naive_repeats + 1))
        passes_before = state.forward_passes

        def ours(state=state, pictures=pictures, convs=convs) -> None:
            state.set_image(next(pictures))
            for name in convs:
                state.activation(name)

        def plain(x=x) -> None:
            np.asarray(model(x, training=False))

        samples = time_interleaved({"ours": ours, "plain": plain}, repeats)
        passes_per_image = (state.forward_passes - passes_before) / (repeats + 1)
        ours_s, plain_s = stats(samples["ours"]), stats(samples["plain"])
        overhead = ours_s["median"] / plain_s["median"]
        target, met = at_most(overhead, 1.25)
        rows.append(Row("forward overhead", case, overhead, "×", target, met,
                        f"ours {ours_s['median'] * 1e3:.0f} ms, plain model(x) {plain_s['median'] * 1e3:.0f} ms, "
                        f"{passes_per_image:g} pass/image",
                        dict(ours=ours_s, plain=plain_s, passes_per_image=passes_per_image, samples=samples)))

        def naive(x=x, convs=convs) -> None:
            for name in convs:
                sub = k.Model(model.input, model.get_layer(name).output)
                np.asarray(sub(x, training=False))

        # The plain pass has already warmed every conv kernel at this size, so naive runs need no warm-up of
        # their own (one costs as much as ~7 forward passes); ours is timed again, in turns, for the ratio.
        paired = time_interleaved({"naive": naive, "ours": ours}, naive_repeats, warmup=0)
        naive_s, ours_again = stats(paired["naive"]), stats(paired["ours"])
        ratio = naive_s["median"] / ours_again["median"]
        rows.append(Row("naive ratio", case, ratio, "×",
                        note=f"naive {naive_s['median'] * 1e3:.0f} ms ({len(convs)} sub-models) ÷ ours "
                        f"{ours_again['median'] * 1e3:.0f} ms; expected ≥ 5×",
                        extra=dict(naive=naive_s, ours=ours_again, samples=paired)))

        flops = conv_flops(state)  # activation shapes of the current (cached) image
        rows.append(Row("limit", case, flops / plain_s["median"] / 1e9, "GFLOP/s",
                        note=f"{flops / 1e9:.1f} GFLOP per pass ÷ median plain model(x); best run "
                        f"{flops / plain_s['min'] / 1e9:.0f} GFLOP/s",
                        extra=dict(gflop=flops / 1e9, plain=plain_s, best_gflops=flops / plain_s["min"] / 1e9)))
    return rows


def bench_explorer_new_image(model: Any, side: int = 224, repeats: int = 15) -> Row:
    """A new image while the Explorer is open ÷ the same without any view, at `side`.

    Both: ``state.set_image`` with a picture never seen, then every conv layer's activations (as in "forward
    overhead", whose "ours" is one forward pass: ≈ 1.0× a plain ``model(x)``). One state has an Explorer open on
    its first tab (Activations), so its views also redraw and encode their pictures; the other has no view. The
    two are timed in turns, and only they: a third function in the turns (a plain ``model(x)``) slowed both
    baselines by half on this machine, whatever its order.
    """
    from cnnviz_widgets import ModelState
    from cnnviz_widgets.widgets.explorer import Explorer

    with_views = ModelState(model, image=astronaut(), max_side=side)
    Explorer(with_views)
    bare = ModelState(model, image=astronaut(), max_side=side)
    case = "{1}×{0}".format(*bare.model_input.array.shape[:2])
    convs = conv_layers(bare)
    fresh = new_pictures(bare.image, 2 * (repeats + 1))

    def new_image(state: Any, pictures: Any) -> Callable[[], None]:
        def run() -> None:
            state.set_image(next(pictures))
            for name in convs:
                state.activation(name)
        return run

    samples = time_interleaved({"explorer": new_image(with_views, iter(fresh[::2])),
                                "bare": new_image(bare, iter(fresh[1::2]))}, repeats)
    times = {name: stats(values) for name, values in samples.items()}
    ratio = times["explorer"]["median"] / times["bare"]["median"]
    target, met = at_most(ratio, 1.25)
    return Row("new image, Explorer open", case, ratio, "×", target, met,
               f"Explorer open {times['explorer']['median'] * 1e3:.0f} ms ÷ one pass with no view open "
               f"{times['bare']['median'] * 1e3:.0f} ms",
               dict(times=times, samples=samples))
