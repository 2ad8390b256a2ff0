"""Pure functions from float arrays to uint8 pictures: pooling, normalisation, colour maps, mosaics, encoding.

Arrays are channels-last: a stack of N maps (activations or filter slices) is (H, W, N). Nothing here knows
about widgets or Keras, so every function can be tested on plain numpy arrays.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache

import numpy as np
from numpy.lib.stride_tricks import as_strided
from PIL import Image

from cnnviz_widgets.checks import check_int
from cnnviz_widgets.errors import CnnvizError

NORMALIZATIONS = ("per_map", "per_layer", "symmetric")
COLORMAPS = ("grey", "viridis", "magma", "coolwarm")

# Anchors of matplotlib's viridis and magma: every 5th of their 256 entries (0, 5, ..., 255) as RGB hex, so
# linear interpolation rebuilds the full maps within 1 unit per channel without shipping 256 rows.
_VIRIDIS_ANCHORS = (
    "44015446085c471063481769481d6f482475472a7a46307e453781433d844142873f48893d4e8a3a538b38598c355e8d"
    "33638d31688e2e6d8e2c718e2a768e297b8e27808e25848e23898e218e8d20928c1f978b1e9c891fa18821a58524aa83"
    "28ae802eb37c35b7793dbc7446c06f50c46a5ac86465cb5e70cf577cd25089d54895d840a2da37b0dd2fbddf26cae11f"
    "d8e219e5e419f1e51dfde725"
)
_MAGMA_ANCHORS = (
    "00000402020b0504160907200e0b2b140e361a104221114e29115a311165390f6e420f754a107952137c5a167e621980"
    "6a1c81721f81792282812581892881912b81992d80a1307eaa337db2357bba3878c23b75ca3e72d2426fd9466be04c67"
    "e75263ec5860f1605df4695cf7725cf97b5dfb8560fc8e64fd9869fea16efeaa74feb47bfebd82fec68afecf92fed89a"
    "fde2a3fdebacfcf4b6fcfdbf"
)
# Moreland's cool-warm end and quarter points, but with a white centre (matplotlib's is grey 221) so a zero
# weight reads as "nothing"; white sits on entry 128, where apply_colormap puts 0.5.
_COOLWARM_ANCHORS = "3b4cc08db0fefffffff59a7bb40426"
_ANCHOR_AT = {
    "viridis": (_VIRIDIS_ANCHORS, np.arange(0, 256, 5)),
    "magma": (_MAGMA_ANCHORS, np.arange(0, 256, 5)),
    "coolwarm": (_COOLWARM_ANCHORS, np.array([0, 64, 128, 192, 255])),
}


def _check_stack(maps: object, name: str = "maps") -> np.ndarray:
    """Return `maps` as an (H, W, N) array of real numbers, or raise CnnvizError saying what was got."""
    arr = np.asarray(maps)
    ok_dtype = arr.dtype.kind in "fiu"  # bool, complex and object arrays are not pictures
    if arr.ndim != 3 or not ok_dtype or arr.size == 0:
        raise CnnvizError(
            f"{name} must be a non-empty (H, W, N) array of real numbers; got shape {arr.shape}, dtype {arr.dtype}"
        )
    return arr


def _check_finite(arr: np.ndarray, name: str = "maps") -> None:
    bad = arr.size - int(np.count_nonzero(np.isfinite(arr)))
    if bad:
        raise CnnvizError(f"{name} contains {bad} non-finite value(s) (NaN or inf) out of {arr.size}")


def pool_maps(maps: np.ndarray, max_side: int) -> np.ndarray:
    """Average-pool a stack so that neither side exceeds `max_side`.

    maps : (H, W, N). The factor is k = ceil(max(H, W) / max_side); a last partial block is averaged over
    the pixels it has, so the result is (ceil(H/k), ceil(W/k), N), float. With k = 1 `maps` comes back as is.
    Pool before normalising: it is cheaper (fewer pixels to scale) and the ranges then match what is shown.
    """
    arr = _check_stack(maps)
    k = math.ceil(max(arr.shape[:2]) / check_int(max_side, "max_side", 1))
    if k == 1:
        return arr
    h, w = arr.shape[:2]
    work = arr.astype(np.result_type(arr.dtype, np.float32), copy=False)
    with np.errstate(over="ignore"):
        sums, scale = _block_sums(work, k), 1.0
    if not np.isfinite(sums).all():  # only for values near the dtype's max: sum pre-scaled values instead
        scale = float(k * k)
        with np.errstate(over="ignore"):  # rounding may still step past the max: clipped below
            sums = _block_sums(work / work.dtype.type(scale), k)
    counts = np.outer(np.minimum(k, h - np.arange(0, h, k)), np.minimum(k, w - np.arange(0, w, k)))
    with np.errstate(over="ignore"):
        means = sums * (scale / counts)[:, :, None].astype(work.dtype)
    if scale != 1.0:  # a mean is never beyond its values: undo a rounding step past the dtype's max
        limit = np.finfo(work.dtype).max
        np.clip(means, -limit, limit, out=means)
    return means


def _block_sums(work: np.ndarray, k: int) -> np.ndarray:
    """Sums over k x k blocks of an (H, W, N) stack, zero-padded to whole blocks (zeros add nothing)."""
    h, w, n = work.shape
    hp, wp = -(-h // k) * k, -(-w // k) * k
    if (hp, wp) != (h, w):
        padded = np.zeros((hp, wp, n), dtype=work.dtype)
        padded[:h, :w] = work
        work = padded
    if k <= 4 and n <= 16:  # few maps: k*k strided adds are ~5x faster than a reduction over two short axes
        sums = work[::k, ::k].copy()
        for i in range(k):
            for j in range(k):
                if i or j:
                    sums += work[i::k, j::k]
        return sums
    return work.reshape(hp // k, k, wp // k, k, n).sum(axis=(1, 3))


def _ranges(arr: np.ndarray, mode: str) -> tuple[np.ndarray, np.ndarray]:
    """(lo, hi), each float64 (N,), for a finite (H, W, N) stack under `mode`."""
    n = arr.shape[2]
    if mode == "per_map":
        return arr.min(axis=(0, 1)).astype(np.float64), arr.max(axis=(0, 1)).astype(np.float64)
    if mode == "per_layer":
        return np.full(n, float(arr.min())), np.full(n, float(arr.max()))
    if mode == "symmetric":
        m = float(max(-float(arr.min()), float(arr.max())))
        return np.full(n, -m), np.full(n, m)
    raise CnnvizError(f"unknown normalisation {mode!r}; expected one of {NORMALIZATIONS}")


def _scale(arr: np.ndarray, lo: np.ndarray, hi: np.ndarray, fill: float) -> np.ndarray:
    """Map each map's [lo, hi] onto [0, 1] (clipped); maps with lo == hi become `fill`. Returns float32."""
    # 1/span overflows for subnormal spans (and -lo * inf is NaN): such maps take the float64 path below.
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        span = hi - lo  # inf for float64 data beyond +-9e307; handled by the halves below
        flat = ~(span > 0)
        a = np.divide(1.0, span, out=np.zeros_like(span), where=~flat)
        b = np.where(flat, fill, -lo * a)
        # float32 keeps a 64 x 224 x 224 stack fast; spans so extreme that 1/span or the offset would not
        # fit in float32 go through float64 in halves, which cannot overflow for any finite input.
        fast = arr.dtype.itemsize <= 4 and np.all(flat | ((span > 1e-30) & (span < 1e30) & (np.abs(b) < 1e30)))
        if fast:
            unit = np.multiply(arr, a.astype(np.float32), dtype=np.float32)
            unit += b.astype(np.float32)
        else:
            half = hi * 0.5 - lo * 0.5
            unit = np.divide(arr * 0.5 - lo * 0.5, half, out=np.zeros(arr.shape), where=half > 0)
            flat = ~(half > 0)
    unit[..., flat] = fill
    np.clip(unit, 0.0, 1.0, out=unit)
    return unit.astype(np.float32, copy=False)


