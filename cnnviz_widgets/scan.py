"""Dataset examples: the image patches of a collection that excite each filter most (DeepVis' top-9).

`top_examples` runs ONE batched forward pass over the images for every scanned layer at once. On the device
(a GPU where TensorFlow has one) each filter's map is reduced to its strongest value and its position, so only
(batch, filters) numbers come back. A running top-k per filter keeps (score, image, row, col); a filter's score
in an image is its strongest activation there, so one image appears at most once per filter and the k examples
are k different images. Equal scores are ordered by image id, so the result does not depend on the order of
the images: `TopExamples.merge` of shards is exactly the scan of their union (and associative).

Coordinates follow `analysis.receptive_field` of the fed input (the picture at the size the model was fed).
Scans are cached on disk, keyed by the model's weights and the images' content, and checkpointed while they
run, so a second call is instant and an interrupted or cancelled scan resumes where it stopped.

Pure numpy and Keras: no widgets. `state` is a `ModelState` (duck-typed: this module may not import it).
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import images as _images
from .analysis import receptive_field
from .errors import CnnvizError, LayerError
from .feed import ModelFeed
from .inputs import preprocess_name
from .memory import check_fits

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".bmp", ".tif", ".tiff", ".webp")
"""Files a folder scan reads (case-insensitive), found recursively and taken in sorted path order."""
CACHE_ENV = "CNNVIZ_CACHE_DIR"
"""Environment variable naming the cache folder; default ``~/.cache/cnnviz_widgets``."""
_FORMAT = 1  # bump when the saved layout changes: old cache files are then ignored


def cache_dir(cache: bool | str | os.PathLike | None = True) -> Path | None:
    """The folder cached scans and pictures go to: `cache` itself if a path, None if False."""
    if cache is False or cache is None:
        return None
    if cache is True:
        root = os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "cnnviz_widgets"
        return Path(root)
    return Path(cache)


def weights_key(model: Any, *extra: Any) -> str:
    """A digest of every weight of `model` (names, shapes, values) and `extra`: equal models give equal keys."""
    digest = hashlib.blake2b(digest_size=16)
    for weight in model.weights:
        value = np.ascontiguousarray(np.asarray(weight))
        digest.update(f"{weight.path}:{value.shape}:{value.dtype.str}".encode())
        digest.update(value.data)
    digest.update(repr(extra).encode())
    return digest.hexdigest()


class TopExamples:
    """The k images (and positions) of a collection that excite each filter of some layers most.

    Per layer, arrays of shape (filters, k), strongest first: `score` (float32, -inf where fewer than k images
    were scanned), `index` (into `ids`, -1 when empty), `row`/`col` (the strongest unit in the layer's map),
    `box` (filters, k, 4): (y0, x0, y1, x1) of its receptive field in the fed picture, clipped at the border,
    and `centre` (filters, k, 2): the field's centre (row, col) in input pixels. `pictures` holds the fed
    pictures (RGB uint8) of the images that appear in some top-k, by index.

    complete : False for a cancelled scan (it resumes from its checkpoint when called again).
    scanned : images run through the network by the call that made this (0 when it came from the cache).
    """

    def __init__(self, layers: Sequence[str], k: int, ids: Sequence[Any], filters: Sequence[int], model_key: str):
        self.layers = list(layers)
        self.k = int(k)
        self.ids = list(ids)
        self.model_key = model_key
        self.score = {n: np.full((c, self.k), -np.inf, np.float32) for n, c in zip(self.layers, filters, strict=True)}
        self.index = {n: np.full((c, self.k), -1, np.int64) for n, c in zip(self.layers, filters, strict=True)}
        self.row = {n: np.zeros((c, self.k), np.int32) for n, c in zip(self.layers, filters, strict=True)}
        self.col = {n: np.zeros((c, self.k), np.int32) for n, c in zip(self.layers, filters, strict=True)}
        self.box = {n: np.zeros((c, self.k, 4), np.int32) for n, c in zip(self.layers, filters, strict=True)}
        self.centre = {n: np.zeros((c, self.k, 2), np.int32) for n, c in zip(self.layers, filters, strict=True)}
        self.pictures: dict[int, np.ndarray] = {}
        self.n_done = 0  # images of `ids` (in order) folded in; all of them once complete
        self.complete = False
        self.scanned = 0
        self.from_cache = False
        self._ranks: np.ndarray | None = None

    # -- what a user asks ----------------------------------------------------------------------------

    def n_filters(self, layer: str) -> int:
        return int(self.score[self._layer(layer)].shape[0])

    def sources(self, layer: str, filter: int) -> list[tuple[Any, int, int]]:
        """Up to k tuples (id, row, col): the image and the centre of its strongest unit's field, in input pixels."""
        name, f, n = self._pick(layer, filter)
        return [(self.ids[int(i)], int(r), int(c))
                for i, (r, c) in zip(self.index[name][f, :n], self.centre[name][f, :n], strict=True)]

    def scores(self, layer: str, filter: int) -> list[float]:
        """Up to k floats, strongest first: the filter's strongest activation in each example image."""
        name, f, n = self._pick(layer, filter)
        return [float(s) for s in self.score[name][f, :n]]

    def boxes(self, layer: str, filter: int) -> list[tuple[int, int, int, int]]:
        """Up to k (y0, x0, y1, x1), end-exclusive: the receptive field of each example's unit, clipped."""
        name, f, n = self._pick(layer, filter)
        return [tuple(int(v) for v in b) for b in self.box[name][f, :n]]  # type: ignore[misc]

    def crops(self, layer: str, filter: int) -> list[np.ndarray]:
        """Up to k RGB uint8 crops: each example's receptive field, clipped at the image border."""
        name, f, n = self._pick(layer, filter)
        return [self.pictures[int(i)][y0:y1, x0:x1]
                for i, (y0, x0, y1, x1) in zip(self.index[name][f, :n], self.box[name][f, :n], strict=True)]

    def picture(self, image_id: Any) -> np.ndarray:
        """The fed picture (RGB uint8) of an image that is one of the examples."""
        try:
            index = self.ids.index(image_id)
            return self.pictures[index]
        except (ValueError, KeyError):
            raise CnnvizError(f"{image_id!r} is not among the example images of this scan") from None

    def merge(self, other: TopExamples) -> TopExamples:
        """The exact top-k of the union of two scans of disjoint image sets (shards); associative."""
        if not isinstance(other, TopExamples):
            raise CnnvizError(f"merge takes another TopExamples; got {type(other).__name__}")
        if (self.layers, self.k, self.model_key) != (other.layers, other.k, other.model_key):
            raise CnnvizError("only scans of the same model, layers and k can be merged; got layers "
                              f"{self.layers} k={self.k} and {other.layers} k={other.k}"
                              + ("" if self.model_key == other.model_key else " (different weights)"))
        shared = set(map(_hashable, self.ids)) & set(map(_hashable, other.ids))
        if shared:
            raise CnnvizError(f"shards must hold different images; both hold ids {sorted(shared, key=_id_key)[:5]}: "
                              "pass ids=... so that each image has its own")
        out = TopExamples(self.layers, self.k, self.ids + other.ids, [self.n_filters(n) for n in self.layers],
                          self.model_key)
        offset = len(self.ids)
        for name in self.layers:
            parts = [(self, 0), (other, offset)]
            out._fold(name, *(np.concatenate([_shifted(p, name, o)[j] for p, o in parts], axis=1) for j in range(6)))
        out.pictures = {**self.pictures, **{i + offset: p for i, p in other.pictures.items()}}
        out.n_done = len(out.ids)
        out.complete = self.complete and other.complete
        out._prune_pictures()
        return out

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TopExamples) or (self.layers, self.k) != (other.layers, other.k):
            return False
        for name in self.layers:
            a, b = self.sources_table(name), other.sources_table(name)
            if a != b or not np.array_equal(self.score[name], other.score[name]):
                return False
        return True

    __hash__ = None  # type: ignore[assignment]

    def sources_table(self, layer: str) -> list[list[tuple[Any, int, int]]]:
        """`sources` of every filter of `layer`."""
        return [self.sources(layer, f) for f in range(self.n_filters(layer))]

    def __repr__(self) -> str:
        state = "complete" if self.complete else f"partial: {self.n_done} of {len(self.ids)} images"
        return f"TopExamples({len(self.layers)} layers, k={self.k}, {len(self.ids)} images, {state})"

    # -- saving --------------------------------------------------------------------------------------

    def save(self, path: str | os.PathLike) -> None:
        """Write to an .npz file (atomically: a crash never leaves half a file)."""
        arrays: dict[str, np.ndarray] = {}
        for i, name in enumerate(self.layers):
            for field in ("score", "index", "row", "col", "box", "centre"):
                arrays[f"{field}_{i}"] = getattr(self, field)[name]
        for index, picture in self.pictures.items():
            arrays[f"picture_{index}"] = picture
        meta = dict(format=_FORMAT, layers=self.layers, k=self.k, ids=self.ids, model_key=self.model_key,
                    n_done=self.n_done, complete=self.complete)
        arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as fp:
            np.savez(fp, **arrays)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> TopExamples:
        with np.load(path) as data:
            meta = json.loads(bytes(data["meta"]).decode())
            if meta.get("format") != _FORMAT:
                raise CnnvizError(f"{path} was saved by another version of cnnviz_widgets "
                                  f"(format {meta.get('format')})")
            filters = [data[f"score_{i}"].shape[0] for i in range(len(meta["layers"]))]
            out = cls(meta["layers"], meta["k"], meta["ids"], filters, meta["model_key"])
            for i, name in enumerate(out.layers):
                for field in ("score", "index", "row", "col", "box", "centre"):
                    getattr(out, field)[name] = data[f"{field}_{i}"]
            out.pictures = {int(key[8:]): data[key] for key in data.files if key.startswith("picture_")}
        out.n_done, out.complete = int(meta["n_done"]), bool(meta["complete"])
        return out

    # -- folding candidates in -----------------------------------------------------------------------

    def _ranks_of(self, index: np.ndarray) -> np.ndarray:
        """The tie-break order of image indices: by id (ints before strings); empty slots last."""
        if self._ranks is None or self._ranks.size != len(self.ids):
            order = sorted(range(len(self.ids)), key=lambda i: _id_key(self.ids[i]))
            self._ranks = np.empty(len(self.ids), np.int64)
            self._ranks[order] = np.arange(len(self.ids))
        big = np.iinfo(np.int64).max
        return np.where(index >= 0, self._ranks[np.maximum(index, 0)] if self._ranks.size else big, big)

    def _fold(self, name: str, score: np.ndarray, index: np.ndarray, row: np.ndarray, col: np.ndarray,
              box: np.ndarray, centre: np.ndarray) -> None:
        """Keep the k best of the candidates (filters, m): strongest first, equal scores by image id."""
        score = np.where(np.isnan(score), -np.inf, score)
        order = np.lexsort((self._ranks_of(index), -score.astype(np.float64)), axis=-1)[:, : self.k]
        self.score[name] = np.take_along_axis(score, order, 1).astype(np.float32)
        self.index[name] = np.take_along_axis(index, order, 1)
        self.row[name] = np.take_along_axis(row, order, 1)
        self.col[name] = np.take_along_axis(col, order, 1)
        self.box[name] = np.take_along_axis(box, order[..., None], 1)
        self.centre[name] = np.take_along_axis(centre, order[..., None], 1)

    def _winners(self) -> np.ndarray:
        return np.unique(np.concatenate([self.index[n].ravel() for n in self.layers] or [np.zeros(0, np.int64)]))

    def _prune_pictures(self) -> None:
        keep = set(int(i) for i in self._winners() if i >= 0)
        self.pictures = {i: p for i, p in self.pictures.items() if i in keep}

    def _layer(self, layer: str) -> str:
        if layer not in self.score:
            raise LayerError(f"{layer!r} was not scanned; the scanned layers are: {', '.join(self.layers)}")
        return layer

    def _pick(self, layer: str, filter: int) -> tuple[str, int, int]:
        name = self._layer(layer)
        n_filters = self.n_filters(name)
        if isinstance(filter, bool) or not isinstance(filter, (int, np.integer)) or not 0 <= filter < n_filters:
            raise LayerError(f"{name} has {n_filters} filters (0..{n_filters - 1}); got filter {filter!r}")
        count = int(np.sum(self.index[name][int(filter)] >= 0))
        return name, int(filter), count


