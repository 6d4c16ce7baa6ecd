"""The metric registry: name -> plain function over numpy arrays."""

from __future__ import annotations

from typing import Callable

from lossyvision.registry import Registry

METRICS: Registry[Callable[..., object]] = Registry("metric")
