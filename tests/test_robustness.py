"""Robustness: odd and bad images through every door a user has (load_image, ModelState, the Explorer's upload).

Every case either gives the picture an independent computation expects, or the library's own error naming what
was wrong, and leaves the state (and the Explorer's picture) as it was. Property tests fuzz the decoders and the
rendering functions: a valid picture or a CnnvizError, never a numpy/PIL/TF traceback, never a NaN.
"""

from __future__ import annotations

import contextlib
import datetime
import html
import re
import resource
import struct
import tracemalloc
import warnings
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image, ImageFile

from cnnviz_widgets import CnnvizError, CnnvizWarning, ImageError, ModelState, load_image
from cnnviz_widgets.pictures import images, render
from cnnviz_widgets.pictures.images import fit_image
from cnnviz_widgets.widgets import Explorer
from cnnviz_widgets.widgets.explorer import MAX_UPLOAD_BYTES
from tests.test_images import encode, png_claiming, truncated_png
from tests.test_widgets_grids import picture

RNG = np.random.default_rng(6)
ERROR_RED, NOTE_GREY = "color: var(--jp-error-color1, #c62828)", "color: var(--jp-ui-font-color2, #555)"


# -- building the odd files ---------------------------------------------------------------------------------

def tiff_rgb16(rgb16: np.ndarray) -> bytes:
    """A baseline little-endian TIFF (uncompressed, one strip) of an (H, W, 3) uint16 array: 16 bits a sample.

    Pillow writes 16-bit TIFFs only for one channel; scanners and microscopes write this kind.
    """
    h, w, _ = rgb16.shape
    pixels = rgb16.astype("<u2").tobytes()
    tags = [(256, 3, 1, w), (257, 3, 1, h), (258, 3, 3, "bits"), (259, 3, 1, 1), (262, 3, 1, 2),
            (273, 4, 1, "pixels"), (277, 3, 1, 3), (278, 3, 1, h), (279, 4, 1, len(pixels)), (284, 3, 1, 1)]
    bits_at = 8 + 2 + 12 * len(tags) + 4  # header, tag count, tags, next-IFD offset
    where = {"bits": bits_at, "pixels": bits_at + 6}
    out = bytearray(b"II*\x00" + struct.pack("<IH", 8, len(tags)))
    for tag, kind, count, value in tags:
        value = where.get(value, value)
        packed = struct.pack("<HH", value, 0) if kind == 3 else struct.pack("<I", value)  # SHORT or LONG
        out += struct.pack("<HHI", tag, kind, count) + packed
    out += struct.pack("<I3H", 0, 16, 16, 16) + pixels
    return bytes(out)


def animated_gif() -> bytes:
    frames = [Image.new("RGB", (12, 12), colour) for colour in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    return encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)


def over_white(rgba: np.ndarray) -> np.ndarray:
    """Independent alpha compositing over white, in float64: c * a + 255 * (1 - a), rounded."""
    alpha = rgba[..., 3:].astype(np.float64) / 255
    return np.rint(rgba[..., :3] * alpha + 255 * (1 - alpha)).astype(np.uint8)


GREY16 = np.resize(np.array([0, 128, 129, 255, 256, 32896, 65407, 65535], np.uint16), (9, 10))
RGB16 = RNG.integers(0, 65536, (9, 10, 3), dtype=np.uint16)
RGB16[0, :3] = [[0, 0, 0], [65535, 65535, 65535], [256, 256, 256]]  # black, white, and 256: dark, not white
UNIT_FLOATS = RNG.random((10, 11)).astype(np.float32)
RGBA = RNG.integers(0, 256, (10, 12, 4), dtype=np.uint8)
RGB = RNG.integers(0, 256, (10, 12, 3), dtype=np.uint8)
WITH_NAN = np.full((10, 10), 0.5, np.float32)
WITH_NAN[[1, 4, 7], [2, 5, 8]] = np.nan


@dataclass(frozen=True)
class Case:
    """One input, and what must come of it: `error` (a regex of the ImageError's message) or `expected`."""

    source: object
    error: str | None = None
    warns: str | None = None
    expected: np.ndarray | None = None
    tolerance: int = 0
    shown: str | None = None  # a regex of the Explorer's message where it words the error for the reader

    @property
    def shown_error(self) -> str | None:
        return self.shown or self.error

    @property
    def is_file(self) -> bool:
        return isinstance(self.source, bytes)