def normalize(
    maps: np.ndarray, mode: str = "per_map", value_range: tuple[float, float] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Scale a stack of maps to [0, 1].

    maps : (H, W, N) real numbers, all finite (else CnnvizError with the count of bad values).
    mode : "per_map" (each map its own min..max), "per_layer" (one min..max for the stack) or "symmetric"
        (-m..+m, m = max |value|, so 0 lands on 0.5: for weights).
    value_range : (lo, hi) with lo < hi, used for every map instead; values outside are clipped.

    Returns (unit, ranges): unit float32 (H, W, N) in [0, 1]; ranges float64 (N, 2) of each map's (lo, hi).
    A constant map (lo == hi, e.g. a dead ReLU) is flat 0.0, except under "symmetric" where an all-zero
    stack is flat 0.5; this never divides by zero, so no NaN and no warning.
    """
    arr = _check_stack(maps)
    if mode not in NORMALIZATIONS:
        raise CnnvizError(f"unknown normalisation {mode!r}; expected one of {NORMALIZATIONS}")
    _check_finite(arr)
    if value_range is None:
        lo, hi = _ranges(arr, mode)
    else:
        lo, hi = _forced_range(value_range, arr.shape[2])
    unit = _scale(arr, lo, hi, 0.5 if mode == "symmetric" else 0.0)
    return unit, np.stack([lo, hi], axis=1)


def _forced_range(value_range: object, n: int) -> tuple[np.ndarray, np.ndarray]:
    try:
        lo, hi = (float(v) for v in value_range)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise CnnvizError(f"value_range must be (lo, hi); got {value_range!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise CnnvizError(f"value_range must be finite with lo < hi; got {value_range!r}")
    return np.full(n, lo), np.full(n, hi)


@cache
def _lut(cmap: str) -> np.ndarray:
    if cmap == "grey":
        lut = np.repeat(np.arange(256, dtype=np.uint8)[:, None], 3, axis=1)
    else:
        hexes, at = _ANCHOR_AT[cmap]
        anchors = np.frombuffer(bytes.fromhex(hexes), dtype=np.uint8).reshape(-1, 3).astype(np.float64)
        lut = np.stack([np.interp(np.arange(256), at, anchors[:, c]) for c in range(3)], axis=1)
        lut = np.rint(lut).astype(np.uint8)
    lut.setflags(write=False)  # cached and shared between callers
    return lut


def colormap_lut(cmap: str) -> np.ndarray:
    """The (256, 3) uint8 table of a colour map (read-only): for colour bars and palette ("P") PNGs."""
    if cmap not in COLORMAPS:
        raise CnnvizError(f"unknown colour map {cmap!r}; expected one of {COLORMAPS}")
    return _lut(cmap)


def apply_colormap(unit: np.ndarray, cmap: str = "grey") -> np.ndarray:
    """Colour values in [0, 1] (clipped) through a 256-entry table.

    unit : (...) finite real numbers. Returns uint8 (...) for "grey", (..., 3) for the other maps.
    Value v picks entry round(255 v), so 0 and 1 hit the two ends exactly.
    """
    lut = colormap_lut(cmap)
    arr = np.asarray(unit)
    if arr.dtype.kind not in "fiu":
        raise CnnvizError(f"unit must be an array of real numbers in [0, 1]; got dtype {arr.dtype}")
    _check_finite(arr, "unit")
    with np.errstate(over="ignore"):  # float64 beyond float32's range casts to +-inf, which the clip handles
        scaled = np.clip(arr.astype(np.float32, copy=False), 0.0, 1.0)
    scaled *= 255
    scaled += 0.5
    idx = scaled.astype(np.uint8)
    # grey's table is the identity: skip the gather; np.take is ~4x faster than lut[idx] here
    return idx if cmap == "grey" else np.take(lut, idx, axis=0)


def grid_shape(n: int, cols: int | None = None) -> tuple[int, int]:
    """(rows, cols) for n tiles: near-square by default, cols = ceil(sqrt(n)), e.g. 64 -> (8, 8), 3 -> (2, 2)."""
    n = check_int(n, "n", 1)
    if cols is None:
        cols = math.isqrt(n - 1) + 1  # exact ceil(sqrt(n)) for integers, no float rounding
    cols = check_int(cols, "cols", 1)
    return -(-n // cols), cols


@dataclass(frozen=True, eq=False)  # eq=False: an ndarray field makes generated __eq__/__hash__ unusable
class Mosaic:
    """Tiles laid out row-major in one picture, and the map each tile shows.

    image : uint8 (Hm, Wm) or (Hm, Wm, 3), Hm = rows * tile_height + (rows - 1) * pad (likewise Wm); the
    pad lies only between tiles. indices : the map index shown by each tile, in tile order.
    """

    image: np.ndarray
    rows: int
    cols: int
    tile_height: int
    tile_width: int
    pad: int
    indices: tuple[int, ...]

    def tile_index(self, row: int, col: int) -> int | None:
        """Map index in grid cell (row, col); None for an empty cell or one outside the grid."""
        if not (0 <= row < self.rows and 0 <= col < self.cols):
            return None
        k = row * self.cols + col
        return self.indices[k] if k < len(self.indices) else None

    def tile_position(self, index: int) -> tuple[int, int]:
        """(row, col) of the tile showing map `index`; CnnvizError if this mosaic does not show it."""
        try:
            k = self.indices.index(index)
        except ValueError:
            raise CnnvizError(f"map {index!r} is not in this mosaic (it shows {self._shown()})") from None
        return divmod(k, self.cols)

    def tile_at_pixel(self, y: float, x: float) -> int | None:
        """Map index under image pixel (y, x); None on padding, an empty cell or outside the image."""
        row, dy = divmod(math.floor(y), self.tile_height + self.pad)
        col, dx = divmod(math.floor(x), self.tile_width + self.pad)
        if dy >= self.tile_height or dx >= self.tile_width:
            return None
        return self.tile_index(row, col)

    def tile_box(self, index: int) -> tuple[int, int, int, int]:
        """(y0, x0, y1, x1), end-exclusive pixel box of map `index`'s tile: image[y0:y1, x0:x1]."""
        row, col = self.tile_position(index)
        y0, x0 = row * (self.tile_height + self.pad), col * (self.tile_width + self.pad)
        return y0, x0, y0 + self.tile_height, x0 + self.tile_width

    def _shown(self) -> str:
        ind = self.indices
        return f"maps {ind[0]}..{ind[-1]}" if ind == tuple(range(ind[0], ind[-1] + 1)) else f"{len(ind)} maps"


def tile_maps(
    pictures: np.ndarray,
    indices: Sequence[int] | None = None,
    cols: int | None = None,
    pad: int = 1,
    pad_value: int = 255,
) -> Mosaic:
    """Lay N tiles out in one picture, row-major (left to right, then top to bottom).

    pictures : uint8 (H, W, N) grey tiles or (H, W, N, 3) colour tiles (as `apply_colormap` makes them).
    indices : the map index each tile stands for (default 0..N-1); unique, length N. Tiles are not selected
        by it, only labelled (see `render_mosaic` for picking a page out of a bigger stack).
    cols : tiles per row, default near-square (`grid_shape`). Padding and empty cells are `pad_value`.
    """
    arr = np.asarray(pictures)
    if arr.dtype != np.uint8 or not (arr.ndim == 3 or (arr.ndim == 4 and arr.shape[3] == 3)) or arr.size == 0:
        raise CnnvizError(f"pictures must be uint8 (H, W, N) or (H, W, N, 3); got shape {arr.shape}, dtype {arr.dtype}")
    h, w, n = arr.shape[:3]
    labels = tuple(range(n)) if indices is None else tuple(int(i) for i in indices)
    if len(labels) != n or len(set(labels)) != n:
        raise CnnvizError(f"indices must be {n} distinct map indices, one per tile; got {len(labels)}")
    rows, cols = grid_shape(n, cols)
    pad = check_int(pad, "pad", 0)
    if check_int(pad_value, "pad_value", 0) > 255:
        raise CnnvizError(f"pad_value must be in 0..255; got {pad_value!r}")
    tiles = (arr if arr.ndim == 4 else arr[..., None]).transpose(2, 0, 1, 3)  # (N, H, W, C), a view
    c = tiles.shape[3]
    image = np.full((rows * (h + pad) - pad, cols * (w + pad) - pad, c), pad_value, dtype=np.uint8)
    # A writeable (rows, H, cols, W, C) view of the tile areas, so tiles are written straight into the final
    # picture (no crop copy): whole rows in one assignment, the partial last row in a second.
    sy, sx, sc = image.strides
    grid = as_strided(image, (rows, h, cols, w, c), (sy * (h + pad), sy, sx * (w + pad), sx, sc), writeable=True)
    full = n // cols
    grid[:full] = tiles[: full * cols].reshape(full, cols, h, w, c).transpose(0, 2, 1, 3, 4)
    if n % cols:
        grid[full, :, : n % cols] = tiles[full * cols :].transpose(1, 0, 2, 3)
    image = image if c == 3 else image[..., 0]
    return Mosaic(image, rows, cols, h, w, pad, labels)


def render_mosaic(
    maps: np.ndarray,
    mode: str = "per_map",
    cmap: str = "grey",
    max_side: int | None = None,
    indices: Sequence[int] | None = None,
    cols: int | None = None,
    pad: int = 1,
    value_range: tuple[float, float] | None = None,
) -> tuple[Mosaic, np.ndarray]:
    """Pool (if `max_side`), normalise, colour and tile a stack of maps.

    maps : (H, W, N). indices : which maps to show, in tile order (default all), e.g. a page range(64, 128).
    "per_layer" and "symmetric" ranges come from the WHOLE stack (after pooling), so every page of a layer
    is scaled alike; "per_map" only looks at the maps shown. Returns (mosaic, ranges (len(indices), 2)).
    """
    arr = _check_stack(maps)
    if mode not in NORMALIZATIONS:
        raise CnnvizError(f"unknown normalisation {mode!r}; expected one of {NORMALIZATIONS}")
    colormap_lut(cmap)  # fail on a bad name before any work
    n = arr.shape[2]
    picked = list(range(n)) if indices is None else [int(i) for i in indices]
    if not picked or any(not 0 <= i < n for i in picked):
        raise CnnvizError(f"indices must be a non-empty selection of map indices in 0..{n - 1}; got {indices!r}")
    whole = value_range is None and mode != "per_map"
    src = arr if whole else _pick(arr, picked)  # only the maps shown, unless the range needs them all
    _check_finite(src)
    if max_side is not None:
        src = pool_maps(src, max_side)
    if value_range is not None:
        lo, hi = _forced_range(value_range, len(picked))
    else:
        lo, hi = _ranges(src, mode)
        lo, hi = (lo[picked], hi[picked]) if whole else (lo, hi)
    if whole:
        src = _pick(src, picked)
    unit = _scale(src, lo, hi, 0.5 if mode == "symmetric" else 0.0)
    mosaic = tile_maps(apply_colormap(unit, cmap), indices=picked, cols=cols, pad=pad)
    return mosaic, np.stack([lo, hi], axis=1)


def _pick(arr: np.ndarray, picked: list[int]) -> np.ndarray:
    """Maps `picked` of an (H, W, N) stack, C-contiguous so pooling stays fast (arr[:, :, list] is not)."""
    if picked == list(range(picked[0], picked[0] + len(picked))):
        return arr[:, :, picked[0] : picked[0] + len(picked)]  # a page: a view, no copy
    return np.take(arr, picked, axis=2)


def _check_picture(image: np.ndarray) -> np.ndarray:
    arr = np.asarray(image)
    if arr.dtype != np.uint8 or not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] == 3)) or arr.size == 0:
        raise CnnvizError(f"image must be uint8 (H, W) or (H, W, 3); got shape {arr.shape}, dtype {arr.dtype}")
    return np.ascontiguousarray(arr)


