"""From result rows to grid cells: means over repeats, 95 % intervals, and values relative to a baseline.

One *cell* is (model, metric, budget, codec, train level, test codec, test level): the codec a model
trained on, and the codec of its test images (the same one, or another in a cross-codec sweep). Its
``mean`` averages the repeats.

With the per-image outcomes of the cells (``OUTPUT/predictions``, an :class:`OutcomeSource`) the
intervals are bootstrap intervals over the test images and, with repeats, over the repeats
(:mod:`lossyvision.intervals`), and a cell's value relative to its group's baseline is a *paired*
ratio: both cells on the same resampled images and repeats. Without outcomes (tables made by hand,
tests) the interval is the t-interval over repeats, and relative values are the cell's interval
rescaled by the baseline's mean.

The *baseline* of a (model, metric, budget, codec) group is its codec's most faithful cell: trained
and tested at its most faithful levels (JPEG XL's distance 0, JPEG's highest quality), on its own codec.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np
import pandas as pd

from lossyvision.codecs import CODECS, DEFAULT_CODEC
from lossyvision.intervals import metric_interval, relative_interval
from lossyvision.output import read_predictions
from lossyvision.seedspread import pooled_spread, trained_interval

GROUP = ("model", "metric", "budget", "codec")
CELL = GROUP + ("train_level", "test_codec", "test_level")

#: ``source(cell_id) -> Outcomes`` (raises ``KeyError``/``OSError``/``ValueError`` when missing).
OutcomeSource = Callable[[str], Any]


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


class PredictionsCache:
    """Reads cells' outcomes from ``OUTPUT/predictions`` once each (an :data:`OutcomeSource`)."""

    def __init__(self, output: str) -> None:
        self.output = str(output)
        self._cache: dict[str, Any] = {}

    def __call__(self, cell_id: str) -> Any:
        if cell_id not in self._cache:
            self._cache[cell_id] = read_predictions(self.output, cell_id)
        return self._cache[cell_id]


def cell_outcomes(source: OutcomeSource | None, cell_ids: list[str]) -> list[Any] | None:
    if source is None:
        return None
    try:
        return [source(c) for c in cell_ids]
    except (KeyError, OSError, ValueError, FileNotFoundError):
        return None