CASES = {
    "empty-file": Case(b"", error=r"from 0 bytes: it is empty",
                       shown=r"^The file upload\.bin is not a picture that can be read: it is empty\."),
    "text-file": Case(b"label,score\ncat,0.93\n", error=r"it looks like text, not an image; accepted formats",
                      shown=r"^The file upload\.bin is not a picture that can be read: it looks like text, not an "
                            r"image\. Accepted formats"),
    "truncated-png": Case(truncated_png(), error=r"could not read an image from \d+ bytes \(starts with b'\\x89PNG",
                          shown=r"^The file upload\.bin is not a picture that can be read: image file is truncated"),
    "pdf": Case(b"%PDF-1.7\n1 0 obj\n<< /Type /Catalog >>\nendobj\n", error=r"it looks like a PDF document"),
    "animated-gif": Case(animated_gif(), warns=r"3 frames \(animated or multi-page\); only the first one is used",
                         expected=np.full((12, 12, 3), (255, 0, 0), np.uint8)),
    "1x1-png": Case(encode(Image.new("RGB", (1, 1))), error=r"too small to show anything: 1×1 pixels; at least 8×8"),
    "20000x20000-png": Case(png_claiming(20000, 20000), error=r"too large to load safely.*max_pixels=50,000,000"),
    "16bit-grey-tiff": Case(encode(Image.fromarray(GREY16), "TIFF"),
                            expected=np.repeat(np.rint(GREY16 / 257).astype(np.uint8)[..., None], 3, axis=2)),
    # Pillow decodes 16-bit RGB by its high byte (v >> 8): within 1 of the documented v / 257, and not clipped
    "16bit-rgb-tiff": Case(tiff_rgb16(RGB16), expected=np.rint(RGB16 / 257).astype(np.uint8), tolerance=1),
    "float-tiff": Case(encode(Image.fromarray(UNIT_FLOATS, "F"), "TIFF"),
                       expected=np.repeat(np.rint(UNIT_FLOATS.astype(np.float64) * 255).astype(np.uint8)[..., None],
                                          3, axis=2)),
    "float-tiff-with-nan": Case(encode(Image.fromarray(WITH_NAN, "F"), "TIFF"),
                                error=r"float image has 3 NaN or infinite value\(s\)",
                                shown=r"^Float image has 3 NaN or infinite value\(s\)"),
    "float-array-with-nan": Case(WITH_NAN, error=r"float image has 3 NaN or infinite value\(s\); replace them first"),
    "negative-float-array": Case(np.linspace(-1, 1, 100).reshape(10, 10),
                                 error=r"float image values range over -1..1; accepted: 0..1 or 0..255"),
    "negative-float-tiff": Case(encode(Image.fromarray(np.full((9, 9), -0.25, np.float32), "F"), "TIFF"),
                                error=r"range over -0.25..-0.25; accepted: 0..1 or 0..255",
                                shown=r"range over -0\.25\.\.-0\.25\. Accepted: 0\.\.1 or 0\.\.255"),
    "rgba-array": Case(RGBA, expected=over_white(RGBA)),
    "rgba-png": Case(encode(Image.fromarray(RGBA, "RGBA")), expected=over_white(RGBA)),
    "channels-first-array": Case(np.ascontiguousarray(RGB.transpose(2, 0, 1)), warns=r"looks channels-first",
                                 expected=RGB),
    "int-array-outside-0-255": Case(np.arange(-1, 299, dtype=np.int16).reshape(10, 30),
                                    error=r"integer \(int16\) image values range over -1..298; accepted: 0..255"),
    "int32-tiff-outside-0-65535": Case(encode(Image.fromarray(np.full((9, 9), -3, np.int32)), "TIFF"),
                                       error=r"32-bit integer image with values -3..-3; accepted: 0..65535",
                                       shown=r"^32-bit integer image with values -3\.\.-3\. Accepted: 0\.\.65535"),
}
FILE_CASES = {name: case for name, case in CASES.items() if case.is_file}


def outcome(case: Case, call):
    """Run `call()` under the case's expectation: the ImageError it names, or its warning and a picture."""
    if case.error is not None:
        with pytest.raises(ImageError, match=case.error):
            call()
        return None
    if case.warns is not None:
        with pytest.warns(CnnvizWarning, match=case.warns):
            return call()
    return call()


def assert_picture(got: np.ndarray, case: Case) -> None:
    assert got.dtype == np.uint8 and got.shape == case.expected.shape
    difference = np.abs(got.astype(int) - case.expected.astype(int))
    assert difference.max() <= case.tolerance


