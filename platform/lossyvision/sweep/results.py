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

RESULTS_NAME = "results.parquet"
RESULTS_CSV_NAME = "results.csv"


def results_path(output: str) -> str:
    from lossyvision.store import join

    return join(str(output), RESULTS_NAME)


def empty_results():
    """An empty results table with the schema's columns and types."""
    return SCHEMA.empty_table().to_pandas()


def read_results(output: str):
    """``OUTPUT/results.parquet`` as a DataFrame (empty, with the schema's columns, if absent)."""
    import io

    import pyarrow.parquet as pq

    from lossyvision.store import exists, read_bytes

    path = results_path(output)
    if not exists(path):
        return empty_results()
    return pq.read_table(io.BytesIO(read_bytes(path))).to_pandas()


def normalise(rows):
    """Rows (dicts or a DataFrame) as a DataFrame with exactly the schema's columns and types."""
    import pandas as pd

    df = pd.DataFrame(list(rows)) if not isinstance(rows, pd.DataFrame) else rows.copy()
    missing = [c for c in SCHEMA.names if c not in df.columns]
    if missing:
        raise ValueError(f"results rows lack column(s) {missing}")
    return pa.Table.from_pandas(df[SCHEMA.names], schema=SCHEMA, preserve_index=False).to_pandas()


def append_results(output: str, rows) -> int:
    """Add ``rows`` to ``OUTPUT/results.parquet`` (and ``results.csv``); returns how many were new.

    Rows whose :data:`KEY` is already present are dropped (the first one stays): appending the
    same cell twice changes nothing. Both files are rewritten atomically, so a kill leaves the
    previous table or the new one, never a torn file. One writer (the sweep driver) at a time.
    """
    import io

    import pandas as pd
    import pyarrow.parquet as pq

    from lossyvision.store import atomic_write_bytes, join

    new = normalise(rows)
    if new.empty:
        return 0
    old = read_results(output)
    before = len(old)
    table = pd.concat([old, new], ignore_index=True) if before else new
    table = table.drop_duplicates(subset=list(KEY), keep="first").reset_index(drop=True)
    added = len(table) - before
    if added == 0:
        return 0
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(table, schema=SCHEMA, preserve_index=False), buf)
    atomic_write_bytes(results_path(output), buf.getvalue())
    atomic_write_bytes(join(str(output), RESULTS_CSV_NAME), table.to_csv(index=False).encode())
    return added
