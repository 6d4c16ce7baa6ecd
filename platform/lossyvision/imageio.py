"""Reading original images: the one place where any input file becomes 8-bit RGB pixels.

Everything that reads an original image (the compress job, quality measurement, datasets that
decode originals) calls :func:`load_rgb`, so that every image is normalised the same way:

* the pixel count is read from the header and checked against ``max_pixels`` *before* any
  pixel is decoded (decompression bombs); Pillow's own bomb check is disabled while we open,
  so ours is the one that fires, whatever limit is configured;
* the EXIF orientation is applied (the pixels come out as a viewer shows them);
* grayscale (``1``, ``L``, ``I;16``, ``I``), palette (``P``, transparency included), CMYK (and
  Adobe-inverted CMYK / YCCK JPEGs, as Pillow decodes them) become RGB;
* alpha (``RGBA``, ``LA``, ``PA``, palette or gray transparency) is composited on white;
* 16-bit samples are scaled to 8 bits with rounding, ``round(v * 255 / 65535)``, not clipped
  or truncated. 16-bit PNGs are decoded with ``imagecodecs.png_decode`` because Pillow reads
  16-bit RGB PNGs as 8-bit by dropping the low byte;
* no colour management: embedded ICC profiles are ignored and pixels are taken as sRGB;
* an animated image (GIF, APNG, WebP) is refused (``animated="refuse"``, the default: which frame
  would be "the image"?) or read as its first frame (``animated="first"``); ``frames`` says how
  many it had.

Every bad input raises :class:`BadImageError` with a short reason ("empty file", "not an
image", "truncated file", "too large: ..."), never a raw Pillow/OS error.
"""

from __future__ import annotations

import io
import threading
import warnings
from dataclasses import dataclass

import numpy as np

DEFAULT_MAX_PIXELS = 100_000_000
#: What to do with an animated image: refuse it, or read its first frame.
ANIMATED_POLICIES = ("refuse", "first")
_ANIMATED_FORMATS = ("GIF", "PNG", "WEBP")
_ORIENTATION_TAG = 0x0112
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PIL_LIMIT_LOCK = threading.Lock()


class BadImageError(ValueError):
    """An input file that cannot be turned into RGB pixels; ``reason`` says why, briefly."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, eq=False)  # eq on arrays is ambiguous; compare .rgb yourself
class LoadedImage:
    """A normalised original: ``rgb`` is uint8 HxWx3, C-contiguous, orientation applied.

    ``format`` is Pillow's format name ("JPEG", "PNG", ...), ``mode`` the original Pillow mode
    ("RGB", "CMYK", "I;16", "P", ...), ``width``/``height`` those of ``rgb`` (after rotation),
    ``frames`` the frame count of an animated source (1 otherwise).
    """

    rgb: np.ndarray
    format: str
    mode: str
    width: int
    height: int
    frames: int = 1  # > 1: an animated image, of which ``rgb`` is the first frame


def load_rgb(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS, animated: str = "refuse") -> LoadedImage:
    """Decode an image file's bytes into normalised 8-bit RGB (see the module docstring)."""
    if animated not in ANIMATED_POLICIES:
        raise ValueError(f"animated must be one of {ANIMATED_POLICIES}, got {animated!r}")
    if not data:
        raise BadImageError("empty file")
    from PIL import UnidentifiedImageError

    try:
        image = _open_without_pillow_limit(data)
    except UnidentifiedImageError:
        kind = _sniff(data)
        if kind:
            raise BadImageError(f"corrupt or truncated {kind} header") from None
        raise BadImageError("not an image (unrecognised format)") from None
    except Exception as exc:  # Pillow plugins raise many types on bad headers
        raise BadImageError(_reason(exc, "corrupt image header")) from None

    width, height = image.size
    if width <= 0 or height <= 0:
        raise BadImageError(f"empty image: {width}x{height} pixels")
    if width * height > max_pixels:
        raise BadImageError(
            f"too large: {width}x{height} = {width * height / 1e6:.1f} MP > limit {max_pixels / 1e6:.1f} MP"
        )

    fmt, mode = image.format or "unknown", image.mode
    frames = _frame_count(image) if fmt in _ANIMATED_FORMATS else 1
    if frames > 1 and animated == "refuse":
        image.close()
        raise BadImageError(f"animated image ({frames} frames): refused (with the animated policy "
                            "'first' its first frame is used)")
    try:
        orientation = _orientation(image)
        if fmt == "PNG":
            _verify_png_checksums(data)
        if fmt == "PNG" and _png_bit_depth(data) == 16:
            rgb = _png16_to_rgb8(data)
        else:
            image.load()  # decode errors (truncation, corruption) surface here
            rgb = _pil_to_rgb8(image)
    except BadImageError:
        raise
    except MemoryError:
        raise BadImageError(f"too large to decode in memory: {width}x{height}") from None
    except Exception as exc:
        raise BadImageError(_reason(exc, "corrupt image data")) from None
    finally:
        image.close()

    rgb = np.ascontiguousarray(apply_orientation(rgb, orientation))
    return LoadedImage(rgb=rgb, format=fmt, mode=mode, width=rgb.shape[1], height=rgb.shape[0], frames=frames)


