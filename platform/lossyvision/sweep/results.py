"""The results table: flat keyed rows, one per (model, train level, test level, repeat, budget, metric).

``OUTPUT/results.parquet`` (and ``results.csv``) hold these rows; cells are appended as they
complete. Resume is "skip keys already present": :data:`KEY` identifies a row.
"""

from __future__ import annotations

import pyarrow as pa

#: Columns that identify a row. ``budget`` is -1 for sweeps without a budget axis.
KEY = ("model", "train_level", "test_level", "repeat", "budget", "metric")

SCHEMA = pa.schema([
    ("sweep", pa.string()),
    ("model", pa.string()),
    ("task", pa.string()),
    ("train_level", pa.float64()),
    ("test_level", pa.float64()),
    ("repeat", pa.int64()),
    ("budget", pa.int64()),          # bytes; -1 = no budget axis
    ("metric", pa.string()),         # e.g. top1, top5, map50, miou, macc
    ("value", pa.float64()),
    ("train_dcr", pa.float64()),     # mean DCR against source of the train level (manifest)
    ("test_dcr", pa.float64()),      # mean DCR against source of the test level
    ("train_dcr_raw", pa.float64()), # same, against raw pixels
    ("test_dcr_raw", pa.float64()),
    ("n_train_images", pa.int64()),
    ("train_bytes", pa.int64()),     # compressed bytes the trial trained on
    ("trial_id", pa.string()),
    ("finished_at", pa.string()),    # ISO 8601 UTC
])

NO_BUDGET = -1
