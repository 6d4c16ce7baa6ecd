"""Bytes saved at equal accuracy: a Bjøntegaard-style delta between two codecs' rate–accuracy curves.

The video-coding measure (Bjøntegaard, VCEG-M33), with accuracy in the place of PSNR: over the
range of accuracy both codecs reach, the mean difference of log-rate, as a percentage. ``-20``
means codec B needs 20 % fewer bits per pixel than codec A for the same accuracy. The integral is
the kept implementation's (PyPI ``bjontegaard``, piecewise cubic Hermite interpolation, as the
common test conditions use).

Accuracy is not PSNR: it saturates and wobbles, and the interpolation needs a curve whose accuracy
rises with the rate. Each curve is first reduced to its *frontier*: sorted by rate, a point is kept
only if it is more accurate than every cheaper point (a dearer, no better point says nothing about
the bytes needed for an accuracy). Fewer than two frontier points, or no overlap of the two
accuracy ranges, and there is no delta: NaN, and the report says the data cannot tell.

The interval comes from the bootstrap over test images (:func:`bd_rate_interval`): every resample
recomputes each level's accuracy and mean bits per pixel on the same resampled images, then the
delta; the percentile interval of those deltas is the answer's uncertainty. Resamples whose curves
no longer overlap have no delta: the interval is over the others, and none is given unless at least
half of the resamples overlap.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from lossyvision.metrics.base import Outcomes, weights_from_indices


def frontier(rate: Sequence[float], quality: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """The points of a rate–quality curve that no cheaper point matches: rate and quality both rising."""
    r = np.asarray(rate, dtype=float)
    q = np.asarray(quality, dtype=float)
    keep = np.isfinite(r) & np.isfinite(q) & (r > 0)
    r, q = r[keep], q[keep]
    order = np.lexsort((-q, r))  # by rate; at equal rate the better point first
    best = -math.inf
    out_r, out_q = [], []
    for i in order:
        if q[i] > best:
            out_r.append(r[i])
            out_q.append(q[i])
            best = q[i]
    return np.asarray(out_r), np.asarray(out_q)


def bd_rate(rate_a: Sequence[float], quality_a: Sequence[float], rate_b: Sequence[float],
            quality_b: Sequence[float], method: str = "pchip") -> float:
    """Mean % change in rate of B against A at equal quality, over the overlapping quality range (NaN: none)."""
    import bjontegaard as bd

    ra, qa = frontier(rate_a, quality_a)
    rb, qb = frontier(rate_b, quality_b)
    if len(ra) < 2 or len(rb) < 2:
        return math.nan
    if min(qa.max(), qb.max()) <= max(qa.min(), qb.min()):
        return math.nan  # the accuracy ranges do not overlap
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "insufficient overlap": a short overlap is still a delta over it
        value = bd.bd_rate(ra, qa, rb, qb, method=method, require_matching_points=False, min_overlap=0.0)
    return float(value)


@dataclass(frozen=True)
class CodecCurve:
    """One codec's points: per level, the cell's outcomes and each test image's bits per pixel."""

    codec: str
    levels: list[float]
    outcomes: list[Outcomes]             # per level, the test images' outcomes
    bits_per_pixel: list[dict[str, float]]  # per level, image id -> bits per pixel

    def points(self, metric: str) -> tuple[np.ndarray, np.ndarray]:
        """(mean bits per pixel, metric) per level, on all images."""
        rate = [float(np.mean(list(b.values()))) for b in self.bits_per_pixel]
        return np.asarray(rate), np.asarray([o.metrics()[metric] for o in self.outcomes])


@dataclass(frozen=True)
class BdResult:
    codec_a: str
    codec_b: str
    metric: str
    bd_rate: float            # % rate change of B against A at equal metric (negative: B saves)
    low: float
    high: float
    n_images: int
    compared: float = 0.0     # fraction of resamples whose curves overlapped (the interval is over those)


def bd_rate_interval(a: CodecCurve, b: CodecCurve, metric: str, *, confidence: float = 0.95,
                     n_resamples: int = 1000, seed: int = 0) -> BdResult:
    """:func:`bd_rate` of B against A with a percentile bootstrap interval over the shared test images."""
    from scipy.stats import bootstrap

    ids = sorted(set.intersection(*[set(map(str, o.ids)) for o in (*a.outcomes, *b.outcomes)],
                                  *[set(bpp) for bpp in (*a.bits_per_pixel, *b.bits_per_pixel)]))
    n = len(ids)
    if n < 2:
        return BdResult(a.codec, b.codec, metric, math.nan, math.nan, math.nan, n)
    aligned = [[o.aligned(ids) for o in c.outcomes] for c in (a, b)]
    bpp = [[np.asarray([m[i] for i in ids]) for m in c.bits_per_pixel] for c in (a, b)]

    def curve(k: int, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        total = w.sum()
        rate = np.asarray([float(w @ x) / total for x in bpp[k]])
        quality = np.asarray([float(o.weighted(w[None])[metric][0]) for o in aligned[k]])
        return rate, quality

    def delta(w: np.ndarray) -> float:
        (ra, qa), (rb, qb) = curve(0, w), curve(1, w)
        return bd_rate(ra, qa, rb, qb)

    estimate = delta(np.ones(n))

    def statistic(index: np.ndarray, axis: int = -1) -> np.ndarray:
        index = np.atleast_2d(index)
        return np.asarray([delta(w) for w in weights_from_indices(index, n)])

    low = high = math.nan
    compared = 0.0
    if math.isfinite(estimate) and n_resamples > 0:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = bootstrap((np.arange(n),), statistic, vectorized=True, method="percentile", batch=50,
                            confidence_level=confidence, n_resamples=n_resamples,
                            random_state=np.random.default_rng(seed))
        # A resample whose curves do not overlap has no delta: the interval is over those that do,
        # and ``compared`` says how many that was (scipy's own interval would be NaN).
        deltas = np.asarray(res.bootstrap_distribution, dtype=float)
        finite = deltas[np.isfinite(deltas)]
        compared = len(finite) / len(deltas)
        if len(finite) >= 0.5 * len(deltas):
            alpha = (1 - confidence) / 2
            low, high = (float(x) for x in np.percentile(finite, [100 * alpha, 100 * (1 - alpha)]))
    return BdResult(a.codec, b.codec, metric, estimate, low, high, n, compared)
