"""load_rgb: every input kind normalised to 8-bit RGB, every bad input a BadImageError with a reason."""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
from PIL import Image, ImageOps

from badimages import (EXPECTED_REASONS, bad_image_bytes, declared_size_png, gray16, jpeg_bytes, photo,
                       pil_bytes, png16_bytes, rgb16, write_bad_images)
from lossyvision.imageio import (BadImageError, LoadedImage, check_rgb8, load_rgb, raw_bytes, scale16to8,
                                 to_rgb8)

CASES = bad_image_bytes()


def rounded_8bit(v: np.ndarray) -> np.ndarray:
    """The reference 16 -> 8 bit scaling, in floating point."""
    return np.round(v.astype(np.float64) * 255 / 65535).astype(np.uint8)


@pytest.mark.parametrize("name", sorted(CASES))
def test_every_input_kind_gives_expected_outcome(name):
    _, content, outcome = CASES[name]
    if outcome == "failed":
        with pytest.raises(BadImageError) as info:
            load_rgb(content)
        assert isinstance(info.value, ValueError)
        assert EXPECTED_REASONS[name] in info.value.reason
        assert str(info.value) == info.value.reason
    else:
        img = load_rgb(content)
        assert isinstance(img, LoadedImage)
        assert img.rgb.dtype == np.uint8 and img.rgb.ndim == 3 and img.rgb.shape[2] == 3
        assert img.rgb.flags.c_contiguous
        assert (img.height, img.width) == img.rgb.shape[:2]
        assert img.format in {"JPEG", "PNG"}


def test_write_bad_images_writes_files_with_odd_names(tmp_path):
    cases = write_bad_images(tmp_path / "odd")
    assert set(cases) == set(CASES)
    names = {path.name for path, _ in cases.values()}
    assert {"a photo with spaces.jpg", "café ñandú 日本.jpg", "UPPER.JPG", "empty.jpg"} <= names
    for name, (path, outcome) in cases.items():
        assert path.read_bytes() == CASES[name][1] and outcome == CASES[name][2]
    assert cases["empty"][0].stat().st_size == 0
    assert cases["huge_png"][0].stat().st_size < 1000  # declares 144 MP, holds a few bytes


def test_small_images_keep_their_shape():
    assert load_rgb(CASES["one_by_one_png"][1]).rgb.shape == (1, 1, 3)
    assert load_rgb(CASES["one_by_one_jpeg"][1]).rgb.shape == (1, 1, 3)
    assert load_rgb(CASES["one_by_n_png"][1]).rgb.shape == (1, 37, 3)
    assert load_rgb(CASES["n_by_one_jpeg"][1]).rgb.shape == (37, 1, 3)


def test_pixel_limit_checked_from_header_before_decoding():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Pillow's DecompressionBombWarning must not fire either
        with pytest.raises(BadImageError, match=r"^too large: 12000x12000 = 144\.0 MP > limit 100\.0 MP$"):
            load_rgb(CASES["huge_png"][1])
        # 200 MP is past Pillow's own DecompressionBombError threshold (~179 MP): ours still answers.
        with pytest.raises(BadImageError, match=r"^too large: 20000x10000 = 200\.0 MP > limit 100\.0 MP$"):
            load_rgb(declared_size_png(20000, 10000))
        with pytest.raises(BadImageError, match=r"too large: 48x32 = 0\.0 MP > limit 0\.0 MP"):
            load_rgb(CASES["plain_jpeg"][1], max_pixels=48 * 32 - 1)
    assert load_rgb(CASES["plain_jpeg"][1], max_pixels=48 * 32).rgb.shape == (32, 48, 3)
    assert Image.MAX_IMAGE_PIXELS is not None  # Pillow's global limit is restored


def test_declared_size_within_limit_but_missing_data_is_a_clean_failure():
    with pytest.raises(BadImageError, match="truncated file"):
        load_rgb(declared_size_png(300, 200))


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_applied_like_pillow(orientation):
    exif = Image.Exif()
    exif[0x0112] = orientation
    src = photo("chelsea", (30, 20))
    data = pil_bytes(Image.fromarray(src), "PNG", exif=exif.tobytes())  # PNG: exact pixels
    expected = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB"))
    img = load_rgb(data)
    assert np.array_equal(img.rgb, expected)
    assert img.rgb.shape == ((30, 20, 3) if orientation >= 5 else (20, 30, 3))
    assert img.rgb.flags.c_contiguous


def test_exif_rotated_jpeg_is_rotated():
    img = load_rgb(CASES["exif_rotated_jpeg"][1])  # stored 48x32, orientation 6 = rotate 90 clockwise
    assert (img.width, img.height) == (32, 48)
    stored = np.asarray(Image.open(io.BytesIO(CASES["exif_rotated_jpeg"][1])).convert("RGB"))
    assert np.array_equal(img.rgb, np.rot90(stored, -1))


def test_gray16_png_scaled_with_rounding_not_clipped():
    values = gray16()
    img = load_rgb(png16_bytes(values))
    assert img.mode == "I;16"
    assert np.array_equal(img.rgb[:, :, 0], rounded_8bit(values))
    assert np.array_equal(img.rgb[:, :, 0], img.rgb[:, :, 2])
    assert img.rgb.min() == 0 and img.rgb.max() == 255
    assert len(np.unique(img.rgb)) > 200  # clipping at 255 would leave almost one value
    assert not np.array_equal(img.rgb[:, :, 0], (values >> 8).astype(np.uint8))  # not truncated either


