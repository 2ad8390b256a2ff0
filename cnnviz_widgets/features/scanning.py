"""Dataset examples: the image patches of a collection that excite each filter most (DeepVis' top-9).

`top_examples` runs ONE batched forward pass over the images for every scanned layer at once. On the device
(a GPU where TensorFlow has one) each filter's map is reduced to its strongest value and its position, so only
(batch, filters) numbers come back; a running top-k per filter keeps them (`examples.TopExamples`).
Coordinates follow `lessons.receptive_field` of the fed input. Scans are cached on disk and checkpointed while
they run, so a second call is instant and an interrupted or cancelled scan resumes where it stopped.
`scan_shards` spreads a scan over a Dask cluster and merges the shards. Pure numpy and Keras: no widgets.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cnnviz_widgets.checks import check_positive
from cnnviz_widgets.errors import CnnvizError, LayerError
from cnnviz_widgets.features.examples import TopExamples, cache_dir, weights_key
from cnnviz_widgets.features.sources import ImageSource
from cnnviz_widgets.lessons.receptive_field import receptive_field
from cnnviz_widgets.network.feed import ModelFeed
from cnnviz_widgets.network.memory import check_fits
from cnnviz_widgets.pictures.preprocessing import preprocess_name
from cnnviz_widgets.progress import cancelled, progress_bar


def scan_layers(state: ModelFeed, layers: Sequence[str] | None) -> list[str]:
    """The layers a scan covers: `layers`, or every visualised conv layer of the state's model."""
    if layers is None:
        return [n for n in state.layers if state.layer_kind(n) == "conv"]
    if isinstance(layers, str):
        layers = [layers]
    names = list(dict.fromkeys(layers))
    for name in names:
        if name not in state.layers or name == state.input_layer:
            state.graph.node(name)  # unknown name: LayerError with the list
            raise LayerError(f"{name} cannot be scanned: pick conv or pooling layers among "
                             f"{', '.join(state.layers[1:])}")
    return names


class _Reducer:
    """One batched forward pass: per layer, each filter's strongest value and its flat position in the map."""

    def __init__(self, graph: Any, layers: Sequence[str]):
        import tensorflow as tf

        model = graph.segments.model(None, list(layers), name="cnnviz_scan")

        @tf.function(reduce_retracing=True)
        def reduce(x: Any) -> list:
            outputs = model(x, training=False)
            outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
            result = []
            for out in outputs:  # reduced on the device: only (batch, filters) numbers come back
                flat = tf.reshape(out, [tf.shape(out)[0], -1, tf.shape(out)[3]])
                result.append((tf.reduce_max(flat, axis=1), tf.argmax(flat, axis=1, output_type=tf.int32)))
            return result

        self.reduce = reduce
        self.map_sizes = {n: tuple(graph.nodes[n].output_shape[1:3]) for n in layers}


def top_examples(state: ModelFeed, images: Any, k: int = 9, layers: Sequence[str] | None = None, batch_size: int = 32,
                 ids: Sequence[Any] | None = None, *, cache: bool | str | os.PathLike = True,
                 progress: bool | Callable[[int, int], None] = True, cancel: Any = None,
                 checkpoint_seconds: float = 30.0) -> TopExamples:
    """The k images (and positions) of `images` that excite each filter of `layers` most.

    Parameters
    ----------
    state : a `ModelState`: its model, preprocessing and `max_side` say how images are fed.
    images : a folder (its image files, recursively, in sorted order), a sequence of anything `load_image`
        takes, or a tf.data.Dataset of images ((image, label) pairs: the image; floats in 0..1 are scaled).
    k : examples per filter. layers : None = every visualised conv layer, all in one batched pass.
    batch_size : images per forward pass (images of one fed size are batched together).
    ids : one identifier per image (int or str); default the file path for a folder, the position otherwise.
        Shards that will be merged need distinct ids.
    cache : True (``$CNNVIZ_CACHE_DIR`` or ~/.cache/cnnviz_widgets), a folder, or False. The key is the model's
        weights, the layers, k, the feeding and every image's content and id: a second call loads the result.
    progress : True: a tqdm.auto bar where tqdm is installed; a callable progress(done, total); False.
    cancel : a threading.Event (or a callable returning True) checked after every batch: the scan stops, saves
        a checkpoint and returns what it has (``complete=False``). Calling again resumes from the checkpoint.
    checkpoint_seconds : how often a running scan saves its checkpoint (also on cancel and on an exception).
    """
    check_positive(k, "k")
    check_positive(batch_size, "batch_size")
    names = scan_layers(state, layers)
    source = ImageSource(images, ids)
    model_key = weights_key(state.model, names, int(k), preprocess_name(state.preprocessing), state.max_side)
    collection = hashlib.blake2b(model_key.encode(), digest_size=16)
    for image_id, digest in zip(source.ids, source.digests, strict=True):
        collection.update(f"{image_id!r}:{digest};".encode())
    folder = cache_dir(cache)
    final = partial = None
    if folder is not None:
        final = folder / "scans" / f"{collection.hexdigest()}.npz"
        partial = final.with_suffix(".partial.npz")
        for path in (final, partial):
            if path.exists():
                try:
                    found = TopExamples.load(path)
                except (OSError, ValueError, KeyError):
                    continue  # a file from an older version or a broken one: scan again
                found.ids = list(source.ids)
                found.from_cache = path == final
                if found.complete:
                    return found
                top = found
                break
        else:
            top = None
    else:
        top = None
    if top is None:
        top = TopExamples(names, int(k), source.ids, [state.n_filters(n) for n in names], model_key)
    _run(state, top, source, int(batch_size), progress, cancel, partial, checkpoint_seconds)
    if top.complete and final is not None:
        top.save(final)
        if partial is not None and partial.exists():
            partial.unlink()
    return top


