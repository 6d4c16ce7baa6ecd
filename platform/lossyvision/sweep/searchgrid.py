"""The search as the sweep sees it: its candidate trials (the grid's keys), the cells each needs, its results, search.json.

The policy (:mod:`lossyvision.sweep.search`) speaks of ladder indices and repeats; this module maps
them onto the grid's own :class:`~lossyvision.sweep.plan.TrialSpec` and cell keys, so a searched
trial is the same keyed trial a grid would train (its repeat ``r`` has the key of repeat ``r`` of
any grid). A search trains repeat 0 to explore and repeats ``1..repeats`` to confirm, so its
candidates are the grid planned with ``repeats + 1``, each trial evaluated only on the test levels
its question reads. One search runs per (model, codec); ``OUTPUT/search.json`` holds their paths.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from lossyvision import output as outdir
from lossyvision.intervals import relative_interval
from lossyvision.metrics import headline_first
from lossyvision.seeding import bootstrap_seed
from lossyvision.sweep.plan import CellSpec, Grid, TrialSpec
from lossyvision.sweep.search import Obs, SearchConfig, Training, decide, trainings_bounds


def config_for(sweep: Any, parallel: int) -> SearchConfig:
    s = sweep.search
    return SearchConfig(question=s.question, keep=float(sweep.report.keep), confidence=float(sweep.report.confidence),
                        repeats=int(sweep.repeats), parallel=int(s.parallel or parallel), margin=float(s.margin),
                        fallbacks=int(s.fallbacks), max_trainings=s.max_trainings)


def ladder(arm: Any) -> list[float]:
    """The arm's train levels from the most faithful (the baseline) to the most compressed."""
    return list(arm.codec.by_fidelity(arm.train_levels))


def needed_points(sweep: Any, arm: Any, train_level: float) -> list[tuple[str, float]]:
    """The (codec, test level) cells a searched trial at ``train_level`` is evaluated on."""
    base_train = ladder(arm)[0]
    base_test = float(arm.codec.by_fidelity(arm.test_levels)[0])
    question = sweep.search.question
    if question == "test" or (train_level == base_train and question != "matched"):
        points = {(arm.name, float(x)) for x in arm.test_levels} if question == "test" else {(arm.name, base_test)}
    elif question == "matched":
        points = {(arm.name, float(train_level))}
        if train_level == base_train:
            points.add((arm.name, base_test))
    else:
        points = {(arm.name, base_test)}
    return sorted(points)


@dataclass
class Arena:
    """One search: a model on one codec's ladder, with its candidate trials by (index, repeat)."""

    model: str
    codec: str
    levels: list[float]
    trials: dict[Training, TrialSpec] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.model}/{self.codec}"

    def training_of(self, key: str) -> Training | None:
        for t, spec in self.trials.items():
            if spec.key == key:
                return t
        return None


def search_grid(sweep: Any, full: Grid) -> Grid:
    """The search's candidates: ``full`` (planned with ``repeats + 1``) keeping only the cells each question needs."""
    cells = []
    for cell in full.cells:
        arm = sweep.arm(cell.trial.codec)
        if (cell.test_codec, cell.test_level) in needed_points(sweep, arm, cell.trial.train_level):
            cells.append(cell)
    keys = {t.key for t in full.trials} | {c.key for c in cells}
    return Grid(list(full.trials), cells, {k: v for k, v in full.identities.items() if k in keys})


def arenas(sweep: Any, grid: Grid) -> list[Arena]:
    out = []
    for arm in sweep.arms:
        levels = ladder(arm)
        index = {lv: i for i, lv in enumerate(levels)}
        for model in sweep.models:
            a = Arena(model.name, arm.name, levels)
            for t in grid.trials:
                if t.model == model.name and t.codec == arm.name and t.train_level in index:
                    a.trials[(index[t.train_level], t.repeat)] = t
            out.append(a)
    return out


def question_cell(sweep: Any, grid: Grid, trial: TrialSpec) -> CellSpec | None:
    """The cell whose value the policy reads for ``trial``: matched at its own level, otherwise the baseline's test level."""
    arm = sweep.arm(trial.codec)
    base_test = float(arm.codec.by_fidelity(arm.test_levels)[0])
    level = trial.train_level if sweep.search.question == "matched" else base_test
    if sweep.search.question == "matched" and trial.train_level == ladder(arm)[0]:
        level = base_test
    return next((c for c in grid.cells_of(trial) if c.test_codec == trial.codec and c.test_level == level), None)


