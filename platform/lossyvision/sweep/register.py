"""The registration policy of ``sweep run --register``: which trial's logged model the verdict advises, registered
under the user's name with the alias ``recommended``, and one line per model saying what happened."""

from __future__ import annotations

from typing import Any

from lossyvision.report.verdict import headline
from lossyvision.store import format_level
from lossyvision.sweep.plan import Grid
from lossyvision.sweep.layout import NO_BUDGET


def register_recommended(tracker: Any, grid: Grid, verdicts: list[Any], name: str) -> list[str]:
    """Register, under ``name``, the model of the level the verdict advises; one line per model says what happened.

    The level is the verdict's answer to "store everything at" (trained and tested at the same
    level) for the model's headline metric; its trial (repeat 0, no budget) has the logged model.
    No advised level (the data keep the originals, or cannot tell) registers nothing. With several
    models, each gets its own registered model, ``<name>-<model>``.
    """
    matched = [v for v in headline(verdicts) if v.question == "matched"]
    models = sorted({t.model for t in grid.trials})
    lines = []
    if not tracker.available:
        return [f"register {name}: nothing registered: MLflow is unreachable (run `lossyvision sweep run` again "
                "with --register once it is back)"]
    for model in models:
        target = name if len(models) == 1 else f"{name}-{model}"
        v = next((x for x in matched if x.model == model), None)
        if v is None or v.level is None:
            why = (f"the verdict for {v.metric} says '{v.outcome}'" if v is not None
                   else "the sweep has no verdict for it (too few results)")
            lines.append(f"register {target}: nothing registered: no advised level for {model} ({why})")
            continue
        trial = next((t for t in grid.trials if t.model == model and t.train_level == v.level and t.repeat == 0
                      and t.budget == NO_BUDGET), None)
        if trial is None:
            lines.append(f"register {target}: nothing registered: no trial of {model} at level {format_level(v.level)}")
            continue
        version = tracker.register_model(trial.key, target, tags={
            "lossyvision.sweep": tracker.sweep_name, "lossyvision.trial": trial.key, "level": format_level(v.level),
            "metric": v.metric, "rel": f"{v.rel:.2f}", "rel_low": f"{v.rel_low:.2f}"})
        if version is None:
            lines.append(f"register {target}: nothing registered: trial {trial.key} has no model in MLflow"
                         + (f" ({tracker.error})" if tracker.error else ""))
        else:
            lines.append(f"registered {target} version {version} (alias 'recommended'): {model} at distance "
                         f"{format_level(v.level)}, {v.metric} {v.rel:.1f}% of the baseline (lower bound "
                         f"{v.rel_low:.1f}%)")
    return lines
