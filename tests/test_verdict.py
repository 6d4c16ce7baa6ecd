"""The verdict: claims about trained models carry the seeds' spread, one decision first, verdict.json, one keep unit."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from lossyvision.cli import app
from lossyvision.report.cells import relative_cells
from lossyvision.report.verdict import decisions, verdict_lines, verdicts
from lossyvision.spec import parse_keep


def cells(values: dict[tuple[float, float], list[float]], half_width: float = 0.004) -> pd.DataFrame:
    """Hand-made cells: per (train, test) the per-repeat values, a test-image interval of +-half_width."""
    rows = []
    for (tr, te), v in values.items():
        mean = float(np.mean(v))
        rows.append(dict(model="m", metric="top1", budget=-1, codec="jpegxl", test_codec="jpegxl", train_level=tr,
                         test_level=te, n=len(v), mean=mean, std=np.nan, ci_low=mean - half_width,
                         ci_high=mean + half_width, n_images=900, train_dcr=0.1 * tr, test_dcr=0.1 * te,
                         values=list(v), interval="bootstrap (row)"))
    return pd.DataFrame(rows)


def one_run_each() -> pd.DataFrame:
    return cells({(0, 0): [0.90], (1, 1): [0.91], (3, 3): [0.905], (1, 0): [0.91], (3, 0): [0.90],
                  (0, 1): [0.90], (0, 3): [0.899]})


def test_one_repeat_cannot_tell_about_trained_models_and_names_the_cheapest_fix():
    rel = relative_cells(one_run_each())
    trained = rel[rel["train_level"] != 0]
    assert (trained["rel_interval"] == "seeds not measured").all() and trained["rel_low"].isna().all()
    found = {v.question: v for v in verdicts(rel, keep=0.99)}
    for q in ("matched", "train"):
        assert found[q].outcome == "cannot tell" and found[q].level is None
        assert "spread between training runs is not measured" in found[q].text
        assert "seed_spread: {levels: [0, 3], repeats: 3}" in found[q].text and "4 more trainings" in found[q].text
        assert "not measured" in found[q].why
        assert all(x["status"] == "cannot tell" for x in found[q].levels)
    # the model trained at the baseline's level is one model: its test images decide
    assert found["test"].outcome == "advised" and found["test"].level == 3.0


def test_seed_spread_at_two_levels_lets_every_level_be_judged_with_a_t_quantile():
    table = cells({(0, 0): [0.90, 0.902, 0.898], (1, 1): [0.91], (3, 3): [0.905, 0.9, 0.91], (1, 0): [0.91],
                   (3, 0): [0.90, 0.895, 0.905], (0, 1): [0.90, 0.901, 0.899], (0, 3): [0.899, 0.9, 0.898],
                   (3, 1): [0.90, 0.895, 0.9]})
    rel = relative_cells(table)
    one = rel[(rel["train_level"] == 1) & (rel["test_level"] == 1)].iloc[0]
    assert one["rel_interval"] == "images+seeds" and one["spread_df"] == 4  # levels 0 and 3 at test level 1
    assert one["rel_low"] < one["rel_test_low"] and one["rel_high"] > one["rel_test_high"]
    assert "pooled over trained levels 0, 3" in one["spread"]
    matched = next(v for v in verdicts(rel, keep=0.97) if v.question == "matched")
    assert matched.outcome == "advised" and matched.level == 3.0 and "with 95% confidence" in matched.text


def test_the_confidence_of_the_sweep_is_the_one_stated():
    table = cells({(0, 0): [0.90, 0.902, 0.898], (1, 1): [0.91, 0.905, 0.915], (1, 0): [0.91, 0.905, 0.9],
                   (0, 1): [0.90, 0.9, 0.9]})
    rel = relative_cells(table, confidence=0.9)
    lines = verdict_lines(verdicts(rel, keep=0.97, confidence=0.9))
    text = "\n".join(lines)
    assert "90% confidence" in text and "95%" not in text


def test_a_later_level_that_keeps_past_one_that_cannot_be_told_is_named_with_what_settles_it():
    from lossyvision.report.verdict import question_verdict

    rows = []
    for tr, (rel, lo, hi) in {0: (100, 100, 100), 1: (100, 99.5, 100.5), 2: (99, 97, 101), 3: (100, 99.4, 100.6)}.items():
        rows.append(dict(model="m", metric="top1", budget=-1, train_level=tr, test_level=tr, n=1, mean=rel / 100,
                         n_images=900, train_dcr=0.1 * tr, test_dcr=0.1 * tr, baseline_train_level=0.0,
                         baseline_test_level=0.0, baseline=1.0, rel=rel, rel_low=lo, rel_high=hi,
                         rel_test_low=rel - 0.3, rel_test_high=rel + 0.3))
    v = question_verdict(pd.DataFrame(rows), "matched", 0.99)
    assert v.level == 1.0 and "At distance 2 the data cannot tell" in v.text
    assert "Distance 3 keeps, but is not advised past distance 2" in v.text and "repeats at that level" in v.text
    assert [x["status"] for x in v.levels] == ["keeps", "cannot tell", "keeps"]


def test_a_saturated_metric_gets_one_line_and_the_decision_comes_first():
    top1 = cells({(0, 0): [0.90], (1, 1): [0.91], (1, 0): [0.91], (0, 1): [0.90]})
    top5 = top1.assign(metric="top5", mean=1.0, ci_low=1.0, ci_high=1.0, values=[[1.0]] * 4)
    found = verdicts(relative_cells(pd.concat([top1, top5], ignore_index=True)), keep=0.99, headline_only=False)
    sat = [v for v in found if v.question == "saturated"]
    assert len(sat) == 1 and sat[0].metric == "top5" and "saturated" in sat[0].text
    lines = verdict_lines(found)
    assert lines[0] == decisions(found)[0] and lines[0].startswith("m: no level to store everything at with 95% confidence: the spread")
    assert sum("top5" in ln for ln in lines) == 1


def test_keep_has_one_unit():
    assert parse_keep("0.99") == 0.99 and parse_keep("99%") == pytest.approx(0.99) and parse_keep(1) == 1.0
    for bad in ("99", "150", "0", "-0.5", "nan", "x"):
        with pytest.raises(ValueError, match="keep"):
            parse_keep(bad)
    with pytest.raises(ValueError, match="for 99 % write 0.99 or 99%"):
        parse_keep("99")


def test_report_keep_and_verdict_json_and_advise_json(tmp_path):
    from report_data import make_output

    out = make_output(tmp_path, sensitivity=False)
    runner = CliRunner()
    for bad in ("99", "150"):
        refused = runner.invoke(app, ["report", str(out), "--keep", bad, "--no-mlflow"])
        assert refused.exit_code == 2 and "not a fraction of the baseline" in refused.output, refused.output
        assert not (out / "report").exists() and not (out / "verdict.json").exists()
    done = runner.invoke(app, ["report", str(out), "--keep", "0.99", "--no-mlflow"])
    assert done.exit_code == 0, done.output
    assert "telling 99%" in done.output and "0.99%" not in done.output
    records = json.loads((out / "verdict.json").read_text())
    fields = {"model", "metric", "question", "codec", "level", "outcome", "rel", "rel_low", "rel_high", "keep",
              "levels"}
    assert records and all(fields <= set(r) for r in records)
    assert {r["question"] for r in records} >= {"matched", "train", "test"}
    assert all(r["keep"] == 0.99 for r in records)
    assert all(x["status"] in ("keeps", "loses", "cannot tell") for r in records for x in r["levels"])
    printed = runner.invoke(app, ["advise", str(out), "--json"])
    assert printed.exit_code == 0, printed.output
    assert json.loads(printed.output) == records


def test_a_metric_at_its_ceiling_that_every_level_keeps_is_one_line():
    from lossyvision.report.verdict import saturated

    top5 = relative_cells(cells({(0, 0): [0.999, 0.998, 0.999], (1, 1): [0.999], (8, 8): [0.998, 0.999, 0.997],
                                 (1, 0): [0.999], (8, 0): [0.999, 0.999, 0.998], (0, 1): [0.999, 0.998, 0.999],
                                 (0, 8): [0.998, 0.998, 0.999]}, half_width=0.001).assign(metric="top5"))
    line = saturated(top5.assign(ci_high=top5["ci_high"].clip(upper=1.0).where(top5["train_level"] > 0, 1.0)),
                     0.99, 0.95)
    assert line and line.startswith("top5 is at its ceiling") and "every level of the three questions keeps ≥ 99% with 95% confidence" in line
    # a cell that cannot be told, or a baseline below the ceiling: the full verdict, not one line
    assert saturated(top5.assign(ci_high=0.9995), 0.99, 0.95) is None


def test_a_search_s_answer_replaces_the_grid_s_verdict_of_its_question():
    from lossyvision.report.searchpath import with_search

    found = verdicts(relative_cells(one_run_each()), keep=0.99)
    search = {"question": "matched", "repeats": 3, "searches": [
        {"model": "m", "codec": "jpegxl", "done": True, "advised": 3.0,
         "claim": {"rel": 100.2, "low": 99.3, "high": 101.1, "repeats": 3}}]}
    rel = relative_cells(one_run_each())
    matched = next(v for v in with_search(found, search, rel) if v.question == "matched")
    assert matched.outcome == "advised" and matched.level == 3.0 and matched.rel_low == 99.3
    assert "adaptive search, confirmed on 3 fresh seeds" in matched.text
    assert matched.dcr == pytest.approx(rel.loc[rel["train_level"] == 3.0, "train_dcr"].mean())
    # verdict.json's level statuses are the search's: the confirmed level keeps with its interval, no other claim
    by_level = {x["level"]: x for x in matched.levels}
    assert by_level[3.0]["status"] == "keeps" and by_level[3.0]["rel_low"] == 99.3
    assert all(x["status"] == "cannot tell" and x["rel_low"] is None for lv, x in by_level.items() if lv != 3.0)
    # the decision line reads the search's answer, with its DCR, or without one when no cell has it
    [line] = decisions(with_search(found, search, rel))
    assert f"store everything at distance 3 (DCR {matched.dcr:.2f}): it keeps" in line, line
    [line] = decisions(with_search(found, search))
    assert "store everything at distance 3: it keeps" in line, line
    assert [v.text for v in with_search(found, search) if v.question != "matched"] == \
        [v.text for v in found if v.question != "matched"]  # the other questions stay the grid's
    # another metric's answer to the searched question is not the grid's (the search never ran its repeats)
    top5 = verdicts(relative_cells(one_run_each()).assign(metric="top5"), keep=0.99)
    other = next(v for v in with_search(found + top5, search) if v.question == "matched" and v.metric == "top5")
    assert other.outcome == "cannot tell" and other.level is None and "judged top1 only" in other.text
    none = {**search, "searches": [{**search["searches"][0], "advised": None, "reason": "level 3 did not keep"}]}
    v = next(v for v in with_search(found, none) if v.question == "matched")
    assert v.outcome == "cannot tell" and "advises none: level 3 did not keep" in v.text
    assert with_search(found, None) == found


def test_the_heatmap_draws_cells_without_an_interval_apart():
    from lossyvision.report.heatmap import indistinguishable, plot_relative_heatmap

    rel = relative_cells(one_run_each().assign(n_images=900))
    unknown = rel["rel_low"].isna()
    assert unknown.sum() == 4 and not indistinguishable(rel)[unknown.to_numpy()].any()
    assert plot_relative_heatmap(rel, model="m", metric="top1")[:4] == b"\x89PNG"