def observations(sweep: Any, grid: Grid, arena: Arena, results: pd.DataFrame) -> dict[Training, Obs]:
    """The policy's input: each finished trial's headline metric on its question cell, with its test-image standard error."""
    from scipy.stats import norm

    if results is None or results.empty:
        return {}
    judged = (results["model"].map({m: headline_first(g)[0] for m, g in results.groupby("model", sort=False)})
              if "model" in results.columns else headline_first(results)[0])  # each model's headline
    rows = results[results["metric"] == judged].drop_duplicates("cell_id", keep="last").set_index("cell_id")
    out: dict[Training, Obs] = {}
    for t, trial in arena.trials.items():
        cell = question_cell(sweep, grid, trial)
        if cell is None or cell.key not in rows.index:
            continue
        row = rows.loc[cell.key]
        z = float(norm.ppf(0.5 + float(row.get("confidence", sweep.report.confidence)) / 2))
        se = (float(row["ci_high"]) - float(row["ci_low"])) / (2 * z)
        out[t] = Obs(float(row["value"]), se if math.isfinite(se) else 0.0)
    return out


class PairedTestImages:
    """The confirmation's test-image interval as the report computes it: the level's and the baseline's
    repeats on the same resampled test images (:func:`lossyvision.intervals.relative_interval`, repeats
    held fixed), from ``OUTPUT/predictions``, with the report's bootstrap seed and resamples; cached by
    cell keys, since the searcher replays the policy on every suggestion."""

    def __init__(self, sweep: Any, grid: Grid, output: str) -> None:
        self.sweep, self.grid, self.output = sweep, grid, str(output)
        self._cache: dict[tuple, tuple[float, float, float] | None] = {}

    def for_arena(self, arena: Arena, metric: str):
        """The policy's ``test_interval`` for ``arena`` judged on ``metric``."""
        def interval(level: int, repeats: Any, confidence: float) -> tuple[float, float, float] | None:
            cells = [[question_cell(self.sweep, self.grid, arena.trials[(i, r)]) if (i, r) in arena.trials else None
                      for r in repeats] for i in (level, 0)]
            if any(c is None for group in cells for c in group):
                return None
            key = (metric, confidence, tuple(c.key for group in cells for c in group))
            if key not in self._cache:
                self._cache[key] = self._paired(cells[0], cells[1], arena.model, metric, confidence)
            return self._cache[key]
        return interval

    def _paired(self, cell: list[CellSpec], base: list[CellSpec], model: str, metric: str,
                confidence: float) -> tuple[float, float, float] | None:
        try:
            cell_out = [outdir.read_predictions(self.output, c.key) for c in cell]
            base_out = [outdir.read_predictions(self.output, c.key) for c in base]
            ci = relative_interval(cell_out, base_out, metric, confidence=confidence, images_only=True,
                                   n_resamples=int(self.sweep.report.resamples),
                                   seed=bootstrap_seed(self.sweep.seed, model))
        except (KeyError, OSError, ValueError):
            return None  # no predictions (or none shared): the policy takes the unpaired errors
        return ci.estimate, ci.low, ci.high


# --- what it costs ------------------------------------------------------------------------------------
def plan_lines(sweep: Any, parallel: int) -> list[str]:
    """``sweep plan``'s lines for a search: the full grid's trainings, the search's expected and worst case."""
    s = sweep.search
    config = config_for(sweep, parallel)
    units = len(sweep.models) * len(sweep.arms)
    full = sum(len(a.train_levels) for a in sweep.arms) * len(sweep.models) * sweep.repeats
    expected = worst = 0.0
    for arm in sweep.arms:
        e, w = trainings_bounds(len(arm.train_levels), config)
        if s.max_trainings is not None:
            e, w = min(e, s.max_trainings), min(w, s.max_trainings)
        expected += e * len(sweep.models)
        worst += w * len(sweep.models)
    lines = [f"search: question {s.question}, {units} search(es) (model x codec), {config.parallel} level(s) "
             f"explored at once, confirmation on {sweep.repeats} fresh seeds",
             f"  the full grid with {sweep.repeats} repeat(s): {full} trainings; the search: about {expected:.0f} "
             f"expected, {worst:.0f} at worst" + (f" (max_trainings {s.max_trainings} per search)"
                                                   if s.max_trainings else "")]
    if s.question == "test":
        lines[-1] += "; the test question trains only the baseline"
    return lines


# --- search.json ----------------------------------------------------------------------------------
def search_payload(sweep: Any, grid: Grid, decisions: dict[str, Any], arena_list: list[Arena],
                   order: list[str], parallel: int) -> dict[str, Any]:
    """What ``OUTPUT/search.json`` holds: per search, its path, its end and the trained keys in finishing order."""
    out = {"question": sweep.search.question, "keep": sweep.report.keep, "confidence": sweep.report.confidence,
           "repeats": sweep.repeats, "parallel": parallel, "searches": []}
    for a in arena_list:
        d = decisions.get(a.name)
        keys = [k for k in order if a.training_of(k) is not None]
        out["searches"].append({
            "model": a.model, "codec": a.codec, "levels": a.levels,
            "trained": [{"key": k, "level": a.levels[a.training_of(k)[0]], "repeat": a.training_of(k)[1]}
                        for k in keys],
            "full_grid_trainings": len(a.levels) * sweep.repeats,
            **({} if d is None else _decision_json(d, a)),
        })
    return out


