"""95 % intervals on every number: bootstrap over test images, and over repeats when there are any.

A cell's number is the mean over its repeats of a metric on its test images; both are samples
(of the images a user will see, of the training draws), so the interval resamples both with
``scipy.stats.bootstrap``: the images (one index array) and, with two or more repeats, the repeats
(a second array, resampled independently: a two-stage bootstrap). Every repeat sees the same
resampled images, as the repeats were tested on the same images.

Comparisons are paired. :func:`relative_interval` computes ``100 · cell / baseline`` with both
cells on the same resampled images (aligned by image id) and the same resampled repeats (repeat
``r`` of every train level shares its seed, :mod:`lossyvision.seeding`), so the test set's luck
cancels out of the ratio. And the resamples are drawn from a seed per model: with the same images,
every cell of a model is evaluated on the same draws.

Percentile intervals: the statistics (accuracy, mAP, mIoU and their ratios) are bounded and often
skewed near 1, and BCa's jackknife would cost one evaluation per image.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from lossyvision.metrics.base import Outcomes, weights_from_indices

CONFIDENCE = 0.95
RESAMPLES = 2000
#: Numbers held per bootstrap batch (resamples x cost of one), which bounds memory.
BATCH_BUDGET = 20_000_000


@dataclass(frozen=True)
class Interval:
    """An estimate with its two-sided interval; ``low``/``high`` are NaN when none can be drawn."""

    estimate: float
    low: float
    high: float
    n_images: int
    n_repeats: int
    confidence: float = CONFIDENCE

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2

    def contains(self, value: float) -> bool:
        return self.low <= value <= self.high

    def __str__(self) -> str:
        return f"{self.estimate:.4g} [{self.low:.4g}, {self.high:.4g}]"


def _common_ids(groups: Sequence[Sequence[Outcomes]]) -> list[str]:
    """Image ids every outcome has, in the first outcome's order."""
    first = [str(i) for i in groups[0][0].ids]
    common = set(first)
    for group in groups:
        for o in group:
            common &= {str(i) for i in o.ids}
    return [i for i in first if i in common]


def _aligned(groups: Sequence[Sequence[Outcomes]]) -> tuple[list[list[Outcomes]], int]:
    ids = _common_ids(groups)
    same = all(len(o) == len(ids) and list(map(str, o.ids)) == ids for g in groups for o in g)
    if same:
        return [list(g) for g in groups], len(ids)
    return [[o.aligned(ids) for o in g] for g in groups], len(ids)


def _bootstrap(stat, n_repeats: int, n_images: int, cost: int, *, confidence: float, n_resamples: int,
               seed: int) -> tuple[float, float]:
    """Percentile interval of ``stat(repeat_index (B, R), image_index (B, n)) -> (B,)``."""
    from scipy.stats import bootstrap

    if n_images < 2 or n_resamples < 1:
        return math.nan, math.nan
    data = (np.arange(n_repeats), np.arange(n_images)) if n_repeats > 1 else (np.arange(n_images),)

    def statistic(*resampled: np.ndarray, axis: int = -1) -> np.ndarray:
        if n_repeats > 1:
            r, i = resampled
        else:
            r, i = None, resampled[0]
        i = np.atleast_2d(i)
        r = np.zeros((i.shape[0], 1), dtype=np.int64) if r is None else np.atleast_2d(r)
        return stat(r, i)

    batch = max(1, min(n_resamples, BATCH_BUDGET // max(cost, 1)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # degenerate data (every image right) gives a zero-width interval
        res = bootstrap(data, statistic, paired=False, vectorized=True, method="percentile",
                        confidence_level=confidence, n_resamples=n_resamples, batch=batch,
                        random_state=np.random.default_rng(seed))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def _per_repeat(outcomes: Sequence[Outcomes], metric: str, image_index: np.ndarray, n: int) -> np.ndarray:
    """(R, B): the metric of every repeat on every resample of the images."""
    weights = weights_from_indices(image_index, n)
    return np.stack([o.weighted(weights)[metric] for o in outcomes])


def _mean_over_drawn(values: np.ndarray, repeat_index: np.ndarray) -> np.ndarray:
    """Mean over each resample's drawn repeats: ``values`` (R, B), ``repeat_index`` (B, k)."""
    return np.take_along_axis(values.T, repeat_index, axis=1).mean(axis=1)


def metric_interval(outcomes: Sequence[Outcomes], metric: str, *, confidence: float = CONFIDENCE,
                    n_resamples: int = RESAMPLES, seed: int = 0) -> Interval:
    """The mean of ``metric`` over repeats (one :class:`Outcomes` per repeat) and its interval."""
    if not outcomes:
        raise ValueError("no outcomes to take an interval of")
    (group,), n = _aligned([outcomes])
    estimate = float(np.mean([o.metrics()[metric] for o in outcomes]))

    def stat(r: np.ndarray, i: np.ndarray) -> np.ndarray:
        return _mean_over_drawn(_per_repeat(group, metric, i, n), r)

    low, high = _bootstrap(stat, len(group), n, max(o.resample_cost for o in group), confidence=confidence,
                           n_resamples=n_resamples, seed=seed)
    return Interval(estimate, low, high, n, len(group), confidence)


def relative_interval(cell: Sequence[Outcomes], baseline: Sequence[Outcomes], metric: str, *,
                      confidence: float = CONFIDENCE, n_resamples: int = RESAMPLES, seed: int = 0,
                      images_only: bool = False) -> Interval:
    """``100 · cell / baseline`` (means over repeats), paired on images and repeats, with its interval.

    ``cell[r]`` and ``baseline[r]`` must be the same repeat. Images are those both have. With
    ``images_only`` the repeats are held fixed (only the test images are resampled) and the cell
    and the baseline may have different numbers of them: the test images' part of an interval
    whose training runs' part :mod:`lossyvision.seedspread` adds.
    """
    if not cell or not baseline or (len(cell) != len(baseline) and not images_only):
        raise ValueError(f"{len(cell)} repeats of the cell but {len(baseline)} of the baseline")
    (c, b), n = _aligned([cell, baseline])
    if n == 0:
        raise ValueError("the cell and its baseline share no test image")
    base = float(np.mean([o.metrics()[metric] for o in b]))
    value = float(np.mean([o.metrics()[metric] for o in c]))
    estimate = 100.0 * value / base if base else math.nan

    def stat(r: np.ndarray, i: np.ndarray) -> np.ndarray:
        if images_only:
            num, den = _per_repeat(c, metric, i, n).mean(axis=0), _per_repeat(b, metric, i, n).mean(axis=0)
        else:
            num = _mean_over_drawn(_per_repeat(c, metric, i, n), r)
            den = _mean_over_drawn(_per_repeat(b, metric, i, n), r)
        # A resample where the baseline scores 0 (tiny test sets): the ratio is unbounded (+inf),
        # or, when the cell scores 0 too, no different (100): the interval says so instead of NaN.
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(den > 0, 100.0 * num / np.where(den > 0, den, 1.0), np.where(num > 0, np.inf, 100.0))

    cost = max(o.resample_cost for o in (*c, *b)) * 2
    low, high = _bootstrap(stat, 1 if images_only else len(c), n, cost, confidence=confidence,
                           n_resamples=n_resamples, seed=seed)
    return Interval(estimate, low, high, n, len(c), confidence)
