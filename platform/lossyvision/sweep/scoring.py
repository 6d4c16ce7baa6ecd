"""The driver's evaluation step: each finished cell leaves its predictions, its results rows, its MLflow metrics,
its state and a progress line, as the runner scores it."""

from __future__ import annotations

from typing import Any, Callable

import pandas as pd

from lossyvision import output as outdir
from lossyvision.progress import Log, SweepProgress
from lossyvision.spec import Sweep
from lossyvision.sweep.mlnames import eval_metric_name
from lossyvision.sweep.plan import CellSpec
from lossyvision.sweep.results import append_results
from lossyvision.sweep.status import DONE, FAILED, SweepState
from lossyvision.sweep.summary import SweepOutcome
from lossyvision.sweep.trackdata import eval_series_of, ladder_text
from lossyvision.sweep.trials import read_meta


def evaluate_grid(sweep: Sweep, cells_todo: list[CellSpec], manifest: pd.DataFrame, state: SweepState,
                  tracker: Any, outcome: SweepOutcome, echo: Log, evaluate_cells: Callable[..., dict[str, str]],
                  progress: SweepProgress | None = None) -> None:
    """Score ``cells_todo``; each finished cell leaves its predictions, results rows and MLflow metrics."""
    from lossyvision.sweep.evaluate import cell_rows  # lazy: loads torch

    output = sweep.output
    echo(f"evaluating {len(cells_todo)} cell(s) on {len({(c.test_codec, c.test_level) for c in cells_todo})} "
         "test level(s)")
    metas = {k: read_meta(output, k) for k in {c.trial.key for c in cells_todo}}
    done_count = [0]

    def on_cell(cell: CellSpec, outcomes: Any, error: str | None) -> None:
        if outcomes is None:
            state.set_cell(cell.key, FAILED, error)
            echo(f"cell {cell.key}: FAILED: {error}")
            return
        outdir.write_predictions(output, cell.key, outcomes)
        rows = cell_rows(sweep, cell, outcomes, metas[cell.trial.key], manifest)
        append_results(output, rows)
        if state.cell(cell.key):
            state.set_cell(cell.key, DONE)
        tracker.log_trial(cell.trial.key, {}, test_metrics={
            eval_metric_name(r["metric"], cell.test_level, cell.test_codec): r["value"] for r in rows},
            series=eval_series_of(pd.DataFrame(rows), sweep.arm(cell.trial.codec).test_levels, cell.trial.codec),
            test_levels=ladder_text(sweep.arm(cell.trial.codec).test_levels))
        done_count[0] += 1
        shown = " ".join(f"{r['metric']}={r['value']:.4g} [{r['ci_low']:.3g}, {r['ci_high']:.3g}]" for r in rows)
        echo(f"cell {cell.key}: {shown} ({done_count[0]}/{len(cells_todo)})")
        if progress is not None:
            echo(progress.cell_done())

    outcome.cell_failures = evaluate_cells(sweep, cells_todo, output, manifest, on_cell)
    outcome.cells_run = len(cells_todo)
