"""Baseline JPEG (libjpeg-turbo) at a quality ``level`` 1..100, 4:2:0 chroma subsampling."""

from __future__ import annotations

import math
import numbers

import numpy as np

from lossyvision.codecs.base import CODECS, Codec
from lossyvision.imageio import check_rgb8, to_rgb8

#: The JPEG format stores sizes in 16 bits.
MAX_SIDE = 65535


def check_quality(codec: str, level: float, lowest: int = 0) -> int:
    """A quality ``level`` as an int in ``lowest..100``; a clear ``ValueError`` otherwise.

    Shared by the quality-driven codecs (``jpeg``, ``webp``, ``avif``).
    """
    value = float(level) if isinstance(level, numbers.Real) and not isinstance(level, bool) else math.nan
    if not math.isfinite(value) or not value.is_integer() or not lowest <= value <= 100:
        raise ValueError(f"{codec} level is a quality, a whole number in {lowest}..100; got {level!r}")
    return int(value)


def check_max_side(codec: str, rgb: np.ndarray, max_side: int) -> None:
    """Raise a clear ``ValueError`` when the format cannot hold an image this wide or tall."""
    height, width = rgb.shape[:2]
    if max(height, width) > max_side:
        raise ValueError(f"{codec} cannot encode {width}x{height}: its sides are limited to {max_side} pixels")


class QualityCodec(Codec):
    """A codec whose level is a quality, a whole number in ``level_min``..100 (jpeg, webp, avif)."""

    level_min, level_max, level_is_integer, level_meaning = 0, 100, True, "quality"

    @classmethod
    def check_level(cls, level: float) -> int:
        """The quality as an int; a ``ValueError`` outside the range (lets a job reject levels up front)."""
        return check_quality(cls.name, level, lowest=int(cls.level_min))


@CODECS.register("jpeg")
class JpegCodec(QualityCodec):
    """JPEG via imagecodecs' ``jpeg8_encode``; ``level`` is the libjpeg quality (1..100)."""

    name = "jpeg"
    extension = ".jpg"
    level_min = 1

    def encode(self, rgb: np.ndarray, level: float, *, source: bytes | None = None,
               source_format: str | None = None) -> bytes:
        import imagecodecs

        quality = self.check_level(level)
        rgb = check_rgb8(rgb)
        check_max_side(self.name, rgb, MAX_SIDE)
        return bytes(imagecodecs.jpeg8_encode(rgb, level=quality, optimize=True))

    def decode(self, data: bytes) -> np.ndarray:
        import imagecodecs

        return to_rgb8(imagecodecs.jpeg8_decode(data))
