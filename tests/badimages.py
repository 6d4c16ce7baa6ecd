"""Every bad or odd input kind the compress job must survive, written as real files.

Plain functions, shared by the codec/imageio tests and the compress-job tests::

    from badimages import write_bad_images, EXPECTED_REASONS

    cases = write_bad_images(tmp_path / "train" / "odd")   # name -> (path, 'ok' | 'failed')

Content comes from scikit-image's bundled photos (astronaut: public domain; chelsea, coffee:
CC0), cropped small so that everything is written in well under a second. The "huge" PNG only
*declares* 12000x12000 pixels in its header (144 MP, over the default 100 MP limit); its data is
a few bytes, so nothing large is ever allocated.
"""

from __future__ import annotations

import functools
import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

#: What ``load_rgb``'s ``BadImageError.reason`` contains for each case expected to fail.
EXPECTED_REASONS = {
    "empty": "empty file",
    "truncated_jpeg": "truncated file",
    "random_bytes": "not an image",
    "text_as_jpeg": "not an image",
    "corrupt_png": "corrupt image data",
    "huge_png": "too large: 12000x12000 = 144.0 MP > limit",
}

HUGE_SIZE = (12000, 12000)


@functools.lru_cache(maxsize=None)
def photo(name: str = "chelsea", size: tuple[int, int] = (48, 32)) -> np.ndarray:
    """A small real photo: a centre crop of a scikit-image image resized to ``size`` (w, h)."""
    import skimage.data

    src = np.ascontiguousarray(getattr(skimage.data, name)()[..., :3])
    h, w = src.shape[:2]
    side = min(h, w)
    box = ((w - side) // 2, (h - side) // 2, (w + side) // 2, (h + side) // 2)
    out = np.asarray(Image.fromarray(src).resize(size, Image.Resampling.BILINEAR, box=box))
    out.setflags(write=False)
    return out


def jpeg_bytes(rgb: np.ndarray, quality: int = 90, **save_args) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb)).save(buf, "JPEG", quality=quality, **save_args)
    return buf.getvalue()


def pil_bytes(image: Image.Image, fmt: str, **save_args) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **save_args)
    return buf.getvalue()


def exif_rotated_jpeg(rgb: np.ndarray, orientation: int = 6) -> bytes:
    """A JPEG whose stored pixels are ``rgb`` and whose EXIF orientation tag says rotate."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    return jpeg_bytes(rgb, exif=exif.tobytes())


def png16_bytes(pixels: np.ndarray) -> bytes:
    """A 16-bit PNG (gray HxW or RGB HxWx3 uint16), written by libpng via imagecodecs."""
    import imagecodecs

    assert pixels.dtype == np.uint16
    return bytes(imagecodecs.png_encode(pixels))


def gray16(size: tuple[int, int] = (40, 24)) -> np.ndarray:
    """16-bit gray ramp over the full 0..65535 range, with odd low bytes (so truncation shows)."""
    w, h = size
    return np.linspace(0, 65535, w * h).round().astype(np.uint16).reshape(h, w)


def rgb16(size: tuple[int, int] = (40, 24)) -> np.ndarray:
    """16-bit RGB from the photo, with values such that v >> 8 != round(v * 255 / 65535) often."""
    base = photo("coffee", size).astype(np.uint32)
    return (base * 257 + 200).clip(0, 65535).astype(np.uint16)


def palette_png() -> bytes:
    """A palette PNG with one transparent palette entry (``P`` mode + ``transparency``)."""
    image = Image.fromarray(photo("astronaut")).quantize(colors=16)
    return pil_bytes(image, "PNG", transparency=0)


def rgba_png() -> bytes:
    """An RGBA PNG: left half fully transparent, right half opaque, a semi-transparent band."""
    rgb = photo("coffee")
    alpha = np.full(rgb.shape[:2], 255, np.uint8)
    alpha[:, : rgb.shape[1] // 2] = 0
    alpha[:4] = 128
    return pil_bytes(Image.fromarray(np.dstack([rgb, alpha]), "RGBA"), "PNG")


def cmyk_jpeg() -> bytes:
    return pil_bytes(Image.fromarray(photo("chelsea")).convert("CMYK"), "JPEG", quality=90)


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def declared_size_png(width: int, height: int) -> bytes:
    """A valid-looking PNG header declaring ``width``x``height`` RGB with only a few data bytes."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr)
            + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + _png_chunk(b"IEND", b""))


