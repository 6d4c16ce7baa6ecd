"""The results table: schema, append-as-cells-complete without duplicates, atomic files."""

from __future__ import annotations

import pandas as pd
import pytest

from lossyvision.spec import ModelSpec, Sweep
from lossyvision.sweep.evaluate import cell_rows
from lossyvision.sweep.plan import CellSpec, TrialSpec
from lossyvision.sweep.results import KEY, SCHEMA, append_results, read_results


def row(test_level: float, metric: str, value: float, train_level: float = 1.0, trial: TrialSpec | None = None) -> dict:
    trial = trial or TrialSpec("m", train_level, 0, config="c0ffee0000")
    cell = CellSpec(trial, test_level, "5eed000000")
    return dict(sweep="s", model="m", task="classification", codec="jpegxl", train_level=train_level,
                test_codec="jpegxl", test_level=test_level, train_bpp=1.0, test_bpp=1.0, train_quality=float("nan"),
                test_quality=float("nan"), quality_metric=None,
                repeat=0, budget=-1, metric=metric, value=value, ci_low=value - 0.1, ci_high=value + 0.1,
                confidence=0.95, n_test_images=100, rel=float("nan"), rel_low=float("nan"), rel_high=float("nan"),
                baseline_cell=None, train_dcr=0.3, test_dcr=0.4,
                train_dcr_raw=0.9, test_dcr_raw=0.95, n_train_images=10, train_bytes=1000,
                trial_id=trial.key, trial_hash=trial.config, cell_id=cell.key, cell_hash=cell.config,
                finished_at="2026-01-01T00:00:00+00:00")


def test_append_dedups_on_key_and_writes_parquet_and_csv(tmp_path):
    out = str(tmp_path)
    assert read_results(out).empty and list(read_results(out).columns) == SCHEMA.names
    assert append_results(out, [row(0, "top1", 0.5), row(0, "top5", 0.9)]) == 2
    assert append_results(out, [row(0, "top1", 0.1), row(2, "top1", 0.4)]) == 1  # first value stays
    table = read_results(out)
    assert len(table) == 3 and not table.duplicated(list(KEY)).any()
    assert table.loc[(table.test_level == 0) & (table.metric == "top1"), "value"].item() == 0.5
    csv = pd.read_csv(tmp_path / "results.csv")
    assert len(csv) == 3 and list(csv.columns) == SCHEMA.names
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]  # no temp files left
    assert append_results(out, [row(0, "top1", 0.7)]) == 0
    # Another configuration of the same cell (a new hash) is a new row: never taken for the old one.
    other = row(0, "top1", 0.2, trial=TrialSpec("m", 1.0, 0, config="ed17ed0000"))
    assert append_results(out, [other]) == 1
    assert len(read_results(out)) == 4


def test_an_older_or_damaged_results_table_is_one_clear_error(tmp_path):
    from lossyvision.sweep.results import ResultsError

    pd.DataFrame([dict(model="m", value=0.5)]).to_parquet(tmp_path / "results.parquet")
    with pytest.raises(ResultsError, match="earlier lossyvision"):
        read_results(str(tmp_path))
    (tmp_path / "results.parquet").write_bytes(b"PAR1 truncated")
    with pytest.raises(ResultsError, match="damaged.*delete it"):
        read_results(str(tmp_path))


def test_rows_missing_a_column_are_refused(tmp_path):
    bad = row(0, "top1", 0.5)
    del bad["test_dcr"]
    with pytest.raises(ValueError, match="test_dcr"):
        append_results(str(tmp_path), [bad])


