"""The grid's shape: which trials a sweep trains and which test points each is evaluated at, before any hash.

The planner (:func:`lossyvision.sweep.plan.plan`) lays the grid out from :func:`trial_points` and the sweep's
``test_points``; :func:`grid_counts` counts that same layout, so the size ``sweep plan`` shows and the cap
``sweep run`` checks cannot drift from the grid that runs. Plain Python (no pandas, no I/O): the schema's
grid cap (:func:`lossyvision.spec.check_grid`) uses it too.
"""

from __future__ import annotations

import itertools
from typing import Any, Iterator

#: The ``budget`` of a trial that trains on the whole split (a sweep without ``budgets``).
NO_BUDGET = -1


def trial_points(sweep: Any) -> Iterator[tuple[Any, Any, float, int, int]]:
    """``(arm, model, train level, repeat, budget)`` of each trial, in the planner's order: per codec, models x
    train levels x repeats (``repeats_at`` the level) x budgets."""
    budgets = list(sweep.budgets) if sweep.budgets else [NO_BUDGET]
    for arm in sweep.arms:
        for model, level in itertools.product(sweep.models, arm.train_levels):
            for repeat in range(sweep.repeats_at(level)):
                for budget in budgets:
                    yield arm, model, level, repeat, budget


def grid_counts(sweep: Any) -> tuple[int, int]:
    """(trials, evaluations) of a sweep: the planner's layout, counted."""
    trials = evaluations = 0
    for arm, _model, level, _repeat, budget in trial_points(sweep):
        trials += 1
        evaluations += len(sweep.test_points(arm.name, float(level), int(budget)))
    return trials, evaluations
