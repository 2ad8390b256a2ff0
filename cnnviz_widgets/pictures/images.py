"""Images in: anything a user has (path, bytes, file, PIL image, array) -> RGB uint8 (H, W, 3), then model size.

Only numpy and Pillow are used here; the model's own ``preprocess_input`` is applied elsewhere.
"""

from __future__ import annotations

import io
import os
import re
import types
import warnings
from collections.abc import Mapping
from importlib import resources
from typing import Any, BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from cnnviz_widgets.checks import check_int, is_int
from cnnviz_widgets.errors import CnnvizError, CnnvizWarning, ImageError

__all__ = [
    "MAX_PIXELS",
    "MIN_SIDE",
    "SAMPLE_IMAGES",
    "fit_image",
    "load_image",
    "resize_image",
    "sample_image",
    "sample_names",
    "to_grey",
]

MAX_PIXELS = 50_000_000
"""Default cap on width * height, checked from the file header before any pixel is decoded."""
MIN_SIDE = 8
"""Smallest accepted width and height: below this no convolution shows anything."""

FORMATS = "PNG, JPEG, GIF, BMP, TIFF, WEBP"
ACCEPTED_TYPES = "a file path (str or os.PathLike), bytes, a binary file object, a PIL.Image.Image or a numpy array"
ACCEPTED_SHAPES = "(H, W), (H, W, 1), (H, W, 3), (H, W, 4) or channels-first (1|3|4, H, W)"

SAMPLE_IMAGES: Mapping[str, tuple[str, str]] = types.MappingProxyType({
    "astronaut": ("astronaut.jpg", "Eileen Collins, NASA astronaut. NASA, public domain (via scikit-image)"),
    "cat": ("cat.png", "Chelsea the cat. Stefan van der Walt, CC0 (via scikit-image)"),
    "coffee": ("coffee.jpg", "Coffee cup, Pikolo Espresso Bar. Rachel Michetti, CC0 (via scikit-image)"),
    "rocket": ("rocket.jpg", "DSCOVR launch on a Falcon 9. SpaceX, public domain (via scikit-image)"),
    "camera": ("camera.png", "Camera (greyscale). Lav Varshney, CC0 (via scikit-image)"),
})
"""Bundled sample images: name -> (file name in ``cnnviz_widgets/data``, credit line). See data/CREDITS.md."""


def sample_names() -> list[str]:
    """Names accepted by :func:`sample_image`."""
    return list(SAMPLE_IMAGES)


def sample_image(name: str = "astronaut") -> np.ndarray:
    """Load a bundled free sample image as (H, W, 3) uint8 (the greyscale "camera" gets 3 equal channels)."""
    if not isinstance(name, str) or name not in SAMPLE_IMAGES:
        raise ImageError(f"no sample image named {name!r}; the samples are: {', '.join(SAMPLE_IMAGES)}")
    data = resources.files("cnnviz_widgets").joinpath("data", SAMPLE_IMAGES[name][0]).read_bytes()
    return load_image(data)


