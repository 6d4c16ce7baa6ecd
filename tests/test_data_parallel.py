"""Data-parallel trials without Ray: how the ranks share a global batch, and their seeds (tests/test_scale_ray.py
runs the Ray Train trials)."""

from __future__ import annotations

import pytest

from lossyvision.seeding import worker_seed
from lossyvision.tasks.training import RankShare, world


@pytest.mark.parametrize("n,workers,batch", [(18, 2, 8), (36, 2, 8), (37, 4, 16), (10, 3, 6), (5, 2, 2)])
def test_ranks_take_equal_steps_and_global_batches_are_the_single_worker_batches(n, workers, batch):
    order = list(range(100, 100 + n))[::-1]
    per = batch // workers
    shares = [list(RankShare(order, r, workers, per)) for r in range(workers)]
    assert len({len(s) for s in shares}) == 1  # every rank the same number of images, so of steps
    steps = -(-len(shares[0]) // per)
    for k in range(steps):
        together = sorted(i for s in shares for i in s[k * per:(k + 1) * per])
        assert together == sorted(order[k * batch:(k + 1) * batch][:len(together)])
    assert not set.intersection(*map(set, shares))  # no image twice in an epoch
    assert all(len(s) % per != 1 or per == 1 for s in shares)  # no last batch of one image (BatchNorm)
    assert workers * len(shares[0]) >= n - workers - workers  # at most a few images dropped


def test_one_worker_keeps_the_trial_seed_and_ranks_get_their_own():
    assert worker_seed(1234, 0, 1) == 1234
    seeds = {worker_seed(1234, r, 4) for r in range(4)}
    assert len(seeds) == 4 and worker_seed(1234, 2, 4) == worker_seed(1234, 2, 4)


def test_without_a_process_group_a_trial_is_one_worker():
    assert world() == (0, 1)
