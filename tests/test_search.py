"""The adaptive search without Ray: its sweep-file field, its policy's rules, its cells and keys, its lines and file."""

from __future__ import annotations

import itertools
import json

import pandas as pd
import pytest

from lossyvision.spec import SpecError, parse_sweep
from lossyvision.sweep.plan import CellSpec, Grid, TrialSpec
from lossyvision.sweep.search import Obs, SearchConfig, decide, trainings_bounds
from lossyvision.sweep.searchgrid import (arenas, decide_arena, describe_search, needed_points, plan_lines,
                                          read_search, search_grid, search_payload, write_search)


def _data(tmp_path, **search) -> dict:
    (tmp_path / "data").mkdir(exist_ok=True)
    return {"name": "s", "dataset": {"kind": "imagefolder", "root": str(tmp_path / "data")},
            "codec": {"name": "jpegxl", "effort": 3}, "train_levels": [0, 1, 2, 3, 5, 8],
            "test_levels": [0, 1, 2, 3, 5, 8], "repeats": 3,
            "models": [{"name": "m", "task": "classification", "arch": "resnet10t"}],
            "output": str(tmp_path / "out"), "search": {"question": "matched", **search}}


# --- the sweep file -------------------------------------------------------------------------------
def test_search_field_parses_and_defaults(tmp_path):
    sweep = parse_sweep(_data(tmp_path, max_trainings=12))
    assert sweep.search.question == "matched" and sweep.search.max_trainings == 12
    assert sweep.search.margin == 1.0 and sweep.search.fallbacks == 0 and sweep.search.parallel is None
    assert parse_sweep({k: v for k, v in _data(tmp_path).items() if k != "search"}).search is None


@pytest.mark.parametrize("change, expected", [
    (lambda d: d.update(repeats=1), "set repeats >= 2"),
    (lambda d: d.update(test_levels=[0, 1]), "test levels lack 2, 3, 5, 8"),
    (lambda d: d["search"].update(max_trainings=4), "max_trainings: 4 cannot confirm a level: it needs at least 7"),
    (lambda d: d["search"].update(question="both"), "search.question"),
    (lambda d: d.update(budgets=["1MB"]), "cannot be combined with budgets"),
    (lambda d: d.update(seed_spread={"levels": [0, 8], "repeats": 3}), "cannot be combined with seed_spread"),
])
def test_a_search_the_sweep_cannot_run_is_refused_in_one_line(tmp_path, change, expected):
    data = _data(tmp_path)
    change(data)
    with pytest.raises(SpecError) as e:
        parse_sweep(data, source="s.yaml")
    assert expected in str(e.value)


def test_the_test_question_needs_no_repeats(tmp_path):
    data = _data(tmp_path, question="test")
    data["repeats"] = 1
    assert parse_sweep(data).search.question == "test"


# --- the policy -------------------------------------------------------------------------------------
def _oracle(truth, noise=0.0):
    def value(i, r):
        return 0.8 * (truth[i] + noise * ((i * 7 + r * 3) % 5 - 2)) / 100.0
    return value


def _drive(n, config, value, limit=100):
    obs, calls = {}, []
    for _ in range(limit):
        d = decide(n, obs, config)
        calls.append(d)
        if d.done:
            return d, obs, calls
        for i, r in d.train:
            obs[(i, r)] = Obs(value(i, r), 1e-4)
    raise AssertionError("no end")


def test_bisection_explores_on_repeat_zero_then_confirms_on_fresh_seeds_at_the_candidate_and_baseline():
    truth = [100, 99.9, 99.8, 99.7, 99.6, 99.5, 97, 96, 95, 94, 93, 92]
    config = SearchConfig(keep=0.98, repeats=3, parallel=1, margin=1.0)
    d, obs, calls = _drive(12, config, _oracle(truth, noise=0.05))
    assert d.outcome == "advised" and d.advised == 5
    explored = [t for t in obs if t[1] == 0]
    assert len(explored) <= 1 + 4  # the baseline and log2(11) rounded up
    assert {t for t in obs if t[1] > 0} == {(0, 1), (0, 2), (0, 3), (5, 1), (5, 2), (5, 3)}
    assert [s.phase for s in d.path][-1] == "confirm" and "keeps" in d.path[-1].finding
    assert d.claim["low"] >= 98.0 and d.claim["repeats"] == 3 and d.claim["spread_df"] == 4
    assert calls[0].train == [(0, 0)]  # the baseline first


