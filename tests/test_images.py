"""Tests for cnnviz_widgets.images: every test image is made in memory or under tmp_path."""

from __future__ import annotations

import io
import pathlib
import struct
import tracemalloc
import warnings
import zlib
from importlib import resources

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image

from cnnviz_widgets.errors import CnnvizError, CnnvizWarning, ImageError
from cnnviz_widgets.pictures.images import (
    MAX_PIXELS,
    SAMPLE_IMAGES,
    fit_image,
    load_image,
    resize_image,
    sample_image,
    sample_names,
    to_grey,
)

RNG = np.random.default_rng(0)


def encode(img: Image.Image, fmt: str = "PNG", **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kwargs)
    return buf.getvalue()


def png_claiming(width: int, height: int) -> bytes:
    """A tiny valid PNG whose IHDR header claims width x height (the pixel data stays 8x8)."""
    data = bytearray(encode(Image.new("L", (8, 8))))
    assert data[12:16] == b"IHDR"  # 8-byte signature, 4-byte length, then the chunk type
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))  # PIL checks the chunk's CRC
    return bytes(data)


@pytest.fixture
def rgb() -> np.ndarray:
    return RNG.integers(0, 256, size=(12, 16, 3), dtype=np.uint8)


# --- samples ------------------------------------------------------------------------------------------------

SAMPLE_SHAPES = {"astronaut": (512, 512), "cat": (300, 451), "coffee": (400, 600), "rocket": (427, 640),
                 "camera": (512, 512)}


@pytest.mark.parametrize("name", sorted(SAMPLE_SHAPES))
def test_sample_loads(name):
    image = sample_image(name)
    assert image.shape == (*SAMPLE_SHAPES[name], 3)
    assert image.dtype == np.uint8 and image.flags.c_contiguous
    assert image.std() > 10  # a real picture, not a blank


def test_sample_names_and_credits():
    assert sample_names() == list(SAMPLE_IMAGES) == ["astronaut", "cat", "coffee", "rocket", "camera"]
    data = resources.files("cnnviz_widgets").joinpath("data")
    credits = data.joinpath("CREDITS.md").read_text(encoding="utf-8")
    total = 0
    for filename, credit in SAMPLE_IMAGES.values():
        assert filename in credits and credit
        total += len(data.joinpath(filename).read_bytes())
    assert total < 1_500_000


def test_default_sample_and_grey_camera():
    assert sample_image().shape == (512, 512, 3)
    camera = sample_image("camera")
    assert (camera[..., 0] == camera[..., 1]).all() and (camera[..., 1] == camera[..., 2]).all()


def test_unknown_sample_lists_names():
    with pytest.raises(ImageError, match="astronaut, cat, coffee, rocket, camera"):
        sample_image("lena")


# --- sources ------------------------------------------------------------------------------------------------

def test_every_source_type_gives_same_array(rgb, tmp_path):
    data = encode(Image.fromarray(rgb))
    path = tmp_path / "picture.png"
    path.write_bytes(data)
    with open(path, "rb") as fp:
        from_file = load_image(fp)
    sources = [str(path), path, data, bytearray(data), memoryview(data), io.BytesIO(data),
               Image.open(io.BytesIO(data)), Image.fromarray(rgb), rgb]
    for source in sources:
        out = load_image(source)
        assert out.dtype == np.uint8 and out.flags.c_contiguous
        np.testing.assert_array_equal(out, rgb, err_msg=type(source).__name__)
    np.testing.assert_array_equal(from_file, rgb)


def test_grey_becomes_three_equal_channels():
    grey = RNG.integers(0, 256, size=(10, 9), dtype=np.uint8)
    for source in (encode(Image.fromarray(grey)), grey, grey[..., None]):
        out = load_image(source)
        assert out.shape == (10, 9, 3)
        for c in range(3):
            np.testing.assert_array_equal(out[..., c], grey)


def test_rgba_composited_over_white():
    rgba = np.zeros((8, 8, 4), np.uint8)  # fully transparent black everywhere ...
    rgba[0, 0] = (200, 100, 50, 128)  # ... but one half-transparent pixel
    rgba[1, 1] = (10, 20, 30, 255)  # ... and one opaque one
    expected = [round(c * 128 / 255 + 255 * (1 - 128 / 255)) for c in (200, 100, 50)]
    assert expected == [227, 177, 152]
    for source in (rgba, encode(Image.fromarray(rgba, "RGBA"))):
        out = load_image(source)
        assert out[0, 0].tolist() == expected
        assert out[1, 1].tolist() == [10, 20, 30]
        assert out[5, 5].tolist() == [255, 255, 255]


