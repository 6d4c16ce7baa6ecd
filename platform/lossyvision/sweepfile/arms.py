"""The codecs of a sweep file: the single ``codec:`` form or the ``codecs:`` list, each with its level ladders."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from lossyvision.codecs import CODECS, DEFAULT_CODEC, create_codec
from lossyvision.sweepfile.fields import BOUNDS, Float


class CodecSpec(BaseModel):
    """``name`` plus the codec's own options (``effort`` for jpegxl), checked by the codec."""

    model_config = ConfigDict(extra="allow", frozen=True)
    name: str = DEFAULT_CODEC

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})

    @model_validator(mode="after")
    def _codec_accepts_options(self) -> "CodecSpec":
        try:
            create_codec(self.name, **self.options)
        except (KeyError, ValueError, TypeError) as e:
            raise ValueError(str(e).strip("'\"")) from None
        return self


class CodecArmSpec(CodecSpec):
    """One codec of a multi-codec sweep (``codecs:``): its name, its own options and levels.

    ``levels`` is both the train and the test ladder; ``train_levels``/``test_levels`` set them
    apart. Anything else is a codec option (``effort``, ``speed``), checked by the codec.
    """

    levels: list[Float] | None = Field(None, max_length=BOUNDS["levels"])
    train_levels: list[Float] | None = Field(None, max_length=BOUNDS["levels"])
    test_levels: list[Float] | None = Field(None, max_length=BOUNDS["levels"])

    @field_validator("levels", "train_levels", "test_levels")
    @classmethod
    def _ladder(cls, v: list[float] | None) -> list[float] | None:
        return None if v is None else check_ladder(v)

    @model_validator(mode="after")
    def _has_levels(self) -> "CodecArmSpec":
        if self.levels is None and (self.train_levels is None or self.test_levels is None):
            raise ValueError(f"codec {self.name!r}: give levels (train and test), or train_levels and test_levels")
        return self


@dataclass(frozen=True)
class Arm:
    """A codec of the sweep with its ladders: the single ``codec:`` form is one arm."""

    name: str
    options: dict[str, Any]
    train_levels: list[float]
    test_levels: list[float]

    @property
    def levels(self) -> list[float]:
        """Every level the store must hold for this codec."""
        return sorted(set(self.train_levels) | set(self.test_levels))

    @property
    def codec(self) -> Any:
        """The codec class (registry entry): level meaning, fidelity order, lossless level."""
        return CODECS.get(self.name)

    def create(self) -> Any:
        return create_codec(self.name, **self.options)


def arms_from(data: dict[str, Any]) -> list[Arm]:
    """The codecs and ladders of sweep-file data (validated, or raw as read back from an output)."""
    def levels(x: Any) -> list[float]:
        return sorted(float(v) for v in x or [])

    if data.get("codecs"):
        arms = []
        for c in data["codecs"]:
            options = {k: v for k, v in c.items() if k not in ("name", "levels", "train_levels", "test_levels")}
            arms.append(Arm(str(c.get("name", DEFAULT_CODEC)), options, levels(c.get("train_levels") or c.get("levels")),
                            levels(c.get("test_levels") or c.get("levels"))))
        return arms
    codec = dict(data.get("codec") or {})
    name = str(codec.pop("name", DEFAULT_CODEC))
    return [Arm(name, codec, levels(data.get("train_levels")), levels(data.get("test_levels")))]


def originals_of(arms: list[Arm]) -> Arm | None:
    """The first arm whose train levels include its codec's lossless level (JPEG XL distance 0)."""
    for a in arms:
        if a.name in CODECS and a.codec.lossless_level in a.train_levels:
            return a
    return None


def check_ladder(v: list[float]) -> list[float]:
    """A level list: non-empty, finite, non-negative, unique; sorted ascending."""
    if not v:
        raise ValueError("must list at least one level")
    if any(not math.isfinite(x) for x in v):
        raise ValueError(f"levels must be finite numbers, got {v}")
    if any(x < 0 for x in v):
        raise ValueError(f"levels must be >= 0, got {v}")
    if len(set(v)) != len(v):
        raise ValueError(f"levels must be unique, got {v}")
    return sorted(float(x) for x in v)
