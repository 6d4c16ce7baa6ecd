"""``lossyvision advise``: fit the scaling law to a budget sweep's output and recommend a level.

Reads ``OUTPUT/results.parquet``, ``OUTPUT/sweep.yaml`` and the store's ``manifest.parquet``
(bytes per image per level, images available), fits :mod:`lossyvision.scaling`, predicts the best
level for each of the sweep's budgets and for the budget asked, and writes everything to
``OUTPUT/scaling_fit.json``. Refusals are results too: they are reported and saved, not raised.
"""

from __future__ import annotations

import io
import math
import re
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import pyarrow.parquet as pq

from lossyvision import store
from lossyvision.budget import bytes_per_image, images_available as count_images
from lossyvision.output import OutputError, OutputFolder
from lossyvision.scaling import (
    AdvicePolicy,
    AdviceRefused,
    LevelAdvice,
    ScalingFit,
    check_fit,
    fit_scaling_law,
    optimal_level,
    scaling_points,
)
from lossyvision.sweep.results import ResultsError
from lossyvision.units import format_bytes

_COUNT_UNITS = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "b": 10**9, "t": 10**12}
_COUNT = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([a-zA-Z]?)\s*$")


def parse_count(value: str | int) -> int:
    """``"10M" -> 10_000_000``, ``"1.5k" -> 1500``; suffixes k, M, G (or B, billion), T."""
    if isinstance(value, int) and not isinstance(value, bool):
        if value <= 0:
            raise ValueError(f"a count must be > 0, got {value}")
        return value
    match = _COUNT.match(str(value))
    if not match or match.group(2).lower() not in _COUNT_UNITS:
        raise ValueError(f"not a count: {value!r} (use e.g. 50000, 1.5k, 10M)")
    count = float(match.group(1)) * _COUNT_UNITS[match.group(2).lower()]
    if count < 1 or not count.is_integer():
        raise ValueError(f"not a whole number of images >= 1: {value!r}")
    return int(count)


@dataclass
class BudgetAdvice:
    budget: int
    images_available: int
    source: str                       # "sweep" (one of the sweep's budgets) or "asked"
    advice: LevelAdvice | None = None
    refused: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"budget": self.budget, "images_available": self.images_available,
                               "source": self.source, "refused": self.refused}
        if self.advice is not None:
            out.update(self.advice.to_dict())
        return out


@dataclass
class AdviceReport:
    selection: dict[str, Any]
    fit: ScalingFit | None = None
    refused: str | None = None        # the fit as a whole cannot support advice
    budgets: list[BudgetAdvice] = field(default_factory=list)

    @property
    def any_refused(self) -> bool:
        return self.refused is not None or any(b.refused for b in self.budgets)

    def to_dict(self) -> dict[str, Any]:
        return {"selection": self.selection, "fit": self.fit.to_dict() if self.fit else None,
                "refused": self.refused, "advice": [b.to_dict() for b in self.budgets]}


def _read_parquet(uri: str) -> pd.DataFrame:
    return pq.read_table(io.BytesIO(store.read_bytes(uri))).to_pandas()


def load_inputs(output: str, store_uri: str | None = None) -> tuple[pd.DataFrame, Any, pd.DataFrame]:
    """The results, the sweep and the manifest of a sweep output; ValueError says what is missing.

    All of it through :class:`OutputFolder`; only the manifest is read from the store (a budget sweep's advice
    needs its bytes per image)."""
    folder = OutputFolder(output)
    if not folder.has_results():
        raise ValueError(f"{folder.results_file} does not exist: is {output} the output folder of a budget sweep?")
    try:  # only the rows of the sweep's current configuration, never an edited sweep's stale ones
        results, _ = folder.current_results()
    except (OutputError, ResultsError) as e:
        if isinstance(e, store.DamagedFileError):  # exits 1, as every damaged file does
            raise
        raise ValueError(str(e)) from None
    if not folder.has_sweep():
        raise ValueError(f"{folder.sweep_copy} does not exist: is {output} the output folder of a sweep run?")
    sweep = folder.sweep()
    candidates = [store_uri] if store_uri else list(dict.fromkeys([sweep.store_uri, folder.default_store]))
    for uri in candidates:
        manifest_uri = store.join(uri, store.MANIFEST_NAME)
        if store.exists(manifest_uri):
            return results, sweep, _read_parquet(manifest_uri)
    raise ValueError(f"no store manifest found (looked in {', '.join(candidates)}); pass --store")