def _decision_json(d: Any, a: Arena) -> dict[str, Any]:
    at = a.levels
    path = [{"phase": s.phase, "levels": sorted({at[i] for i, _ in s.trainings}),
             "trainings": [{"level": at[i], "repeat": r} for i, r in s.trainings], "finding": _levels_named(s.finding, at)}
            for s in d.path]
    claim = dict(d.claim) if d.claim else None
    if claim is not None:
        claim["level"] = at[claim["level"]]
        claim["spread"] = _levels_named(str(claim.get("spread", "")), at)  # its levels are ladder indices
    return {"done": d.done, "outcome": d.outcome, "advised": None if d.advised is None else at[d.advised],
            "reason": _levels_named(d.reason, at), "claim": claim, "path": path,
            "contradictions": [at[i] for i in d.contradictions]}


def _levels_named(text: str, levels: list[float]) -> str:
    """``level #2`` (a ladder index) -> ``level 3`` (the level itself)."""
    import re

    return re.sub(r"#(\d+)", lambda m: f"{levels[int(m.group(1))]:g}" if int(m.group(1)) < len(levels)
                  else "(end)", text)


def write_search(output: str, payload: dict[str, Any]) -> None:
    folder = outdir.OutputFolder(output)
    folder.write_json(folder.search, payload, indent=1, default=_plain)


def read_search(output: str) -> dict[str, Any] | None:
    folder = outdir.OutputFolder(output)
    return folder.read_json_object(folder.search)


def _plain(x: Any) -> Any:
    try:
        return float(x)
    except (TypeError, ValueError):
        return str(x)


def describe_search(data: dict[str, Any]) -> list[str]:
    """The report's lines: per search, the levels in the order trained, and why it stopped."""
    lines = [f"Adaptive search for the question '{data.get('question')}' (keep {100 * float(data.get('keep', 0)):g}% "
             f"at {100 * float(data.get('confidence', 0)):g}% confidence; fresh seeds: {data.get('repeats')})."]
    for s in data.get("searches", []):
        trained = s.get("trained", [])
        order = ", ".join(f"{t['level']:g}/r{t['repeat']}" for t in trained)
        lines.append(f"{s['model']} on {s['codec']}: {len(trained)} trainings (the full grid: "
                     f"{s.get('full_grid_trainings')}), in this order (level/repeat): {order or 'none'}.")
        claim = s.get("claim") or {}
        if s.get("advised") is not None and claim:
            lines.append(f"  answer: level {s['advised']:g} keeps {claim['rel']:.1f}% [{claim['low']:.1f}%, "
                         f"{claim['high']:.1f}%] of the baseline on {claim.get('repeats')} fresh seeds "
                         f"({100 * float(claim.get('confidence', 0)):.4g}% interval; {claim.get('spread')}"
                         f"{_images_clause(claim)})")
        for step in s.get("path", []):
            lines.append(f"  {step['phase']}: {step['finding']}")
        if s.get("done"):
            lines.append(f"  stopped: {s.get('reason')}")
        else:
            lines.append("  not finished (rerun `sweep run` to resume the search)")
    return lines


def _images_clause(claim: dict[str, Any]) -> str:
    how = claim.get("test_images")
    if how == "paired":
        return "; test images paired with the baseline's"
    if how == "unpaired":
        return "; test images unpaired (their predictions were missing): wider than the grid's"
    return ""


def decide_arena(sweep: Any, grid: Grid, arena: Arena, results: pd.DataFrame, config: SearchConfig,
                 running: set[str], failed: set[str], finished: set[str] = frozenset(),
                 paired: PairedTestImages | None = None) -> Any:
    """The policy's decision for one search, from the results table and the trial keys running, failed and
    finished (a finished trial without its question cell failed its evaluation: it counts as failed, never
    as a training to run again); ``paired`` reads the predictions that pair the confirmation's test images."""
    obs = observations(sweep, grid, arena, results)
    ids = {spec.key: t for t, spec in arena.trials.items()}
    lost = set(failed) | {k for k in finished if k in ids and ids[k] not in obs}
    test_interval = None
    if paired is not None and results is not None and not results.empty:
        model_rows = results[results["model"] == arena.model] if "model" in results.columns else results
        if not model_rows.empty:
            test_interval = paired.for_arena(arena, headline_first(model_rows)[0])
    return decide(len(arena.levels), obs, config, running=[ids[k] for k in running if k in ids],
                  failed=[ids[k] for k in lost if k in ids], test_interval=test_interval)
