"""PNG, the lossless baseline: its one level is 0 (a level says nothing to a lossless codec)."""

from __future__ import annotations

import numpy as np

from lossyvision.codecs.base import CODECS, Codec
from lossyvision.imageio import check_rgb8, to_rgb8


@CODECS.register("png")
class PngCodec(Codec):
    """PNG via imagecodecs/libpng; option ``compression`` (zlib level 0..9, default 6)."""

    name = "png"
    extension = ".png"
    level_min, level_max, level_meaning = 0.0, 0.0, "PNG is lossless: its one level is 0"
    lossless_level = 0.0
    level_noun = "level"
    int_options = {"compression": (6, 0, 9)}

    def encode(self, rgb: np.ndarray, level: float, *, source: bytes | None = None,
               source_format: str | None = None) -> bytes:
        import imagecodecs

        return bytes(imagecodecs.png_encode(check_rgb8(rgb), level=self.compression))

    def decode(self, data: bytes) -> np.ndarray:
        import imagecodecs

        return to_rgb8(imagecodecs.png_decode(data))
