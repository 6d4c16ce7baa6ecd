"""The results table: schema, append-as-cells-complete without duplicates, atomic files."""

from __future__ import annotations

import pandas as pd
import pytest

from lossyvision.spec import ModelSpec, Sweep
from lossyvision.sweep.evaluate import cell_rows
from lossyvision.sweep.plan import CellSpec, TrialSpec
from lossyvision.sweep.results import KEY, SCHEMA, append_results, read_results


def row(test_level: float, metric: str, value: float, train_level: float = 1.0) -> dict:
    return dict(sweep="s", model="m", task="classification", train_level=train_level, test_level=test_level,
                repeat=0, budget=-1, metric=metric, value=value, train_dcr=0.3, test_dcr=0.4,
                train_dcr_raw=0.9, test_dcr_raw=0.95, n_train_images=10, train_bytes=1000,
                trial_id="m__d1__r0", finished_at="2026-01-01T00:00:00+00:00")


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


def test_rows_missing_a_column_are_refused(tmp_path):
    bad = row(0, "top1", 0.5)
    del bad["test_dcr"]
    with pytest.raises(ValueError, match="test_dcr"):
        append_results(str(tmp_path), [bad])


def test_cell_rows_join_the_store_dcr(tmp_path):
    spec = ModelSpec.model_construct(name="m", task="classification", arch="resnet10t")
    sweep = Sweep(name="s", dataset={"root": str(tmp_path)}, train_levels=[1], test_levels=[0, 2],
                  models=[spec], output=str(tmp_path))
    manifest = pd.DataFrame([
        dict(relpath=f"{s}/{i}.jpg", split=s, codec="jpegxl", level=lv, status="ok", compressed_bytes=10,
             dcr_vs_source=lv / 10 + i / 10, dcr_vs_raw=0.9)
        for s in ("train", "test") for lv in (0.0, 1.0, 2.0) for i in range(2)])
    cell = CellSpec(TrialSpec("m", 1.0, 0), 2.0)
    rows = cell_rows(sweep, cell, {"top1": 0.75, "top5": 1.0},
                     {"task": "classification", "n_train_images": 2, "train_bytes": 20}, manifest)
    assert [r["metric"] for r in rows] == ["top1", "top5"]
    assert rows[0]["train_dcr"] == pytest.approx(0.15) and rows[0]["test_dcr"] == pytest.approx(0.25)
    assert rows[0]["budget"] == -1 and rows[0]["trial_id"] == "m__d1__r0"
    assert append_results(str(tmp_path), rows) == 2


def test_status_grid_from_results_checkpoints_and_state_file(tmp_path):
    """done from results/checkpoints, failed from the state file, running -> interrupted when the driver died."""
    import json

    from lossyvision.sweep.plan import cells, plan
    from lossyvision.sweep.status import SweepState, grid_status, render_status

    spec = ModelSpec.model_construct(name="m", task="classification", arch="resnet10t")
    sweep = Sweep(name="s", dataset={"root": str(tmp_path)}, train_levels=[0, 1, 2], test_levels=[0, 2],
                  models=[spec], output=str(tmp_path))
    t0, t1, t2 = plan(sweep)
    (tmp_path / "checkpoints" / t0.key).mkdir(parents=True)
    (tmp_path / "checkpoints" / t0.key / "trial.json").write_text(json.dumps({"task": "classification"}))
    append_results(str(tmp_path), [dict(row(0, "top1", 0.5, train_level=0.0), trial_id=t0.key)])
    state = SweepState(str(tmp_path))
    state.set_trial(t1.key, "failed", "FloatingPointError: loss is nan")
    state.set_trial(t2.key, "running")
    state.data["driver"] = {"pid": 2 ** 22 + 12345, "host": __import__("socket").gethostname()}  # no such pid
    state.save()
    table = grid_status(sweep, str(tmp_path)).set_index(["train_level", "test_level"])
    assert len(table) == len(cells(sweep, plan(sweep))) == 6
    assert table.loc[(0.0, 0.0), "state"] == "done" and table.loc[(0.0, 2.0), "state"] == "missing"
    assert table.loc[(0.0, 0.0), "trial_state"] == "done"
    assert table.loc[(1.0, 2.0), "state"] == "failed" and "nan" in table.loc[(1.0, 2.0), "error"]
    assert table.loc[(2.0, 0.0), "state"] == "interrupted"
    from rich.console import Console

    console = Console(record=True, width=120)
    console.print(render_status(sweep, grid_status(sweep, str(tmp_path))))
    text = console.export_text()
    assert "trials 3 (1 done, 1 interrupted, 1 failed)" in text and "loss is nan" in text


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
