"""Codecs through the registry (real imagecodecs), and achieved-quality measurement."""

from __future__ import annotations

import shutil

import imagecodecs
import numpy as np
import pytest

from PIL import Image

from badimages import bad_image_bytes, cmyk_jpeg, exif_rotated_jpeg, jpeg_bytes, photo, pil_bytes
from lossyvision.codecs import CODECS, create_codec
from lossyvision.codecs.jpegxl import DEFAULT_EFFORT, JpegXLCodec, reconstruct_jpeg
from lossyvision.imageio import load_rgb
from lossyvision.quality import (QUALITY_METRICS, check_available, higher_is_better, measure,
                                 measure_quality)
from lossyvision.registry import UnknownNameError

LEVELS = {"jpegxl": 1.0, "png": 0, "jpeg": 85, "webp": 85, "avif": 70}
EXTENSIONS = {"jpegxl": ".jxl", "png": ".png", "jpeg": ".jpg", "webp": ".webp", "avif": ".avif"}
DISTANCES = (0.5, 1, 2, 5, 10)


@pytest.fixture(scope="module")
def photos() -> dict[str, np.ndarray]:
    """Two real photos, 192x192, with texture (fur, coffee beans) and smooth areas."""
    return {name: np.ascontiguousarray(photo(name, (192, 192))) for name in ("chelsea", "coffee")}


def test_registry_has_every_codec_with_its_extension():
    assert set(EXTENSIONS) <= set(CODECS.names())
    for name, ext in EXTENSIONS.items():
        codec = create_codec(name)
        assert codec.name == name and codec.extension == ext


@pytest.mark.parametrize("name", sorted(EXTENSIONS))
def test_round_trip_shape_dtype_and_fidelity(name, photos):
    codec = create_codec(name)
    rgb = photos["chelsea"]
    data = codec.encode(rgb, LEVELS[name])
    assert isinstance(data, bytes) and 0 < len(data) < rgb.nbytes
    out = codec.decode(data)
    assert out.dtype == np.uint8 and out.shape == rgb.shape and out.flags.c_contiguous
    error = np.abs(out.astype(int) - rgb).mean()
    if name == "png":
        assert error == 0
    else:
        assert 0 < error < 6, error  # lossy, but close


@pytest.mark.parametrize("name", sorted(EXTENSIONS))
@pytest.mark.parametrize("shape", [(1, 1, 3), (1, 37, 3), (37, 1, 3)])
def test_tiny_images_round_trip(name, shape):
    rgb = np.ascontiguousarray(photo("astronaut", (shape[1], shape[0])))
    codec = create_codec(name)
    out = codec.decode(codec.encode(rgb, LEVELS[name]))
    assert out.shape == shape and out.dtype == np.uint8


@pytest.mark.parametrize("name", sorted(EXTENSIONS))
def test_non_contiguous_input_and_bad_arrays(name, photos):
    codec = create_codec(name)
    strided = photos["coffee"][::2, ::3]
    assert codec.decode(codec.encode(strided, LEVELS[name])).shape == strided.shape
    with pytest.raises(ValueError, match="uint8 HxWx3"):
        codec.encode(photos["coffee"].astype(np.float32), LEVELS[name])
    with pytest.raises(ValueError, match="uint8 HxWx3"):
        codec.encode(photos["coffee"][:, :, 0], LEVELS[name])


OK_CASES = {name: case for name, case in bad_image_bytes().items() if case[2] == "ok"}


@pytest.mark.parametrize("name", sorted(EXTENSIONS))
def test_every_readable_input_kind_goes_through_every_codec(name):
    codec = create_codec(name)
    for case, (_, content, _) in OK_CASES.items():
        img = load_rgb(content)
        out = codec.decode(codec.encode(img.rgb, LEVELS[name], source=content, source_format=img.format))
        assert out.shape == img.rgb.shape, case
        if name == "jpegxl":
            data = codec.encode(img.rgb, 0, source=content, source_format=img.format)
            if img.format == "JPEG" and img.mode != "CMYK":
                assert reconstruct_jpeg(data) == content, case
            else:
                assert np.array_equal(codec.decode(data), img.rgb), case


@pytest.mark.parametrize("name,max_side", [("webp", 16383), ("jpeg", 65535)])
def test_too_wide_for_the_format_is_a_clear_error(name, max_side):
    strip = np.zeros((1, max_side + 1, 3), np.uint8)
    with pytest.raises(ValueError, match=f"{name} cannot encode {max_side + 1}x1: its sides are limited to {max_side}"):
        create_codec(name).encode(strip, LEVELS[name])


