"""The compress job's options: what they are, their bounds, and the one validator that the command line, the
sweep file and :func:`lossyvision.compress.run_job` all use.

Each bounded option is checked by :func:`check_option` against :data:`BOUNDS`, whichever path it comes from, so an
out-of-bounds value is refused with the same bound everywhere: ``--shard-size 100GB`` says ``--shard-size: at most
64GB, got '100GB'``, and ``compress: {shard_size: 100GB}`` in a sweep file says ``compress.shard_size: at most 64GB,
got '100GB'``. The ``parse_*`` functions turn the command line's text into values (a malformed text gets its own
line) and hand them to the same checks; :mod:`lossyvision.spec` calls :func:`check_option` from its validators.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from typing import Any

from lossyvision.codecs import DEFAULT_CODEC, create_codec
from lossyvision.imageio import ANIMATED_POLICIES
from lossyvision.quality import check_available
from lossyvision.shards import DEFAULT_LAYOUT, DEFAULT_SHARD_SIZE, LAYOUTS
from lossyvision.units import parse_bytes

DEFAULT_LEVELS = (0.0, 0.5, 1.0, 2.0, 5.0, 10.0)
ON_ERROR = ("skip", "fail")
PNG_SAMPLE = 256
#: ``quality_sample`` meaning every image (``quality_sample: all`` in a sweep file, ``--quality-sample all``).
EVERY_IMAGE = -1

#: The bounds of the compress options, for every path (the sweep file's ``BOUNDS`` takes them from here).
BOUNDS = {"max_pixels": (1, 10_000_000_000), "quality_sample": (0, 1_000_000), "png_sample": (0, 10**9),
          "shard_size": (1000, 64 * 10**9)}


class CompressError(RuntimeError):
    """The job cannot start or was stopped (``on_error='fail'``); the message says why."""


@dataclass(frozen=True)
class CompressOptions:
    """What to compress and how; shared by the CLI, the sweep file and :func:`lossyvision.compress.run_job`."""

    codec: str = DEFAULT_CODEC
    codec_options: dict[str, Any] = field(default_factory=dict)
    levels: tuple[float, ...] = DEFAULT_LEVELS
    on_error: str = "skip"
    max_pixels: int = 100_000_000
    quality_metric: str | None = None
    quality_sample: int = 16
    animated: str = "refuse"  # an animated source: refuse it, or compress its "first" frame
    layout: str = DEFAULT_LAYOUT  # files: one file per (image, level); shards: tar shards per level
    shard_size: int = DEFAULT_SHARD_SIZE  # shards: source bytes per shard group
    png_sample: int | None = PNG_SAMPLE  # images per split with a PNG baseline; None: every image


# --- the one check of each bounded option ------------------------------------------------------
def check_option(name: str, value: Any) -> Any:
    """``value`` of the option ``name`` as the job takes it, or ``ValueError`` with the problem and the bound.

    ``max_pixels``: a whole number; ``quality_sample``, ``png_sample``: a count or ``"all"`` (quality_sample:
    :data:`EVERY_IMAGE`; png_sample: ``None``); ``shard_size``: a byte size (``256MB``, a number). Never a
    boolean or NaN. The message has no field name: each caller puts its own (``--shard-size``,
    ``compress.shard_size``, ``shard_size``).
    """
    low, high = BOUNDS[name]
    if name == "shard_size":
        if isinstance(value, bool) or (isinstance(value, float) and not math.isfinite(value)):
            raise ValueError(f"not a byte size: {value!r}")
        size = parse_bytes(value)
        if size < low:
            raise ValueError(f"at least {_size(low)}, got {value!r}")
        if size > high:
            raise ValueError(f"at most {_size(high)}, got {value!r}")
        return size
    if name in ("quality_sample", "png_sample"):
        if value == "all":
            return EVERY_IMAGE if name == "quality_sample" else None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (isinstance(value, float) and not (
                math.isfinite(value) and value.is_integer())) or not low <= value <= high:
            raise ValueError(f"must be all or a count in {low}..{high}, got {value!r}")
        return int(value)
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"must be a whole number, got {value!r}")
    if value < low:
        raise ValueError(f"must be greater than or equal to {low}, got {value!r}")
    if value > high:
        raise ValueError(f"must be less than or equal to {high}, got {value!r}")
    return value


def _size(n: int) -> str:
    """A bound as the user writes it: ``1kB``, ``64GB``."""
    for unit, factor in (("TB", 10**12), ("GB", 10**9), ("MB", 10**6), ("kB", 1000)):
        if n % factor == 0:
            return f"{n // factor}{unit}"
    return f"{n}B"


def _bounded(name: str, value: Any, label: str) -> Any:
    """:func:`check_option` with :class:`CompressError` naming ``label`` (``--shard-size: at most 64GB, ...``)."""
    try:
        return check_option(name, value)
    except ValueError as exc:
        raise CompressError(f"{label}: {exc}") from None


def validate(options: CompressOptions) -> None:
    """Check options before any work; raise :class:`CompressError` naming the problem."""
    if options.layout not in LAYOUTS:
        raise CompressError(f"layout must be one of {LAYOUTS}, got {options.layout!r}")
    _bounded("shard_size", options.shard_size, "shard_size")
    _bounded("max_pixels", options.max_pixels, "max_pixels")
    _bounded("quality_sample", "all" if options.quality_sample == EVERY_IMAGE else options.quality_sample,
             "quality_sample")
    _bounded("png_sample", "all" if options.png_sample is None else options.png_sample, "png_sample")
    if options.on_error not in ON_ERROR:
        raise CompressError(f"on_error must be one of {ON_ERROR}, got {options.on_error!r}")
    if options.animated not in ANIMATED_POLICIES:
        raise CompressError(f"animated must be one of {ANIMATED_POLICIES}, got {options.animated!r}")
    if not options.levels:
        raise CompressError("no levels given")
    if len(set(options.levels)) != len(options.levels):
        raise CompressError(f"levels must be unique, got {list(options.levels)}")
    try:
        codec = create_codec(options.codec, **options.codec_options)
    except (KeyError, ValueError, TypeError) as exc:
        raise CompressError(str(exc).strip("'\"")) from None
    for level in options.levels:
        if isinstance(level, bool) or float(level) < 0 or not math.isfinite(float(level)):
            raise CompressError(f"levels must be finite and >= 0, got {level}")
        try:
            codec.check_level(level)
        except ValueError as exc:
            raise CompressError(str(exc)) from None
    if options.quality_metric:
        try:
            check_available(options.quality_metric)
        except (KeyError, ValueError) as exc:
            raise CompressError(str(exc).strip("'\"")) from None


# --- the command line's text -------------------------------------------------------------------
def parse_levels(text: str) -> tuple[float, ...]:
    """``"0,0.5,1"`` -> ``(0.0, 0.5, 1.0)``; raise :class:`CompressError` on junk.

    Malformed lists are refused, not repaired: an empty item (``0,,1``, a trailing comma), a
    non-number, NaN or infinity, a repeated level.
    """
    items = [x.strip() for x in str(text).split(",")]
    if items == [""]:
        raise CompressError("--levels: no level given")
    if "" in items:
        raise CompressError(f"--levels: empty item in {text!r}; write levels separated by single commas, e.g. 0,0.5,1")
    try:
        levels = tuple(float(x) for x in items)
    except ValueError:
        raise CompressError(f"--levels: expected numbers separated by commas, got {text!r}") from None
    if not all(math.isfinite(x) for x in levels):
        raise CompressError(f"--levels: levels must be finite numbers, got {text!r}")
    if any(x < 0 for x in levels):
        raise CompressError(f"--levels: levels must be >= 0, got {text!r}")
    if len(set(levels)) != len(levels):
        raise CompressError(f"--levels: a level is given twice in {text!r}")
    return levels


def _count_text(text: str | int, flag: str, what: str) -> int | str:
    """A count option's text as a number, or ``"all"``; :class:`CompressError` when it is neither."""
    if str(text).strip().lower() == "all":
        return "all"
    try:
        return int(str(text).strip())
    except ValueError:
        raise CompressError(f"{flag}: {what}, got {text!r}") from None


def parse_quality_sample(text: str | int) -> int:
    """``"16"`` -> 16, ``"all"`` -> :data:`EVERY_IMAGE`; :class:`CompressError` on anything else."""
    return _bounded("quality_sample", _count_text(text, "--quality-sample", "a count or 'all'"), "--quality-sample")


def parse_png_sample(text: str) -> int | None:
    """``"256"`` -> 256, ``"all"`` -> None (every image); raise :class:`CompressError` on junk."""
    return _bounded("png_sample", _count_text(text, "--png-sample", "expected a number of images or 'all'"),
                    "--png-sample")


def parse_shard_size(text: str | int) -> int:
    """``"256MB"`` -> 256000000; :class:`CompressError` on anything that is not a size within the bounds."""
    return _bounded("shard_size", text, "--shard-size")
