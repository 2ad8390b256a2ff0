"""The top examples of each filter, kept so that shards merge exactly and scans cache on disk.

A filter's score in an image is its strongest activation there, so one image appears at most once per filter
and the k examples are k different images. Equal scores are ordered by image id, so the result does not depend
on the order of the images: `TopExamples.merge` of shards is exactly the scan of their union (and associative).
Scans are keyed by the model's weights and the images' content (`weights_key`, `cache_dir`).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cnnviz_widgets.checks import check_filter, is_int
from cnnviz_widgets.errors import CnnvizError, LayerError

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
            out.keep_best(name, *(np.concatenate([_shifted(p, name, o)[j] for p, o in parts], axis=1)
                                  for j in range(6)))
        out.pictures = {**self.pictures, **{i + offset: p for i, p in other.pictures.items()}}
        out.n_done = len(out.ids)
        out.complete = self.complete and other.complete
        out.prune_pictures()
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

    def keep_best(self, name: str, score: np.ndarray, index: np.ndarray, row: np.ndarray, col: np.ndarray,
              box: np.ndarray, centre: np.ndarray) -> None:
        """Keep for layer `name` the k best of the candidates (filters, m): strongest first, equal scores by image id.

        The candidates are everything there is (a scan passes what it holds joined with a batch's own).
        """
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

    def prune_pictures(self) -> None:
        """Drop the kept pictures no filter ranks among its k best any more."""
        keep = set(int(i) for i in self._winners() if i >= 0)
        self.pictures = {i: p for i, p in self.pictures.items() if i in keep}

    def _layer(self, layer: str) -> str:
        if layer not in self.score:
            raise LayerError(f"{layer!r} was not scanned; the scanned layers are: {', '.join(self.layers)}")
        return layer

    def _pick(self, layer: str, filter: int) -> tuple[str, int, int]:
        name = self._layer(layer)
        n_filters = self.n_filters(name)
        check_filter(filter, name, n_filters)
        count = int(np.sum(self.index[name][int(filter)] >= 0))
        return name, int(filter), count


def _shifted(top: TopExamples, name: str, offset: int) -> tuple[np.ndarray, ...]:
    index = top.index[name]
    return (top.score[name], np.where(index >= 0, index + offset, -1), top.row[name], top.col[name],
            top.box[name], top.centre[name])


def _id_key(value: Any) -> tuple:
    if is_int(value):
        return (0, int(value), "")
    return (1, 0, str(value))


def _hashable(value: Any) -> Any:
    return value if isinstance(value, (int, str)) else str(value)