def test_cell_rows_join_the_store_dcr_and_carry_intervals_and_hashes(tmp_path):
    from report_data import outcomes_for

    spec = ModelSpec.model_construct(name="m", task="classification", arch="resnet10t")
    sweep = Sweep(name="s", dataset={"root": str(tmp_path)}, train_levels=[1], test_levels=[0, 2],
                  models=[spec], output=str(tmp_path))
    manifest = pd.DataFrame([
        dict(relpath=f"{s}/{i}.jpg", split=s, codec="jpegxl", level=lv, status="ok", compressed_bytes=10,
             dcr_vs_source=lv / 10 + i / 10, dcr_vs_raw=0.9)
        for s in ("train", "test") for lv in (0.0, 1.0, 2.0) for i in range(2)])
    cell = CellSpec(TrialSpec("m", 1.0, 0, config="c0ffee0000"), 2.0, "5eed000000")
    outcomes = outcomes_for(0.75, n=200)
    rows = cell_rows(sweep, cell, outcomes, {"task": "classification", "n_train_images": 2, "train_bytes": 20},
                     manifest)
    assert [r["metric"] for r in rows] == ["top1", "top5"]
    assert rows[0]["value"] == 0.75 and rows[0]["n_test_images"] == 200 and rows[0]["confidence"] == 0.95
    # the binomial interval of 150/200 is about +-6 points; the bootstrap agrees
    from scipy.stats import binomtest

    wilson = binomtest(150, 200).proportion_ci()
    assert rows[0]["ci_low"] == pytest.approx(wilson.low, abs=0.015)
    assert rows[0]["ci_high"] == pytest.approx(wilson.high, abs=0.015)
    assert rows[0]["train_dcr"] == pytest.approx(0.15) and rows[0]["test_dcr"] == pytest.approx(0.25)
    assert rows[0]["budget"] == -1 and rows[0]["trial_id"] == "m__jpegxl-1__r0__c0ffee0000"
    assert rows[0]["cell_id"] == cell.key and rows[0]["trial_hash"] == "c0ffee0000" and rows[0]["cell_hash"]
    assert append_results(str(tmp_path), rows) == 2


def test_status_grid_from_results_checkpoints_and_state_file(tmp_path):
    """done from results/checkpoints, failed from the state file, running -> interrupted when the driver died;
    checkpoints and results of another configuration listed as stale."""
    import json

    from lossyvision.sweep.plan import plan
    from lossyvision.sweep.status import SweepState, grid_status, render_status, stale_entries
    from test_plan import Reader, manifest_rows

    spec = ModelSpec.model_construct(name="m", task="classification", arch="resnet10t")
    sweep = Sweep(name="s", dataset={"root": str(tmp_path)}, train_levels=[0, 1, 2], test_levels=[0, 2],
                  models=[spec], output=str(tmp_path), repeats=2)
    grid = plan(sweep, manifest_rows(), reader=Reader())
    t0, t1, t2 = [t for t in grid.trials if t.repeat == 0]
    for key in (t0.key, "m__jpegxl-0__r0__01d0000000"):  # the second: a trial of an earlier configuration
        (tmp_path / "checkpoints" / key).mkdir(parents=True)
        (tmp_path / "checkpoints" / key / "trial.json").write_text(json.dumps({"task": "classification"}))
    append_results(str(tmp_path), [row(0, "top1", 0.5, train_level=0.0, trial=t0) | dict(
        cell_id=grid.cells_of(t0)[0].key)])
    append_results(str(tmp_path), [row(0, "top1", 0.4, train_level=0.0)])  # a stale cell
    state = SweepState(str(tmp_path))
    state.set_trial(t1.key, "failed", "FloatingPointError: loss is nan")
    state.set_trial(t2.key, "running")
    state.data["driver"] = {"pid": 2 ** 22 + 12345, "host": __import__("socket").gethostname()}  # no such pid
    state.save()
    table = grid_status(sweep, str(tmp_path), grid)
    assert len(table) == len(grid.cells) == 12
    table = table[table["repeat"] == 0].set_index(["train_level", "test_level"])
    assert table.loc[(0.0, 0.0), "state"] == "done" and table.loc[(0.0, 2.0), "state"] == "missing"
    assert table.loc[(0.0, 0.0), "trial_state"] == "done"
    assert table.loc[(1.0, 2.0), "state"] == "failed" and "nan" in table.loc[(1.0, 2.0), "error"]
    assert table.loc[(2.0, 0.0), "state"] == "interrupted"
    stale = stale_entries(str(tmp_path), grid)
    assert stale.trials == ["m__jpegxl-0__r0__01d0000000"] and len(stale.cells) == 1
    from rich.console import Console

    console = Console(record=True, width=120)
    console.print(render_status(sweep, grid_status(sweep, str(tmp_path), grid), stale))
    text = console.export_text()
    assert "trials 6 (1 done, 1 interrupted, 1 failed, 3 missing)" in text and "loss is nan" in text
    assert "d0 / r0" in text and "d2 / r1" in text and "bound method" not in text  # repeats render
    assert "stale trial m__jpegxl-0__r0__01d0000000" in text and "1 trial(s), 1 cell(s)" in text


