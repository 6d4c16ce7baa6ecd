"""The adaptive search end to end on a real local Ray (2 CPUs): Tune's Searcher, the grid's keys, resume.

Tiny: the demo photos at 32 px, resnet10t for a few epochs, three levels. What is checked is the
engine, whatever path the (noisy) tiny models send the search down: every training it ran is a
key of the grid the same sweep would plan without ``search:``, evaluated only where its question
reads; search.json tells the path in the order trained; the report shows it; a rerun does nothing;
and a driver killed mid-search resumes without retraining what finished.
"""

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

pytestmark = pytest.mark.ray

LEVELS = [0, 2, 4]


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory) -> str:
    from lossyvision.demo import build_demo_dataset

    root = tmp_path_factory.mktemp("data") / "demo"
    build_demo_dataset(str(root), train_per_class=4, test_per_class=3, image_size=32)
    return str(root)


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("store"))


def write_sweep(path: Path, demo_root: str, store: str, output: Path, epochs: int = 3, **over) -> Path:
    data = {
        "name": output.name, "dataset": {"kind": "imagefolder", "root": demo_root},
        "codec": {"name": "jpegxl", "effort": 1}, "train_levels": LEVELS, "test_levels": LEVELS,
        "models": [{"name": "r10", "task": "classification", "arch": "resnet10t", "epochs": epochs,
                    "lr": 0.003, "batch_size": 16, "image_size": 32}],
        "resources": {"trial": {"cpu": 1}, "eval": {"cpu": 1}}, "repeats": 2,
        "report": {"keep": 0.05}, "search": {"question": "matched", "margin": 0},
        "store": store, "output": str(output), "max_failures": 0, **over,
    }
    path.write_text(yaml.safe_dump(data))
    return path


def grid_keys(sweep_file: Path, repeats: int) -> set[str]:
    """The trial keys the same sweep without ``search:`` plans, with ``repeats`` repeats."""
    from lossyvision.spec import load_sweep
    from lossyvision.sweep.plan import plan
    from lossyvision.sweep.paths import resolve_paths
    from lossyvision.sweep.trials import read_manifest

    data = yaml.safe_load(sweep_file.read_text())
    data.pop("search")
    data["repeats"] = repeats
    plain = sweep_file.with_name("plain.yaml")
    plain.write_text(yaml.safe_dump(data))
    sweep = resolve_paths(load_sweep(plain))
    return {t.key for t in plan(sweep, read_manifest(sweep)).trials}


def check_search_output(out: Path, keys: set[str]) -> dict:
    search = json.loads((out / "search.json").read_text())
    [s] = search["searches"]
    assert s["done"] and s["reason"], s
    trained = [t["key"] for t in s["trained"]]
    assert trained and set(trained) <= keys, (trained, keys)          # the grid's own keys
    assert s["trained"][0]["level"] == 0 and s["trained"][0]["repeat"] == 0  # the baseline explores first
    for key in trained:
        assert (out / "checkpoints" / key / "trial.json").exists()
    results = pd.read_parquet(out / "results.parquet")
    cells = results.drop_duplicates("cell_id")
    assert sorted(cells["trial_id"]) == sorted(trained)                # one question cell per training
    assert (cells["train_level"] == cells["test_level"]).all()         # matched: tested at its own level
    explored = [t for t in s["trained"] if t["repeat"] == 0]
    confirmed = [t for t in s["trained"] if t["repeat"] > 0]
    if s["outcome"] in ("advised", "not confirmed"):
        assert {(t["level"], t["repeat"]) for t in confirmed} == \
            {(lv, r) for lv in (0.0, s["claim"]["level"]) for r in (1, 2)}
        assert s["claim"]["repeats"] == 2
    else:
        assert s["outcome"] == "none passed" and not confirmed
    assert len(explored) <= 3 and len(trained) <= s["full_grid_trainings"] + 2
    plan = json.loads((out / "plan.json").read_text())
    assert sorted(t["repeat"] for t in plan["trials"]) == sorted(t["repeat"] for t in s["trained"])
    return s


def test_search_sweep_trains_grid_keys_reports_its_path_and_reruns_do_nothing(demo_root, store, tmp_path, capsys):
    from lossyvision.runners.cluster import init_ray, shutdown_ray
    from lossyvision.sweep.run import run_sweep

    init_ray(num_cpus=2)
    try:
        out = tmp_path / "search"
        sweep_file = write_sweep(tmp_path / "s.yaml", demo_root, store, out, limit_per_split=27)
        outcome = run_sweep(sweep_file)
        assert outcome.ok, (outcome.trial_failures, outcome.cell_failures)
        printed = capsys.readouterr().out
        assert "search (matched): training only the levels its answer needs" in printed
        assert "search r10/jpegxl: training level 0 repeat 0 (explore)" in printed
        s = check_search_output(out, grid_keys(sweep_file, 3))
        assert outcome.trials_run == len(s["trained"])
        assert outcome.report, printed  # the report's failure is a warning in the sweep's output
        html = (out / "report" / "index.html").read_text()
        assert "Adaptive search: the answer on fresh seeds" in html and "stopped:" in html

        before = (out / "search.json").read_text()
        again = run_sweep(sweep_file, build_report=False)
        assert again.ok and again.trials_run == 0 and again.cells_run == 0
        assert json.loads((out / "search.json").read_text())["searches"] == json.loads(before)["searches"]
    finally:
        shutdown_ray()


@pytest.mark.nightly
def test_killed_search_driver_resumes_from_its_finished_trials(demo_root, store, tmp_path):
    """SIGKILL the driver once the baseline's exploration run has finished; the rerun goes on from there."""
    out = tmp_path / "killed"
    sweep_file = write_sweep(tmp_path / "k.yaml", demo_root, store, out, epochs=4, limit_per_split=27,
                             resources={"trial": {"cpu": 2}, "eval": {"cpu": 1}})  # one training at a time
    cmd = [sys.executable, "-m", "lossyvision.cli", "sweep", "run", str(sweep_file), "--num-cpus", "2", "--no-report"]
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    env.pop("RAY_ADDRESS", None)
    log = (tmp_path / "driver.log").open("wb")
    driver = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        deadline = time.time() + 900  # a loaded 2-core machine: minutes per training and evaluation
        first = None
        while time.time() < deadline and driver.poll() is None:
            search = out / "search.json"
            if search.exists():
                trained = json.loads(search.read_text())["searches"][0]["trained"]
                if trained:
                    first = trained[0]["key"]
                    break
            time.sleep(0.2)
        assert driver.poll() is None, "the search finished before it could be killed: " + \
            (tmp_path / "driver.log").read_text()[-3000:]
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait(30)
    finally:
        time.sleep(1)
        try:
            os.killpg(driver.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    meta = json.loads((out / "checkpoints" / first / "trial.json").read_text())
    rerun = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, start_new_session=True)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    assert json.loads((out / "checkpoints" / first / "trial.json").read_text()) == meta  # not retrained
    assert f"trial {first}: started" not in rerun.stdout
    s = check_search_output(out, grid_keys(sweep_file, 3))
    assert s["trained"][0]["key"] == first
