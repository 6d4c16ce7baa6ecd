"""Metrics, looked up by name (``METRICS.get("voc_map")``). One file per family."""

from lossyvision.metrics.base import (METRICS, OUTCOMES, Outcomes, headline_first, outcomes_from_parquet,
                                      outcomes_to_parquet)
from lossyvision.registry import import_submodules

import_submodules(__name__, __path__)

__all__ = ["METRICS", "OUTCOMES", "Outcomes", "headline_first", "outcomes_from_parquet", "outcomes_to_parquet"]