def choose_file(explorer: Explorer, name: str, content: bytes, claimed_size: int | None = None,
                mime: str = "") -> None:
    """What ipywidgets 8's FileUpload holds after the user picks a file: a tuple of one dict per file."""
    explorer.upload.value = ({
        "name": name, "type": mime, "size": len(content) if claimed_size is None else claimed_size,
        "content": memoryview(content), "last_modified": datetime.datetime.now(datetime.timezone.utc),
    },)


@pytest.fixture
def state(tiny_model):
    return ModelState(tiny_model, image=RNG.integers(0, 256, (16, 16, 3), dtype=np.uint8))


@pytest.fixture
def explorer(state):
    widget = Explorer(state)
    yield widget
    widget.close()


# -- the matrix, through each door --------------------------------------------------------------------------

@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_load_image(case):
    got = outcome(case, lambda: load_image(case.source))
    if got is not None:
        assert_picture(got, case)
        assert got.flags.c_contiguous


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_state_set_image(state, case):
    state.activation()
    before, name, fed, passes = state.image, state.image_name, state.model_input, state.forward_passes
    outcome(case, lambda: state.set_image(case.source, name="upload"))
    if case.error is not None:  # the state is exactly as it was: same picture, same fed input, cache still hit
        assert state.image is before and state.image_name == name and state.model_input is fed
        state.activation()
        assert state.forward_passes == passes
        return
    assert_picture(state.image, case)
    assert state.image_name == "upload"
    # the tiny model takes 16×16: what it is fed is the new picture at that size
    np.testing.assert_array_equal(state.model_input.picture, fit_image(state.image, target_size=(16, 16))[0])
    assert state.activation().shape == (16, 16, 4) and state.forward_passes == passes + 1


@pytest.mark.parametrize("case", FILE_CASES.values(), ids=FILE_CASES.keys())
def test_explorer_upload(explorer, case):
    state, grid = explorer.state, explorer.activation_grid
    before, drawn = state.image, picture(grid.figure)
    choose_file(explorer, "upload.bin", case.source)
    message = html.unescape(explorer.message.value)
    assert explorer.upload.value == ()  # emptied, so the same file can be chosen again
    if case.error is not None:
        assert ERROR_RED in message and "The previous image stays." in message
        assert re.search(case.shown_error, re.sub(r"<[^>]+>", "", message)), message
        assert state.image is before and state.image_name != "upload.bin"
        np.testing.assert_array_equal(picture(grid.figure), drawn)
        return
    assert_picture(state.image, case)
    assert state.image_name == "upload.bin"
    if case.warns is None:
        assert message == ""
    else:  # told, in a neutral colour (the image was used), not in the error red
        assert NOTE_GREY in message and ERROR_RED not in message and re.search(case.warns, message)
    expected, _ = render.render_mosaic(state.activation(), state.normalization, state.colormap,
                                       max_side=grid.max_tile_px, indices=grid.shown)
    np.testing.assert_array_equal(picture(grid.figure), expected.image)


def test_explorer_clears_the_note_when_the_next_image_needs_none(explorer):
    choose_file(explorer, "anim.gif", CASES["animated-gif"].source)
    assert "3 frames" in explorer.message.value
    choose_file(explorer, "still.png", encode(Image.fromarray(RGB)))
    assert explorer.message.value == "" and explorer.state.image_name == "still.png"


# -- uploads too big: refused before anything is decoded -----------------------------------------------------

@pytest.fixture
def decoding_spy(monkeypatch):
    """Records every call of load_image (the one way into decoding) and of PIL's Image.open."""
    calls: list[str] = []
    real_load, real_open = images.load_image, Image.open

    def load(*args, **kwargs):
        calls.append("load_image")
        return real_load(*args, **kwargs)

    def open_(*args, **kwargs):
        calls.append("Image.open")
        return real_open(*args, **kwargs)

    monkeypatch.setattr(images, "load_image", load)
    monkeypatch.setattr(Image, "open", open_)
    return calls


@pytest.mark.parametrize("claimed", [None, 1000], ids=["size-told", "size-understated"])
def test_oversized_upload_is_refused_before_decoding(explorer, decoding_spy, claimed):
    content = b"\x89PNG\r\n\x1a\n" + bytes(MAX_UPLOAD_BYTES)  # one signature more than the cap
    before = explorer.state.image
    choose_file(explorer, "huge.png", content, claimed_size=claimed)
    assert decoding_spy == []
    assert ("huge.png is 20.0 MiB; uploads up to 20 MiB are accepted. The previous image stays."
            in explorer.message.value)
    assert explorer.state.image is before and explorer.upload.value == ()


