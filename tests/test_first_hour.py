"""What a newcomer meets in the first hour, each with the message or fix it asks for: a folder given
as a CSV list, a sweep file given to ``sweep status``, near-miss field names, an unquoted ``${VAR}``
in a flow mapping, ``--levels -1``, inspect's DCR and a partial read's imbalance, the manifest's row
count in a shared store, a finished sweep's plan, ``submit --manifest`` with local paths, one exit
code for every damaged file, a file beside a folder of the same output name, and Ctrl-C in compress."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).parent))

from datasets_fixtures import make_imagefolder, photo_crop, write_image  # noqa: E402
from lossyvision.cli import app  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PLATFORM = str(ROOT / "platform")
MODEL = {"name": "m", "task": "classification", "arch": "resnet10t"}


def _invoke(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args])


def _error(result, code: int = 2) -> str:
    lines = result.output.strip().splitlines()
    assert result.exit_code == code, result.output
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    return lines[0]


def test_inspect_of_a_folder_as_a_csv_list_says_it_is_a_folder(tmp_path):
    root = make_imagefolder(tmp_path / "d", per_class=1, size=(24, 24))
    line = _error(_invoke("inspect", root, "--kind", "csv"))
    assert f"{root} is a folder, not a CSV or JSON-lines list" in line and "not found" not in line


def test_a_missing_relative_path_says_what_it_resolves_against(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    line = _error(_invoke("inspect", "data/demo"))
    assert f"data/demo not found (relative paths resolve against the current folder, {tmp_path})" in line
    sweep = tmp_path / "s.yaml"
    sweep.write_text(yaml.safe_dump({"name": "s", "dataset": {"root": "data/demo"}, "train_levels": [0],
                                     "test_levels": [0], "models": [MODEL], "output": "out"}))
    r = _invoke("sweep", "plan", sweep)
    assert r.exit_code == 2 and "dataset.root: data/demo does not exist (relative paths resolve against the " \
                                 f"current folder, {tmp_path})" in r.output


def test_sweep_status_given_a_sweep_file_names_its_output(tmp_path):
    sweep = tmp_path / "demo.yaml"
    sweep.write_text(yaml.safe_dump({"name": "s", "dataset": {"root": "x"}, "output": "runs/demo"}))
    line = _error(_invoke("sweep", "status", sweep))
    assert line == f"error: {sweep} is a sweep file; `sweep status` takes its output folder, here runs/demo"


def test_unknown_sweep_field_suggests_the_near_miss(tmp_path):
    sweep = tmp_path / "s.yaml"
    sweep.write_text(yaml.safe_dump({"name": "s", "dataset": {"root": str(tmp_path)}, "train_level": [0],
                                     "test_levels": [0], "models": [{**MODEL, "epoch": 1}], "output": "out"}))
    r = _invoke("sweep", "plan", sweep)
    assert r.exit_code == 2
    assert "train_level: unknown field; did you mean train_levels?" in r.output
    assert "models.0.epoch: unknown field; did you mean epochs?" in r.output
    assert "zzz: unknown field\n" in _invoke("sweep", "plan", _with(tmp_path, zzz=1)).output + "\n"


def _with(tmp_path: Path, **extra) -> Path:
    path = tmp_path / "extra.yaml"
    path.write_text(yaml.safe_dump({"name": "s", "dataset": {"root": str(tmp_path)}, "train_levels": [0],
                                    "test_levels": [0], "models": [MODEL], "output": "out", **extra}))
    return path


def test_unquoted_variable_in_a_flow_mapping_hints_to_quote_it(tmp_path, monkeypatch):
    monkeypatch.setenv("LV_ROOT", str(tmp_path))
    sweep = tmp_path / "s.yaml"
    sweep.write_text("name: s\ndataset: {root: ${LV_ROOT}/d, kind: imagefolder}\ntrain_levels: [0]\n"
                     "test_levels: [0]\nmodels: [{name: m, task: classification, arch: resnet10t}]\noutput: o\n")
    line = _error(_invoke("sweep", "plan", sweep))
    assert "not valid YAML: line 2" in line and 'quote values with ${...} inside {...}, e.g. "${LV_ROOT}"' in line
    sweep.write_text("name: s\ndataset: {root: [}\n")  # another YAML error: no such hint
    assert "quote values" not in _error(_invoke("sweep", "plan", sweep))


def test_negative_levels_name_the_option(tmp_path):
    root = make_imagefolder(tmp_path / "d", per_class=1, size=(24, 24))
    for command in (["compress", "--source", root, "--out", tmp_path / "o"], ["inspect", root]):
        line = _error(_invoke(*command, "--levels", "-1"))
        assert line == "error: --levels: levels must be >= 0, got '-1'"
    assert not (tmp_path / "o").exists()


def test_advise_options_of_a_budget_sweep_read_as_english(tmp_path):
    from test_cli_safety import make_output

    _, out = make_output(tmp_path)
    assert "--budget only applies to a budget sweep" in _error(_invoke("advise", out, "--budget", "2TB"))
    line = _error(_invoke("advise", out, "--budget", "2TB", "--store", "s"))
    assert "--budget, --store only apply to a budget sweep" in line


def test_inspect_prints_dcr_and_marks_a_partial_reads_imbalance(tmp_path):
    root = make_imagefolder(tmp_path / "d", per_class=3, size=(32, 32))
    r = _invoke("inspect", root, "--levels", "0,4", "--effort", "1", "--sample", "2")
    assert r.exit_code == 0, r.output
    header = next(line for line in r.output.splitlines() if line.strip().startswith("level"))
    assert header.split()[:2] == ["level", "DCR"] and "vs source" not in r.output
    j = json.loads(_invoke("inspect", root, "--levels", "0,4", "--effort", "1", "--sample", "2", "--json").output)
    for lv in j["estimate"]["levels"]:
        assert lv["dcr_vs_source"] == pytest.approx(1 - lv["ratio_vs_source"])
    row4 = next(line.split() for line in r.output.splitlines() if line.strip().startswith("4 "))
    assert float(row4[1]) == pytest.approx(j["estimate"]["levels"][1]["dcr_vs_source"], abs=1e-3)
    assert "partial read" not in r.output
    limited = _invoke("inspect", root, "--sample", "0", "--limit", "2")
    assert "imbalance" in limited.output and "of the 2 per split read (--limit): a partial read" in limited.output


def test_manifest_line_counts_the_whole_store_when_it_holds_more():
    from lossyvision.commands.compress import manifest_line
    from lossyvision.compress import JobResult

    result = JobResult(manifest=pd.DataFrame(), summary=pd.DataFrame(), done=30, skipped=0, store_rows=150)
    assert "(150 rows, 30 of them this command's codec and levels; 30 run now" in manifest_line("s", [result], 30)
    alone = JobResult(manifest=pd.DataFrame(), summary=pd.DataFrame(), done=0, skipped=30, store_rows=30)
    assert "(30 rows; 0 run now, 30 already done)" in manifest_line("s", [alone], 30)


def test_plan_of_a_finished_sweep_says_nothing_is_written():
    from lossyvision.sweep.preview import CodecWork, Preview, render_preview

    done = Preview("s", trials=2, cells=4, trials_done=2, cells_done=4, trials_unknown=0, cells_unknown=0,
                   stale_trials=0, stale_cells=0, codecs=[CodecWork("jpegxl", 10, [0, 1], 0, 0, 0.0, 0)],
                   checkpoint_bytes=20_000_000)
    text = "\n".join(render_preview(done))
    assert "writes: nothing new" in text and "0 files" not in text and "0 checkpoints" not in text
    todo = Preview("s", trials=2, cells=4, trials_done=1, cells_done=2, trials_unknown=0, cells_unknown=0,
                   stale_trials=0, stale_cells=0, codecs=[CodecWork("jpegxl", 10, [0, 1], 0, 0, 0.0, 0)],
                   checkpoint_bytes=20_000_000)
    assert "1 checkpoints of" in "\n".join(render_preview(todo))
    todo.search = True  # a search's plan: the grid's counts are its ceiling, named as such
    text = "\n".join(render_preview(todo))
    assert "full grid: 2 trials" in text and "writes: at most about" in text and "the part it trains" in text


def test_submit_manifest_warns_of_local_paths_the_cluster_cannot_see():
    from lossyvision.submit import local_path_warnings

    text = (ROOT / "sweeps" / "demo.yaml").read_text()
    warnings = local_path_warnings(text)
    assert any(w.startswith("dataset.root: data/demo is a relative local path: the cluster's pods do not see")
               for w in warnings)
    assert local_path_warnings("dataset: {root: s3://b/d}\noutput: s3://b/o\n") == []


def test_every_damaged_file_exits_1(tmp_path):
    """sweep.yaml, state.json, the manifest and results.parquet: the same kind of damage, the same code."""
    from test_cli_safety import make_output, truncate

    for name in ("sweep.yaml", "state.json", "store/manifest.parquet", "results.parquet"):
        _, out = make_output(tmp_path / name.replace("/", "_"))
        if name == "results.parquet":
            (out / name).write_bytes(b"PAR1 cut short")
        else:
            truncate(out / name)
        line = _error(_invoke("report", out, "--no-mlflow"), code=1)
        assert "is damaged" in line, (name, line)


def test_a_file_beside_a_folder_of_its_output_name_loses_no_image(tmp_path):
    from lossyvision import compress
    from lossyvision.datasets import create_dataset

    names = compress.output_names(["y.png", "y.jxl/a.png", "z.png"], ".jxl")
    assert names == {"y.png": "y.png.jxl", "y.jxl/a.png": "y.jxl/a.jxl", "z.png": "z.jxl"}
    assert compress.output_names(["y.jxl/a.png", "y.png", "z.png"], ".jxl") == names  # order does not matter
    root = tmp_path / "src"
    write_image(root / "train" / "cat" / "y.png", photo_crop("chelsea", 0, (24, 24)))
    write_image(root / "train" / "cat" / "y.jxl" / "a.png", photo_crop("chelsea", 1, (24, 24)))
    reader = create_dataset("imagefolder", str(root))
    job = compress.run_job(reader.records(), str(root), str(tmp_path / "store"),
                           compress.CompressOptions(codec_options={"effort": 1}, levels=(1.0,)),
                           compress.execute_serially, reader=reader)
    assert (job.manifest["status"] == "ok").all() and len(job.manifest) == 2
    for rel in job.manifest["output_path"]:
        assert (tmp_path / "store" / rel).is_file()


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_ctrl_c_in_compress_says_how_to_resume_and_stops_ray(tmp_path):
    import psutil

    root = make_imagefolder(tmp_path / "d", per_class=40, size=(256, 256))
    env = {**os.environ, "PYTHONPATH": PLATFORM, "RAY_AUTH_MODE": "disabled"}
    proc = subprocess.Popen([sys.executable, "-m", "lossyvision.cli", "compress", "--source", str(root), "--out",
                             str(tmp_path / "store"), "--levels", "0,1,2,3,5,8", "--num-cpus", "1"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    deadline = time.time() + 120
    ray_started = False
    while time.time() < deadline and proc.poll() is None and not ray_started:
        time.sleep(0.5)
        kids = psutil.Process(proc.pid).children(recursive=True)
        ray_started = any("raylet" in " ".join(k.cmdline()) for k in kids if k.is_running())
    assert ray_started, "Ray never started"
    time.sleep(3)  # into the job
    ray_processes = psutil.Process(proc.pid).children(recursive=True)
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C does: the whole foreground group
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted; rerun the same command to resume" in err and "Traceback" not in err
    _, alive = psutil.wait_procs(ray_processes, timeout=5)
    alive = [p for p in alive if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert not alive, [p.cmdline()[:2] for p in alive]  # no Ray process outlives the command