def test_k_section_asks_for_several_levels_at_once():
    config = SearchConfig(keep=0.98, repeats=2, parallel=3)
    d = decide(12, {(0, 0): Obs(0.8, 1e-3)}, config)
    assert len(d.train) == 3 and all(r == 0 for _, r in d.train)


def test_the_policy_is_a_function_of_the_results_running_and_failed():
    config = SearchConfig(keep=0.98, repeats=2, parallel=2)
    obs = {(0, 0): Obs(0.8, 1e-3)}
    first = decide(12, obs, config)
    assert decide(12, dict(obs), config).train == first.train  # replayed: the same answer
    waiting = decide(12, obs, config, running=first.train)
    assert waiting.waiting and not waiting.done
    lost = decide(12, obs, config, failed=first.train[:1])
    assert lost.done and lost.outcome == "failed" and "failed" in lost.reason


def test_a_failed_confirmation_advises_nothing_and_fallbacks_cost_bonferroni():
    truth = [100] + [99.5] * 5 + [90] * 6
    flat = _oracle(truth)

    def value(i, r):  # exploration passes, every fresh seed at a compressed level loses
        return flat(i, r) if r == 0 or i == 0 else 0.5 * flat(i, r)

    d, _, _ = _drive(12, SearchConfig(keep=0.98, repeats=2, parallel=1, margin=0.5), value)
    assert d.outcome == "not confirmed" and d.advised is None and d.claim["status"] == "loses"
    d2, obs2, _ = _drive(12, SearchConfig(keep=0.98, repeats=2, parallel=1, margin=0.5, fallbacks=1), value)
    assert d2.outcome == "not confirmed"
    confirmed = sorted({i for i, r in obs2 if r > 0 and i > 0})
    assert len(confirmed) == 2 and d2.claim["confidence"] == pytest.approx(0.975)


def test_max_trainings_keeps_room_for_the_confirmation_and_stops_there():
    truth = [100] + [99.9] * 11
    config = SearchConfig(keep=0.98, repeats=3, parallel=1, max_trainings=9)
    d, obs, _ = _drive(12, config, _oracle(truth, noise=0.02))
    assert len(obs) <= 9 and d.done
    assert any("max_trainings" in s.finding for s in d.path) or d.outcome == "budget"


def test_nothing_passing_exploration_ends_without_confirming():
    d, obs, _ = _drive(12, SearchConfig(keep=0.99, repeats=3), _oracle([100] + [90] * 11))
    assert d.outcome == "none passed" and d.advised is None and all(r == 0 for _, r in obs)


def test_the_test_question_trains_the_baseline_only():
    d, obs, _ = _drive(12, SearchConfig(question="test"), _oracle([100] * 12))
    assert list(obs) == [(0, 0)] and d.done and d.outcome == "baseline only"


def test_expected_and_worst_case_trainings():
    config = SearchConfig(keep=0.99, repeats=3, parallel=1)
    expected, worst = trainings_bounds(12, config)
    assert 1 < expected <= worst <= 1 + 11 + 6
    assert worst == 1 + 4 + 6  # baseline, four bisection rounds, 3 fresh seeds at two levels
    assert trainings_bounds(12, SearchConfig(keep=0.99, repeats=3, fallbacks=2))[1] > worst


# --- the sweep's side: keys, cells, observations, lines, search.json --------------------------------
def _grid(sweep) -> Grid:
    trials = [TrialSpec("m", float(lv), r, config=f"h{lv:g}{r}") for lv, r in
              itertools.product(sweep.train_levels, range(sweep.repeats + 1))]
    cells = [CellSpec(t, float(x), config="c") for t in trials for x in sweep.test_levels]
    return Grid(trials, cells, {t.key: {"x": 1} for t in trials})


