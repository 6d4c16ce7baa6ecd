"""Fills the relative columns of ``results.parquet`` as cells are evaluated, during a sweep.

The sweep layer is the one writer of an output's results: the report (:mod:`lossyvision.report.cells`)
only reads them, and computes the same paired ratios for its tables.
"""

from __future__ import annotations

from typing import Any

from lossyvision.intervals import relative_interval
from lossyvision.report.cells import PredictionsCache, cell_outcomes, most_faithful
from lossyvision.seeding import bootstrap_seed
from lossyvision.sweep.results import read_results, write_results


def fill_relative(output: str, sweep: Any, grid: Any) -> int:
    """Fill the ``rel`` columns of ``results.parquet`` for current rows that lack them; returns how many.

    Per repeat: each row against the baseline cell of the same model, budget and repeat, paired on
    the test images (:func:`lossyvision.intervals.relative_interval`). Rows whose baseline is not
    evaluated yet stay empty until a later run fills them.
    """
    results = read_results(output)
    if results.empty:
        return 0
    planned = {c.key: c for c in grid.cells}
    baselines: dict[tuple[str, int, str], dict[int, str]] = {}
    for (model, budget, codec), cells in _by_trial_group(grid.cells).items():
        own = [c for c in cells if c.test_codec == codec]
        train = most_faithful(codec, [c.trial.train_level for c in own])
        test = most_faithful(codec, [c.test_level for c in own if c.trial.train_level == train])
        baselines[(model, budget, codec)] = {c.trial.repeat: c.key for c in own
                                             if c.trial.train_level == train and c.test_level == test}
    source = PredictionsCache(output)
    todo = results.index[results["cell_id"].isin(planned.keys()) & results["rel"].isna()]
    filled = 0
    for idx in todo:
        row = results.loc[idx]
        cell = planned[row["cell_id"]]
        # the baseline run of the same repeat (same seed); repeat 0's where only some levels have more
        by_repeat = baselines[(cell.trial.model, cell.trial.budget, cell.trial.codec)]
        base_key = by_repeat.get(cell.trial.repeat, by_repeat[min(by_repeat)])
        found = cell_outcomes(source, [row["cell_id"], base_key])
        if found is None:
            continue
        ci = relative_interval([found[0]], [found[1]], str(row["metric"]), confidence=sweep.report.confidence,
                               n_resamples=sweep.report.resamples,
                               seed=bootstrap_seed(sweep.seed, cell.trial.model))
        results.loc[idx, ["rel", "rel_low", "rel_high", "baseline_cell"]] = [ci.estimate, ci.low, ci.high, base_key]
        filled += 1
    if filled:
        write_results(output, results)
    return filled


def _by_trial_group(cells: list[Any]) -> dict[tuple[str, int, str], list[Any]]:
    groups: dict[tuple[str, int, str], list[Any]] = {}
    for c in cells:
        groups.setdefault((c.trial.model, c.trial.budget, c.trial.codec), []).append(c)
    return groups
