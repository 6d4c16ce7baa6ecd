"""The report: interpolation, baselines, confidence intervals, advice, DCR curve, the HTML page."""

from __future__ import annotations

import base64
import re

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from scipy.interpolate import griddata

from lossyvision.report.advice import advice_table
from lossyvision.report.build import build_report
from lossyvision.report.cells import ReportError, cell_table, relative_cells, t_interval
from lossyvision.report.curves import dcr_by_level
from lossyvision.report.heatmap import interpolate, plot_relative_heatmap
from report_data import make_output, result_rows


def test_interpolation_equals_scipy_griddata_and_hits_observed_points():
    rng = np.random.default_rng(0)
    x, y = rng.uniform(0, 1, 12), rng.uniform(0, 1, 12)
    v = 100 - 20 * x - 30 * y + rng.normal(0, 1, 12)
    gx, gy = np.meshgrid(np.linspace(0, 1, 17), np.linspace(0, 1, 13))
    ours = interpolate(x, y, v, gx, gy)
    ref = griddata(np.column_stack([x, y]), v, (gx, gy), method="linear")
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(ref))
    np.testing.assert_allclose(ours[~np.isnan(ref)], ref[~np.isnan(ref)])
    np.testing.assert_allclose(interpolate(x, y, v, x, y), v)          # exact at the observed cells
    # a plane is reproduced exactly inside the hull: 0.5, 0.5 lies inside a square's corners
    assert interpolate([0, 1, 0, 1], [0, 0, 1, 1], [1, 2, 3, 4], 0.5, 0.5) == pytest.approx(2.5)
    # one train level: nothing spans an area, so no background (no crash)
    assert np.isnan(interpolate([0, 0, 0], [0, 1, 2], [1, 2, 3], 0, 0.5)).all()


def test_relative_values_use_the_baseline_cell():
    df = result_rows(models=("m",), repeats=1, baseline=0.8)
    rel = relative_cells(cell_table(df))
    base = rel[(rel.train_level == 0) & (rel.test_level == 0)].iloc[0]
    assert base["rel"] == pytest.approx(100.0) and base["baseline"] == pytest.approx(0.8)
    cell = rel[(rel.train_level == 1) & (rel.test_level == 3)].iloc[0]
    assert cell["rel"] == pytest.approx(100 * 0.8 * (1 - 0.02 - 0.15) / 0.8)
    # no level 0 anywhere: the smallest train level, then its smallest test level
    shifted = df[(df.train_level > 0) & (df.test_level > 0)]
    rel2 = relative_cells(cell_table(shifted))
    assert set(rel2["baseline_train_level"]) == {1.0} and set(rel2["baseline_test_level"]) == {1.0}
    expected = 0.8 * (1 - 0.02 - 0.05)
    assert rel2["baseline"].iloc[0] == pytest.approx(expected)
    c = rel2[(rel2.train_level == 3) & (rel2.test_level == 3)].iloc[0]
    assert c["rel"] == pytest.approx(100 * 0.8 * (1 - 0.06 - 0.15) / expected)
    # each model is relative to its own baseline
    two = result_rows(models=("a", "b"), repeats=1)
    two.loc[two.model == "b", "value"] *= 0.5
    rel3 = relative_cells(cell_table(two))
    np.testing.assert_allclose(rel3[rel3.model == "a"]["rel"].to_numpy(), rel3[rel3.model == "b"]["rel"].to_numpy())


def test_repeats_give_t_intervals_like_scipy():
    df = result_rows(models=("m",), repeats=4, seed=3)
    cells = cell_table(df)
    assert (cells["n"] == 4).all()
    for r in cells.itertuples(index=False):
        v = df[(df.train_level == r.train_level) & (df.test_level == r.test_level)]["value"].to_numpy()
        lo, hi = stats.t.interval(0.95, len(v) - 1, loc=v.mean(), scale=stats.sem(v))
        assert r.mean == pytest.approx(v.mean())
        assert (r.ci_low, r.ci_high) == pytest.approx((lo, hi), rel=1e-12)
    assert np.isnan(t_interval(np.array([1.0]))).all()
    single = cell_table(result_rows(models=("m",), repeats=1))
    assert single["ci_low"].isna().all()


