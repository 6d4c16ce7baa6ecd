"""The sweep file's number types, bounds and error: what every section of it is checked with."""

from __future__ import annotations

import math
import re
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from lossyvision.compress_options import BOUNDS as COMPRESS_BOUNDS
from lossyvision.units import format_bytes, parse_bytes

#: Sane bounds of the numbers in a sweep file (documented in :mod:`lossyvision.spec` and the README).
BOUNDS = {
    "repeats": (1, 100), "epochs": (1, 10_000), "batch_size": (1, 4096), "image_size": (8, 8192),
    "lr": (0.0, 10.0), "weight_decay": (0.0, 10.0), "levels": 64, "models": 32, "budgets": 64,
    "cpu": (0.0, 1024.0), "gpu": (0.0, 64.0), "max_failures": (0, 100), "seed": (0, 2**32 - 1),
    "limit_per_split": (1, 10**9), "name": 100, "codecs": 16,
    **COMPRESS_BOUNDS,  # max_pixels, quality_sample, png_sample, shard_size: the compress options, checked there
    "shard_images": (1, 1_000_000), "shard_bytes": (1000, 1 << 40), "model_cache_bytes": (0, 1 << 40),
    "stage_bytes": (0, 1 << 44), "shuffle_buffer": (1, 10_000_000), "read_block_bytes": (1 << 16, 1 << 30),
    "read_cache_bytes": (1 << 17, 1 << 40), "cache_bytes": (0, 1 << 44), "max_side": (8, 8192), "workers": (1, 256),
}
#: The largest sweep file read: a sweep file is a page of YAML.
MAX_FILE_BYTES = 1 << 20
#: MLflow 3's tracking stores (``mlflow.tracking._tracking_service.utils``), less its file store.
TRACKING_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql", "http", "https", "databricks",
                    "databricks-uc", "uc")



class SpecError(ValueError):
    """A malformed sweep file or option; the message names each field and its problem.

    One problem is one line (``FILE: field: problem``); several are a ``FILE:`` line and one
    indented line each. ``problems`` holds the ``field: problem`` lines.
    """

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems = list(problems or [])

    @classmethod
    def of(cls, source: str, problems: list[str]) -> "SpecError":
        problems = [p.strip() for p in problems]
        if len(problems) == 1:
            return cls(f"{source}: {problems[0]}", problems)
        return cls(f"{source}:\n" + "\n".join(f"  {p}" for p in problems), problems)


class Strict(BaseModel):
    """A section of the sweep file: unknown fields are refused, values never change after parsing."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def _no_bool(value: Any) -> Any:
    """YAML reads ``true``/``yes``/``on`` as booleans; a number field must not take them as 1."""
    if isinstance(value, bool):
        raise ValueError(f"must be a number, got a boolean ({str(value).lower()})")
    return value


def _whole(value: Any) -> Any:
    value = _no_bool(value)
    if isinstance(value, float) and (not math.isfinite(value) or not value.is_integer() or abs(value) > 2**62):
        raise ValueError(f"must be a whole number of sane size, got {value!r}")
    return value


#: Numbers that refuse booleans; floats also refuse NaN and infinities (``allow_inf_nan=False``).
Int = Annotated[int, BeforeValidator(_whole)]
Float = Annotated[float, BeforeValidator(_no_bool)]


def byte_size(value: Any, field: str) -> int:
    """A byte size (``256MB``, ``2GiB``, a number) within :data:`BOUNDS` ``[field]``; never a boolean or NaN."""
    if isinstance(value, bool) or (isinstance(value, float) and not math.isfinite(value)):
        raise ValueError(f"not a byte size: {value!r}")
    size = parse_bytes(value)
    low, high = BOUNDS[field]
    if not low <= size <= high:
        raise ValueError(f"must be between {format_bytes(low)} and {format_bytes(high)}, got {value!r}")
    return size


def bounded(default: Any, bounds: tuple[float, float], *, low_open: bool = False, **kw: Any) -> Any:
    """A Field with the bounds of :data:`BOUNDS` (``low_open``: the low bound itself is refused)."""
    low, high = bounds
    lower = {"gt": low} if low_open else {"ge": low}
    extra = {} if isinstance(low, int) and isinstance(high, int) else {"allow_inf_nan": False}
    return Field(default, le=high, **lower, **extra, **kw)


def check_registered(registry: Any, name: str) -> str:
    """``name`` if the registry knows it, else the registry's own "unknown ..., known: ..." error."""
    if name not in registry:
        raise ValueError(f"unknown {registry.kind} {name!r}; known: {', '.join(registry.names())}")
    return name


def check_slug(name: str) -> str:
    """Names end up in paths, run names and metric keys: keep them to a safe alphabet."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
        raise ValueError(f"{name!r} must be letters, digits, '.', '_' or '-'")
    if len(name) > BOUNDS["name"]:
        raise ValueError(f"must be at most {BOUNDS['name']} characters, got {len(name)}")
    return name