def load_image(source: Any, *, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Turn anything that holds a picture into an RGB array.

    Parameters
    ----------
    source
        A path (str or os.PathLike), encoded file contents (bytes, bytearray, memoryview), a binary file
        object, a ``PIL.Image.Image`` or a numpy array (see Notes).
    max_pixels
        Refuse files whose header claims more than this many pixels (width * height), before decoding them:
        a tiny compressed file can expand to gigabytes. Does not apply to numpy arrays (already in memory).

    Returns
    -------
    np.ndarray
        (H, W, 3) uint8, C-contiguous. EXIF orientation is applied; animated images give their first frame.

    Notes
    -----
    Transparent pixels have no defined colour (often black or garbage), so alpha is composited over white,
    which is how a viewer shows them. 16-bit images are scaled by their bit depth (value / 257), not clipped.
    Arrays: uint8 as is; bool as 0/255; other integers must lie in 0..255, except uint16 with values above
    255, taken as 16-bit and scaled by 1/257; floats in [0, 1] are scaled by 255, floats in [0, 255] rounded.
    """
    if isinstance(source, np.ndarray):
        return _from_array(source)
    if isinstance(source, Image.Image):
        return _from_pil(source, f"PIL image ({source.mode}, {source.width}×{source.height})", max_pixels)
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        what = f"{len(data)} bytes" + (f" ({_starts(data)})" if data else "")
        return _from_stream(io.BytesIO(data), what, len(data), max_pixels)
    if isinstance(source, (str, os.PathLike)):
        return _from_path(source, max_pixels)
    if hasattr(source, "read"):
        return _from_file(source, max_pixels)
    raise ImageError(f"cannot load an image from an object of type {type(source).__name__}; "
                     f"accepted: {ACCEPTED_TYPES}")


def _starts(head: bytes) -> str:
    return f"starts with {head[:8]!r}"


# "scheme://..." (http, https, ftp, file, s3, ...) or a data: URI. Two letters at least, so that a Windows
# drive ("C:/pictures") is still a path.
_URL = re.compile(r"^\s*(?:[a-z][a-z0-9+.-]+://|data:[^,]*,)", re.IGNORECASE)


def _from_path(source: str | os.PathLike, max_pixels: int) -> np.ndarray:
    path = os.fspath(source)
    if isinstance(path, str) and _URL.match(path):
        # Never fetched: a notebook widget must not make network requests (or read file:// paths) on a
        # string's say-so. The user downloads the file and passes the path or the bytes.
        local = path.strip()[len("file://"):] if path.strip().lower().startswith("file://") else None
        hint = (f"pass the local path ({local!r}) instead" if local
                else "download the file and pass its path or its bytes")
        raise ImageError(f"URLs are not loaded: {path!r}; {hint}")
    if not os.path.exists(path):
        raise ImageError(f"no such file: {path!r}")
    if not os.path.isfile(path):
        raise ImageError(f"not a file: {path!r}")
    with open(path, "rb") as fp:
        head, size = fp.read(8), os.path.getsize(path)
        fp.seek(0)
        return _from_stream(fp, f"file {path!r} ({size} bytes{', ' + _starts(head) if head else ''})", size,
                            max_pixels)


def _from_file(fp: Any, max_pixels: int) -> np.ndarray:
    what = f"file object {getattr(fp, 'name', type(fp).__name__)!r}"
    try:  # peek at the start, for the error message, when the stream allows going back
        pos = fp.tell()
        head = fp.read(8)
        fp.seek(pos)
    except (OSError, AttributeError, ValueError):
        head = b""
    if isinstance(head, str):
        raise ImageError(f"{what} is open in text mode; open it with open(path, 'rb')")
    return _from_stream(fp, what + (f" ({_starts(head)})" if head else ""), None, max_pixels)


def _from_stream(fp: BinaryIO, what: str, size: int | None, max_pixels: int) -> np.ndarray:
    if size == 0:
        raise ImageError(f"could not read an image from {what}: it is empty")
    try:
        with warnings.catch_warnings():  # our own cap, checked next, rules on the size; PIL's warning repeats it
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(fp)
    except Image.DecompressionBombError as exc:
        raise _too_big(what, str(exc), max_pixels) from None
    except UnidentifiedImageError:  # PIL's message only names the stream object; say what the data looks like
        raise ImageError(f"could not read an image from {what}: {_guess(fp)}; accepted formats: {FORMATS}") from None
    except Exception as exc:  # any other failure of a format plugin on corrupt data
        raise ImageError(f"could not read an image from {what}: {str(exc) or type(exc).__name__}; "
                         f"accepted formats: {FORMATS}") from None
    with img:
        return _from_pil(img, what, max_pixels)


def _guess(fp: BinaryIO) -> str:
    try:
        fp.seek(0)
        head = fp.read(64)
    except (OSError, ValueError, AttributeError):
        return "not a recognised image format"
    if head.startswith(b"%PDF"):
        return "it looks like a PDF document, not an image"
    if head.lstrip()[:1] == b"<":
        return "it looks like HTML, XML or SVG text (SVG is not supported), not an image"
    if all(32 <= c < 127 or c in b"\t\r\n" for c in head):
        return "it looks like text, not an image"
    return "not a recognised image format"


def _too_big(what: str, size: str, max_pixels: int) -> ImageError:
    return ImageError(
        f"{what} is too large to load safely: {size}; the cap is max_pixels={max_pixels:,}. "
        "If you trust the file, raise it: load_image(..., max_pixels=...) (PIL.Image.MAX_IMAGE_PIXELS also applies)"
    )


def _from_pil(img: Image.Image, what: str, max_pixels: int) -> np.ndarray:
    # Header-only checks first: Image.open is lazy, so nothing has been decompressed yet.
    width, height = img.size
    if width * height > max_pixels:
        raise _too_big(what, f"{width}×{height} = {width * height:,} pixels", max_pixels)
    _check_min_side(width, height)
    try:
        frames = getattr(img, "n_frames", 1)
        if frames > 1:
            img.seek(0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = ImageOps.exif_transpose(img)  # loads the pixels; phones store portraits rotated
            pixels, depth = _pil_to_array(img), "16-bit" if img.mode.startswith("I;16") else None
    except ImageError:  # already says what is wrong (it is a ValueError, so let it pass the next clauses)
        raise
    except Image.DecompressionBombError as exc:
        raise _too_big(what, str(exc), max_pixels) from None
    except MemoryError:
        raise ImageError(f"not enough memory to decode {what} ({width}×{height} pixels)") from None
    except Exception as exc:  # corrupt data: PIL's plugins raise OSError, but also TypeError,
        # struct.error, IndexError, ... (a fuzzed TIFF header gives "TypeError: Missing dimensions")
        raise ImageError(f"could not read an image from {what}: {str(exc) or type(exc).__name__}; "
                         f"accepted formats: {FORMATS}") from None
    if frames > 1:  # after the try: a warning turned into an error must not be reported as a corrupt file
        warnings.warn(f"{what}: {frames} frames (animated or multi-page); only the first one is used",
                      CnnvizWarning, stacklevel=4)
    return _from_array(pixels, depth)


def _pil_to_array(img: Image.Image) -> np.ndarray:
    """PIL image -> (H, W) or (H, W, 3|4) array in its native dtype, without losing bit depth."""
    mode = img.mode
    if mode in ("L", "RGB", "RGBA", "F") or mode.startswith("I;16"):
        arr = np.asarray(img)
        return arr.astype(arr.dtype.newbyteorder("=")) if arr.dtype.byteorder == ">" else arr  # I;16B
    if mode == "I":  # e.g. 16-bit PGM; treated like a uint16 array when it fits
        arr = np.asarray(img)
        if arr.size and (arr.min() < 0 or arr.max() > 65535):
            raise ImageError(f"32-bit integer image with values {arr.min()}..{arr.max()}; accepted: 0..65535")
        return arr.astype(np.uint16)
    if mode == "1":
        return np.asarray(img.convert("L"))
    if mode in ("LA", "La", "PA", "RGBa") or (mode == "P" and "transparency" in img.info):
        return np.asarray(img.convert("RGBA"))
    try:  # P, CMYK, YCbCr, RGBX, HSV, LAB, ...
        return np.asarray(img.convert("RGB"))
    except ValueError as exc:
        raise ImageError(f"cannot convert an image in PIL mode {mode!r} to RGB: {exc}") from None


def _check_min_side(width: int, height: int) -> None:
    if width < MIN_SIDE or height < MIN_SIDE:
        raise ImageError(f"image too small to show anything: {width}×{height} pixels; "
                         f"at least {MIN_SIDE}×{MIN_SIDE} is needed")


def _from_array(arr: np.ndarray, depth: str | None = None) -> np.ndarray:
    """(H, W) / (H, W, 1|3|4) / (1|3|4, H, W) array of any accepted dtype -> (H, W, 3) uint8."""
    if arr.ndim == 3 and arr.shape[0] in (1, 3, 4) and arr.shape[-1] not in (1, 3, 4):
        warnings.warn(f"array of shape {arr.shape} looks channels-first; transposed to channels-last "
                      f"{arr.shape[1:] + arr.shape[:1]}", CnnvizWarning, stacklevel=3)
        arr = np.moveaxis(arr, 0, -1)
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[-1] in (1, 3, 4))):
        raise ImageError(f"cannot use an array of shape {arr.shape} as an image; accepted: {ACCEPTED_SHAPES}")
    _check_min_side(arr.shape[1], arr.shape[0])
    arr = _to_uint8(arr, depth)
    if arr.ndim == 3 and arr.shape[-1] == 4:
        # Transparent pixels have undefined colour; show them over white, as a viewer would.
        alpha = arr[..., 3:].astype(np.uint32)
        arr = ((arr[..., :3] * alpha + 255 * (255 - alpha) + 127) // 255).astype(np.uint8)
    if arr.ndim == 2 or arr.shape[-1] == 1:
        arr = np.repeat(arr.reshape(arr.shape[0], arr.shape[1], 1), 3, axis=2)
    return np.ascontiguousarray(arr)


def _to_uint8(arr: np.ndarray, depth: str | None) -> np.ndarray:
    kind = arr.dtype.kind
    if arr.dtype == np.uint8:
        return arr
    if kind == "b":
        return arr.astype(np.uint8) * np.uint8(255)
    if kind in "iu":
        lo, hi = int(arr.min()), int(arr.max())
        if arr.dtype == np.uint16 and (depth == "16-bit" or hi > 255):
            # 65535 / 257 == 255 exactly, so the full 16-bit range maps onto the full 8-bit range.
            return ((arr.astype(np.uint32) + 128) // 257).astype(np.uint8)
        if lo < 0 or hi > 255:
            raise ImageError(f"integer ({arr.dtype}) image values range over {lo}..{hi}; accepted: 0..255 "
                             "(or uint16 16-bit data)")
        return arr.astype(np.uint8)
    if kind == "f":
        bad = int(arr.size - np.count_nonzero(np.isfinite(arr)))
        if bad:
            raise ImageError(f"float image has {bad} NaN or infinite value(s); replace them first")
        lo, hi = float(arr.min()), float(arr.max())
        if lo >= 0 and hi <= 1:
            arr = arr.astype(np.float64) * 255
        elif lo < 0 or hi > 255:
            raise ImageError(f"float image values range over {lo:g}..{hi:g}; accepted: 0..1 or 0..255")
        return np.rint(arr).astype(np.uint8)
    raise ImageError(f"cannot use an array of dtype {arr.dtype} as an image; accepted: integer, bool or float")


def _check_image(image: Any, channels: tuple[int, ...] = (3,)) -> None:
    if not (isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3
            and image.shape[-1] in channels):
        got = f"{image.dtype} array of shape {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
        want = "/".join(map(str, channels))
        raise ImageError(f"expected an (H, W, {want}) uint8 image, got {got}; use load_image() first")


def _check_size(size: Any, name: str) -> tuple[int, int]:
    if (not isinstance(size, (tuple, list)) or len(size) != 2
            or not all(is_int(s) and s > 0 for s in size)):
        raise CnnvizError(f"{name} must be (height, width), two positive integers; got {size!r}")
    return int(size[0]), int(size[1])


def resize_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize (H, W, 3|1) uint8 to size = (height, width), bilinear; antialiased when downscaling.

    Pillow widens the bilinear filter by the scale factor when shrinking, so small details average out
    instead of aliasing. An image already at that size is returned as is.
    """
    _check_image(image, (1, 3))
    height, width = _check_size(size, "size")
    if image.shape[:2] == (height, width):
        return image
    pil = Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)
    out = np.asarray(pil.resize((width, height), Image.Resampling.BILINEAR))
    return np.ascontiguousarray(out.reshape(height, width, image.shape[-1]))


