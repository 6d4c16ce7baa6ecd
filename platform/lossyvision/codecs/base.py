"""The codec interface and its registry.

A codec turns 8-bit RGB pixels into bytes at a *level* and back. What a level means is the
codec's business: a Butteraugli distance for ``jpegxl`` (0 = lossless), a quality for ``jpeg``,
``webp`` and ``avif``; ``png`` ignores it.
"""

from __future__ import annotations

import math
import numbers
from abc import ABC, abstractmethod
from typing import Any, ClassVar

import numpy as np

from lossyvision.registry import Registry


class Codec(ABC):
    """Encode/decode 8-bit RGB images. Subclasses register with ``@CODECS.register(name)``."""

    #: Registry name, set by subclasses.
    name: str = ""
    #: File extension of encoded files, with the dot (".jxl").
    extension: str = ""
    #: The levels the codec accepts, inclusive (see :meth:`level_range`), and what a level is.
    level_min: float = 0.0
    level_max: float = 100.0
    level_is_integer: bool = False
    level_meaning: str = "level"
    #: The level at which ``encode`` is lossless (jpegxl and png: 0); None if no level is.
    lossless_level: float | None = None
    #: True for a quality (a higher level keeps more), False for a distance (jpegxl: higher loses more).
    higher_level_is_better: bool = True
    #: What a level is called in sentences ("at quality 70", "at distance 3").
    level_noun: str = "quality"
    #: Integer options, ``name: (default, lowest, highest)``; each becomes an attribute (``self.effort``).
    int_options: ClassVar[dict[str, tuple[int, int, int]]] = {}

    def __init__(self, **options: Any) -> None:
        unknown = set(options) - set(self.option_names())
        if unknown:
            raise ValueError(
                f"codec {self.name!r} got unknown option(s) {sorted(unknown)}; "
                f"known: {sorted(self.option_names())}"
            )
        self.options = options
        for name, (default, low, high) in self.int_options.items():
            setattr(self, name, self.int_option(name, default, low, high))

    @classmethod
    def option_names(cls) -> tuple[str, ...]:
        """Names of keyword options the constructor accepts (e.g. ``effort``)."""
        return tuple(cls.int_options)

    @classmethod
    def level_range(cls) -> tuple[float, float]:
        """The smallest and largest level this codec accepts (jpegxl: ``(0, 25)``)."""
        return (cls.level_min, cls.level_max)

    @classmethod
    def check_level(cls, level: Any) -> float:
        """``level`` as a float if this codec accepts it, else a ``ValueError`` naming the range.

        A sweep file is checked with this before anything runs: booleans, NaN, infinities and
        values outside :meth:`level_range` are refused (``1e300`` would otherwise reach the encoder).
        """
        low, high = cls.level_range()
        if isinstance(level, bool) or not isinstance(level, numbers.Real) or not math.isfinite(float(level)):
            raise ValueError(f"{cls.name} level must be a finite number in {low:g}..{high:g} "
                             f"({cls.level_meaning}), got {level!r}")
        value = float(level)
        if cls.level_is_integer and not value.is_integer() or not low <= value <= high:
            kind = "a whole number" if cls.level_is_integer else "a number"
            raise ValueError(f"{cls.name} level must be {kind} in {low:g}..{high:g} ({cls.level_meaning}), "
                             f"got {level!r}")
        return value

    @classmethod
    def by_fidelity(cls, levels: Any) -> list[float]:
        """``levels`` from the most faithful (the baseline) to the most compressed."""
        return sorted((float(x) for x in levels), reverse=cls.higher_level_is_better)

    @classmethod
    def describe_level(cls, level: float) -> str:
        """``distance 3``, ``quality 70``: a level as a sentence names it."""
        return f"{cls.level_noun} {float(level):g}"

    def int_option(self, name: str, default: int, low: int, high: int) -> int:
        """The integer option ``name`` (``default`` if absent); a clear error outside ``low..high``."""
        value = self.options.get(name, default)
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not low <= value <= high:
            raise ValueError(f"{self.name} {name} must be an integer in {low}..{high}, got {value!r}")
        return int(value)

    @abstractmethod
    def encode(self, rgb: np.ndarray, level: float, *, source: bytes | None = None,
               source_format: str | None = None) -> bytes:
        """Encode uint8 HxWx3 ``rgb`` at ``level``.

        ``source``/``source_format`` are the original file's bytes and PIL format name
        ("JPEG", "PNG", ...), for codecs that can transcode losslessly (JPEG -> JPEG XL).
        """

    def encode_with_method(self, rgb: np.ndarray, level: float, *, source: bytes | None = None,
                           source_format: str | None = None) -> tuple[bytes, str | None]:
        """:meth:`encode`, plus how a lossless level was made (the manifest's ``level0_method``).

        ``"pixels"``: encoded from the decoded pixels; ``"jpeg_transcode"`` (codecs that can):
        the source JPEG's own bytes, recoverable bit-exactly. None for a lossy level.
        """
        data = self.encode(rgb, level, source=source, source_format=source_format)
        lossless = self.lossless_level is not None and float(level) == self.lossless_level
        return data, ("pixels" if lossless else None)

    @abstractmethod
    def decode(self, data: bytes) -> np.ndarray:
        """Decode to uint8 HxWx3 RGB."""


#: The codec a sweep file, a command or a table means when it names none: the study's, JPEG XL.
DEFAULT_CODEC = "jpegxl"

CODECS: Registry[type[Codec]] = Registry("codec")


def create_codec(name: str, **options: Any) -> Codec:
    """Build a registered codec by name with its options (``create_codec('jpegxl', effort=7)``)."""
    return CODECS.get(name)(**options)