def encode_png(image: np.ndarray, compress_level: int = 1) -> bytes:
    """PNG bytes of a uint8 (H, W) grey or (H, W, 3) RGB picture; level 1 is about twice as fast as 6."""
    return _encode(image, "PNG", compress_level=check_int(compress_level, "compress_level", 0, 9))


def encode_jpeg(image: np.ndarray, quality: int = 90) -> bytes:
    """JPEG bytes of a uint8 (H, W) grey or (H, W, 3) RGB picture (quality 1..100)."""
    return _encode(image, "JPEG", quality=check_int(quality, "quality", 1, 100))


def _encode(image: np.ndarray, fmt: str, **options: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(_check_picture(image)).save(buf, format=fmt, **options)
    return buf.getvalue()


def scale_up(image: np.ndarray, factor: int) -> np.ndarray:
    """Nearest-neighbour upscaling of the first two axes by an integer factor: (H, W, ...) -> (fH, fW, ...).

    For tiny pictures (3 x 3 kernels): sent at e.g. 24 x 24 the browser shows crisp cells instead of a blur.
    Works on stacks too, so tiles can be enlarged before tiling while the padding stays thin.
    """
    arr = np.asarray(image)
    f = check_int(factor, "factor", 1)
    if arr.ndim < 2:
        raise CnnvizError(f"image must have at least 2 dimensions (H, W, ...); got shape {arr.shape}")
    return arr if f == 1 else np.repeat(np.repeat(arr, f, axis=0), f, axis=1)
