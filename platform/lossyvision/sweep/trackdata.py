"""What a sweep's MLflow runs hold, built from the sweep and its results rows without MLflow: a trial's params,
its per-level test metrics and series, its ``cells`` table, its dataset inputs, and the verdict as a description.

The tracker (:mod:`lossyvision.sweep.tracking`) sends these; the names come from :mod:`lossyvision.sweep.mlnames`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable

import pandas as pd

from lossyvision.cache import cache_mode, describe
from lossyvision.codecs import DEFAULT_CODEC
from lossyvision.store import format_level
from lossyvision.sweep.mlnames import DCR_SERIES, LEVEL_SERIES, eval_metric_name, series_name

#: Columns of a trial's ``cells`` table (from the results rows).
CELL_COLUMNS = ("test_codec", "test_level", "test_dcr", "test_bpp", "metric", "value", "ci_low", "ci_high", "rel", "rel_low", "rel_high",
                "n_test_images", "train_level", "repeat", "budget", "cell_id")


def trial_params(sweep: Any, trial: Any, meta: dict[str, Any] | None, train_dcr: float | None) -> dict[str, Any]:
    """Params of a child run (n_images and bytes once the trial has run)."""
    spec = sweep.model(trial.model)
    params: dict[str, Any] = {
        "model": trial.model, "task": spec.task, "arch": spec.arch, "mode": spec.mode,
        "pretrained": spec.pretrained, "epochs": spec.epochs, "lr": spec.lr,
        "batch_size": spec.batch_size, "image_size": spec.image_size,
        "train_level": trial.train_level, "repeat": trial.repeat,
        "budget": trial.budget, "codec": trial.codec, "config_hash": trial.config, "seed": sweep.seed,
        "data_order": spec.data_order,  # changes what the model sees: runs are compared within one order
    }
    if spec.data_order != "random":
        params["shuffle_buffer"] = spec.shuffle_buffer
    if getattr(spec, "cache", None) is not None:  # docs/scale.md

        params["cache"] = describe(cache_mode(spec.cache))
    if getattr(sweep.resources.trial, "workers", 1) > 1:
        params["workers"] = sweep.resources.trial.workers
    if train_dcr is not None and train_dcr == train_dcr:
        params["train_dcr"] = round(float(train_dcr), 6)
    if meta:
        params["n_images"] = meta.get("n_train_images")
        params["train_bytes"] = meta.get("train_bytes")
        if meta.get("budget_exhausted"):
            params["budget_exhausted"] = True
    return params


@dataclass(frozen=True)
class DatasetRef:
    """A dataset input of a run: ``source`` is a folder or URI, ``digest`` the manifest rows' digest."""

    name: str
    source: str
    digest: str
    context: str  # "training" | "evaluation"


def eval_metrics_of(results: pd.DataFrame) -> dict[str, float]:
    """``test/<metric>/d<level>`` -> value for the rows of one trial."""
    return {eval_metric_name(r.metric, r.test_level, getattr(r, "test_codec", None) or DEFAULT_CODEC): float(r.value)
            for r in results.itertuples()}


def ladder_text(test_levels: Iterable[float]) -> str:
    """The sweep's sorted test levels as the series' steps index them: ``0,1,3,8``."""
    return ",".join(format_level(x) for x in sorted(float(v) for v in test_levels))


def eval_series_of(results: pd.DataFrame, test_levels: Iterable[float],
                   codec: str | None = None) -> dict[str, dict[int, float]]:
    """``by_test_level/<metric>``, ``/dcr`` and ``/level`` -> {step: value}, step = the level's index in the
    sorted test levels.

    Only the trial's own codec (``codec``) makes the series; cross-codec cells are in the per-level
    metrics and the cells table.
    """
    ladder = sorted(float(v) for v in test_levels)
    series: dict[str, dict[int, float]] = {}
    for r in results.itertuples():
        if codec is not None and (getattr(r, "test_codec", None) or codec) != codec:
            continue
        level = float(r.test_level)
        if level not in ladder:
            continue
        step = ladder.index(level)
        series.setdefault(series_name(r.metric), {})[step] = float(r.value)
        series.setdefault(LEVEL_SERIES, {})[step] = level
        dcr = getattr(r, "test_dcr", None)
        if dcr is not None and is_finite(dcr):
            series.setdefault(DCR_SERIES, {})[step] = float(dcr)
    return series


def cells_table_of(results: pd.DataFrame) -> pd.DataFrame:
    """A trial's rows for its ``cells`` table (level, DCR, value and intervals), by level and metric."""
    cols = [c for c in CELL_COLUMNS if c in results.columns]
    order = [c for c in ("test_codec", "test_level", "metric") if c in cols]
    return results[cols].sort_values(order, kind="stable").reset_index(drop=True)


def verdict_markdown(lines: Iterable[str]) -> str:
    """The report's verdict lines as the run's description: a bold heading per model, a bullet per answer."""
    out = ["### Verdict"]
    for line in lines:
        if line.startswith(" "):
            out.append(f"- {line.strip()}")
        else:
            out += ["", f"**{line.strip().rstrip(':')}**", ""]
    return "\n".join(out).strip() + "\n"


def is_finite(x: Any) -> bool:
    """A number MLflow can hold (not None, NaN or infinite)."""
    try:
        return math.isfinite(float(x))
    except (TypeError, ValueError):
        return False
