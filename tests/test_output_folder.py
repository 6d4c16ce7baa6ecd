"""The output folder is read through one class (:class:`lossyvision.output.OutputFolder`): each of its file
names is declared once in the package, and the commands that only read an output (``sweep status``,
``report``, ``advise``, ``sweep sync``) work on a finished output whose dataset and store are gone."""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from lossyvision.cli import app
from lossyvision.output import OutputFolder

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "platform" / "lossyvision"
FIXTURE = REPO / "tests" / "fixtures" / "demo-output"

#: Every file name of an output folder; each must be a string constant in exactly one place of the package.
FILE_NAMES = ("sweep.yaml", "state.json", "results.parquet", "results.csv", "plan.json", "search.json",
              "verdict.json", "scaling_fit.json", "lossyvision-output.json", ".lossyvision.lock")
#: The same text meaning something else: the key of the ConfigMap a submitted RayJob mounts the sweep file from,
#: a Hugging Face ``save_to_disk`` folder's own file.
OTHER_MEANINGS = {("submit.py", "sweep.yaml"), ("datasets/hf.py", "state.json")}


def _string_constants(path: Path) -> list[str]:
    """String constants in code (docstrings left out: they may name a file as often as they like)."""
    tree = ast.parse(path.read_text())
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr)
                  and isinstance(node.body[0].value, ast.Constant)}
    return [node.value for node in ast.walk(tree) if isinstance(node, ast.Constant) and isinstance(node.value, str)
            and id(node) not in docstrings]


def test_each_output_file_name_is_declared_once_in_the_package():
    where: dict[str, list[str]] = {name: [] for name in FILE_NAMES}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = str(path.relative_to(PACKAGE))
        for value in _string_constants(path):
            if value in where and (rel, value) not in OTHER_MEANINGS:
                where[value].append(rel)
    assert {name: files for name, files in where.items() if len(files) != 1} == {}


def test_output_folder_paths_local_and_remote(tmp_path):
    local = OutputFolder(tmp_path / "out")
    assert local.sweep_copy == str(tmp_path / "out" / "sweep.yaml")
    assert local.results_file == str(tmp_path / "out" / "results.parquet")
    assert local.predictions_uri("k") == str(tmp_path / "out" / "predictions" / "k.parquet")
    assert local.default_store == str(tmp_path / "out" / "store")
    remote = OutputFolder("s3://bucket/runs/demo/")
    assert remote.state == "s3://bucket/runs/demo/state.json" and remote.report_dir == "s3://bucket/runs/demo/report"
    assert not local.exists() and not local.is_sweep_output()


def _finished_output_elsewhere(tmp_path: Path) -> tuple[Path, Path, Path]:
    """The demo's finished output, its sweep copy naming a dataset and a store of its own (under tmp_path),
    its MLflow in the output folder (never the fixture's recorded one), and 100 bootstrap resamples (the
    schema's least: these tests are about reading OUTPUT, not the statistics)."""
    from report_data import write_store

    output = tmp_path / "runs" / "demo"
    shutil.copytree(FIXTURE, output)
    dataset = tmp_path / "data" / "demo"
    (dataset / "train" / "cat").mkdir(parents=True)
    (dataset / "train" / "cat" / "a.jpg").write_bytes(b"not read")
    store = write_store(tmp_path / "elsewhere")
    copy = output / "sweep.yaml"
    data = yaml.safe_load(copy.read_text())
    data["dataset"]["root"] = str(dataset)
    data["store"] = str(store)
    data["report"]["resamples"] = 100
    data.pop("tracking", None)
    copy.write_text(yaml.safe_dump(data, sort_keys=False))
    return output, dataset, store


def _delete_dataset_and_move_store(tmp_path: Path, dataset: Path, store: Path) -> None:
    shutil.rmtree(dataset)
    shutil.move(str(store), str(tmp_path / "moved-store"))


def test_status_report_and_advise_run_on_an_output_whose_dataset_and_store_are_gone(tmp_path):
    from lossyvision.output import load_plan

    output, dataset, store = _finished_output_elsewhere(tmp_path)
    runner = CliRunner()
    before = runner.invoke(app, ["advise", str(output)])
    assert before.exit_code == 0, before.output
    _delete_dataset_and_move_store(tmp_path, dataset, store)

    grid = load_plan(str(output))
    status = runner.invoke(app, ["sweep", "status", str(output)])
    assert status.exit_code == 0, status.output
    trials, cells = len(grid.trials), len(grid.cells)
    assert f"demo: trials {trials} " in status.output and f"cells {cells} ({cells} done)" in status.output  # the
    # fixture keeps no checkpoints (its trials show as missing): every cell's results are there

    report = runner.invoke(app, ["report", str(output), "--no-mlflow"])
    assert report.exit_code == 0, report.output
    assert (output / "report" / "index.html").exists() and (output / "verdict.json").exists()
    assert f"No manifest found at {store}" in (output / "report" / "index.html").read_text()

    advise = runner.invoke(app, ["advise", str(output)])
    assert advise.exit_code == 0, advise.output
    assert advise.output == before.output  # the same answer without the dataset and the store
    assert advise.output.splitlines() == [ln for ln in report.output.splitlines()
                                          if not ln.startswith(("wrote ", "warning: "))]
    assert not dataset.exists() and not store.exists()  # nothing was recreated where they were


@pytest.mark.slow  # MLflow's SQLite store is made and migrated: tens of seconds on 2 busy cores
def test_sync_runs_on_an_output_whose_dataset_and_store_are_gone(tmp_path):
    import sqlite3

    output, dataset, store = _finished_output_elsewhere(tmp_path)
    _delete_dataset_and_move_store(tmp_path, dataset, store)
    sync = CliRunner().invoke(app, ["sweep", "sync", str(output)])
    assert sync.exit_code == 0, sync.output
    assert "trial run(s) of demo to sqlite:" in sync.output
    with sqlite3.connect(output / "mlflow.db") as db:  # every cell is done and no driver runs: the sweep is closed
        assert db.execute("select status from runs where name = 'demo'").fetchall() == [("FINISHED",)]
        tags = {k for (k,) in db.execute("select key from tags where key like 'lossyvision.%resnet10t%'")}
    assert "lossyvision.recommended.resnet10t" in tags and any(".top1." in k for k in tags)  # the verdicts
    assert not dataset.exists() and not store.exists()