def cell_table(results: pd.DataFrame, outcomes: OutcomeSource | None = None, *, confidence: float = 0.95,
               resamples: int = 2000, seed_of: Callable[[str], int] = lambda model: 0,
               missing: list[str] | None = None) -> pd.DataFrame:
    """One row per cell: n (repeats), mean, std, ci_low, ci_high, n_images, the mean train/test DCRs,
    ``cell_ids`` and ``values`` (one per repeat, in repeat order) and ``interval`` (how it was computed)."""
    needed = (set(CELL) - {"codec", "test_codec"}) | {"value", "repeat"}
    absent = sorted(needed - set(results.columns))
    if absent:
        raise ReportError(f"results lack column(s) {absent}")
    df = with_codecs(results)
    for col in ("train_dcr", "test_dcr", "train_bpp", "test_bpp", "train_quality", "test_quality"):
        if col not in df.columns:
            df[col] = np.nan
    if "quality_metric" not in df.columns:
        df["quality_metric"] = None
    if "cell_id" not in df.columns:
        df["cell_id"] = None
    if "metric_rank" not in df.columns:
        df["metric_rank"] = np.nan
    df = df[np.isfinite(df["value"].astype(float))]
    columns = list(CELL) + ["n", "mean", "std", "ci_low", "ci_high", "n_images", "train_dcr", "test_dcr",
                            "train_bpp", "test_bpp", "train_quality", "test_quality", "quality_metric", "cell_ids",
                            "values", "interval", "metric_rank"]
    if df.empty:
        return pd.DataFrame(columns=columns)
    rows = []
    for key, g in df.groupby(list(CELL), sort=True):
        g = g.sort_values("repeat")
        v = g["value"].to_numpy(dtype=float)
        ids = [str(c) for c in g["cell_id"]]
        found = cell_outcomes(outcomes, ids) if g["cell_id"].notna().all() else None
        if found is not None:
            ci = metric_interval(found, str(key[1]), confidence=confidence, n_resamples=resamples,
                                 seed=seed_of(str(key[0])))
            lo, hi, n_images, how = ci.low, ci.high, ci.n_images, "bootstrap"
        else:
            if outcomes is not None and missing is not None:
                missing.append(f"{key[0]}/{key[1]} train {key[3]} {key[4]:g} test {key[5]} {key[6]:g}")
            lo, hi = t_interval(v, confidence)
            if len(v) == 1 and {"ci_low", "ci_high"} <= set(g.columns):
                lo, hi = float(g["ci_low"].iloc[0]), float(g["ci_high"].iloc[0])
            n_images = (int(g["n_test_images"].iloc[0])
                        if "n_test_images" in g.columns and pd.notna(g["n_test_images"].iloc[0]) else -1)
            how = "t over repeats" if len(v) > 1 else ("bootstrap (row)" if math.isfinite(lo) else "none")
        rows.append({**dict(zip(CELL, key)), "n": len(v), "mean": float(v.mean()),
                     "std": float(v.std(ddof=1)) if len(v) > 1 else math.nan, "ci_low": lo, "ci_high": hi,
                     "n_images": n_images,
                     "train_dcr": float(g["train_dcr"].astype(float).mean()),
                     "test_dcr": float(g["test_dcr"].astype(float).mean()),
                     "train_bpp": float(g["train_bpp"].astype(float).mean()),
                     "test_bpp": float(g["test_bpp"].astype(float).mean()),
                     "train_quality": float(g["train_quality"].astype(float).mean()),
                     "test_quality": float(g["test_quality"].astype(float).mean()),
                     "quality_metric": next((str(m) for m in g["quality_metric"] if m), None),
                     "cell_ids": ids, "values": [float(x) for x in v], "interval": how,
                     "metric_rank": float(pd.to_numeric(g["metric_rank"], errors="coerce").min())})
    return pd.DataFrame(rows, columns=columns)


def with_codecs(results: pd.DataFrame) -> pd.DataFrame:
    """``results`` with ``codec`` and ``test_codec`` columns (tables from before codecs: JPEG XL)."""
    df = results.copy()
    if "codec" not in df.columns:
        df["codec"] = DEFAULT_CODEC
    if "test_codec" not in df.columns:
        df["test_codec"] = df["codec"]
    df["codec"] = df["codec"].fillna(DEFAULT_CODEC)
    df["test_codec"] = df["test_codec"].fillna(df["codec"])
    return df


def most_faithful(codec: str, levels: Any) -> float:
    """The level of ``codec`` that loses least (JPEG XL: the smallest distance; JPEG: the highest quality)."""
    levels = [float(x) for x in levels]
    if codec in CODECS:
        return CODECS.get(codec).by_fidelity(levels)[0]
    return min(levels)


def baseline_levels(cells: pd.DataFrame) -> tuple[float, float]:
    """(train level, test level) of the baseline cell of one (model, metric, budget, codec) group's cells."""
    if cells.empty:
        raise ReportError("no cells to take a baseline from")
    codec = str(cells["codec"].iloc[0]) if "codec" in cells.columns else DEFAULT_CODEC
    own = cells[cells["test_codec"] == codec] if "test_codec" in cells.columns else cells
    own = own if not own.empty else cells
    train = most_faithful(codec, own["train_level"])
    test = most_faithful(codec, own.loc[own["train_level"] == train, "test_level"])
    return train, test


