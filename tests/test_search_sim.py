"""The adaptive search's policy against a synthetic trainer: its error rate and its cost, by simulation.

No torch, no Ray: a "training" at ladder index i, repeat r returns the metric a model would score,
drawn from a known response curve (the true relative value of models trained at i), a seed effect
(independent per training, as repeats are independent seeds) and a test-sampling effect (one per
level, shared by every repeat tested on the same images). The searches drive the same
:func:`lossyvision.sweep.search.decide` the Tune searcher replays.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import binomtest, norm

from lossyvision.sweep.search import Obs, SearchConfig, decide

LEVELS = 12
REPEATS = 3
BASE_ACC = 0.8
SEED_SD = 0.5    # points of the baseline: between-run spread (the demo measured 0.4-1.4)
TEST_SD = 0.35   # points: test-sampling error of a cell's relative value


def _curve(rng: np.random.Generator) -> np.ndarray:
    """A falling response: 100 at the baseline, down by 0.5-8 points at the end, of random shape."""
    drop, power = rng.uniform(0.5, 8.0), rng.uniform(0.7, 3.0)
    return 100.0 - drop * (np.arange(LEVELS) / (LEVELS - 1)) ** power


def _paired(obs: dict[tuple[int, int], Obs]):
    """The sweep's paired test-image interval, as the simulator knows it: the level's relative value (its
    repeats' mean over the baseline's) with the test-sampling error it was drawn with, TEST_SD."""
    def interval(level, repeats, confidence):
        rel = 100.0 * np.mean([obs[(level, r)].value for r in repeats]) / np.mean([obs[(0, r)].value for r in repeats])
        half = float(norm.ppf(0.5 + confidence / 2)) * TEST_SD
        return rel, rel - half, rel + half
    return interval


def _search(rng: np.random.Generator, truth: np.ndarray, config: SearchConfig, paired: bool = True):
    test_effect = np.r_[0.0, rng.normal(0.0, TEST_SD, LEVELS - 1)]
    obs: dict[tuple[int, int], Obs] = {}
    for _ in range(200):
        d = decide(LEVELS, obs, config, test_interval=_paired(obs) if paired else None)
        if d.done:
            return d, len(obs)
        assert d.train, "nothing running, so the policy must ask for trainings or stop"
        for i, r in d.train:
            assert (i, r) not in obs
            rel = truth[i] + test_effect[i] + rng.normal(0.0, SEED_SD)
            obs[(i, r)] = Obs(BASE_ACC * rel / 100.0, BASE_ACC * TEST_SD / 100.0)
    raise AssertionError("the search did not end")


def _run(curves, config: SearchConfig, n: int, seed: int, paired: bool = True):
    rng = np.random.default_rng(seed)
    wrong, trainings, advised = 0, [], 0
    for _ in range(n):
        truth = curves(rng)
        d, used = _search(rng, truth, config, paired)
        trainings.append(used)
        if d.advised is not None:
            advised += 1
            wrong += truth[d.advised] < config.threshold
            assert d.claim["status"] == "keeps" and d.claim["low"] >= config.threshold
    return wrong, np.array(trainings), advised


@pytest.mark.parametrize("paired", [True, False], ids=["paired", "unpaired"])
def test_a_thousand_searches_hold_the_error_rate_at_a_third_of_the_grid(paired):
    """Paired: the sweep's confirmation (test images paired with the baseline's); unpaired: the fallback
    where predictions are missing (wider)."""
    config = SearchConfig(keep=0.98, confidence=0.95, repeats=REPEATS, parallel=2)
    wrong, trainings, advised = _run(_curve, config, 1000, seed=0, paired=paired)
    full_grid = LEVELS * REPEATS
    # (a) advising a level whose true relative value is under the threshold: at most 5 %, at 95 % confidence
    upper = binomtest(wrong, 1000).proportion_ci(0.95, method="exact").high
    assert upper <= 0.05, (wrong, upper)
    # (b) the median search trains at most a third of the full grid with the same repeats
    assert np.median(trainings) <= full_grid / 3, (np.median(trainings), full_grid)
    assert trainings.max() <= 1 + LEVELS + 2 * REPEATS
    # not vacuous: the search does advise levels
    assert advised >= 300, advised
    print(f"\nsearch simulator ({'paired' if paired else 'unpaired'}): {wrong}/1000 wrong advice (95% upper bound {upper:.3f}), {advised} advised, "
          f"median {np.median(trainings):g} trainings (max {trainings.max()}) vs the full grid's {full_grid}")


@pytest.mark.parametrize("paired", [True, False], ids=["paired", "unpaired"])
def test_a_plateau_just_under_the_threshold_is_rarely_advised(paired):
    """The adversarial case: every level loses by a little, so any advice is wrong; exploration passes
    some levels by luck, and only the fresh seeds stand between them and the answer."""
    config = SearchConfig(keep=0.99, confidence=0.95, repeats=REPEATS, parallel=2, margin=0.0)

    def plateau(rng):
        return np.r_[100.0, np.full(LEVELS - 1, 98.9)]

    wrong, _, _ = _run(plateau, config, 1000, seed=1, paired=paired)
    upper = binomtest(wrong, 1000).proportion_ci(0.95, method="exact").high
    assert upper <= 0.05, (wrong, upper)


def test_a_curve_that_rises_again_is_reported_and_not_followed():
    """Non-monotone truth: the search keeps to the first failure and names the contradiction."""
    truth = np.r_[100.0, 99.8, 99.6, 95.0, 95.0, 95.0, 99.9, 99.9, 99.9, 99.9, 99.9, 99.9]
    config = SearchConfig(keep=0.98, repeats=REPEATS, parallel=3)
    obs: dict[tuple[int, int], Obs] = {}
    while True:
        d = decide(LEVELS, obs, config)
        if d.done:
            break
        for i, r in d.train:
            obs[(i, r)] = Obs(BASE_ACC * (truth[i] + 0.01 * r) / 100.0, 1e-4)
    assert d.advised is not None and d.advised <= 2
    assert d.contradictions and all(truth[i] > 99 for i in d.contradictions)
    assert any("contradict" in s.finding for s in d.path)
