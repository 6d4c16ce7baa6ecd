"""The between-run spread: pooling, its check, and the coverage of the widened interval by simulation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lossyvision.seedspread import NOT_MEASURED, extra_trainings, pooled_spread, trained_interval


def test_pooled_variance_is_the_anova_within_level_variance():
    spread = pooled_spread({0: [99.0, 100.0, 101.0], 8: [97.0, 99.0], 3: [98.5]})
    # (2 * 1.0 + 1 * 2.0) / (2 + 1); level 3 has one value and carries no spread
    assert spread.variance == pytest.approx(4.0 / 3.0)
    assert spread.df == 3 and spread.levels == (0.0, 8.0) and spread.pooled
    assert 0.0 < spread.levene_p <= 1.0
    assert "pooled over trained levels 0, 8" in spread.describe()


def test_unequal_spreads_are_not_pooled():
    rng = np.random.default_rng(1)
    calm, wild = 100 + 0.05 * rng.standard_normal(12), 100 + 5.0 * rng.standard_normal(12)
    spread = pooled_spread({1: calm, 8: wild})
    assert not spread.pooled and spread.levene_p < 0.05
    assert spread.variance == pytest.approx(np.var(wild, ddof=1)) and spread.df == 11
    assert "spreads differ" in spread.describe()


def test_one_repeat_measures_nothing():
    assert pooled_spread({0: [100.0], 1: [99.0]}) is NOT_MEASURED
    assert not NOT_MEASURED.measured
    assert all(math.isnan(x) for x in trained_interval(99.0, 98.0, 100.0, NOT_MEASURED, 1, 1, 0.95))
    assert "not measured" in NOT_MEASURED.describe()


def test_the_seed_variance_widens_the_test_interval_with_a_t_quantile():
    spread = pooled_spread({0: [99.0, 101.0], 8: [99.0, 101.0]})  # variance 2, df 2
    low, high = trained_interval(100.0, 99.0, 101.0, spread, 1, 1, 0.95)
    assert low < 99.0 and high > 101.0 and low == pytest.approx(200.0 - high)
    # the seeds' part alone: t(2) * sqrt(2 * (1 + 1)) is wider than the normal quantile's
    only_seeds = trained_interval(100.0, 100.0, 100.0, spread, 1, 1, 0.95)
    assert only_seeds[1] - 100.0 == pytest.approx(4.303 * 2.0, rel=1e-3)
    # more repeats in the cell and the baseline narrow it
    assert trained_interval(100.0, 99.0, 101.0, spread, 3, 3, 0.95)[0] > low
    # an asymmetric bootstrap interval stays asymmetric
    lo, hi = trained_interval(100.0, 98.0, 100.5, spread, 1, 1, 0.95)
    assert 100.0 - lo > hi - 100.0


def test_extra_trainings_names_the_cheapest_setting():
    n, setting = extra_trainings([0, 1, 3, 8], repeats=3)
    assert n == 4 and setting == "seed_spread: {levels: [0, 8], repeats: 3}"


@pytest.mark.parametrize("repeats_at_ends, sd_seed, sd_test", [(3, 0.8, 0.45), (2, 1.2, 0.3), (5, 0.4, 0.9)])
def test_coverage_by_simulation(repeats_at_ends, sd_seed, sd_test):
    """Spread measured at the baseline and the most compressed level, one run elsewhere: the 95 %
    interval of a singly-trained level covers its true relative value in 93-98 % of 4,000 sweeps."""
    rng = np.random.default_rng(repeats_at_ends)
    truth, n_sweeps, covered, lower_ok = 98.0, 4000, 0, 0
    for _ in range(n_sweeps):
        base = 100.0 + sd_seed * rng.standard_normal(repeats_at_ends)
        end = 95.0 + sd_seed * rng.standard_normal(repeats_at_ends)
        spread = pooled_spread({0: base, 8: end})
        one_run = truth + sd_seed * rng.standard_normal() + sd_test * rng.standard_normal()
        rel = one_run - base.mean() + 100.0
        # the test images' bootstrap interval (its own estimate of sd_test, a little noisy)
        se = sd_test * (1 + 0.05 * rng.standard_normal())
        low, high = trained_interval(rel, rel - 1.96 * se, rel + 1.96 * se, spread, 1, repeats_at_ends, 0.95)
        covered += low <= truth <= high
        lower_ok += low <= truth
    coverage = covered / n_sweeps
    assert 0.93 <= coverage <= 0.985, coverage
    assert lower_ok / n_sweeps >= 0.965  # the one-sided claim "keeps >= low" errs at most ~2.5 %