def _frame_count(image) -> int:
    try:
        return int(getattr(image, "n_frames", 1)) if getattr(image, "is_animated", False) else 1
    except Exception:  # a broken animation header: the first frame is all there is
        return 1


def _open_without_pillow_limit(data: bytes):
    """``PIL.Image.open`` with Pillow's own decompression-bomb check (a process-wide setting)
    switched off for the call, so that ``max_pixels`` alone decides, whatever its value."""
    from PIL import Image

    with _PIL_LIMIT_LOCK, warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        saved_limit = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            return Image.open(io.BytesIO(data))
        finally:
            Image.MAX_IMAGE_PIXELS = saved_limit


def raw_bytes(rgb: np.ndarray) -> int:
    """Size of the decoded pixels as 8-bit RGB, H*W*3: the denominator of ``dcr_vs_raw``."""
    return int(rgb.shape[0]) * int(rgb.shape[1]) * 3


def to_rgb8(pixels: np.ndarray) -> np.ndarray:
    """Any decoder's output (HxW, HxWx1..4; uint8 or uint16) as uint8 HxWx3, C-contiguous.

    Gray is repeated into three channels, alpha is dropped (codecs here only ever encode
    opaque RGB), 16-bit is scaled with rounding. Used by every codec's ``decode``.
    """
    a = np.asarray(pixels)
    if a.dtype == np.uint16:
        a = scale16to8(a)
    elif a.dtype != np.uint8:
        raise ValueError(f"expected uint8 or uint16 pixels, got {a.dtype}")
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3 or a.shape[2] not in (1, 2, 3, 4):
        raise ValueError(f"expected HxW or HxWxC pixels with C in 1..4, got shape {a.shape}")
    if a.shape[2] in (1, 2):
        a = np.repeat(a[:, :, :1], 3, axis=2)
    return np.ascontiguousarray(a[:, :, :3])


def check_rgb8(rgb: np.ndarray) -> np.ndarray:
    """Raise ``ValueError`` unless ``rgb`` is a non-empty uint8 HxWx3 array; return it C-contiguous."""
    if not isinstance(rgb, np.ndarray) or rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        desc = f"{rgb.dtype} {rgb.shape}" if isinstance(rgb, np.ndarray) else type(rgb).__name__
        raise ValueError(f"expected uint8 HxWx3 RGB pixels, got {desc}")
    if rgb.shape[0] == 0 or rgb.shape[1] == 0:
        raise ValueError(f"expected a non-empty image, got shape {rgb.shape}")
    return np.ascontiguousarray(rgb)


