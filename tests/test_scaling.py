"""The scaling-law fit, its bootstrap, the advice and its refusals, and ``lossyvision advise``."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from lossyvision.advisor import parse_count
from lossyvision.scaling import (
    PARAMS,
    AdvicePolicy,
    AdviceRefused,
    check_fit,
    fit_scaling_law,
    optimal_level,
    scaling_points,
)
from lossyvision.sweep.results import SCHEMA

TRUE = {"err_star": 0.1, "A": 2.0, "alpha": 0.4, "B": 20.0, "beta": 0.5}
LEVELS = {0.0: 80_000.0, 1.0: 30_000.0, 2.0: 15_000.0, 4.0: 7_000.0, 8.0: 3_000.0, 12.0: 2_000.0}
BUDGETS = [3_000_000, 10_000_000, 30_000_000, 100_000_000, 300_000_000]
AVAILABLE = 100_000


def law(n, L, p=TRUE):
    return p["err_star"] + p["A"] * np.asarray(n, float) ** -p["alpha"] + p["B"] * np.asarray(L, float) ** -p["beta"]


def synthetic_points(noise: float = 0.004, seed: int = 0, budgets=BUDGETS, levels=LEVELS) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for budget in budgets:
        for level, L in levels.items():
            n = min(AVAILABLE, budget // L)
            rows.append({"train_level": level, "budget": budget, "n": float(n), "bytes_per_image": L,
                         "error": float(law(n, L) + rng.normal(0, noise))})
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def good_fit():
    return fit_scaling_law(synthetic_points(), n_bootstrap=300, seed=1)


def test_fit_recovers_known_parameters_within_intervals(good_fit):
    fit = good_fit
    assert fit.r2 > 0.99 and fit.rmse < 0.01 and fit.failed_bootstrap_fraction < 0.05
    for name in PARAMS:
        lo, hi = fit.intervals[name]
        assert lo <= TRUE[name] <= hi, (name, TRUE[name], lo, hi, fit.params[name])
        assert lo <= fit.params[name] <= hi
    assert abs(fit.params["alpha"] - TRUE["alpha"]) < 0.1
    assert abs(fit.params["beta"] - TRUE["beta"]) < 0.15
    pts = synthetic_points(noise=0.0)
    assert np.max(np.abs(fit.predict(pts["n"], pts["bytes_per_image"]) - pts["error"])) < 0.02
    lo, hi = fit.predict_interval(pts["n"], pts["bytes_per_image"])
    assert np.all(lo <= hi) and np.mean((lo <= pts["error"]) & (pts["error"] <= hi)) > 0.8


def test_fit_is_deterministic_for_a_seed():
    pts = synthetic_points()
    a, b = fit_scaling_law(pts, n_bootstrap=40, seed=3), fit_scaling_law(pts, n_bootstrap=40, seed=3)
    assert a.params == b.params and a.intervals == b.intervals


def test_optimal_level_matches_the_true_law(good_fit):
    budget = 30_000_000
    advice = optimal_level(good_fit, budget, AVAILABLE, LEVELS)
    truth = {lv: float(law(min(AVAILABLE, budget // L), L)) for lv, L in LEVELS.items()}
    assert advice.best_level == min(truth, key=truth.get)
    assert advice.best_level not in (0.0, 12.0)  # an interior optimum: neither originals nor the smallest files
    for p in advice.predictions:
        assert p.n_images == min(AVAILABLE, budget // LEVELS[p.level])
        assert abs(p.error - truth[p.level]) < 0.02 and p.low <= p.error <= p.high
    assert 0.5 <= advice.best_agreement <= 1.0
    # With only 300 images, every level is limited by the images, so the best level is the least compressed.
    few = optimal_level(good_fit, budget, 300, LEVELS)
    assert all(p.limited_by == "images" for p in few.predictions) and few.best_level == 0.0


def test_refuses_extrapolating_far_beyond_the_observed_n(good_fit):
    with pytest.raises(AdviceRefused, match=r"refusing to extrapolate.*\n.*n = .*10x the observed range"):
        optimal_level(good_fit, 2 * 10**12, 10_000_000, LEVELS)


def test_refuses_bytes_per_image_outside_the_observed_range(good_fit):
    with pytest.raises(AdviceRefused, match=r"level 99: 9e\+05 bytes/image is outside"):
        optimal_level(good_fit, 30_000_000_000, AVAILABLE, {**LEVELS, 99.0: 900_000.0})


def test_refuses_a_too_uncertain_prediction(good_fit):
    with pytest.raises(AdviceRefused, match="too uncertain"):
        optimal_level(good_fit, 30_000_000, AVAILABLE, LEVELS, policy=AdvicePolicy(max_interval_width=1e-6))


def test_refuses_too_few_points():
    pts = synthetic_points(budgets=BUDGETS[:1]).iloc[:4]
    with pytest.raises(AdviceRefused, match="only 4 observed point"):
        fit_scaling_law(pts, n_bootstrap=10)
    fit = fit_scaling_law(synthetic_points(budgets=BUDGETS[:1]), n_bootstrap=10)  # 6 points: fits, no advice
    with pytest.raises(AdviceRefused, match="too few points: 6 .* at least 10"):
        optimal_level(fit, 3_000_000, AVAILABLE, LEVELS)


def test_refuses_a_poor_fit():
    pts = synthetic_points()
    pts["error"] = np.random.default_rng(4).uniform(0.3, 0.7, len(pts))  # no relation to n or L
    fit = fit_scaling_law(pts, n_bootstrap=5)
    with pytest.raises(AdviceRefused, match=r"poor fit: R\^2 = .* < 0.8"):
        check_fit(fit)


def test_refuses_when_n_does_not_vary():
    pts = pd.DataFrame([{"n": 1000.0, "bytes_per_image": L, "error": float(law(1000, L)) + 0.001 * i}
                        for i, L in enumerate(np.geomspace(1000, 100_000, 12))])
    with pytest.raises(AdviceRefused, match="number of images n varies only"):
        check_fit(fit_scaling_law(pts, n_bootstrap=10))


def test_fit_rejects_bad_points():
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        fit_scaling_law(synthetic_points().assign(error=2.0), n_bootstrap=0)
    with pytest.raises(ValueError, match="n > 0"):
        fit_scaling_law(synthetic_points().assign(n=0.0), n_bootstrap=0)


def results_frame(points: pd.DataFrame, *, repeats: int = 1, test_levels=(0.0,), model="vit",
                  extra_metric: bool = True, noise_seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(noise_seed)
    rows = []
    for _, p in points.iterrows():
        for repeat in range(repeats):
            for test_level in test_levels:
                for metric in ("top1", "top5") if extra_metric else ("top1",):
                    err = p["error"] + (rng.normal(0, 0.001) if repeats > 1 else 0.0)
                    rows.append({
                        "sweep": "s", "model": model, "task": "classification",
                        "train_level": p["train_level"], "test_level": test_level, "repeat": repeat,
                        "budget": int(p["budget"]), "metric": metric,
                        "value": 1 - err if metric == "top1" else min(1.0, 1.3 - err),
                        "train_dcr": 0.5, "test_dcr": 0.5, "train_dcr_raw": 0.9, "test_dcr_raw": 0.9,
                        "n_train_images": int(p["n"]), "train_bytes": int(p["n"] * p["bytes_per_image"]),
                        "trial_id": "t", "finished_at": "2026-11-25T00:00:00Z"})
    return pd.DataFrame(rows, columns=SCHEMA.names)


def test_scaling_points_from_results():
    pts = synthetic_points()
    results = results_frame(pts, repeats=3, test_levels=(0.0, 2.0))
    got, selection = scaling_points(results)
    assert selection == {"model": "vit", "metric": "top1", "test_level": 0.0}
    assert len(got) == len(pts) and (got["repeats"] == 3).all()
    merged = got.merge(pts, on=["train_level", "budget"], suffixes=("", "_true"))
    assert np.allclose(merged["error"], merged["error_true"], atol=0.003)
    assert np.allclose(merged["bytes_per_image"], merged["bytes_per_image_true"], rtol=1e-3)
    with pytest.raises(ValueError, match="unknown metric 'map50'"):
        scaling_points(results, metric="map50")
    two_models = pd.concat([results, results.assign(model="resnet")])
    with pytest.raises(ValueError, match="several models .* --model"):
        scaling_points(two_models)
    # eval_levels: same -> each trial tested on its own level only
    same = results_frame(pts, test_levels=(0.0,)).assign(test_level=lambda d: d["train_level"])
    got, selection = scaling_points(same)
    assert selection["test_level"] == "same" and len(got) == len(pts)


def test_parse_count():
    assert parse_count("10M") == 10_000_000
    assert parse_count("1.5k") == 1_500
    assert parse_count("2G") == parse_count("2B") == 2_000_000_000
    assert parse_count("1200") == 1_200 and parse_count(7) == 7
    for bad in ("ten", "1.5", "0", "5X", "-3"):
        with pytest.raises(ValueError):
            parse_count(bad)


# --- the command line ------------------------------------------------------------------------
DATASET_IMAGES = 20_000


def build_output(tmp_path: Path, points: pd.DataFrame, budgets=BUDGETS) -> Path:
    """A budget sweep's OUTPUT as the sweep engine leaves it: sweep.yaml, results.parquet, store."""
    data = tmp_path / "data"
    (data / "train").mkdir(parents=True)
    out = tmp_path / "run"
    (out / "store").mkdir(parents=True)
    sweep = {"name": "synthetic-budget", "dataset": {"kind": "imagefolder", "root": str(data)},
             "codec": {"name": "jpegxl", "effort": 1}, "train_levels": list(LEVELS), "test_levels": [0.0],
             "models": [{"name": "vit", "task": "classification", "arch": "vit_tiny_patch16_224"}],
             "budgets": budgets, "eval_levels": "baseline", "output": str(out)}
    (out / "sweep.yaml").write_text(yaml.safe_dump(sweep))
    from report_data import write_results

    write_results(out, results_frame(points))
    relpaths = [f"train/c{i % 10}/{i:06d}.jpg" for i in range(DATASET_IMAGES)]
    manifest = pd.concat([pd.DataFrame({
        "relpath": relpaths, "split": "train", "label": np.arange(DATASET_IMAGES) % 10, "codec": "jpegxl",
        "level": level, "status": "ok", "compressed_bytes": np.int64(L)}) for level, L in LEVELS.items()])
    manifest.to_parquet(out / "store" / "manifest.parquet")
    return out