def test_a_searched_trial_is_evaluated_only_where_its_question_reads(tmp_path):
    sweep = parse_sweep(_data(tmp_path))
    arm = sweep.arms[0]
    assert needed_points(sweep, arm, 3.0) == [("jpegxl", 3.0)]
    assert needed_points(sweep, arm, 0.0) == [("jpegxl", 0.0)]
    grid = search_grid(sweep, _grid(sweep))
    assert len(grid.trials) == 6 * 4 and len(grid.cells) == 6 * 4  # one cell per trial
    train = parse_sweep(_data(tmp_path, question="train"))
    assert needed_points(train, train.arms[0], 5.0) == [("jpegxl", 0.0)]
    test = parse_sweep(_data(tmp_path, question="test"))
    assert len(needed_points(test, test.arms[0], 0.0)) == 6


def test_the_policy_reads_the_results_table_by_cell_key(tmp_path):
    sweep = parse_sweep(_data(tmp_path))
    grid = search_grid(sweep, _grid(sweep))
    arena = arenas(sweep, grid)[0]
    assert arena.levels == [0, 1, 2, 3, 5, 8]
    base = arena.trials[(0, 0)]
    cell = grid.cells_of(base)[0]
    rows = pd.DataFrame([{"cell_id": cell.key, "metric": "top1", "value": 0.8, "ci_low": 0.75, "ci_high": 0.85,
                          "confidence": 0.95},
                         {"cell_id": cell.key, "metric": "top5", "value": 1.0, "ci_low": 1.0, "ci_high": 1.0,
                          "confidence": 0.95}])
    d = decide_arena(sweep, grid, arena, rows, SearchConfig(keep=0.99, repeats=3, parallel=2), set(), set())
    assert len(d.train) == 2 and all(r == 0 for _, r in d.train)  # the baseline is known: explore two levels


def test_plan_lines_give_the_full_grid_and_the_search(tmp_path):
    sweep = parse_sweep(_data(tmp_path))
    lines = plan_lines(sweep, 2)
    assert "2 level(s) explored at once" in lines[0]
    assert "the full grid with 3 repeat(s): 18 trainings" in lines[1] and "expected" in lines[1]
    assert "at worst" in lines[1]


def test_search_json_round_trips_and_the_report_section_names_the_path(tmp_path):
    sweep = parse_sweep(_data(tmp_path))
    grid = search_grid(sweep, _grid(sweep))
    arena = arenas(sweep, grid)[0]
    truth = [100, 99.9, 99.8, 97, 96, 95]
    value = _oracle(truth, noise=0.05)
    config = SearchConfig(keep=0.98, repeats=3, parallel=1)
    d, obs, _ = _drive(6, config, value)
    order = [arena.trials[t].key for t in obs]
    payload = search_payload(sweep, grid, {arena.name: d}, [arena], order, 1)
    (tmp_path / "out").mkdir()
    write_search(str(tmp_path / "out"), payload)
    back = read_search(str(tmp_path / "out"))
    assert back == json.loads(json.dumps(payload))
    s = back["searches"][0]
    assert s["advised"] == 2.0 and s["outcome"] == "advised" and s["full_grid_trainings"] == 18
    assert [t["level"] for t in s["trained"]][0] == 0.0
    lines = describe_search(back)
    assert any("in this order" in ln for ln in lines) and any(ln.strip().startswith("stopped:") for ln in lines)
    assert "#" not in " ".join(lines)  # ladder indices are shown as levels
    assert "pooled over trained levels 0, 2," in s["claim"]["spread"], s["claim"]  # in the claim's spread too

    from lossyvision.report.searchpath import search_sections

    section = search_sections(str(tmp_path / "out"))[0]
    assert "Adaptive search" in section.title and "explore" in section.tables_html[0]