def test_rgb16_png_scaled_exactly():
    values = rgb16()
    img = load_rgb(png16_bytes(values))
    assert np.array_equal(img.rgb, rounded_8bit(values))
    assert not np.array_equal(img.rgb, (values >> 8).astype(np.uint8))  # what Pillow alone would give


def test_rgba16_png_composited_on_white():
    values = rgb16((8, 6))
    alpha = np.full((6, 8), 65535, np.uint16)
    alpha[:, :4] = 0
    img = load_rgb(png16_bytes(np.dstack([values, alpha])))
    assert (img.rgb[:, :4] == 255).all()
    assert np.array_equal(img.rgb[:, 4:], rounded_8bit(values[:, 4:]))


def test_rgba_composited_on_white():
    rgb = photo("coffee")
    img = load_rgb(CASES["rgba_png"][1])
    assert img.mode == "RGBA"
    half = rgb.shape[1] // 2
    assert (img.rgb[4:, :half] == 255).all()  # fully transparent -> white
    assert np.array_equal(img.rgb[4:, half:], rgb[4:, half:])  # opaque -> unchanged
    band = np.round((rgb[:4, half:].astype(float) * 128 + 255 * 127) / 255)
    assert np.abs(img.rgb[:4, half:].astype(float) - band).max() <= 1


def test_palette_with_transparency_composited_on_white():
    data = CASES["palette_png"][1]
    indices = np.asarray(Image.open(io.BytesIO(data)))
    img = load_rgb(data)
    assert img.mode == "P"
    assert (indices == 0).any() and (img.rgb[indices == 0] == 255).all()
    opaque = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    assert np.array_equal(img.rgb[indices != 0], opaque[indices != 0])


def test_cmyk_and_gray_jpegs_become_rgb():
    cmyk = load_rgb(CASES["cmyk_jpeg"][1])
    assert cmyk.mode == "CMYK"
    assert np.abs(cmyk.rgb.astype(int) - photo("chelsea")).mean() < 8  # colours survive the round trip
    gray = load_rgb(CASES["gray_jpeg"][1])
    assert gray.mode == "L"
    assert np.array_equal(gray.rgb[:, :, 0], gray.rgb[:, :, 1]) and np.array_equal(gray.rgb[:, :, 1], gray.rgb[:, :, 2])


def test_damaged_files_never_raise_anything_but_bad_image_error():
    rng = np.random.default_rng(1)
    sources = [CASES["plain_jpeg"][1], CASES["rgba_png"][1], png16_bytes(rgb16())]
    outcomes = {"ok": 0, "failed": 0}
    for data in sources:
        cuts = [int(f * len(data)) for f in np.linspace(0.02, 0.98, 12)]
        variants = [data[:c] for c in cuts]
        for _ in range(8):
            flipped = bytearray(data)
            pos = rng.integers(0, len(data), size=4)
            flipped[pos[0]:pos[0] + 1] = bytes([flipped[pos[0]] ^ 0x5A])
            for p in pos[1:]:
                flipped[p] = int(rng.integers(0, 256))
            variants.append(bytes(flipped))
        for variant in variants:
            try:
                img = load_rgb(variant)
                assert img.rgb.dtype == np.uint8 and img.rgb.shape[2] == 3
                outcomes["ok"] += 1
            except BadImageError as exc:
                assert exc.reason
                outcomes["failed"] += 1
    assert outcomes["failed"] >= 36  # every truncation at least fails cleanly


def test_to_rgb8_and_check_rgb8():
    gray = np.arange(6, dtype=np.uint8).reshape(2, 3)
    assert np.array_equal(to_rgb8(gray), np.repeat(gray[:, :, None], 3, axis=2))
    rgba = np.zeros((2, 3, 4), np.uint8)
    rgba[..., 3] = 7
    assert to_rgb8(rgba).shape == (2, 3, 3) and to_rgb8(rgba).max() == 0
    assert to_rgb8(np.array([[0, 257, 65535]], np.uint16)).tolist() == [[[0] * 3, [1] * 3, [255] * 3]]
    with pytest.raises(ValueError, match="uint8 or uint16"):
        to_rgb8(np.zeros((2, 2, 3), np.float32))
    with pytest.raises(ValueError, match="uint8 HxWx3"):
        check_rgb8(np.zeros((2, 2), np.uint8))
    with pytest.raises(ValueError, match="non-empty"):
        check_rgb8(np.zeros((0, 2, 3), np.uint8))
    strided = photo("coffee")[:, ::2]
    assert check_rgb8(strided).flags.c_contiguous


def test_scale16to8_rounds():
    v = np.arange(65536, dtype=np.uint16)
    assert np.array_equal(scale16to8(v), rounded_8bit(v))


def test_raw_bytes():
    assert raw_bytes(np.zeros((7, 5, 3), np.uint8)) == 105
    assert raw_bytes(load_rgb(jpeg_bytes(photo("coffee", (13, 1)))).rgb) == 39


def test_pillow_global_bomb_limit_never_fires(monkeypatch):
    # With Pillow's own limit far below the image size, Pillow alone raises DecompressionBombError;
    # load_rgb applies only its max_pixels (on open, on the PNG checksum pass, for any format).
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    for name in ("rgba_png", "plain_jpeg", "rgb16_png"):
        with pytest.raises(Image.DecompressionBombError):
            Image.open(io.BytesIO(CASES[name][1]))
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert load_rgb(CASES[name][1]).rgb.size > 1000
    assert Image.MAX_IMAGE_PIXELS == 100