@pytest.fixture
def classification_task(monkeypatch):
    """load_sweep checks the model's task; stand in for the classification task if not yet registered."""
    from lossyvision.tasks import TASKS

    if "classification" not in TASKS:
        monkeypatch.setitem(TASKS._entries, "classification", object)


def test_cli_advise_prints_fit_and_levels_and_writes_json(tmp_path, classification_task):
    from lossyvision.cli import app

    out = build_output(tmp_path, synthetic_points())
    result = CliRunner().invoke(app, ["advise", str(out), "--budget", "40MB", "--bootstrap", "60"])
    assert result.exit_code == 0, result.output
    assert "err_star" in result.output and "R^2 0.99" in result.output
    assert "Budget 40.0 MB (asked)" in result.output and "-> store at level" in result.output
    saved = json.loads((out / "scaling_fit.json").read_text(), parse_constant=pytest.fail)  # strict: no NaN
    assert saved["refused"] is None and saved["fit"]["points"][0]["error_std"] is None and abs(saved["fit"]["params"]["alpha"] - TRUE["alpha"]) < 0.1
    assert [a["budget"] for a in saved["advice"]] == BUDGETS + [40_000_000]
    truth = {lv: float(law(min(DATASET_IMAGES, 40_000_000 // L), L)) for lv, L in LEVELS.items()}
    assert saved["advice"][-1]["best_level"] == min(truth, key=truth.get)


def test_cli_advise_refuses_extrapolation_with_exit_3(tmp_path, classification_task):
    from lossyvision.cli import app

    out = build_output(tmp_path, synthetic_points())
    result = CliRunner().invoke(app, ["advise", str(out), "--budget", "2TB", "--images-available", "10M",
                                      "--bootstrap", "30"])
    assert result.exit_code == 3, result.output
    assert "refusing to extrapolate" in result.output and "10x the observed range" in result.output
    saved = json.loads((out / "scaling_fit.json").read_text())
    asked = saved["advice"][-1]
    assert asked["source"] == "asked" and asked["images_available"] == 10_000_000
    assert "refusing to extrapolate" in asked["refused"]


def test_cli_advise_refuses_a_poor_fit_with_exit_3(tmp_path, classification_task):
    from lossyvision.cli import app

    pts = synthetic_points(budgets=BUDGETS[:1])  # 6 points for 5 parameters
    out = build_output(tmp_path, pts, budgets=BUDGETS[:1])
    result = CliRunner().invoke(app, ["advise", str(out), "--bootstrap", "10"])
    assert result.exit_code == 3, result.output
    assert "No advice: too few points" in result.output
    assert json.loads((out / "scaling_fit.json").read_text())["refused"].startswith("too few points")


def test_cli_advise_bad_input_is_a_clear_error(tmp_path, classification_task):
    from lossyvision.cli import app

    runner = CliRunner()
    result = runner.invoke(app, ["advise", str(tmp_path / "nowhere")])
    assert result.exit_code == 2 and "sweep.yaml does not exist" in result.output
    out = build_output(tmp_path, synthetic_points())
    result = runner.invoke(app, ["advise", str(out), "--images-available", "lots", "--budget", "1GB"])
    assert result.exit_code == 2 and "not a count: 'lots'" in result.output
    result = runner.invoke(app, ["advise", str(out), "--metric", "miou"])
    assert result.exit_code == 2 and "unknown metric 'miou'" in result.output


# --- report figures --------------------------------------------------------------------------
def test_budget_figures_written_per_model_and_metric(tmp_path):
    from lossyvision.report.budget import budget_figure_pngs, budget_figures, images_cap

    results = results_frame(synthetic_points(), repeats=2)
    results = pd.concat([results, results[results["metric"] == "top1"].assign(model="tiny resnet")])
    paths = budget_figures(results, str(tmp_path / "report"), n_bootstrap=20)
    names = sorted(Path(p).name for p in paths)
    assert names == sorted(f"budget-{kind}-{stem}.png" for kind in ("level", "budget", "fit")
                           for stem in ("vit-top1", "vit-top5", "tiny_resnet-top1"))
    for p in paths:
        data = Path(p).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    # Too few points for a fit: the points are still drawn; no budget axis: no figures.
    few = results_frame(synthetic_points(budgets=BUDGETS[:1]).iloc[:3], extra_metric=False)
    assert [n for n, _ in budget_figure_pngs(few, n_bootstrap=5)] == [
        "budget-level-vit-top1.png", "budget-budget-vit-top1.png", "budget-fit-vit-top1.png"]
    assert budget_figures(results.assign(budget=-1), str(tmp_path / "none")) == []
    # The image cap: level 12 left most of the largest budget unused (all 100k images fit).
    assert images_cap(synthetic_points()) == AVAILABLE
    assert images_cap(synthetic_points(budgets=BUDGETS[:3])) == math.inf
    same_n = pd.DataFrame({"train_level": [1.0, 1.0], "budget": [10, 20], "n": [5.0, 5.0],
                           "bytes_per_image": [2.0, 2.0]})  # n stopped growing: all 5 images used
    assert images_cap(same_n) == 5.0


def test_ties_go_to_the_level_with_the_largest_files():
    # Error independent of the bytes per image (B = 0): when every level stores all the images,
    # the levels tie, and the one with the largest files (the best quality) must win, whichever
    # way the codec numbers its levels (distance up = smaller; quality up = larger).
    no_b = {**TRUE, "B": 0.0}
    pts = synthetic_points(noise=0.0)
    pts["error"] = law(pts["n"], pts["bytes_per_image"], no_b)
    fit = fit_scaling_law(pts, n_bootstrap=30)
    assert fit.params["B"] < 1e-6
    for table, want in (({1.0: 30_000.0, 3.0: 15_000.0}, 1.0), ({50.0: 15_000.0, 90.0: 30_000.0}, 90.0)):
        advice = optimal_level(fit, 100_000_000, 1_000, table)
        assert all(p.limited_by == "images" for p in advice.predictions)
        assert advice.best_level == want


def test_report_of_a_budget_sweep_has_budget_figures_and_the_fit(tmp_path):
    from lossyvision.report import build_report

    out = build_output(tmp_path, synthetic_points())
    result = build_report(str(out))
    names = [Path(p).name for p in result.figures]
    assert any(n.startswith("budget-fit-") for n in names) and any(n.startswith("budget-level-") for n in names)
    html = Path(result.index_html).read_text()
    assert "Storage budgets" in html and "store at level" in html
    assert str(out / "scaling_fit.json") in result.paths and (out / "scaling_fit.json").exists()
