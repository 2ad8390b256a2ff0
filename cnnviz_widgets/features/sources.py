"""Image collections to scan: folders, lists of files or arrays, and the bundled sample collection.

An `ImageSource` gives each item a stable id (its content digest), so a cached scan is found again whatever
order or container the images come in.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cnnviz_widgets.checks import check_int
from cnnviz_widgets.errors import CnnvizError
from cnnviz_widgets.pictures.images import MIN_SIDE, load_image, resize_image, sample_image, sample_names

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".bmp", ".tif", ".tiff", ".webp")
"""Files a folder scan reads (case-insensitive), found recursively and taken in sorted path order."""


class ImageSource:
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
                yield position, load_image(_as_loadable(item))


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
    check_int(side, "side", MIN_SIDE,
              message=f"side must be an int of at least {MIN_SIDE} pixels; got {side!r}")
    named = [(name, sample_image(name)) for name in sample_names()]
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
                        named.append((name, load_image(getattr(skdata, name)())))
                    except Exception:  # one it would download, or cannot give as RGB: skipped
                        continue
    pictures, ids = [], []
    for name, picture in named:
        h, w = picture.shape[:2]
        factor = 2 * side / min(h, w)
        scaled = resize_image(picture, (max(side, round(h * factor)), max(side, round(w * factor))))
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
