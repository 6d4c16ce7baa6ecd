"""The spread between training runs: how much a claim about *models trained at a level* must widen.

A cell's test-image interval (:mod:`lossyvision.intervals`) says how sure we are of *this* trained
model on new test images. A claim about models trained at a level must also carry the spread
between training runs: a new seed trains a different model. Repeats are independent seeds, so the
variance of one run's relative value between repeats estimates that spread.

Few repeats give a poor variance, so it is pooled: a one-way random-effects (ANOVA) within-level
variance over every trained level with two or more repeats, ``sum((n_l - 1) s_l^2) / sum(n_l - 1)``,
whose degrees of freedom add up over levels. Pooling assumes the spread is the same at every level;
Levene's test (``scipy.stats.levene``, median-centred: Brown-Forsythe) checks it, and when it rejects
at 5 % the largest level's variance, with its own degrees of freedom, is used instead.

The interval then adds the two variances, the test images' (read off the bootstrap interval, each
side on its own) and the seeds' (the pooled variance over the cell's and the baseline's repeats),
with a t quantile at the Welch-Satterthwaite degrees of freedom: with three repeats at two levels,
t(4) = 2.78 instead of 1.96. Treating the cell's and the baseline's seeds as independent ignores that
repeat ``r`` of every level shares its seed (which makes them alike), so the interval errs wide.
Coverage is checked by simulation in ``tests/test_seedspread.py``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np

#: Levene's p-value under which the levels' spreads are taken as different (no pooling).
POOLING_ALPHA = 0.05


@dataclass(frozen=True)
class Spread:
    """Between-training-run variance of one run's relative value (percent points squared)."""

    variance: float                 # NaN when not measured
    df: int                         # degrees of freedom; 0 when not measured
    levels: tuple[float, ...] = ()  # trained levels it was measured at
    levene_p: float = math.nan      # equal spread across those levels; NaN with fewer than 2 levels
    pooled: bool = True             # False: Levene rejected, the largest level's variance was used

    @property
    def measured(self) -> bool:
        return self.df > 0 and math.isfinite(self.variance)

    @property
    def sd(self) -> float:
        return math.sqrt(self.variance) if self.measured else math.nan

    def describe(self, name: Callable[[float], str] = lambda level: f"{level:g}") -> str:
        """One clause for the report: what was measured and under which assumption (``name`` writes a level)."""
        if not self.measured:
            return "the spread between training runs is not measured (one repeat per level)"
        at = ", ".join(name(x) for x in self.levels)
        how = (f"pooled over trained levels {at}" if self.pooled else
               f"the largest of levels {at} (their spreads differ: Levene p = {self.levene_p:.3f})")
        check = ("" if not self.pooled or not math.isfinite(self.levene_p)
                 else f"; equal spread not rejected, Levene p = {self.levene_p:.2f}")
        return f"between-run sd {self.sd:.2f} points, {how}, {self.df} degrees of freedom{check}"


NOT_MEASURED = Spread(math.nan, 0)


def pooled_spread(per_level: Mapping[float, Sequence[float]]) -> Spread:
    """``trained level -> per-repeat relative values (%)`` to the spread of one run's value.

    Levels with fewer than two finite values carry no spread and are left out.
    """
    from scipy.stats import levene

    groups: dict[float, np.ndarray] = {}
    for level, values in per_level.items():
        v = np.asarray(values, dtype=float)
        v = v[np.isfinite(v)]
        if len(v) >= 2:
            groups[float(level)] = v
    if not groups:
        return NOT_MEASURED
    levels = tuple(sorted(groups))
    dfs = {lv: len(v) - 1 for lv, v in groups.items()}
    variances = {lv: float(np.var(v, ddof=1)) for lv, v in groups.items()}
    df = sum(dfs.values())
    pooled = sum(dfs[lv] * variances[lv] for lv in levels) / df
    p = math.nan
    if len(groups) >= 2 and any(variances[lv] > 0 for lv in levels):
        with np.errstate(all="ignore"):
            p = float(levene(*(groups[lv] for lv in levels), center="median").pvalue)
    if math.isfinite(p) and p < POOLING_ALPHA:
        widest = max(levels, key=lambda lv: variances[lv])
        return Spread(variances[widest], dfs[widest], levels, p, pooled=False)
    return Spread(pooled, df, levels, p, pooled=True)


def trained_interval(rel: float, test_low: float, test_high: float, spread: Spread, n_cell: int, n_base: int,
                     confidence: float) -> tuple[float, float]:
    """The interval of a relative value about models trained at a level, or ``(nan, nan)``.

    ``test_low``/``test_high`` is the cell's test-image interval at ``confidence`` (repeats held
    fixed); each side's standard error is read off it with the normal quantile, the seeds'
    variance ``spread.variance * (1/n_cell + 1/n_base)`` is added, and the quantile is Student's t
    at the Welch-Satterthwaite degrees of freedom (the test images' part counting as infinite,
    one quantile for both sides).
    """
    from scipy.stats import norm, t

    if not spread.measured or not all(math.isfinite(x) for x in (rel, test_low, test_high)):
        return math.nan, math.nan
    if n_cell < 1 or n_base < 1:
        raise ValueError(f"repeats must be >= 1 (cell {n_cell}, baseline {n_base})")
    z = float(norm.ppf(0.5 + confidence / 2))
    seeds = spread.variance * (1.0 / n_cell + 1.0 / n_base)
    images = [((rel - test_low) / z) ** 2, ((test_high - rel) / z) ** 2]
    # one quantile for both sides (from their mean image variance), so a skewed bootstrap interval stays skewed
    total = float(np.mean(images)) + seeds
    df = total ** 2 / (seeds ** 2 / spread.df) if seeds > 0 else math.inf
    q = float(t.ppf(0.5 + confidence / 2, df)) if math.isfinite(df) else z
    bounds = [rel + side * q * math.sqrt(var + seeds) for side, var in zip((-1.0, 1.0), images)]
    return bounds[0], bounds[1]


def extra_trainings(levels: Sequence[float], repeats: int = 3) -> tuple[int, str]:
    """The cheapest way to measure the spread: ``repeats`` runs at the baseline and the most
    compressed level (``seed_spread`` in the sweep file), as (extra trainings, the setting)."""
    ends = sorted({float(levels[0]), float(levels[-1])}) if len(levels) else []
    at = ", ".join(f"{x:g}" for x in ends)
    return len(ends) * (repeats - 1), f"seed_spread: {{levels: [{at}], repeats: {repeats}}}"
