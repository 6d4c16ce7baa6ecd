"""What OUTPUT knows about a sweep's trials, sent to MLflow through a tracker (only what the runs lack):
the sweep's params, each trial's params, history, metrics, inputs and cells table, and its model."""

from __future__ import annotations

import time
from typing import Any

import pandas as pd

from lossyvision.progress import Log
from lossyvision.spec import Sweep
from lossyvision.store import format_level, join, level_dir
from lossyvision.sweep.models import loggable_model
from lossyvision.sweep.plan import Grid, TrialSpec, level_dcr
from lossyvision.sweep.results import current_rows
from lossyvision.sweep.trackdata import (
    DatasetRef, cells_table_of, eval_metrics_of, eval_series_of, ladder_text, trial_params)
from lossyvision.sweep.trials import finished_keys, read_meta


def sweep_params(sweep: Sweep, grid: Grid) -> dict[str, Any]:
    return {
        "n_trials": len(grid.trials), "n_evaluations": len(grid.cells), "plan": grid.digest,
        "models": ",".join(m.name for m in sweep.models),
        "train_levels": " ".join(f"{a.name}:" + ",".join(format_level(x) for x in a.train_levels) for a in sweep.arms),
        "test_levels": " ".join(f"{a.name}:" + ",".join(format_level(x) for x in a.test_levels) for a in sweep.arms),
        "repeats": sweep.repeats, "seed": sweep.seed,
        "seed_spread": (f"{sweep.seed_spread.repeats}@" + ",".join(format_level(x) for x in sweep.seed_spread.levels)
                        if sweep.seed_spread else None), "codec": ",".join(a.name for a in sweep.arms),
        "budgets": ",".join(str(b) for b in sweep.budgets) if sweep.budgets else None,
        "dataset": sweep.dataset.kind,
    }


def push_trials(tracker: Any, sweep: Sweep, grid: Grid, manifest: pd.DataFrame | None,
                results: pd.DataFrame, failures: dict[str, str] | None = None) -> int:
    """Send everything known about the grid's trials to MLflow (only what is missing); returns how many.

    Params, epoch history, dataset inputs, test metrics per level and as series, the ``cells`` table
    and the run's status. Models go separately (:func:`push_models`).
    """
    failures = failures or {}
    results = current_rows(results, [c.key for c in grid.cells])
    n = 0
    for trial in grid.trials:
        if not tracker.available:
            break
        meta = _meta_or_none(sweep.output, trial.key)
        if meta is None and trial.key not in failures:
            continue
        train_dcr = meta.get("train_dcr") if meta else (
            level_dcr(manifest, sweep.train_split, trial.train_level, trial.codec).vs_source
            if manifest is not None else None)
        rows = results[results["trial_id"] == trial.key]
        expected = len(grid.cells_of(trial))
        got = rows["cell_id"].nunique()
        status = "FAILED" if trial.key in failures else ("FINISHED" if got >= expected else None)
        tracker.log_trial(trial.key, trial_params(sweep, trial, meta, train_dcr),
                          history=(meta or {}).get("history", ()), test_metrics=eval_metrics_of(rows),
                          series=eval_series_of(rows, sweep.arm(trial.codec).test_levels, trial.codec),
                          test_levels=ladder_text(sweep.arm(trial.codec).test_levels),
                          inputs=dataset_refs(sweep, grid, trial), cells=cells_table_of(rows), status=status)
        n += 1
    return n


def dataset_refs(sweep: Sweep, grid: Grid, trial: TrialSpec) -> list[Any]:
    """A trial's MLflow dataset inputs: the store level it trained on and the levels it is tested on.

    Sources are the store's level folders; digests are the manifest rows' digests the trial's and
    cells' configuration hashes were made of (``plan.json`` identities), so an input changes
    exactly when the data does.
    """
    def ref(split: str, codec: str, level: float, digest: str | None, context: str) -> list[DatasetRef]:
        if not digest:
            return []
        folder = level_dir(codec, level)
        return [DatasetRef(f"{folder} {split}", join(sweep.store_uri, folder), str(digest), context)]

    refs = ref(sweep.train_split, trial.codec, trial.train_level,
               grid.identities.get(trial.key, {}).get("train_rows"), "training")
    for cell in grid.cells_of(trial):
        refs += ref(sweep.test_split, cell.test_codec, cell.test_level,
                    grid.identities.get(cell.key, {}).get("test_rows"), "evaluation")
    return refs


def push_models(tracker: Any, sweep: Sweep, grid: Grid, manifest: pd.DataFrame | None, echo: Log) -> int:
    """Log the model of every finished trial whose run has none yet (read from its checkpoint); returns how many."""
    done = finished_keys(sweep.output, [t.key for t in grid.trials])
    n = 0
    for trial in grid.trials:
        if not tracker.available:
            break
        if trial.key not in done or tracker.has_model(trial.key):
            continue
        t0 = time.time()
        try:
            model = loggable_model(sweep, trial, sweep.output, manifest)
        except Exception as e:  # noqa: BLE001 - a model MLflow cannot get is a warning, never a failed sweep
            echo(f"warning: MLflow: cannot prepare the model of trial {trial.key} ({type(e).__name__}: {e})")
            continue
        if model is None:
            continue
        if tracker.log_model(trial.key, model):
            n += 1
            echo(f"MLflow: logged the model of trial {trial.key} ({time.time() - t0:.0f}s)")
    return n


def _meta_or_none(output: str, key: str) -> dict[str, Any] | None:
    try:
        return read_meta(output, key)
    except (FileNotFoundError, OSError, ValueError):
        return None