def advise_output(output: str, *, budget: int | None = None, images_available: int | None = None,
                  metric: str | None = None, model: str | None = None,
                  test_level: float | str | None = None, store_uri: str | None = None,
                  n_bootstrap: int = 300, seed: int = 0, policy: AdvicePolicy = AdvicePolicy(),
                  write: bool = True) -> AdviceReport:
    """Fit and advise for a sweep output; writes ``OUTPUT/scaling_fit.json`` when ``write``."""
    results, sweep, manifest = load_inputs(output, store_uri)
    if test_level is None and sweep.eval_levels == "same" and sweep.budgets:
        test_level = "same"
    points, selection = scaling_points(results, metric=metric, model=model, test_level=test_level)
    arm = sweep.arms[0]  # a budget sweep has one codec (spec.py refuses budgets with several)
    level_table = bytes_per_image(manifest, sweep.train_split, arm.name)
    level_table = level_table[[any(math.isclose(lv, t) for t in arm.train_levels) for lv in level_table.index]]
    if level_table.empty:
        raise ValueError(f"the manifest has no ok {sweep.train_split!r} images at the sweep's train levels "
                         f"{arm.train_levels}")
    n_dataset = count_images(manifest, sweep.train_split)
    selection = {**selection, "train_levels": [float(v) for v in level_table.index],
                 "bytes_per_image": {str(k): float(v) for k, v in level_table.items()},
                 "dataset_images": n_dataset}
    report = AdviceReport(selection=selection)
    try:
        report.fit = fit_scaling_law(points, n_bootstrap=n_bootstrap, seed=seed)
        check_fit(report.fit, policy)
    except AdviceRefused as e:
        report.refused = str(e)
    if report.refused is None:
        asks = [(int(b), n_dataset, "sweep") for b in (sweep.budgets or [])]
        if budget is not None:
            asks.append((int(budget), int(images_available or n_dataset), "asked"))
        for b, n_avail, source in asks:
            item = BudgetAdvice(budget=b, images_available=n_avail, source=source)
            try:
                item.advice = optimal_level(report.fit, b, n_avail, level_table, policy=policy)
            except AdviceRefused as e:
                item.refused = str(e)
            report.budgets.append(item)
    if write:
        folder = OutputFolder(output)
        folder.write_json(folder.scaling_fit, _finite(report.to_dict()), indent=2, allow_nan=False,
                          default=_json_default)
    return report


def _finite(obj: Any) -> Any:
    """NaN and infinities as null, so the JSON is strict (browsers and jq reject NaN)."""
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    if hasattr(obj, "item") and not isinstance(obj, (str, bytes)):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "item"):
        return obj.item()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def format_report(report: AdviceReport) -> str:
    """The human summary ``lossyvision advise`` prints."""
    sel = report.selection
    level = sel["test_level"]
    where = "the train level" if level == "same" else f"test level {level:g}"
    lines = []
    fit = report.fit
    if fit is not None:
        lines.append("Scaling law  err = Err* + A*n^-alpha + B*L^-beta  (n images, L bytes/image)")
        lines.append(f"  fitted to {fit.n_points} points: model {sel['model']}, error = 1 - {sel['metric']} "
                     f"on {where}")
        lines.append(f"  {'param':<9}{'value':>12}   {fit.confidence:.0%} bootstrap interval")
        for name, value in fit.params.items():
            lo, hi = fit.intervals[name]
            lines.append(f"  {name:<9}{value:>12.4g}   [{lo:.4g}, {hi:.4g}]")
        r2 = f"{fit.r2:.3f}" if math.isfinite(fit.r2) else "n/a"
        lines.append(f"  R^2 {r2}, residual RMSE {fit.rmse:.4f}, {fit.n_bootstrap} bootstrap refits "
                     f"({fit.failed_bootstrap_fraction:.0%} failed)")
    if report.refused:
        lines.append(f"\nNo advice: {report.refused}")
    for item in report.budgets:
        lines.append(f"\nBudget {format_bytes(item.budget)} ({item.source}), "
                     f"{item.images_available:,} images available:")
        if item.refused:
            lines.append("  refused: " + item.refused.replace("\n", "\n  "))
            continue
        adv = item.advice
        lines.append(f"  {'level':>7} {'bytes/img':>10} {'n images':>10}  predicted error   interval")
        for p in adv.predictions:
            mark = " *" if p.level == adv.best_level else "  "
            cap = " (all)" if p.limited_by == "images" else ""
            lines.append(f"  {p.level:>7g}{mark}{format_bytes(p.bytes_per_image):>9} {p.n_images:>10,}"
                         f"  {p.error:>15.4f}   [{p.low:.4f}, {p.high:.4f}]{cap}")
        best = adv.best
        lines.append(f"  -> store at level {best.level:g}: predicted {sel['metric']} {1 - best.error:.4f} "
                     f"with {best.n_images:,} images ({adv.best_agreement:.0%} of bootstrap fits agree)")
    return "\n".join(lines)