def test_advice_uses_the_interval_lower_bound_with_repeats():
    base = [1.0, 1.0, 1.0]
    rows = []
    for tr, vals in ((0.0, base), (1.0, [0.995, 0.995, 0.995]), (2.0, [0.999, 0.94, 1.05])):
        for r, v in enumerate(vals):
            rows.append(dict(model="m", metric="top1", budget=-1, train_level=tr, test_level=0.0, repeat=r,
                             value=v, train_dcr=tr / 4, test_dcr=0.1))
    rel = relative_cells(cell_table(pd.DataFrame(rows)))
    # level 2 has mean 0.996 (>= 99%) but a wide interval: not advised; level 1 is tight at 99.5%
    lvl2 = rel[rel.train_level == 2].iloc[0]
    assert lvl2["rel"] >= 99 and lvl2["rel_low"] < 99
    adv = advice_table(rel, keep_fraction=0.99)
    assert len(adv) == 1
    assert adv["train_level"].iloc[0] == 1.0 and adv["train_dcr"].iloc[0] == pytest.approx(0.25)
    assert adv["judged_on"].iloc[0] == "95% interval lower bound"
    # with a single repeat nothing measures the spread between training runs: no trained level is
    # judged (level 2's 0.999 would keep 99% on its mean alone), only the baseline's own level
    one = pd.DataFrame([r for r in rows if r["repeat"] == 0])
    adv1 = advice_table(relative_cells(cell_table(one)), keep_fraction=0.99)
    assert adv1["train_level"].iloc[0] == 0.0 and adv1["judged_on"].iloc[0] == "mean"
    # nothing keeps 100.5%: no advice, no crash
    assert np.isnan(advice_table(rel, keep_fraction=1.005)["train_level"].iloc[0])


def test_dcr_by_level_quartiles_and_png_baseline():
    m = pd.DataFrame(dict(relpath=["a", "b", "c", "d"] * 2, level=[1.0] * 4 + [2.0] * 4, status="ok",
                          dcr_vs_source=[0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8],
                          dcr_vs_raw=[0.9, 0.91, 0.92, 0.93, 0.95, 0.96, 0.97, 0.98],
                          png_bytes=[50] * 8, raw_bytes=[100] * 8, source_bytes=[40] * 8))
    m.loc[len(m)] = dict(relpath="e", level=1.0, status="failed", dcr_vs_source=np.nan, dcr_vs_raw=np.nan,
                         png_bytes=np.nan, raw_bytes=np.nan, source_bytes=10)
    t = dcr_by_level(m)
    assert list(t["level"]) == [1.0, 2.0] and list(t["images"]) == [4, 4]
    assert t["dcr_vs_source_mean"].iloc[0] == pytest.approx(0.25)
    assert t["dcr_vs_source_q25"].iloc[0] == pytest.approx(np.percentile([0.1, 0.2, 0.3, 0.4], 25))
    assert t["png_dcr_vs_raw"].iloc[0] == pytest.approx(0.5)
    assert t["png_dcr_vs_source"].iloc[0] == pytest.approx(1 - 50 / 40)
    assert (t["png_images"] == 4).all()
    no_png = dcr_by_level(m.drop(columns=["png_bytes"]))
    assert no_png["png_dcr_vs_raw"].isna().all()
    # The compress job computes PNG on a sample: the line is the mean over the sampled images only.
    sampled = m.assign(png_bytes=np.where(m["relpath"].isin(["a", "b"]), [50, 70, np.nan, np.nan] * 2 + [np.nan],
                                          np.nan))
    t = dcr_by_level(sampled)
    assert t["png_dcr_vs_raw"].iloc[0] == pytest.approx(1 - 60 / 100) and (t["png_images"] == 2).all()


def test_heatmap_title_names_the_baseline():
    rel = relative_cells(cell_table(result_rows(models=("m",), repeats=2)))
    png = plot_relative_heatmap(rel, model="m", metric="top1")
    assert png[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match="no cells"):
        plot_relative_heatmap(rel, model="other", metric="top1")