def test_jpegxl_lossless_png_source_is_exact(photos):
    codec = create_codec("jpegxl")
    rgb = photos["coffee"]
    png = pil_bytes(Image.fromarray(rgb), "PNG")
    data = codec.encode(rgb, 0, source=png, source_format="PNG")
    assert np.array_equal(codec.decode(data), rgb)
    assert len(data) < len(png)
    with pytest.raises(ValueError, match="not a JPEG transcoded"):
        reconstruct_jpeg(data)
    # no source at all: lossless from pixels too
    assert np.array_equal(codec.decode(codec.encode(rgb, 0)), rgb)


@pytest.mark.parametrize("progressive", [False, True])
def test_jpegxl_level0_on_jpeg_source_is_bit_exact(photos, progressive):
    jpeg = jpeg_bytes(photos["chelsea"], quality=90, progressive=progressive)
    img = load_rgb(jpeg)
    codec = create_codec("jpegxl")
    data = codec.encode(img.rgb, 0, source=jpeg, source_format=img.format)
    assert reconstruct_jpeg(data) == jpeg
    assert bytes(imagecodecs.jpegxl_decode_jpeg(data)) == jpeg
    assert len(data) < len(jpeg)  # transcoding saves bytes on a non-tiny JPEG
    pixels = codec.decode(data)  # libjxl's rendering of the same JPEG: within a few levels of Pillow's
    assert pixels.shape == img.rgb.shape and np.abs(pixels.astype(int) - img.rgb).max() <= 4


def test_jpegxl_level0_exif_rotated_jpeg_decodes_rotated():
    jpeg = exif_rotated_jpeg(photo("chelsea"))
    img = load_rgb(jpeg)
    codec = create_codec("jpegxl")
    data = codec.encode(img.rgb, 0, source=jpeg, source_format="JPEG")
    assert reconstruct_jpeg(data) == jpeg
    assert codec.decode(data).shape == img.rgb.shape == (48, 32, 3)


def test_jpegxl_level0_untranscodable_jpeg_falls_back_to_lossless_pixels():
    jpeg = cmyk_jpeg()  # libjxl cannot keep CMYK JPEGs as JPEG
    img = load_rgb(jpeg)
    codec = create_codec("jpegxl")
    data = codec.encode(img.rgb, 0, source=jpeg, source_format="JPEG")
    assert np.array_equal(codec.decode(data), img.rgb)
    with pytest.raises(ValueError):
        reconstruct_jpeg(data)


def test_jpegxl_larger_distance_gives_smaller_files(photos):
    codec = create_codec("jpegxl")
    for name, rgb in photos.items():
        sizes = [len(codec.encode(rgb, d)) for d in DISTANCES]
        assert all(a > b for a, b in zip(sizes, sizes[1:])), (name, sizes)
        assert sizes[-1] < sizes[0] / 4, (name, sizes)
        lossless = len(codec.encode(rgb, 0))
        assert lossless > sizes[0], (name, lossless, sizes)


def test_jpegxl_effort_default_is_7_and_passed_explicitly(photos):
    rgb = photos["coffee"]
    assert DEFAULT_EFFORT == 7 and JpegXLCodec().effort == 7
    ours = create_codec("jpegxl").encode(rgb, 1)
    assert ours == bytes(imagecodecs.jpegxl_encode(rgb, distance=1, effort=7))
    library_default = bytes(imagecodecs.jpegxl_encode(rgb, distance=1))
    assert ours != library_default
    assert library_default == bytes(imagecodecs.jpegxl_encode(rgb, distance=1, effort=5))
    effort3 = create_codec("jpegxl", effort=3).encode(rgb, 1)
    assert effort3 == bytes(imagecodecs.jpegxl_encode(rgb, distance=1, effort=3)) and effort3 != ours


def test_jpegxl_rejects_bad_levels_and_options(photos):
    codec = create_codec("jpegxl")
    for level in (25.5, 30, -1):
        with pytest.raises(ValueError, match=r"Butteraugli distance\) must be in 0\.\.25"):
            codec.encode(photos["coffee"], level)
    assert len(codec.encode(photos["coffee"], 25)) > 0
    assert JpegXLCodec.check_level(25) == 25.0
    with pytest.raises(ValueError, match=r"codec 'jpegxl' got unknown option\(s\) \['quality'\]; known: \['effort'\]"):
        create_codec("jpegxl", quality=90)
    for effort in (0, 11, 7.5, "7", True):
        with pytest.raises(ValueError, match="effort must be an integer in 1..10"):
            create_codec("jpegxl", effort=effort)


@pytest.mark.parametrize("name,option", [("png", "compression"), ("webp", "method"), ("avif", "speed")])
def test_unknown_and_bad_options(name, option):
    with pytest.raises(ValueError, match=rf"codec '{name}' got unknown option\(s\) \['effort'\]"):
        create_codec(name, effort=7)
    with pytest.raises(ValueError, match=f"{name} {option} must be an integer"):
        create_codec(name, **{option: 99})
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['quality'\]; known: \[\]"):
        create_codec("jpeg", quality=90)
    with pytest.raises(UnknownNameError, match="unknown codec 'nope'"):
        create_codec("nope")