def relative_cells(cells: pd.DataFrame, skipped: list[str] | None = None, outcomes: OutcomeSource | None = None, *,
                   confidence: float = 0.95, resamples: int = 2000,
                   seed_of: Callable[[str], int] = lambda model: 0) -> pd.DataFrame:
    """Add ``baseline_train_level``, ``baseline_test_level``, ``baseline`` and ``rel``/``rel_low``/``rel_high`` (%).

    ``rel_test_low``/``rel_test_high`` is the test images' interval of the ratio: with ``outcomes``
    a paired bootstrap (the shared test images' luck cancels), without them the cell's interval
    rescaled by the baseline's mean. ``rel_low``/``rel_high`` is the interval of the claim a cell
    makes. A cell trained at the baseline's level is about that trained model (the model the
    "serve compressed test data" question serves): its test images' interval, over its repeats
    too when it has several. Any other cell is about *models trained at its level*: the test
    images' interval widened by the spread between training runs (:mod:`lossyvision.seedspread`),
    pooled over the trained levels with two or more repeats at the same test point; with no such
    level the spread is not measured and the claim's interval is NaN (``rel_interval`` says so).
    A group whose baseline is 0 (a model that learnt nothing) has no relative values: it raises
    :class:`ReportError`, or, when a ``skipped`` list is given, is left out with a note appended.
    """
    cells = with_codecs(cells)
    if "values" not in cells.columns:
        cells = cells.assign(values=[[float(m)] * int(n) for m, n in zip(cells["mean"], cells["n"])])
    out = []
    for _, g in cells.groupby(list(GROUP), sort=True):
        train, test = baseline_levels(g)
        base_row = g.loc[(g["train_level"] == train) & (g["test_level"] == test)
                         & (g["test_codec"] == g["codec"])].iloc[0]
        base = float(base_row["mean"])
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
        g["rel_interval"] = "rescaled"
        base_ids = list(base_row["cell_ids"]) if "cell_ids" in g.columns else []
        base_out = cell_outcomes(outcomes, base_ids) if base_ids else None
        if base_out is not None:
            for idx, row in g.iterrows():
                cell_out = cell_outcomes(outcomes, list(row["cell_ids"]))
                at_base = float(row["train_level"]) == train
                if cell_out is None or (at_base and len(cell_out) != len(base_out)):
                    continue
                ci = relative_interval(cell_out, base_out, str(row["metric"]), confidence=confidence,
                                       n_resamples=resamples, seed=seed_of(str(row["model"])), images_only=not at_base)
                g.loc[idx, ["rel", "rel_low", "rel_high", "rel_interval"]] = [
                    ci.estimate, ci.low, ci.high, "paired" if at_base else "images"]
        g["rel_test_low"], g["rel_test_high"] = g["rel_low"], g["rel_high"]
        out.append(_with_seed_spread(g, train, base, int(base_row["n"]), confidence))
    if not out:
        return cells.iloc[0:0].assign(baseline_train_level=[], baseline_test_level=[], baseline=[], rel=[],
                                      rel_low=[], rel_high=[], rel_interval=[], rel_test_low=[], rel_test_high=[],
                                      spread_sd=[], spread_df=[], spread=[])
    return pd.concat(out, ignore_index=True)


def _with_seed_spread(g: pd.DataFrame, base_train: float, base: float, n_base: int, confidence: float) -> pd.DataFrame:
    """Widen the intervals of cells trained away from the baseline by the spread between training runs."""
    g = g.assign(spread_sd=math.nan, spread_df=0, spread="")
    for _, point in g.groupby(["test_codec", "test_level"], sort=False):
        spread = pooled_spread({float(r["train_level"]): [100.0 * x / base for x in r["values"]]
                                for _, r in point.iterrows()})
        for idx, row in point.iterrows():
            if float(row["train_level"]) == base_train:
                continue
            g.loc[idx, ["spread_sd", "spread_df", "spread"]] = [spread.sd, spread.df, spread.describe()]
            if row["rel_interval"] == "rescaled" and int(row["n"]) > 1:
                continue  # a t-interval over the cell's own repeats already holds their spread
            low, high = trained_interval(float(row["rel"]), float(row["rel_test_low"]), float(row["rel_test_high"]),
                                         spread, int(row["n"]), n_base, confidence)
            how = "images+seeds" if spread.measured else "seeds not measured"
            g.loc[idx, ["rel_low", "rel_high", "rel_interval"]] = [low, high, how]
    return g
