"""JPEG XL at a Butteraugli distance (``level``), the codec the study is about.

``level`` is libjxl's target distance: 0 means lossless, 1 is "visually lossless", larger is
smaller and worse. The distance is nominal: libjxl overshoots it on real photos. Levels above
25 are rejected because libjxl silently clamps them to 25.

Lossless (level 0): a JPEG source is transcoded bit-exactly with ``jpegxl_encode_jpeg`` (the
original JPEG file comes back with :func:`reconstruct_jpeg`, which is checked); any other source,
or a JPEG that libjxl cannot transcode (e.g. CMYK), is encoded from its pixels with
``lossless=True`` (note that ``distance=0`` is *not* bit-exact). :meth:`encode_with_method` says
which (the manifest's ``level0_method``). Decoding a transcoded JPEG gives libjxl's rendering of it,
which may differ from Pillow's by a few levels per sample (different IDCT and upsampling).

``effort`` (1..10, default 7) is always passed explicitly: imagecodecs' own default is 5.
"""

from __future__ import annotations

import numbers

import numpy as np

from lossyvision.codecs.base import CODECS, Codec
from lossyvision.imageio import check_rgb8, to_rgb8

#: libjxl clamps larger distances to this value; we reject them instead.
MAX_DISTANCE = 25.0
DEFAULT_EFFORT = 7


def reconstruct_jpeg(data: bytes) -> bytes:
    """The original JPEG file's bytes from a losslessly transcoded ``.jxl`` file.

    Raises ``ValueError`` if ``data`` holds no JPEG reconstruction data (it was encoded from
    pixels, not transcoded from a JPEG).
    """
    import imagecodecs

    try:
        return bytes(imagecodecs.jpegxl_decode_jpeg(data))
    except (imagecodecs.JpegxlError, ValueError) as exc:  # imagecodecs raises both
        raise ValueError(f"not a JPEG transcoded to JPEG XL (no reconstruction data): {exc}") from None


def transcode_jpeg(jpeg: bytes) -> bytes | None:
    """Lossless JPEG -> JPEG XL transcode, or ``None`` when libjxl cannot (CMYK, odd JPEGs)."""
    import imagecodecs

    try:
        return bytes(imagecodecs.jpegxl_encode_jpeg(jpeg))
    except imagecodecs.JpegxlError:
        return None


def _reconstructs(transcoded: bytes, source: bytes) -> bool:
    try:
        return reconstruct_jpeg(transcoded) == source
    except ValueError:
        return False


@CODECS.register("jpegxl")
class JpegXLCodec(Codec):
    """JPEG XL via imagecodecs/libjxl; options: ``effort`` (1..10, default 7)."""

    name = "jpegxl"
    extension = ".jxl"

    int_options = {"effort": (DEFAULT_EFFORT, 1, 10)}

    level_min, level_max, level_meaning = 0.0, MAX_DISTANCE, "Butteraugli distance; 0 = lossless"
    lossless_level = 0.0
    higher_level_is_better = False
    level_noun = "distance"

    @classmethod
    def check_level(cls, level: float) -> float:
        if isinstance(level, bool) or not isinstance(level, numbers.Real) or not 0.0 <= float(level) <= MAX_DISTANCE:
            shown = f"{level:g}" if isinstance(level, numbers.Real) and not isinstance(level, bool) else repr(level)
            raise ValueError(
                f"jpegxl level (Butteraugli distance) must be in 0..{MAX_DISTANCE:g} "
                f"(0 = lossless; libjxl clamps larger values), got {shown}"
            )
        return float(level)

    def encode(self, rgb: np.ndarray, level: float, *, source: bytes | None = None,
               source_format: str | None = None) -> bytes:
        return self.encode_with_method(rgb, level, source=source, source_format=source_format)[0]

    def encode_with_method(self, rgb: np.ndarray, level: float, *, source: bytes | None = None,
                           source_format: str | None = None) -> tuple[bytes, str | None]:
        """Level 0 of a JPEG source is its bit-exact transcode (checked: the JPEG comes back
        byte for byte) when libjxl can make one, else the pixels, losslessly."""
        import imagecodecs

        level = self.check_level(level)
        rgb = check_rgb8(rgb)
        if level == 0.0:
            if source_format == "JPEG" and source:
                transcoded = transcode_jpeg(source)
                if transcoded is not None and _reconstructs(transcoded, source):
                    return transcoded, "jpeg_transcode"
            return bytes(imagecodecs.jpegxl_encode(rgb, lossless=True, effort=self.effort)), "pixels"
        return bytes(imagecodecs.jpegxl_encode(rgb, distance=level, effort=self.effort)), None

    def decode(self, data: bytes) -> np.ndarray:
        import imagecodecs

        return to_rgb8(imagecodecs.jpegxl_decode(data))