def _run(state: ModelFeed, top: TopExamples, source: ImageSource, batch_size: int, progress: Any, cancel: Any,
         partial: Path | None, checkpoint_seconds: float) -> None:
    total = len(source.ids)
    reducer = _Reducer(state.graph, top.layers)
    fields: dict[tuple, dict] = {}
    update, close = progress_bar(progress, total, top.n_done)
    last_save = time.monotonic()
    batch: list[tuple[int, np.ndarray, np.ndarray]] = []

    def flush() -> None:
        _fold_batch(state, top, reducer, batch, fields)
        top.n_done = batch[-1][0] + 1
        top.scanned += len(batch)
        batch.clear()
        update(top.n_done)

    try:
        for position, picture in source.pictures(top.n_done):
            try:
                fed = state.prepare(picture)
            except CnnvizError as err:
                raise type(err)(f"image {source.ids[position]!r}: {err}") from None
            if batch and (fed.array.shape != batch[0][1].shape or len(batch) == batch_size):
                flush()
                if cancelled(cancel):
                    break
                if partial is not None and time.monotonic() - last_save > checkpoint_seconds:
                    top.save(partial)
                    last_save = time.monotonic()
            batch.append((position, fed.array, fed.picture))
        else:
            if batch:
                flush()
            top.complete = top.n_done == total
    finally:
        close()
        if not top.complete and partial is not None and top.n_done:
            top.save(partial)  # cancelled, or an exception (KeyboardInterrupt too): the next call resumes here


def _fold_batch(state: ModelFeed, top: TopExamples, reducer: _Reducer, batch: list, fields: dict) -> None:
    x = np.stack([item[1] for item in batch])
    check_fits(2 * state.extractor.output_bytes(x.shape[1:]) * len(batch),
               f"a batch of {len(batch)} images of {x.shape[2]}×{x.shape[1]}", "choose a smaller batch_size")
    reduced = reducer.reduce(x)
    positions = np.array([item[0] for item in batch], np.int64)
    size = x.shape[1:3]
    for (name, (best, where)) in zip(top.layers, reduced, strict=True):
        best, where = np.asarray(best).T, np.asarray(where).T  # (filters, batch)
        field = fields.get((name, size))
        if field is None:
            field = fields[(name, size)] = receptive_field(state.graph, name, size)
        width = int(field.output_size[1]) if field.output_size[1] else int(where.max()) + 1
        rows, cols = where // width, where % width
        h, w = size
        if field.whole:
            y0 = np.zeros_like(rows)
            x0 = np.zeros_like(cols)
            y1, x1, cy, cx = np.full_like(rows, h), np.full_like(cols, w), np.full_like(rows, h // 2), np.full_like(
                cols, w // 2)
        else:
            ys, xs = field.y.offset + rows * field.y.jump, field.x.offset + cols * field.x.jump
            y0, x0 = np.maximum(ys, 0), np.maximum(xs, 0)
            y1, x1 = np.minimum(ys + field.y.size, h), np.minimum(xs + field.x.size, w)
            cy = np.clip(ys + (field.y.size - 1) // 2, 0, h - 1)
            cx = np.clip(xs + (field.x.size - 1) // 2, 0, w - 1)
        index = np.broadcast_to(positions, best.shape)
        candidates = (best, index, rows.astype(np.int32), cols.astype(np.int32),
                      np.stack([y0, x0, y1, x1], -1).astype(np.int32), np.stack([cy, cx], -1).astype(np.int32))
        current = (top.score[name], top.index[name], top.row[name], top.col[name], top.box[name], top.centre[name])
        top.keep_best(name, *(np.concatenate([a, b], axis=1) for a, b in zip(current, candidates, strict=True)))
    for position, _, picture in batch:
        top.pictures[int(position)] = picture
    top.prune_pictures()


def scan_shards(make_state: Callable[[], Any], images: Sequence[Any], n_shards: int, client: Any,
                **kwargs: Any) -> TopExamples:
    """Scan `images` (a sequence) in `n_shards` shards on a Dask `distributed` client, merged exactly.

    make_state : a function (picklable, e.g. defined at module level) that builds the `ModelState` on a worker;
        each worker process builds it once. A model is not shipped between processes: its weights are loaded
        where it runs, as in any distributed inference job.
    Each shard is a contiguous slice; ids default to the positions in the whole sequence, so the merged
    result equals ``top_examples(make_state(), images, ...)``. Other arguments go to `top_examples`.
    """
    items = list(images)
    ids = list(kwargs.pop("ids", None) or range(len(items)))
    if len(ids) != len(items):
        raise CnnvizError(f"ids must give one identifier per image: {len(items)} images, {len(ids)} ids")
    bounds = np.linspace(0, len(items), int(n_shards) + 1).astype(int)
    kwargs.setdefault("progress", False)
    futures = [client.submit(_scan_shard, make_state, items[a:b], ids[a:b], kwargs, pure=False)
               for a, b in itertools.pairwise(bounds) if b > a]
    result = None
    for shard in client.gather(futures):
        result = shard if result is None else result.merge(shard)
    assert result is not None
    return result


_WORKER_STATES: dict[Any, Any] = {}  # per worker process: the state each factory built


def _scan_shard(make_state: Callable[[], Any], items: list, ids: list, kwargs: dict) -> TopExamples:
    state = _WORKER_STATES.get(make_state)
    if state is None:
        state = _WORKER_STATES[make_state] = make_state()
    return top_examples(state, items, ids=ids, **kwargs)
