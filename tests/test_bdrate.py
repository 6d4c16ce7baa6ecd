"""Bytes saved at equal accuracy: the Bjøntegaard-style delta on curves with a known answer."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lossyvision.bdrate import CodecCurve, bd_rate, bd_rate_interval, frontier
from report_data import outcomes_for


def test_frontier_keeps_the_points_no_cheaper_point_matches():
    r, q = frontier([4, 1, 3, 2, 5, 5], [0.8, 0.5, 0.65, 0.7, 0.79, 0.9])
    assert r.tolist() == [1, 2, 4, 5] and q.tolist() == [0.5, 0.7, 0.8, 0.9]
    assert frontier([1, 2], [0.5, float("nan")])[0].tolist() == [1]


@pytest.mark.parametrize("ratio", [0.8, 0.5, 1.25])
def test_two_curves_offset_by_a_known_byte_ratio(ratio):
    """B stores every accuracy in ``ratio`` times A's bytes: the delta is exactly (ratio - 1)."""
    q = np.array([0.55, 0.65, 0.72, 0.8, 0.86])
    rate_a = np.exp(0.3 + 3.1 * q)
    assert bd_rate(rate_a, q, ratio * rate_a, q) == pytest.approx(100 * (ratio - 1), abs=1e-9)
    # B measured at other accuracies of the same curve: still the same delta over the overlap
    q_b = np.array([0.6, 0.7, 0.78, 0.84])
    assert bd_rate(rate_a, q, ratio * np.exp(0.3 + 3.1 * q_b), q_b) == pytest.approx(100 * (ratio - 1), abs=0.5)


def test_no_overlap_or_too_few_points_is_no_answer():
    assert math.isnan(bd_rate([1, 2], [0.5, 0.6], [1, 2], [0.7, 0.8]))
    assert math.isnan(bd_rate([1, 2], [0.5, 0.6], [1, 1.5], [0.55, 0.55]))  # B's frontier: one point


def test_the_interval_comes_from_resampling_the_test_images():
    n = 300
    levels = [1.0, 2.0, 3.0]
    outcomes = [outcomes_for(acc, n=n, seed=k) for k, acc in enumerate((0.9, 0.8, 0.65))]
    ids = [str(i) for i in outcomes[0].ids]
    rng = np.random.default_rng(0)
    bpp_a = [dict(zip(ids, rng.uniform(0.5, 1.5, n) * 2.0 ** -k)) for k in range(3)]
    a = CodecCurve("jpegxl", levels, outcomes, bpp_a)
    # B: the very same images and predictions in 0.8 times the bits: every resample says -20 %
    b = CodecCurve("avif", levels, outcomes, [{i: 0.8 * v for i, v in m.items()} for m in bpp_a])
    res = bd_rate_interval(a, b, "top1", n_resamples=200, seed=1)
    assert res.bd_rate == pytest.approx(-20.0) and res.low == pytest.approx(-20.0) and res.high == pytest.approx(-20.0)
    assert res.n_images == n
    # C: its own predictions, a little less accurate at each level: an interval around its delta
    worse = [outcomes_for(acc, n=n, seed=10 + k) for k, acc in enumerate((0.88, 0.78, 0.62))]
    c = CodecCurve("jpeg", levels, worse, bpp_a)
    res_c = bd_rate_interval(a, c, "top1", n_resamples=200, seed=1)
    assert res_c.bd_rate > 0 and res_c.low < res_c.bd_rate < res_c.high