def test_upload_at_the_cap_is_decoded(explorer, decoding_spy):
    choose_file(explorer, "zeros.png", bytes(MAX_UPLOAD_BYTES))
    assert decoding_spy[:2] == ["load_image", "Image.open"]
    # decoded (not refused for its size), found wanting
    message = explorer.message.value
    assert "The file zeros.png is not a picture that can be read: not a recognised image format" in message


# -- decompression bomb: refused from the header, through every door -----------------------------------------

DOORS = {
    "load_image": lambda explorer, data: load_image(data),
    "state.set_image": lambda explorer, data: explorer.state.set_image(data, name="bomb.png"),
    "explorer-upload": lambda explorer, data: choose_file(explorer, "bomb.png", data),
}


@pytest.mark.parametrize("door", DOORS.values(), ids=DOORS.keys())
def test_decompression_bomb_is_refused_without_decoding(explorer, monkeypatch, door):
    data = png_claiming(20000, 20000)  # 400 MB of pixels announced by a 70-byte file
    decoded = []
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: decoded.append(self.size))
    before = explorer.state.image
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    tracemalloc.start()
    try:
        try:
            door(explorer, data)
        except ImageError as error:
            message = str(error)
        else:
            message = html.unescape(explorer.message.value)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before
    assert "too large to load safely" in message and "max_pixels=50,000,000" in message
    assert decoded == [] and explorer.state.image is before
    # Decoding even one band of rows would be megabytes; the whole picture 400 MB (grey) to 1.2 GB (RGB).
    assert peak < 2_000_000, f"Python allocations peaked at {peak:,} bytes"
    assert grown_kib < 100_000, f"the process grew by {grown_kib:,} KiB"


# -- images the model or its preprocessing cannot take --------------------------------------------------

def test_image_too_small_for_the_pooling_layers_is_refused_by_the_state(vgg16_bsds):
    state = ModelState(vgg16_bsds, image="astronaut", max_side=64)
    before = state.image
    with pytest.raises(ImageError, match="at least 32×32"):
        state.set_image(np.full((16, 16, 3), 100, np.uint8))
    assert state.image is before


def test_an_image_the_preprocessing_refuses_leaves_the_state_as_it_was(tiny_model):
    def refuses_bright_images(x: np.ndarray) -> np.ndarray:
        return x[:1] if x.mean() > 200 else x  # a wrong shape: the state says so (CnnvizError)

    state = ModelState(tiny_model, image=np.zeros((16, 16, 3), np.uint8), preprocess=refuses_bright_images)
    before, fed = state.image, state.model_input
    with pytest.raises(CnnvizError, match=r"the preprocess function returned shape \(1, 16, 3\)"):
        state.set_image(np.full((16, 16, 3), 250, np.uint8), name="bright")
    assert state.image is before and state.model_input is fed and state.image_name != "bright"


# -- property tests -----------------------------------------------------------------------------------------

SEED_FILES = {
    "png": encode(Image.fromarray(RGB)),
    "jpeg": encode(Image.fromarray(RGB), "JPEG"),
    "gif": encode(Image.fromarray(RGB).convert("P"), "GIF"),
    "bmp": encode(Image.fromarray(RGB), "BMP"),
    "webp": encode(Image.fromarray(RGB), "WEBP"),
    "tiff": encode(Image.fromarray(RGB), "TIFF"),
    "tiff-16bit": encode(Image.fromarray(GREY16), "TIFF"),
    "tiff-16bit-rgb": tiff_rgb16(RGB16),
    "tiff-float": encode(Image.fromarray(UNIT_FLOATS, "F"), "TIFF"),
}


@st.composite
def damaged_files(draw) -> bytes:
    """A valid small image file with a few bytes overwritten and maybe cut short."""
    data = bytearray(SEED_FILES[draw(st.sampled_from(sorted(SEED_FILES)))])
    for position, value in draw(st.lists(st.tuples(st.integers(0, 2**20), st.integers(0, 255)), max_size=6)):
        data[position % len(data)] = value
    cut = draw(st.one_of(st.none(), st.integers(0, len(data))))
    return bytes(data[:cut])