def test_la_composited_over_white():
    img = Image.new("LA", (8, 8), (0, 0))
    img.putpixel((0, 0), (100, 255))
    out = load_image(encode(img))
    assert out[0, 0].tolist() == [100] * 3 and out[4, 4].tolist() == [255] * 3


def test_palette_with_and_without_transparency():
    img = Image.new("P", (8, 8), 0)
    img.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    img.putpixel((3, 3), 1)
    out = load_image(encode(img))
    assert out[0, 0].tolist() == [255, 0, 0] and out[3, 3].tolist() == [0, 0, 255]
    out = load_image(encode(img, transparency=0))  # index 0 (red) now means transparent
    assert out[0, 0].tolist() == [255, 255, 255] and out[3, 3].tolist() == [0, 0, 255]


def test_cmyk_and_bilevel():
    assert load_image(Image.new("CMYK", (8, 8), (0, 0, 0, 0)))[0, 0].tolist() == [255, 255, 255]
    assert load_image(Image.new("CMYK", (8, 8), (0, 255, 255, 0)))[0, 0].tolist() == [255, 0, 0]
    assert load_image(Image.new("1", (8, 8), 1))[0, 0].tolist() == [255, 255, 255]


def test_16bit_png_scaled_by_257():
    values = np.array([0, 1, 128, 129, 257, 300, 32896, 65278, 65535], np.uint16)
    grey16 = np.resize(values, (8, 9))
    data = encode(Image.fromarray(grey16))
    assert Image.open(io.BytesIO(data)).mode == "I;16"
    out = load_image(data)
    np.testing.assert_array_equal(out[..., 0], np.round(grey16 / 257).astype(np.uint8))
    assert out[0, :9].tolist() == [[v] * 3 for v in (0, 0, 0, 1, 1, 1, 128, 254, 255)]
    # dark 16-bit data is still 16-bit: 255 in a 16-bit file is 1/257 of white, not white
    dark = encode(Image.fromarray(np.full((8, 8), 255, np.uint16)))
    assert load_image(dark)[0, 0].tolist() == [1, 1, 1]


def test_uint16_array_scaled_only_above_255():
    assert load_image(np.full((8, 8), 65535, np.uint16))[0, 0].tolist() == [255] * 3
    assert load_image(np.full((8, 8), 200, np.uint16))[0, 0].tolist() == [200] * 3


def test_float_tiff():
    grey = RNG.random((10, 11)).astype(np.float32)
    data = encode(Image.fromarray(grey, "F"), "TIFF")
    assert Image.open(io.BytesIO(data)).mode == "F"
    np.testing.assert_array_equal(load_image(data)[..., 1], np.rint(grey.astype(np.float64) * 255))
    wide = np.linspace(-5, 995, 10 * 11, dtype=np.float32).reshape(10, 11)  # no way to guess what this means
    with pytest.raises(ImageError, match=r"^float image values range over -5..995; accepted: 0..1 or 0..255$"):
        load_image(encode(Image.fromarray(wide, "F"), "TIFF"))


def test_array_dtypes():
    np.testing.assert_array_equal(load_image(np.eye(8, dtype=bool))[..., 0], np.eye(8) * 255)
    assert load_image(np.full((8, 8, 3), 0.5))[0, 0].tolist() == [128] * 3  # [0, 1] -> x 255
    assert load_image(np.full((8, 8, 3), 99.6))[0, 0].tolist() == [100] * 3  # [0, 255] -> rounded
    assert load_image(np.full((8, 8), 42, np.int64))[0, 0].tolist() == [42] * 3


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_exif_orientation_applied(fmt):
    pixels = np.zeros((10, 20, 3), np.uint8)  # stored 20 wide x 10 high, black
    pixels[:4, :4] = (255, 0, 0)  # red top-left corner
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    out = load_image(encode(Image.fromarray(pixels), fmt, exif=exif))
    assert out.shape == (20, 10, 3)
    assert out[1, -2, 0] > 200 and out[-2, 1, 0] < 50  # the red corner moved to the top-right


