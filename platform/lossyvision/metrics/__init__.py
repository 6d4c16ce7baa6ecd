"""Metrics, looked up by name (``METRICS.get("voc_map")``). One file per family."""

from lossyvision.metrics.base import METRICS
from lossyvision.registry import import_submodules

import_submodules(__name__, __path__)

__all__ = ["METRICS"]