def fit_image(image: np.ndarray, *, target_size: tuple[int, int] | None = None,
              max_side: int = 512) -> tuple[np.ndarray, str | None]:
    """Apply the model-input size policy to an (H, W, 3) uint8 image.

    Parameters
    ----------
    target_size
        (height, width) of a fixed-size model: the image is resized to exactly that (aspect not kept, as the
        Keras applications do). None for a fully convolutional model: native size is kept, unless the
        longest side exceeds ``max_side``; then it is downscaled keeping its aspect ratio.

    Returns
    -------
    (image, note)
        The (h, w, 3) uint8 image and a sentence for the user saying what was done (None when unchanged).
        Sizes in notes read width×height, as image viewers show them.
    """
    _check_image(image, (1, 3))
    height, width = image.shape[:2]
    if target_size is not None:
        th, tw = _check_size(target_size, "target_size")
        if (th, tw) == (height, width):
            return image, None
        return resize_image(image, (th, tw)), (
            f"resized from {width}×{height} to {tw}×{th} (the model's fixed input size)")
    check_int(max_side, "max_side", MIN_SIDE)
    longest = max(height, width)
    if longest <= max_side:
        return image, None
    scale = max_side / longest
    nh, nw = max(1, round(height * scale)), max(1, round(width * scale))
    return resize_image(image, (nh, nw)), (
        f"downscaled from {width}×{height} to {nw}×{nh} so that its longest side is at most "
        f"{max_side} pixels (max_side)")


def to_grey(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 -> (H, W, 1) uint8 luma, ITU-R 601 (0.299 R + 0.587 G + 0.114 B), for 1-channel models.

    An (H, W, 1) image is returned as is.
    """
    _check_image(image, (1, 3))
    if image.shape[-1] == 1:
        return image
    luma = image.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    return np.clip(np.rint(luma), 0, 255).astype(np.uint8)[..., None]