@pytest.mark.parametrize("fmt", ["GIF", "PNG"])  # PNG with save_all is an APNG
def test_animated_first_frame_with_warning(fmt):
    frames = [Image.new("RGB", (8, 8), colour) for colour in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    data = encode(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100)
    with pytest.warns(CnnvizWarning, match="3 frames"):
        out = load_image(data)
    assert out.shape == (8, 8, 3) and out[4, 4].tolist() == [255, 0, 0]


@pytest.mark.parametrize("channels", [1, 3, 4])
def test_channels_first_transposed_with_warning(channels):
    hwc = RNG.integers(0, 256, size=(10, 12, channels), dtype=np.uint8)
    if channels == 4:
        hwc[..., 3] = 255
    with pytest.warns(CnnvizWarning, match="channels-first"):
        out = load_image(np.transpose(hwc, (2, 0, 1)))
    np.testing.assert_array_equal(out, load_image(hwc))


# --- errors -------------------------------------------------------------------------------------------------

def truncated_png() -> bytes:
    data = encode(Image.fromarray(RNG.integers(0, 256, size=(64, 64, 3), dtype=np.uint8)))
    return data[: len(data) // 2]


@pytest.mark.parametrize(("source", "match"), [
    (b"", "from 0 bytes: it is empty"),
    (b"just some text\n", r"15 bytes \(starts with b'just som'\): it looks like text.*PNG, JPEG"),
    (b"%PDF-1.7\n%\xe2\xe3", "looks like a PDF"),
    (truncated_png(), r"could not read an image from \d+ bytes \(starts with b'\\x89PNG"),
    ("https://example.com/cat.png", "URLs are not loaded.*download the file"),
    ("/no/such/picture.png", "no such file: '/no/such/picture.png'"),
    (42, "type int; accepted: a file path"),
    ({"a": 1}, "type dict"),
    (np.zeros(100, np.uint8), r"shape \(100,\).*accepted: \(H, W\)"),
    (np.zeros((9, 9, 5), np.uint8), r"shape \(9, 9, 5\)"),
    (np.zeros((2, 9, 9, 3), np.uint8), r"shape \(2, 9, 9, 3\)"),
    (np.where(np.eye(9, dtype=bool), np.nan, 0.5), "has 9 NaN or infinite"),
    (np.full((9, 9), -2.0), r"-2..-2; accepted: 0..1 or 0..255"),
    (np.arange(-5, 76).reshape(9, 9), r"-5..75; accepted: 0..255"),
    (np.full((9, 9), 1000, np.int32), r"1000..1000"),
    (np.zeros((9, 9), complex), "dtype complex128"),
    (np.zeros((1, 1, 3), np.uint8), "too small to show anything: 1×1 pixels; at least 8×8 is needed"),
    (Image.new("RGB", (7, 100)), "7×100 pixels"),
])
def test_errors(source, match):
    with pytest.raises(ImageError, match=match):
        load_image(source)


def test_directory_and_text_mode_file(tmp_path):
    with pytest.raises(ImageError, match="not a file"):
        load_image(tmp_path)
    (tmp_path / "a.txt").write_text("hello")
    with open(tmp_path / "a.txt") as fp, pytest.raises(ImageError, match=r"text mode.*'rb'"):
        load_image(fp)


def test_errors_are_value_errors():
    with pytest.raises(ValueError):
        load_image(b"nope")


# --- pixel cap ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("width", "height", "match"), [
    (20000, 20000, "too large to load safely.*max_pixels=50,000,000"),  # PIL's own bomb check fires first
    (8000, 8000, r"8000×8000 = 64,000,000 pixels; the cap is max_pixels=50,000,000"),  # ours
])
def test_huge_header_refused_before_decoding(width, height, match):
    data = png_claiming(width, height)
    assert len(data) < 200
    tracemalloc.start()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # and no DecompressionBombWarning leaks out
            with pytest.raises(ImageError, match=match):
                load_image(data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 5_000_000  # a decoded 8000x8000 would need 64 MB at least
    assert Image.MAX_IMAGE_PIXELS != MAX_PIXELS  # PIL's global is left alone


def test_max_pixels_argument(rgb):
    data = encode(Image.fromarray(rgb))
    with pytest.raises(ImageError, match=r"16×12 = 192 pixels; the cap is max_pixels=100\b.*raise it"):
        load_image(data, max_pixels=100)
    assert load_image(data, max_pixels=192).shape == (12, 16, 3)


# --- size policy --------------------------------------------------------------------------------------------

def test_resize_image_shape_and_antialiasing():
    checker = np.zeros((64, 64, 3), np.uint8)
    checker[::2, ::2] = checker[1::2, 1::2] = 255
    small = resize_image(checker, (16, 16))
    assert small.shape == (16, 16, 3) and small.dtype == np.uint8
    assert abs(int(small[4:12, 4:12].mean()) - 127) <= 2  # averaged, not aliased to 0 or 255
    assert resize_image(np.full((10, 20, 3), 77, np.uint8), (33, 7)).shape == (33, 7, 3)
    assert (resize_image(np.full((10, 20, 3), 77, np.uint8), (33, 7)) == 77).all()
    with pytest.raises(CnnvizError, match="two positive integers"):
        resize_image(checker, (0, 16))
    with pytest.raises(ImageError, match="use load_image"):
        resize_image(checker.astype(float), (16, 16))


def test_fit_image_fixed_size():
    image = np.zeros((512, 512, 3), np.uint8)
    out, note = fit_image(image, target_size=(224, 224))
    assert out.shape == (224, 224, 3)
    assert note == "resized from 512×512 to 224×224 (the model's fixed input size)"
    cat = np.zeros((300, 451, 3), np.uint8)
    out, note = fit_image(cat, target_size=(224, 224))
    assert out.shape == (224, 224, 3) and note.startswith("resized from 451×300 to 224×224")
    same, note = fit_image(image, target_size=(512, 512))
    assert same is image and note is None
    with pytest.raises(CnnvizError, match="target_size"):
        fit_image(image, target_size=(224, None))


def test_fit_image_fully_convolutional():
    cat = np.zeros((300, 451, 3), np.uint8)
    out, note = fit_image(cat)
    assert out is cat and note is None
    wide = np.zeros((768, 1024, 3), np.uint8)
    out, note = fit_image(wide, max_side=512)
    assert out.shape == (384, 512, 3)
    assert note == "downscaled from 1024×768 to 512×384 so that its longest side is at most 512 pixels (max_side)"
    out, _ = fit_image(np.zeros((1000, 10, 3), np.uint8), max_side=100)
    assert out.shape == (100, 1, 3)


def test_to_grey():
    image = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 255], [10, 20, 30]]], np.uint8)
    image = np.repeat(image, 8, axis=0)
    grey = to_grey(image)
    assert grey.shape == (8, 5, 1) and grey.dtype == np.uint8
    assert grey[0, :, 0].tolist() == [76, 150, 29, 255, round(0.299 * 10 + 0.587 * 20 + 0.114 * 30)]
    photo = sample_image("coffee")
    reference = np.asarray(Image.fromarray(photo).convert("L")).astype(int)  # PIL uses ITU-R 601 too
    assert np.abs(to_grey(photo)[..., 0].astype(int) - reference).max() <= 1
    assert to_grey(grey) is grey


