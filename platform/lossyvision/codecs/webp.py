"""WebP (libwebp), lossy, at a quality ``level`` 0..100.

``imagecodecs.webp_encode`` is *lossless* unless ``lossless=False`` is passed, so it always is.
"""

from __future__ import annotations

import numpy as np

from lossyvision.codecs.base import CODECS, Codec
from lossyvision.codecs.jpeg import check_max_side, check_quality
from lossyvision.imageio import check_rgb8, to_rgb8

#: WebP stores sizes in 14 bits.
MAX_SIDE = 16383
DEFAULT_METHOD = 4


@CODECS.register("webp")
class WebpCodec(Codec):
    """Lossy WebP; option ``method`` (0 fast .. 6 slow/better, default 4, libwebp's default)."""

    name = "webp"
    extension = ".webp"
    level_min, level_max, level_is_integer, level_meaning = 0, 100, True, "quality"

    def __init__(self, **options) -> None:
        super().__init__(**options)
        self.method = self.int_option("method", DEFAULT_METHOD, 0, 6)

    @classmethod
    def option_names(cls) -> tuple[str, ...]:
        return ("method",)

    @classmethod
    def check_level(cls, level: float) -> int:
        """The quality as an int; ``ValueError`` outside 0..100 (lets a job reject levels up front)."""
        return check_quality(cls.name, level)

    def encode(self, rgb: np.ndarray, level: float, *, source: bytes | None = None,
               source_format: str | None = None) -> bytes:
        import imagecodecs

        quality = self.check_level(level)
        rgb = check_rgb8(rgb)
        check_max_side(self.name, rgb, MAX_SIDE)
        return bytes(imagecodecs.webp_encode(rgb, level=quality, lossless=False, method=self.method))

    def decode(self, data: bytes) -> np.ndarray:
        import imagecodecs

        return to_rgb8(imagecodecs.webp_decode(data))