def test_a_finished_trial_without_its_cell_is_never_trained_again(tmp_path):
    sweep = parse_sweep(_data(tmp_path))
    grid = search_grid(sweep, _grid(sweep))
    arena = arenas(sweep, grid)[0]
    base = arena.trials[(0, 0)].key
    config = SearchConfig(keep=0.99, repeats=3, parallel=2)
    empty = pd.DataFrame(columns=["cell_id", "metric", "value", "ci_low", "ci_high", "confidence"])
    assert decide_arena(sweep, grid, arena, empty, config, set(), set()).train == [(0, 0)]
    d = decide_arena(sweep, grid, arena, empty, config, set(), set(), finished={base})
    assert d.done and d.outcome == "failed" and "(or its evaluation) failed" in d.reason


def test_the_confirmation_pairs_test_images_as_the_report_does(tmp_path):
    """With predictions in OUTPUT, the confirmation's test-image interval is the report's paired bootstrap
    over the same cells (so the search and the grid give the same runs the same interval), and it is
    narrower than the unpaired fallback when the level and the baseline miss the same images."""
    import numpy as np

    from lossyvision import output as outdir
    from lossyvision.intervals import relative_interval
    from lossyvision.metrics.classification import ClassificationOutcomes
    from lossyvision.seeding import derive_seed
    from lossyvision.sweep.searchgrid import PairedTestImages, question_cell

    sweep = parse_sweep({**_data(tmp_path), "repeats": 3, "output": str(tmp_path / "out")})
    grid = search_grid(sweep, _grid(sweep))
    arena = arenas(sweep, grid)[0]
    rng = np.random.default_rng(0)
    n, hard = 600, rng.random(600) < 0.2  # a fifth of the images are hard for every model
    rows = []

    def outcome(level: int, repeat: int) -> ClassificationOutcomes:
        wrong = hard & (rng.random(n) < 0.9 + 0.01 * level) | (~hard & (rng.random(n) < 0.01))
        labels = np.zeros(n, dtype=np.int64)
        return ClassificationOutcomes(np.array([f"i{k}" for k in range(n)]), labels, wrong.astype(np.int64),
                                      wrong.astype(np.int64), 10)

    trained = [(i, 0) for i in range(6)] + [(i, r) for i in (0, 5) for r in (1, 2, 3)]
    for t in trained:
        o = outcome(*t)
        cell = question_cell(sweep, grid, arena.trials[t])
        outdir.write_predictions(sweep.output, cell.key, o)
        top1 = float(o.metrics()["top1"])
        half = 1.96 * np.sqrt(top1 * (1 - top1) / n)
        rows.append({"cell_id": cell.key, "model": "m", "metric": "top1", "value": top1, "ci_low": top1 - half,
                     "ci_high": top1 + half, "confidence": 0.95})
    results = pd.DataFrame(rows)
    config = SearchConfig(keep=0.95, repeats=3, parallel=2, margin=0.0)
    unpaired = decide_arena(sweep, grid, arena, results, config, set(), set())
    paired = decide_arena(sweep, grid, arena, results, config, set(), set(),
                          paired=PairedTestImages(sweep, grid, sweep.output))
    assert unpaired.done and paired.done and paired.claim["level"] == unpaired.claim["level"] == 5
    assert unpaired.claim["test_images"] == "unpaired" and paired.claim["test_images"] == "paired"
    assert paired.claim["high"] - paired.claim["low"] < unpaired.claim["high"] - unpaired.claim["low"]

    def outcomes_of(i):
        return [outdir.read_predictions(sweep.output, question_cell(sweep, grid, arena.trials[(i, r)]).key)
                for r in (1, 2, 3)]
    report = relative_interval(outcomes_of(5), outcomes_of(0), "top1", images_only=True, confidence=0.95,
                               n_resamples=int(sweep.report.resamples), seed=derive_seed("bootstrap", sweep.seed, "m"))
    assert paired.claim["rel"] == pytest.approx(report.estimate)
    test_only = PairedTestImages(sweep, grid, sweep.output).for_arena(arena, "top1")(5, [1, 2, 3], 0.95)
    assert test_only == (report.estimate, report.low, report.high)