@pytest.mark.parametrize("name", ["jpeg", "webp", "avif"])
def test_quality_codecs_higher_quality_bigger_and_bounds(name, photos):
    codec = create_codec(name)
    rgb = photos["chelsea"]
    sizes = [len(codec.encode(rgb, q)) for q in (30, 60, 90)]
    assert sizes[0] < sizes[1] < sizes[2], sizes
    for bad in (101, -1, 50.5):
        with pytest.raises(ValueError, match=f"{name} level is a quality, a whole number in"):
            codec.encode(rgb, bad)
    assert codec.encode(rgb, 80.0) == codec.encode(rgb, 80)
    assert codec.check_level(80.0) == 80
    with pytest.raises(ValueError, match="whole number"):
        codec.check_level(0.5)


def test_webp_is_lossy_not_libwebp_lossless_default(photos):
    rgb = photos["coffee"]
    ours = create_codec("webp").encode(rgb, 100)
    lossless = bytes(imagecodecs.webp_encode(rgb, level=100))  # what forgetting lossless=False gives
    assert np.array_equal(imagecodecs.webp_decode(lossless), rgb)
    assert not np.array_equal(create_codec("webp").decode(ours), rgb)
    assert len(ours) < len(lossless)


def test_png_ignores_level(photos):
    codec = create_codec("png")
    assert codec.encode(photos["coffee"], 0) == codec.encode(photos["coffee"], 10)


def test_decoders_give_rgb_for_gray_and_alpha_files():
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4)
    out = create_codec("png").decode(bytes(imagecodecs.png_encode(gray)))
    assert out.shape == (3, 4, 3) and np.array_equal(out[:, :, 2], gray)
    rgba = np.dstack([photo("coffee", (4, 3)), np.full((3, 4), 9, np.uint8)])
    out = create_codec("jpegxl").decode(bytes(imagecodecs.jpegxl_encode(rgba, lossless=True)))
    assert out.shape == (3, 4, 3) and np.array_equal(out, photo("coffee", (4, 3)))


# --- achieved quality -------------------------------------------------------------------------


def test_quality_registry_and_errors(photos):
    assert {"ssimulacra2", "butteraugli"} <= set(QUALITY_METRICS.names())
    assert higher_is_better("ssimulacra2") and not higher_is_better("butteraugli")
    assert measure is measure_quality
    with pytest.raises(UnknownNameError, match="unknown quality metric 'psnr'"):
        measure_quality("psnr", photos["coffee"], photos["coffee"])
    with pytest.raises(KeyError):
        check_available("psnr")
    with pytest.raises(ValueError, match="shapes differ"):
        measure_quality("ssimulacra2", photos["coffee"], photos["coffee"][:10])
    with pytest.raises(ValueError, match="at least 8x8"):
        measure_quality("ssimulacra2", photos["coffee"][:4, :4], photos["coffee"][:4, :4])


def test_ssimulacra2_falls_as_distance_grows(photos):
    check_available("ssimulacra2")
    rgb = np.ascontiguousarray(photos["chelsea"][:96, :96])
    codec = create_codec("jpegxl")
    assert measure_quality("ssimulacra2", rgb, rgb) == pytest.approx(100.0)
    scores = [measure_quality("ssimulacra2", rgb, codec.decode(codec.encode(rgb, d))) for d in (0.5, 2, 10)]
    assert scores[0] > scores[1] > scores[2], scores
    assert 20 < scores[2] < scores[0] < 100


def test_butteraugli_missing_tool_is_a_clear_error(monkeypatch, photos):
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(ValueError, match="apt-get install libjxl-devtools"):
        check_available("butteraugli")
    with pytest.raises(ValueError, match="butteraugli_main"):
        measure_quality("butteraugli", photos["coffee"], photos["coffee"])


@pytest.mark.skipif(shutil.which("butteraugli_main") is None, reason="needs libjxl-devtools' butteraugli_main")
def test_butteraugli_grows_with_distance(photos):
    rgb = np.ascontiguousarray(photos["coffee"][:96, :96])
    codec = create_codec("jpegxl")
    assert measure_quality("butteraugli", rgb, rgb) == 0.0
    scores = [measure_quality("butteraugli", rgb, codec.decode(codec.encode(rgb, d))) for d in (0.5, 2, 10)]
    assert scores[0] < scores[1] < scores[2], scores
    assert 0.2 < scores[0] < 3  # nominal target 0.5; libjxl overshoots at 80 nits, not by 6x
