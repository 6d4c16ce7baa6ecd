"""The results table: flat keyed rows, one per (cell, metric); a cell is one repeat of one trial at one test level.

``OUTPUT/results.parquet`` (and ``results.csv``) hold these rows; cells are appended as they
complete. Resume is "skip keys already present": :data:`KEY` identifies a row, and ``cell_id`` is
the cell's key, which carries the hash of its configuration (:mod:`lossyvision.sweep.plan`): rows of
an edited sweep's old configuration stay in the table and are never taken for the new one.

Every value carries its interval: ``ci_low``/``ci_high`` from a bootstrap over the test images,
and ``rel``/``rel_low``/``rel_high``, the value as a percentage of the baseline cell of the same
model, budget and repeat, with the interval of that paired ratio (:mod:`lossyvision.intervals`).
"""

from __future__ import annotations

import pyarrow as pa

from lossyvision.store import DamagedFileError, atomic_write_bytes, exists, join, read_bytes

#: Columns that identify a row.
KEY = ("cell_id", "metric")
FORMAT_KEY = b"lossyvision.results_format"
FORMAT = b"2"

SCHEMA = pa.schema([
    ("sweep", pa.string()),
    ("model", pa.string()),
    ("task", pa.string()),
    ("codec", pa.string()),          # the codec the model trained on
    ("train_level", pa.float64()),
    ("test_codec", pa.string()),     # the codec of the test images (the same, or another: cross-codec)
    ("test_level", pa.float64()),
    ("repeat", pa.int64()),
    ("budget", pa.int64()),          # bytes; -1 = no budget axis
    ("metric", pa.string()),         # e.g. top1, top5, map50, miou, macc
    ("value", pa.float64()),
    ("ci_low", pa.float64()),        # interval of value: bootstrap over the test images
    ("ci_high", pa.float64()),
    ("confidence", pa.float64()),    # of the intervals, e.g. 0.95
    ("n_test_images", pa.int64()),
    ("rel", pa.float64()),           # 100 * value / baseline cell's value (same model, budget, repeat)
    ("rel_low", pa.float64()),       # paired interval of rel (same resampled images)
    ("rel_high", pa.float64()),
    ("baseline_cell", pa.string()),  # cell_id of the baseline
    ("train_dcr", pa.float64()),     # mean DCR against source of the train level (manifest)
    ("test_dcr", pa.float64()),      # mean DCR against source of the test level
    ("train_dcr_raw", pa.float64()), # same, against raw pixels
    ("test_dcr_raw", pa.float64()),
    ("train_bpp", pa.float64()),     # mean compressed bits per pixel of the train level
    ("test_bpp", pa.float64()),      # ... of the test level: the rate axis that compares codecs
    ("train_quality", pa.float64()), # mean achieved quality of the train level's measured images
    ("test_quality", pa.float64()),  # ... of the test level's (NaN unless compress.quality_metric is set)
    ("quality_metric", pa.string()), # ssimulacra2 | butteraugli | null
    ("n_train_images", pa.int64()),
    ("train_bytes", pa.int64()),     # compressed bytes the trial trained on
    ("trial_id", pa.string()),       # the trial's key (with its configuration hash)
    ("trial_hash", pa.string()),
    ("cell_id", pa.string()),        # the cell's key (with its configuration hash)
    ("cell_hash", pa.string()),
    ("finished_at", pa.string()),    # ISO 8601 UTC
    ("node", pa.string()),           # Ray node id that evaluated the cell (null outside Ray)
    ("trial_node", pa.string()),     # Ray node id the trial finished training on (trial.json's node)
    ("metric_rank", pa.int64()),     # the metric's place in its task's metric_names (0: the headline)
])

#: Columns added after results format 2 was fixed: older tables get them as nulls when read.
LATER_COLUMNS = ("node", "trial_node", "metric_rank")


RESULTS_NAME = "results.parquet"
RESULTS_CSV_NAME = "results.csv"


class ResultsError(ValueError):
    """``results.parquet`` cannot be used (damaged, or from an older lossyvision); the message says what to do."""


class DamagedResultsError(ResultsError, DamagedFileError):
    """``results.parquet`` is damaged: exits 1 like every other damaged file lossyvision wrote."""


def results_path(output: str) -> str:
    return join(str(output), RESULTS_NAME)


def empty_results():
    """An empty results table with the schema's columns and types."""
    return SCHEMA.empty_table().to_pandas()


def read_results(output: str):
    """``OUTPUT/results.parquet`` as a DataFrame (empty, with the schema's columns, if absent)."""
    import io

    import pyarrow.parquet as pq

    path = results_path(output)
    if not exists(path):
        return empty_results()
    try:
        table = pq.read_table(io.BytesIO(read_bytes(path)))
    except (pa.ArrowException, OSError) as e:
        raise DamagedResultsError(f"{path} is damaged ({str(e).splitlines()[0][:200]}); delete it and rerun "
                           "`lossyvision sweep run`: trained models are kept and only the evaluations rerun") from None
    if (table.schema.metadata or {}).get(FORMAT_KEY) != FORMAT:
        raise ResultsError(f"{path} was written by an earlier lossyvision (rows without configuration hashes); "
                           "run the sweep into a new output folder")
    df = table.to_pandas()
    for name in LATER_COLUMNS:
        if name not in df.columns:
            df[name] = None
    return df


def normalise(rows):
    """Rows (dicts or a DataFrame) as a DataFrame with exactly the schema's columns and types."""
    import pandas as pd

    df = pd.DataFrame(list(rows)) if not isinstance(rows, pd.DataFrame) else rows.copy()
    for name in LATER_COLUMNS:  # optional: rows made without them (older code, tests) get nulls
        if name not in df.columns:
            df[name] = None
    missing = [c for c in SCHEMA.names if c not in df.columns]
    if missing:
        raise ValueError(f"results rows lack column(s) {missing}")
    return pa.Table.from_pandas(df[SCHEMA.names], schema=SCHEMA, preserve_index=False).to_pandas()


def write_results(output: str, table) -> None:
    """Replace ``results.parquet`` and ``results.csv`` with ``table``, atomically. One writer (the driver)."""
    import io

    import pyarrow.parquet as pq

    arrow = pa.Table.from_pandas(normalise(table), schema=SCHEMA, preserve_index=False)
    arrow = arrow.replace_schema_metadata({**(arrow.schema.metadata or {}), FORMAT_KEY: FORMAT})
    buf = io.BytesIO()
    pq.write_table(arrow, buf)
    atomic_write_bytes(results_path(output), buf.getvalue())
    atomic_write_bytes(join(str(output), RESULTS_CSV_NAME), arrow.to_pandas().to_csv(index=False).encode())


def append_results(output: str, rows) -> int:
    """Add ``rows`` to ``OUTPUT/results.parquet`` (and ``results.csv``); returns how many were new.

    Rows whose :data:`KEY` is already present are dropped (the first one stays): appending the
    same cell twice changes nothing. Both files are rewritten atomically, so a kill leaves the
    previous table or the new one, never a torn file.
    """
    import pandas as pd

    new = normalise(rows)
    if new.empty:
        return 0
    old = read_results(output)
    before = len(old)
    table = pd.concat([old, new], ignore_index=True) if before else new
    table = table.drop_duplicates(subset=list(KEY), keep="first").reset_index(drop=True)
    added = len(table) - before
    if added:
        write_results(output, table)
    return added


def current_rows(results, cell_keys) -> "object":
    """The rows of the planned cells only: stale configurations are never mixed in."""
    keys = set(cell_keys)
    return results[results["cell_id"].isin(keys)].reset_index(drop=True)