def image_or_image_error(source) -> None:
    """load_image gives a valid RGB picture or an ImageError with a message; nothing else escapes."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # Pillow's "corrupt EXIF" notes, our frame counts
            out = load_image(source)
    except ImageError as error:
        assert str(error)
        return
    assert out.dtype == np.uint8 and out.ndim == 3 and out.shape[2] == 3 and min(out.shape[:2]) >= 8


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(damaged_files())
def test_damaged_files_give_a_picture_or_an_image_error(data):
    image_or_image_error(data)


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.binary(max_size=256), st.text(max_size=300)))
def test_any_bytes_or_string_gives_a_picture_or_an_image_error(source):
    image_or_image_error(source)


def test_a_tiff_page_without_dimensions_is_an_image_error():
    """Found by the fuzzing above: counting a TIFF's pages, Pillow raised TypeError("Missing dimensions")."""
    data = bytearray(encode(Image.fromarray(RGB), "TIFF"))
    first = struct.unpack("<I", data[4:8])[0]
    next_offset_at = first + 2 + 12 * struct.unpack("<H", data[first:first + 2])[0]
    data[next_offset_at:next_offset_at + 4] = struct.pack("<I", len(data))  # a second page, at the end ...
    data += struct.pack("<HHHIHHI", 1, 259, 3, 1, 1, 0, 0)  # ... whose only tag is "uncompressed"
    with pytest.raises(ImageError, match=r"could not read an image from \d+ bytes \(starts with b'II\*.*"
                                         r"Missing dimensions; accepted formats"):
        load_image(bytes(data))


def test_colouring_values_beyond_float32_gives_the_ends_without_a_warning():
    """Found by fuzzing: float64 values past float32's range overflowed (a RuntimeWarning) when cast."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        coloured = render.apply_colormap(np.array([[-1e300, 0.5, 1e300]]), "viridis")
    lut = render.colormap_lut("viridis")
    np.testing.assert_array_equal(coloured[0], lut[[0, 128, 255]])


@pytest.mark.parametrize("pad_value", ["white", 2.5, -1, 256], ids=["text", "float", "negative", "over-255"])
def test_tile_pad_value_must_be_a_byte(pad_value):
    with pytest.raises(CnnvizError, match=r"pad_value must be (an integer >= 0|in 0..255)"):
        render.tile_maps(np.zeros((2, 2, 3), np.uint8), pad_value=pad_value)


ANY_ARRAYS = hnp.arrays(
    st.sampled_from([np.uint8, np.int16, np.uint16, np.int64, np.float16, np.float32, np.float64, np.bool_,
                     np.complex64]),
    hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    maps=ANY_ARRAYS,
    mode=st.sampled_from((*render.NORMALIZATIONS, "log")),
    cmap=st.sampled_from(render.COLORMAPS),
    max_side=st.one_of(st.none(), st.integers(-1, 6), st.floats(allow_nan=True)),
    value_range=st.one_of(st.none(), st.tuples(st.floats(), st.floats())),
    indices=st.one_of(st.none(), st.lists(st.integers(-2, 6), max_size=6)),
    cols=st.one_of(st.none(), st.integers(-1, 7)),
    pad=st.integers(-1, 3),
)
def test_rendering_anything_gives_a_picture_or_a_cnnviz_error(maps, mode, cmap, max_side, value_range, indices,
                                                             cols, pad):
    """Any dtype, shape (empty, 0-d, 4-d), NaN/inf, bad option: a valid picture or CnnvizError, and no warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no RuntimeWarning (overflow, invalid value) either
        try:
            unit, ranges = render.normalize(maps, mode, value_range)
        except CnnvizError:
            pass
        else:
            assert unit.dtype == np.float32 and unit.shape == maps.shape and np.isfinite(unit).all()
            assert unit.min() >= 0 and unit.max() <= 1 and ranges.shape == (maps.shape[2], 2)
        try:
            mosaic, _ = render.render_mosaic(maps, mode, cmap, max_side, indices, cols, pad, value_range)
        except CnnvizError:
            pass
        else:
            image = mosaic.image
            assert image.dtype == np.uint8 and image.ndim == (2 if cmap == "grey" else 3)
            assert image.shape[:2] == (mosaic.rows * (mosaic.tile_height + pad) - pad,
                                       mosaic.cols * (mosaic.tile_width + pad) - pad)
            for index in mosaic.indices:  # every tile is where the mosaic says
                y0, x0, _, _ = mosaic.tile_box(index)
                assert mosaic.tile_at_pixel(y0, x0) == index
        for call in (lambda: render.apply_colormap(maps, cmap), lambda: render.pool_maps(maps, max_side),
                     lambda: render.tile_maps(maps, indices, cols, pad), lambda: render.encode_png(maps),
                     lambda: render.scale_up(maps, pad)):
            with contextlib.suppress(CnnvizError):
                call()

