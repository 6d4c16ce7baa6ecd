"""The grid as data: which trials to train and which (trial, test level) cells to evaluate.

Everything here is a pure function of the sweep file (and the manifest). A trial is keyed by
(model, train level, repeat, budget), a cell by a trial plus a test level; resuming a sweep is
"drop the keys already done", nothing more.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass
from typing import Any, Iterable, Mapping

import pandas as pd

from lossyvision.store import format_level
from lossyvision.sweep.results import NO_BUDGET

OK = "ok"


class PlanError(ValueError):
    """The sweep cannot be planned (e.g. a level is missing from the compressed store)."""


@dataclass(frozen=True, order=True)
class TrialSpec:
    """One training run: a model trained at one compression level (one repeat, one budget)."""

    model: str
    train_level: float
    repeat: int = 0
    budget: int = NO_BUDGET

    @property
    def key(self) -> str:
        """``vit__d2__r0`` (``__b50000000`` appended with a budget): path- and tag-safe."""
        key = f"{self.model}__d{format_level(self.train_level)}__r{self.repeat}"
        return key if self.budget == NO_BUDGET else f"{key}__b{self.budget}"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "TrialSpec":
        return cls(model=str(d["model"]), train_level=float(d["train_level"]),
                   repeat=int(d.get("repeat", 0)), budget=int(d.get("budget", NO_BUDGET)))


@dataclass(frozen=True, order=True)
class CellSpec:
    """One evaluation: a trained trial tested at one compression level."""

    trial: TrialSpec
    test_level: float

    @property
    def key(self) -> str:
        return f"{self.trial.key}__t{format_level(self.test_level)}"


@dataclass(frozen=True)
class GridSize:
    trials: int
    evaluations: int
    trials_todo: int
    evaluations_todo: int

    def describe(self) -> str:
        return (f"grid: {self.trials} trials, {self.evaluations} evaluations "
                f"({self.trials_todo} trials and {self.evaluations_todo} evaluations to run)")


def compress_levels(sweep: Any) -> list[float]:
    """Every level the store must hold: the union of train and test levels."""
    return sorted(set(sweep.train_levels) | set(sweep.test_levels))


def plan(sweep: Any, manifest: pd.DataFrame | None = None) -> list[TrialSpec]:
    """All trials of ``sweep``: models x train levels x repeats (x budgets), in a stable order.

    With a ``manifest``, every train level must have ok images in the train split: a level
    without any is a :class:`PlanError` naming it (rather than a trial failing later).
    """
    if manifest is not None:
        _check_levels(manifest, sweep.train_split, sweep.train_levels, sweep.codec.name)
        _check_levels(manifest, sweep.test_split, sweep.test_levels, sweep.codec.name)
    budgets = list(sweep.budgets) if sweep.budgets else [NO_BUDGET]
    return [TrialSpec(m.name, float(level), repeat, int(budget))
            for m, level, repeat, budget in itertools.product(
                sweep.models, sweep.train_levels, range(sweep.repeats), budgets)]


def test_levels_for(sweep: Any, trial: TrialSpec) -> list[float]:
    """Test levels a trial is evaluated on: all of them, or for budget sweeps per ``eval_levels``."""
    levels = list(sweep.test_levels)
    if trial.budget == NO_BUDGET or sweep.eval_levels == "all":
        return levels
    if sweep.eval_levels == "same":
        return [trial.train_level]
    return [levels[0]]  # baseline: the first (least compressed) test level


def cells(sweep: Any, trials: Iterable[TrialSpec]) -> list[CellSpec]:
    """Every (trial, test level) evaluation, in trial order then test level."""
    return [CellSpec(t, float(level)) for t in trials for level in test_levels_for(sweep, t)]


def pending(specs: Iterable[Any], done_keys: Iterable[str]) -> list[Any]:
    """The specs whose ``.key`` is not in ``done_keys``, order kept: the whole of resuming."""
    done = set(done_keys)
    return [s for s in specs if s.key not in done]


def cell_key_of_row(row: Mapping[str, Any]) -> str:
    """The cell key a results row belongs to."""
    trial = TrialSpec.from_dict(row)
    return CellSpec(trial, float(row["test_level"])).key


def done_cell_keys(results: pd.DataFrame) -> set[str]:
    """Cells with rows in the results table (a cell's rows are written together)."""
    if results is None or results.empty:
        return set()
    cols = ["model", "train_level", "repeat", "budget", "test_level"]
    return {cell_key_of_row(r) for r in results[cols].drop_duplicates().to_dict("records")}


def grid_size(all_trials: list[TrialSpec], all_cells: list[CellSpec],
              trials_todo: list[TrialSpec] | None = None,
              cells_todo: list[CellSpec] | None = None) -> GridSize:
    return GridSize(len(all_trials), len(all_cells),
                    len(all_trials if trials_todo is None else trials_todo),
                    len(all_cells if cells_todo is None else cells_todo))


# --- the manifest side -----------------------------------------------------------------------------
def ok_rows(manifest: pd.DataFrame, split: str, level: float, codec: str | None = None) -> pd.DataFrame:
    """Manifest rows of one split and level that compressed fine, sorted by relpath."""
    m = manifest
    mask = (m["split"] == split) & (m["level"].astype(float) == float(level)) & (m["status"] == OK)
    if codec is not None and "codec" in m.columns:
        mask &= m["codec"] == codec
    return m[mask].sort_values("relpath", kind="stable")


@dataclass(frozen=True)
class LevelDcr:
    """Mean DCR of one (split, level) of the store, against the source files and raw pixels."""

    vs_source: float
    vs_raw: float
    n_images: int


def level_dcr(manifest: pd.DataFrame, split: str, level: float, codec: str | None = None) -> LevelDcr:
    """Mean ``dcr_vs_source``/``dcr_vs_raw`` over ok rows (NaN when the level has no ok rows)."""
    rows = ok_rows(manifest, split, level, codec)
    if rows.empty:
        return LevelDcr(math.nan, math.nan, 0)
    return LevelDcr(float(rows["dcr_vs_source"].mean()), float(rows["dcr_vs_raw"].mean()), len(rows))


def _check_levels(manifest: pd.DataFrame, split: str, levels: Iterable[float], codec: str) -> None:
    missing = [format_level(lv) for lv in levels if ok_rows(manifest, split, lv, codec).empty]
    if missing:
        raise PlanError(f"the compressed store has no {split!r} images at level(s) {', '.join(missing)} "
                        f"for codec {codec!r}; was it compressed with these levels?")