def _shifted(top: TopExamples, name: str, offset: int) -> tuple[np.ndarray, ...]:
    index = top.index[name]
    return (top.score[name], np.where(index >= 0, index + offset, -1), top.row[name], top.col[name],
            top.box[name], top.centre[name])


def _id_key(value: Any) -> tuple:
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return (0, int(value), "")
    return (1, 0, str(value))


def _hashable(value: Any) -> Any:
    return value if isinstance(value, (int, str)) else str(value)


# ---------------------------------------------------------------------------------------- the image sources


class _Source:
    """The images of a collection, one at a time: their ids, a content digest each, and the pictures."""

    def __init__(self, images: Any, ids: Sequence[Any] | None):
        self.dataset = None
        if isinstance(images, (str, os.PathLike)) and Path(images).is_dir():
            folder = Path(images)
            self.items: list[Any] = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
            if not self.items:
                raise CnnvizError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) in the folder {str(folder)!r}")
            default_ids: list[Any] = [str(p) for p in self.items]
        elif hasattr(images, "as_numpy_iterator") and hasattr(images, "element_spec"):  # a tf.data.Dataset
            self.dataset, self.items = images, []
            default_ids = []
        elif isinstance(images, (str, bytes, os.PathLike)) or not isinstance(images, Iterable) or (
                isinstance(images, np.ndarray) and images.ndim < 4):
            raise CnnvizError("images must be a folder path, a sequence of images (anything load_image takes) or "
                              f"a tf.data.Dataset of images; got {type(images).__name__}"
                              + (f" {str(images)!r}, which is not a folder" if isinstance(images, (str, os.PathLike))
                                 else ""))
        else:
            self.items = list(images)
            default_ids = list(range(len(self.items)))
        self.digests = [_digest(item) for item in self._raw()]
        if self.dataset is not None:
            default_ids = list(range(len(self.digests)))
        if not self.digests:
            raise CnnvizError("the image collection is empty")
        if ids is None:
            self.ids = default_ids
        else:
            self.ids = [i if isinstance(i, (int, str)) and not isinstance(i, bool) else str(i) for i in ids]
            if len(self.ids) != len(self.digests):
                raise CnnvizError(f"ids must give one identifier per image: {len(self.digests)} images, "
                                  f"{len(self.ids)} ids")
            if len(set(self.ids)) != len(self.ids):
                raise CnnvizError("ids must be different from each other (they name the images in the results)")

    def _raw(self) -> Iterator[Any]:
        if self.dataset is None:
            yield from self.items
            return
        for element in self.dataset.as_numpy_iterator():
            if isinstance(element, tuple):  # (image, label) pairs
                element = element[0]
            elif isinstance(element, dict):
                element = element.get("image", next(iter(element.values())))
            yield element

    def pictures(self, start: int) -> Iterator[tuple[int, np.ndarray]]:
        """(position, RGB uint8 picture) from `start` on."""
        for position, item in enumerate(self._raw()):
            if position >= start:
                yield position, _images.load_image(_as_loadable(item))


