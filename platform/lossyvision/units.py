"""Human byte sizes: ``"50MB" -> 50_000_000``, ``"2TiB" -> 2 * 2**40``."""

from __future__ import annotations

import re

_UNITS = {
    "": 1, "b": 1,
    "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12, "pb": 10**15,
    "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40, "pib": 2**50,
}
_PATTERN = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([a-zA-Z]*)\s*$")


def parse_bytes(value: str | int | float) -> int:
    """Parse a byte size; SI units (MB = 10**6) and binary ones (MiB = 2**20)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if value < 0:
            raise ValueError(f"a size must be >= 0, got {value}")
        return int(value)
    match = _PATTERN.match(str(value))
    if not match or match.group(2).lower() not in _UNITS:
        raise ValueError(f"not a byte size: {value!r} (use e.g. 50MB, 1.5GiB, 2TB)")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


def format_bytes(n: float, grouped: bool = False) -> str:
    """``1.5 MB`` (SI units); ``grouped`` puts thousands separators in the number (``1,234.5 TB``)."""
    sep = "," if grouped else ""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:{sep}.0f} {unit}" if unit == "B" else f"{n:{sep}.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"
