"""From result rows to grid cells: means over repeats, 95% t-intervals, and values relative to a baseline.

One *cell* is (model, metric, budget, train level, test level). Its ``mean`` averages the repeats;
with two or more repeats ``ci_low``/``ci_high`` is the two-sided t-interval of that mean
(``mean ± t_{n-1} · s / sqrt(n)``), otherwise both are NaN.

The *baseline* of a (model, metric, budget) group is the cell at (train level 0, test level 0), or,
when a sweep has no level 0, at the smallest train level and the smallest test level observed with
it. Relative values are ``100 · value / baseline mean``: the baseline's own noise is not folded into
a cell's interval (the interval is the cell's interval, rescaled).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

GROUP = ("model", "metric", "budget")
CELL = GROUP + ("train_level", "test_level")


class ReportError(ValueError):
    """Results or a store the report cannot use; the message says what is wrong."""


def t_interval(values: np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    """Two-sided t-interval of the mean; NaNs for fewer than two values."""
    from scipy.stats import t

    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    n = len(values)
    if n < 2:
        return math.nan, math.nan
    mean = float(values.mean())
    half = float(t.ppf(0.5 + confidence / 2, n - 1)) * float(values.std(ddof=1)) / math.sqrt(n)
    return mean - half, mean + half


def cell_table(results: pd.DataFrame, confidence: float = 0.95) -> pd.DataFrame:
    """One row per cell: n, mean, std, ci_low, ci_high and the mean train/test DCRs."""
    needed = set(CELL) | {"value", "repeat"}
    missing = sorted(needed - set(results.columns))
    if missing:
        raise ReportError(f"results lack column(s) {missing}")
    df = results.copy()
    for col in ("train_dcr", "test_dcr"):
        if col not in df.columns:
            df[col] = np.nan
    df = df[np.isfinite(df["value"].astype(float))]
    if df.empty:
        return pd.DataFrame(columns=list(CELL) + ["n", "mean", "std", "ci_low", "ci_high", "train_dcr", "test_dcr"])
    rows = []
    for key, g in df.groupby(list(CELL), sort=True):
        v = g["value"].to_numpy(dtype=float)
        lo, hi = t_interval(v, confidence)
        rows.append({**dict(zip(CELL, key)), "n": len(v), "mean": float(v.mean()),
                     "std": float(v.std(ddof=1)) if len(v) > 1 else math.nan, "ci_low": lo, "ci_high": hi,
                     "train_dcr": float(g["train_dcr"].astype(float).mean()),
                     "test_dcr": float(g["test_dcr"].astype(float).mean())})
    return pd.DataFrame(rows)


def baseline_levels(cells: pd.DataFrame) -> tuple[float, float]:
    """(train level, test level) of the baseline cell of one group's cells."""
    if cells.empty:
        raise ReportError("no cells to take a baseline from")
    train = float(cells["train_level"].min())
    test = float(cells.loc[cells["train_level"] == train, "test_level"].min())
    return train, test


def relative_cells(cells: pd.DataFrame, skipped: list[str] | None = None) -> pd.DataFrame:
    """Add ``baseline_train_level``, ``baseline_test_level``, ``baseline`` and ``rel``/``rel_low``/``rel_high`` (%).

    A group whose baseline is 0 (a model that learnt nothing) has no relative values: it raises
    :class:`ReportError`, or, when a ``skipped`` list is given, is left out with a note appended.
    """
    out = []
    for _, g in cells.groupby(list(GROUP), sort=True):
        train, test = baseline_levels(g)
        base = float(g.loc[(g["train_level"] == train) & (g["test_level"] == test), "mean"].iloc[0])
        if base == 0 or not math.isfinite(base):
            msg = (f"baseline value of {g['model'].iloc[0]}/{g['metric'].iloc[0]} at train level "
                   f"{train:g}, test level {test:g} is {base}: relative values are undefined")
            if skipped is None:
                raise ReportError(msg)
            skipped.append(msg)
            continue
        g = g.copy()
        g["baseline_train_level"], g["baseline_test_level"], g["baseline"] = train, test, base
        for src, dst in (("mean", "rel"), ("ci_low", "rel_low"), ("ci_high", "rel_high")):
            g[dst] = 100.0 * g[src] / base
        out.append(g)
    if not out:
        return cells.iloc[0:0].assign(baseline_train_level=[], baseline_test_level=[], baseline=[], rel=[],
                                      rel_low=[], rel_high=[])
    return pd.concat(out, ignore_index=True)