def scale16to8(a: np.ndarray) -> np.ndarray:
    """16-bit samples to 8 bits with rounding: ``round(v * 255 / 65535)`` (0 -> 0, 65535 -> 255)."""
    return ((a.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)


def apply_orientation(rgb: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF orientation (1..8) to HxWxC pixels, as Pillow's ``ImageOps.exif_transpose``."""
    if orientation == 2:
        return rgb[:, ::-1]
    if orientation == 3:
        return rgb[::-1, ::-1]
    if orientation == 4:
        return rgb[::-1]
    if orientation == 5:
        return rgb.transpose(1, 0, 2)
    if orientation == 6:
        return np.rot90(rgb, -1)
    if orientation == 7:
        return rgb.transpose(1, 0, 2)[::-1, ::-1]
    if orientation == 8:
        return np.rot90(rgb, 1)
    return rgb  # 1, missing or invalid values: leave as stored


def _orientation(image) -> int:
    try:
        value = image.getexif().get(_ORIENTATION_TAG, 1)
        return int(value) if int(value) in range(1, 9) else 1
    except Exception:  # a broken EXIF block should not make the pixels unreadable
        return 1


def _has_alpha(image) -> bool:
    return image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info


def _pil_to_rgb8(image) -> np.ndarray:
    mode = image.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        gray = np.asarray(image)
        if mode == "I":  # 32-bit container; its values come from 16-bit (or smaller) samples
            gray = np.clip(gray, 0, 65535)
        return to_rgb8(gray.astype(np.uint16))
    if mode == "F":
        raise BadImageError("unsupported pixel type: 32-bit float")
    try:
        if _has_alpha(image):
            rgba = np.asarray(image.convert("RGBA"))
            return composite_on_white(rgba[:, :, :3], rgba[:, :, 3], 255)
        return np.asarray(image.convert("RGB"))
    except ValueError as exc:  # Pillow: "conversion from X to RGB not supported"
        raise BadImageError(f"unsupported pixel mode {mode}: {exc}") from None


def _verify_png_checksums(data: bytes) -> None:
    """Check every PNG chunk's CRC: Pillow's ``load`` skips them and decodes damaged data silently."""
    with _open_without_pillow_limit(data) as image:
        image.verify()


def _png_bit_depth(data: bytes) -> int:
    """Bit depth from the PNG IHDR chunk (byte 24), 0 if the header is not a plain PNG."""
    if data[:8] != _PNG_SIGNATURE or len(data) < 26 or data[12:16] != b"IHDR":
        return 0
    return data[24]


def _png16_to_rgb8(data: bytes) -> np.ndarray:
    import imagecodecs

    try:
        pixels = imagecodecs.png_decode(data)
    except Exception as exc:
        raise BadImageError(_reason(exc, "corrupt image data")) from None
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    channels = pixels.shape[2]
    if channels in (2, 4):  # gray+alpha, RGBA: composite at full precision, then scale
        color = pixels[:, :, :channels - 1]
        rgb16 = composite_on_white(color, pixels[:, :, channels - 1], 65535)
        return to_rgb8(rgb16.astype(np.uint16))
    return to_rgb8(pixels)


def composite_on_white(color: np.ndarray, alpha: np.ndarray, maxval: int) -> np.ndarray:
    """``color * a + white * (1 - a)`` in integers, rounded; gray color is expanded to RGB.

    ``maxval`` is 255 or 65535; the result has the dtype matching it (uint8 or uint16).
    """
    dtype = np.uint8 if maxval == 255 else np.uint16
    a = alpha.astype(np.uint32)
    inverse_white = (maxval - a) * maxval + maxval // 2
    out = np.empty(color.shape[:2] + (3,), dtype=dtype)
    for c in range(3):
        channel = color[:, :, min(c, color.shape[2] - 1)].astype(np.uint32)
        out[:, :, c] = (channel * a + inverse_white) // maxval
    return out


_MAGIC = {
    b"\x89PNG\r\n\x1a\n": "PNG",
    b"\xff\xd8\xff": "JPEG",
    b"GIF8": "GIF",
    b"II*\x00": "TIFF",
    b"MM\x00*": "TIFF",
}


def _sniff(data: bytes) -> str:
    """The format a file's magic bytes claim, for a better reason when Pillow gives up."""
    for magic, kind in _MAGIC.items():
        if data.startswith(magic):
            return kind
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WebP"
    return ""


def _reason(exc: Exception, fallback: str) -> str:
    """A short reason from a decoder exception; truncation gets its own wording."""
    text = str(exc).strip()
    lowered = text.lower()
    if isinstance(exc, EOFError) or "truncat" in lowered or "too small" in lowered or "premature" in lowered:
        return "truncated file"
    return f"{fallback}: {text}" if text else fallback