def corrupt_png() -> bytes:
    """A PNG whose compressed pixel data (inside IDAT) has been overwritten."""
    import imagecodecs

    data = bytearray(imagecodecs.png_encode(np.ascontiguousarray(photo("coffee"))))
    idat = data.index(b"IDAT") + 4
    data[idat + 20: idat + 60] = b"\xff" * 40
    return bytes(data)


def bad_image_bytes(huge_size: tuple[int, int] = HUGE_SIZE) -> dict[str, tuple[str, bytes, str]]:
    """name -> (file name, content, expected outcome 'ok' | 'failed') for every case."""
    good = jpeg_bytes(photo("chelsea"))
    line = photo("astronaut", (37, 1))
    return {
        # failed
        "empty": ("empty.jpg", b"", "failed"),
        "truncated_jpeg": ("truncated.jpg", good[: len(good) // 2], "failed"),
        "random_bytes": ("random-bytes.jpg", np.random.default_rng(0).bytes(2048), "failed"),
        "text_as_jpeg": ("notes.jpg", b"This is a text file, not a photo.\n" * 20, "failed"),
        "corrupt_png": ("corrupt.png", corrupt_png(), "failed"),
        "huge_png": ("huge.png", declared_size_png(*huge_size), "failed"),
        # ok
        "plain_jpeg": ("plain.jpg", good, "ok"),
        "cmyk_jpeg": ("cmyk.jpg", cmyk_jpeg(), "ok"),
        "gray_jpeg": ("gray.jpg", pil_bytes(Image.fromarray(photo("coffee")).convert("L"), "JPEG"), "ok"),
        "gray16_png": ("gray16.png", png16_bytes(gray16()), "ok"),
        "rgb16_png": ("rgb16.png", png16_bytes(rgb16()), "ok"),
        "palette_png": ("palette.png", palette_png(), "ok"),
        "rgba_png": ("rgba.png", rgba_png(), "ok"),
        "one_by_one_png": ("1x1.png", pil_bytes(Image.fromarray(photo("coffee", (1, 1))), "PNG"), "ok"),
        "one_by_one_jpeg": ("1x1.jpg", jpeg_bytes(photo("coffee", (1, 1))), "ok"),
        "one_by_n_png": ("1xN.png", pil_bytes(Image.fromarray(line), "PNG"), "ok"),
        "n_by_one_jpeg": ("Nx1.jpg", jpeg_bytes(line.reshape(37, 1, 3)), "ok"),
        "exif_rotated_jpeg": ("exif-rotated.jpg", exif_rotated_jpeg(photo("chelsea")), "ok"),
        "name_with_spaces": ("a photo with spaces.jpg", jpeg_bytes(photo("coffee")), "ok"),
        "name_non_ascii": ("café ñandú 日本.jpg", jpeg_bytes(photo("astronaut")), "ok"),
        "upper_case_extension": ("UPPER.JPG", jpeg_bytes(photo("astronaut", (32, 48))), "ok"),
    }


def write_bad_images(folder: str | Path, *, huge_size: tuple[int, int] = HUGE_SIZE) -> dict[str, tuple[Path, str]]:
    """Write every case into ``folder`` (created); return name -> (path, 'ok' | 'failed').

    Cases expected to fail have their reason's expected text in :data:`EXPECTED_REASONS`
    (the ``huge_png`` text assumes the default ``huge_size`` and a limit below it).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cases = {}
    for name, (filename, content, outcome) in bad_image_bytes(huge_size).items():
        path = folder / filename
        path.write_bytes(content)
        cases[name] = (path, outcome)
    return cases
