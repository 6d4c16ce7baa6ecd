"""AVIF (libavif/libaom) at a quality ``level`` 0..100; 100 is lossless in libavif.

``speed`` is passed explicitly, default 6 (avifenc's default): with no speed, imagecodecs
encodes at speed 0, the slowest, about 50x slower for a ~5% smaller file.
"""

from __future__ import annotations

import numpy as np

from lossyvision.codecs.base import CODECS
from lossyvision.codecs.jpeg import QualityCodec
from lossyvision.imageio import check_rgb8, to_rgb8

DEFAULT_SPEED = 6


@CODECS.register("avif")
class AvifCodec(QualityCodec):
    """AVIF; option ``speed`` (0 slowest/best .. 10 fastest, default 6)."""

    name = "avif"
    extension = ".avif"
    int_options = {"speed": (DEFAULT_SPEED, 0, 10)}

    def encode(self, rgb: np.ndarray, level: float, *, source: bytes | None = None,
               source_format: str | None = None) -> bytes:
        import imagecodecs

        quality = self.check_level(level)
        return bytes(imagecodecs.avif_encode(check_rgb8(rgb), level=quality, speed=self.speed))

    def decode(self, data: bytes) -> np.ndarray:
        import imagecodecs

        return to_rgb8(imagecodecs.avif_decode(data))