def test_build_report_writes_a_self_contained_page(tmp_path):
    out = make_output(tmp_path)
    res = build_report(str(out), keep_fraction=0.95)
    html = (out / "report" / "index.html").read_text(encoding="utf-8")
    names = sorted(p.rsplit("/", 1)[-1] for p in res.figures)
    assert names == ["dcr-curve.png", "heatmap-cnn-top1.png", "heatmap-vit-top1.png", "samples.png",
                     "sensitivity-vit-train0-basis-Y.png", "sensitivity-vit-train0.png"], res.warnings
    assert res.warnings == []
    for p in res.figures:
        assert (out / "report" / p.rsplit("/", 1)[-1]).read_bytes()[:4] == b"\x89PNG"
    srcs = re.findall(r'<img src="([^"]+)"', html)
    assert len(srcs) == len(res.figures)
    for s in srcs:
        assert s.startswith("data:image/png;base64,")
        assert base64.b64decode(s.split(",", 1)[1])[:4] == b"\x89PNG"
    assert not re.search(r'(src|href)="(https?:)?//', html), "the page must not load external resources"
    assert "largest train DCR keeping &ge; 95%" in html and "95% interval lower bound" in html
    # The answer first: a verdict section opens the page, each line with its 95% bound or why not.
    assert html.index("<h2>Verdict</h2>") < html.index("<h2>Relative performance</h2>")
    first_third = html[: len(html) // 3]
    assert "Verdict" in first_third and re.search(r"lower bound \d+\.\d%|cannot tell|Keep the originals", first_third)
    # one decision per model first, then the questions per model and metric
    assert res.verdict and res.verdict[0].startswith("cnn: ") and res.verdict[1].startswith("vit: ")
    assert "cnn (top1):" in res.verdict
    verdict = pd.read_csv(out / "report" / "verdict.csv")
    assert set(verdict["question"]) == {"matched", "train", "test"} and set(verdict["model"]) == {"vit", "cnn"}
    cells = pd.read_csv(out / "report" / "cells.csv")
    assert (cells["interval"] == "bootstrap").all()
    # the cells of models trained at the baseline level are about those models (paired over images and
    # repeats); every other cell is about models trained at its level: test images plus the seeds' spread
    at_base = cells["train_level"] == cells["baseline_train_level"]
    assert (cells.loc[at_base, "rel_interval"] == "paired").all()
    assert (cells.loc[~at_base, "rel_interval"] == "images+seeds").all() and (cells.loc[~at_base, "spread_df"] > 0).all()
    assert (cells.loc[~at_base, "rel_low"] <= cells.loc[~at_base, "rel_test_low"] + 1e-9).all()
    assert (cells["ci_low"] <= cells["mean"]).all() and (cells["mean"] <= cells["ci_high"]).all()
    adv = pd.read_csv(out / "report" / "advice.csv")
    assert len(adv) == 2 * 3 and set(adv["model"]) == {"vit", "cnn"}
    assert set(res.paths) >= {res.index_html, *res.figures}


def test_build_report_without_results_or_store_still_writes_a_page(tmp_path):
    from report_data import write_sweep_copy

    # a folder that is no sweep's output (a dataset, a typo) is refused, and nothing is written into it
    (tmp_path / "photo.jpg").write_bytes(b"x")
    with pytest.raises(ReportError, match="is not the output folder of a sweep"):
        build_report(str(tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photo.jpg"]
    write_sweep_copy(tmp_path)
    res = build_report(str(tmp_path))
    html = (tmp_path / "report" / "index.html").read_text()
    assert "No results yet" in html and res.figures == []
    with pytest.raises(ReportError, match="does not exist"):
        build_report(str(tmp_path / "missing"))
    with pytest.raises(ReportError, match="keep fraction"):
        build_report(str(tmp_path), keep_fraction=0)


def test_cli_report(tmp_path):
    from typer.testing import CliRunner

    from lossyvision.cli import app
    from report_data import write_results

    from report_data import write_sweep_copy

    write_results(tmp_path, result_rows(models=("m",), repeats=2))
    runner = CliRunner()
    write_sweep_copy(tmp_path)
    res = runner.invoke(app, ["report", str(tmp_path), "--keep", "95%", "--no-mlflow"])
    assert res.exit_code == 0, res.output
    assert "wrote" in res.output and "index.html" in res.output
    assert "&ge; 95%" in (tmp_path / "report" / "index.html").read_text()
    bad = runner.invoke(app, ["report", str(tmp_path / "nope")])
    assert bad.exit_code == 2 and "does not exist" in bad.output


def test_zero_baseline_is_skipped_with_a_warning(tmp_path):
    from report_data import write_results

    df = result_rows(models=("good", "dead"), repeats=1)
    df.loc[df.model == "dead", "value"] = 0.0
    with pytest.raises(ReportError, match="relative values are undefined"):
        relative_cells(cell_table(df))
    notes: list[str] = []
    rel = relative_cells(cell_table(df), skipped=notes)
    assert set(rel["model"]) == {"good"} and len(notes) == 1 and "dead/top1" in notes[0]
    from report_data import write_sweep_copy

    write_results(tmp_path, df)
    write_sweep_copy(tmp_path)
    res = build_report(str(tmp_path))
    assert [p.rsplit("/", 1)[-1] for p in res.figures] == ["heatmap-good-top1.png"]
    assert any("dead/top1" in w for w in res.warnings)