def _as_loadable(item: Any) -> Any:
    if isinstance(item, np.ndarray) and item.dtype.kind == "f" and item.size and float(np.nanmax(item)) <= 1.0:
        return np.clip(item * 255.0 + 0.5, 0, 255).astype(np.uint8)  # tf.data pipelines often hold 0..1 floats
    return item


def _digest(item: Any) -> str:
    """A digest of an image's content: its file's bytes, its array's bytes (shape and dtype included)."""
    digest = hashlib.blake2b(digest_size=16)
    if isinstance(item, (str, os.PathLike)):
        with open(item, "rb") as fp:
            for chunk in iter(lambda: fp.read(1 << 20), b""):
                digest.update(chunk)
    elif isinstance(item, (bytes, bytearray, memoryview)):
        digest.update(item)
    elif isinstance(item, io.IOBase) and item.seekable():
        at = item.tell()
        digest.update(item.read())
        item.seek(at)
    else:
        array = np.asarray(item) if not hasattr(item, "tobytes") or isinstance(item, np.ndarray) else None
        if array is None:  # a PIL image
            digest.update(f"{item.mode}{item.size}".encode())
            digest.update(item.tobytes())
        else:
            array = np.ascontiguousarray(array)
            digest.update(f"{array.shape}{array.dtype.str}".encode())
            digest.update(array.data)
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------- the scan