# --- property -----------------------------------------------------------------------------------------------

DTYPES = st.sampled_from([np.uint8, np.uint16, np.int16, np.int32, np.int64, np.float16, np.float32,
                          np.float64, np.bool_])


@settings(max_examples=200, deadline=None)
@given(hnp.arrays(DTYPES, hnp.array_shapes(min_dims=1, max_dims=4, min_side=0, max_side=12)))
def test_any_array_gives_image_or_image_error(array):
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", CnnvizWarning)
            out = load_image(array)
    except ImageError:
        return
    assert out.ndim == 3 and out.shape[2] == 3 and out.dtype == np.uint8
    assert min(out.shape[:2]) >= 8 and out.flags.c_contiguous


def test_paths_accept_pathlib(tmp_path, rgb):
    path = pathlib.Path(tmp_path, "x.bmp")
    Image.fromarray(rgb).save(path)
    np.testing.assert_array_equal(load_image(path), rgb)


def test_bundled_digits_are_the_uci_test_set():
    import cnnviz_widgets as cw

    digits = cw.load_digits()
    assert digits.images.shape == (1797, 8, 8) and digits.images.dtype == np.uint8 and digits.images.max() == 16
    # class sizes pinned when the file was made from scikit-learn 1.9's copy (the file must not drift)
    assert np.bincount(digits.target).tolist() == [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]
    assert digits.target[:10].tolist() == list(range(10))
    sklearn_datasets = pytest.importorskip("sklearn.datasets")  # where it is installed: the very same arrays
    reference = sklearn_datasets.load_digits()
    np.testing.assert_array_equal(digits.images, reference.images)
    np.testing.assert_array_equal(digits.target, reference.target)
