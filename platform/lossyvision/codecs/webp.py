"""WebP (libwebp), lossy, at a quality ``level`` 0..100.

``imagecodecs.webp_encode`` is *lossless* unless ``lossless=False`` is passed, so it always is.
"""

from __future__ import annotations

import numpy as np

from lossyvision.codecs.base import CODECS
from lossyvision.codecs.jpeg import QualityCodec, check_max_side
from lossyvision.imageio import check_rgb8, to_rgb8

#: WebP stores sizes in 14 bits.
MAX_SIDE = 16383
DEFAULT_METHOD = 4


@CODECS.register("webp")
class WebpCodec(QualityCodec):
    """Lossy WebP; option ``method`` (0 fast .. 6 slow/better, default 4, libwebp's default)."""

    name = "webp"
    extension = ".webp"
    int_options = {"method": (DEFAULT_METHOD, 0, 6)}

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