def _cancelled(cancel: Any) -> bool:
    if cancel is None:
        return False
    is_set = getattr(cancel, "is_set", None)  # a threading.Event
    return bool(is_set() if is_set is not None else cancel())


def _progress_bar(progress: Any, total: int, done: int) -> tuple[Callable[[int], None], Callable[[], None]]:
    """(update(done), close()) for `progress`: True = a tqdm.auto bar if tqdm is installed, a callable
    progress(done, total), or False for none."""
    if callable(progress):
        return (lambda n: progress(n, total)), (lambda: None)
    if progress:
        try:
            from tqdm.auto import tqdm
        except ImportError:
            pass
        else:
            bar = tqdm(total=total, initial=done, unit="img", desc="scanning", leave=False)
            return (lambda n: bar.update(n - bar.n)), bar.close
    return (lambda n: None), (lambda: None)


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

        from ._keras import keras

        model = keras().Model(graph.input_tensor, [graph.nodes[n].tensor for n in layers], name="cnnviz_scan")

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
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise CnnvizError(f"k must be a positive int; got {k!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise CnnvizError(f"batch_size must be a positive int; got {batch_size!r}")
    names = scan_layers(state, layers)
    source = _Source(images, ids)
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


def _run(state: ModelFeed, top: TopExamples, source: _Source, batch_size: int, progress: Any, cancel: Any,
         partial: Path | None, checkpoint_seconds: float) -> None:
    total = len(source.ids)
    reducer = _Reducer(state.graph, top.layers)
    fields: dict[tuple, dict] = {}
    update, close = _progress_bar(progress, total, top.n_done)
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
                if _cancelled(cancel):
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
        top._fold(name, *(np.concatenate([a, b], axis=1) for a, b in zip(current, candidates, strict=True)))
    for position, _, picture in batch:
        top.pictures[int(position)] = picture
    top._prune_pictures()


SKIMAGE_PICTURES = ("astronaut", "brick", "camera", "cat", "coffee", "coins", "grass", "gravel", "horse",
                    "hubble_deep_field", "immunohistochemistry", "moon", "motorcycle_left", "page", "retina",
                    "rocket", "text")
"""scikit-image's bundled pictures added by `sample_collection` where scikit-image is installed."""


def sample_collection(side: int = 112, *, flips: bool = True, skimage: bool = True,
                      limit: int | None = None) -> tuple[list[np.ndarray], list[str]]:
    """An image collection that exists offline: tiles of the bundled samples (and of scikit-image's pictures
    where it is installed), each also mirrored when `flips`.

    Each picture is scaled so its short side is 2 × `side`, then cut into non-overlapping `side` × `side`
    tiles. Returns (pictures RGB uint8, ids such as "coffee[112:224, 0:112]" or "... flipped"); `limit` caps
    the count (evenly spread over the collection).
    """
    if isinstance(side, bool) or not isinstance(side, (int, np.integer)) or side < _images.MIN_SIDE:
        raise CnnvizError(f"side must be an int of at least {_images.MIN_SIDE} pixels; got {side!r}")
    named = [(name, _images.sample_image(name)) for name in _images.sample_names()]
    if skimage:
        try:
            from skimage import data as skdata
        except ImportError:
            pass
        else:
            have = {name for name, _ in named}
            for name in SKIMAGE_PICTURES:
                if name not in have and hasattr(skdata, name):
                    try:
                        named.append((name, _images.load_image(getattr(skdata, name)())))
                    except Exception:  # one it would download, or cannot give as RGB: skipped
                        continue
    pictures, ids = [], []
    for name, picture in named:
        h, w = picture.shape[:2]
        factor = 2 * side / min(h, w)
        scaled = _images.resize_image(picture, (max(side, round(h * factor)), max(side, round(w * factor))))
        for y in range(0, scaled.shape[0] - side + 1, side):
            for x in range(0, scaled.shape[1] - side + 1, side):
                tile = np.ascontiguousarray(scaled[y:y + side, x:x + side])
                where = f"{name}[{y}:{y + side}, {x}:{x + side}]"
                pictures.append(tile)
                ids.append(where)
                if flips:
                    pictures.append(np.ascontiguousarray(tile[:, ::-1]))
                    ids.append(f"{where} flipped")
    if limit is not None and len(pictures) > limit:
        keep = np.linspace(0, len(pictures) - 1, int(limit)).round().astype(int)
        pictures, ids = [pictures[i] for i in keep], [ids[i] for i in keep]
    return pictures, ids


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
