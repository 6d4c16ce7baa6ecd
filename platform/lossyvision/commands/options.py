"""The ``--option KEY=VALUE`` dataset options that ``compress`` and ``inspect`` share, as a dict."""

from __future__ import annotations

import yaml


def parse_options(pairs: list[str]) -> dict:
    """``["splits=[train]", "masks=true"]`` -> ``{"splits": ["train"], "masks": True}`` (values are YAML)."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--option {pair!r}: expected KEY=VALUE")
        try:
            out[key.strip()] = yaml.safe_load(value) if value.strip() else ""
        except yaml.YAMLError as e:
            raise ValueError(f"--option {pair!r}: the value is not valid YAML ({e})") from None
    return out