def test_cli_status_and_sync_on_a_folder_that_is_not_a_sweep(tmp_path):
    from typer.testing import CliRunner

    from lossyvision.cli import app

    for cmd in ("status", "sync"):
        result = CliRunner().invoke(app, ["sweep", cmd, str(tmp_path)])
        assert result.exit_code == 2
        assert "sweep.yaml does not exist" in result.output


def test_cli_sweep_run_rejects_a_bad_sweep_file_cleanly(tmp_path):
    from typer.testing import CliRunner

    from lossyvision.cli import app

    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ntrain_levels: []\n")
    result = CliRunner().invoke(app, ["sweep", "run", str(bad)])
    assert result.exit_code == 2 and "train_levels" in result.output
    assert "Traceback" not in result.output


def test_an_output_from_before_configuration_keys_is_refused_and_left_untouched(tmp_path):
    """Rows without configuration hashes could be an edited sweep's: never mixed, one clear line."""
    from typer.testing import CliRunner

    from lossyvision.cli import app

    out = tmp_path / "old"
    out.mkdir()
    data = tmp_path / "data"
    (data / "train" / "c").mkdir(parents=True)
    sweep = tmp_path / "s.yaml"
    sweep.write_text(f"name: old\ndataset: {{root: {data}}}\ntrain_levels: [0]\ntest_levels: [0]\n"
                     "models: [{name: m, task: classification, arch: resnet10t}]\n"
                     f"output: {out}\n")
    (out / "sweep.yaml").write_text(sweep.read_text())  # what an earlier run copied there
    pd.DataFrame([dict(model="m", value=0.5)]).to_parquet(out / "results.parquet")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    runner = CliRunner()
    for args in (["sweep", "run", str(sweep)], ["report", str(out)], ["sweep", "status", str(out)],
                 ["advise", str(out)]):
        result = runner.invoke(app, args)
        assert result.exit_code == 2, (args, result.output)
        assert "earlier lossyvision" in result.output and "Traceback" not in result.output, result.output
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # nothing written


def test_advise_prints_the_verdict_of_a_sweep_without_budgets(tmp_path):
    from typer.testing import CliRunner

    from lossyvision.cli import app
    from report_data import make_output

    out = make_output(tmp_path, sensitivity=False)
    result = CliRunner().invoke(app, ["advise", str(out)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("cnn: ") and "cnn (top1):" in lines  # the decision first, then the questions
    assert any(ln.strip().startswith("Store everything at") for ln in lines)
    assert any("Serve compressed test data at" in ln for ln in lines)
    assert not (out / "scaling_fit.json").exists() and not (out / "report").exists()  # advice writes nothing
    only = CliRunner().invoke(app, ["advise", str(out), "--model", "vit"])
    assert only.exit_code == 0 and "cnn" not in only.output and "Store" in only.output
    refused = CliRunner().invoke(app, ["advise", str(out), "--budget", "1GB"])
    assert refused.exit_code == 2 and "only apply to a budget sweep" in refused.output
