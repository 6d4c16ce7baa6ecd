"""``lossyvision sweep plan``: what a run would do (grid, images to compress, bytes, time), writing nothing."""

from __future__ import annotations

import json

import yaml
from typer.testing import CliRunner

from datasets_fixtures import make_imagefolder
from lossyvision.cli import app


def sweep_file(tmp_path, **over):
    data = {"name": "p", "dataset": {"kind": "imagefolder", "root": str(tmp_path / "data")},
            "codecs": [{"name": "jpegxl", "effort": 1, "levels": [0, 2]}, {"name": "jpeg", "levels": [90, 50]}],
            "models": [{"name": "m", "task": "classification", "arch": "resnet10t", "image_size": 32, "epochs": 1}],
            "output": str(tmp_path / "out"), **over}
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_plan_says_what_a_run_would_do_and_writes_nothing(tmp_path):
    from lossyvision import compress
    from lossyvision.spec import load_sweep
    from lossyvision.sweep.plan import plan
    from lossyvision.sweep.paths import resolve_paths
    from lossyvision.sweep.trials import read_manifest

    make_imagefolder(tmp_path / "data", per_class=3)
    path = sweep_file(tmp_path)
    runner = CliRunner()
    fresh = runner.invoke(app, ["sweep", "plan", str(path), "--sample", "2"])
    assert fresh.exit_code == 0, fresh.output
    text = fresh.output
    assert "sweep p: valid; nothing was written" in text and "grid: 4 trials, 10 evaluations" in text
    assert "jpegxl: 18 images x 2 levels: 36 to compress" in text and "jpeg: 18 images x 2 levels: 36 to compress" in text
    assert "estimated from 2 images" in text and "note: some levels are not compressed yet" in text
    assert not (tmp_path / "out").exists()  # nothing written, not even the output folder

    # Compressed (serially, no Ray): the keys are known; nothing is done yet.
    sweep = resolve_paths(load_sweep(path))
    for args in compress.sweep_job_args(sweep):
        options = compress.CompressOptions(codec=args["codec"], codec_options=args["codec_options"],
                                           levels=args["levels"])
        compress.run_job(args["records"], args["source"], args["store_uri"], options, compress.execute_serially)
    ready = runner.invoke(app, ["sweep", "plan", str(path)])
    assert "done: 0 trials, 0 evaluations; to run: 4 trials, 10 evaluations" in ready.output, ready.output
    assert "all compressed" in ready.output and "36 to compress" not in ready.output

    # One trial finished: it is done; after an edit of the model it is stale.
    from lossyvision import output as outdir

    grid = plan(sweep, read_manifest(sweep))
    outdir.mark(sweep.output)  # as a run does first
    done = tmp_path / "out" / "checkpoints" / grid.trials[0].key
    done.mkdir(parents=True)
    (done / "trial.json").write_text(json.dumps({"key": grid.trials[0].key}))
    again = runner.invoke(app, ["sweep", "plan", str(path)])
    assert "done: 1 trials, 0 evaluations; to run: 3 trials, 10 evaluations" in again.output, again.output
    edited = sweep_file(tmp_path, models=[{"name": "m", "task": "classification", "arch": "resnet10t",
                                           "image_size": 32, "epochs": 2}])
    stale = runner.invoke(app, ["sweep", "plan", str(edited)])
    assert "stale in the output (an earlier configuration; kept, not used): 1 trials" in stale.output, stale.output
    assert "checkpoints of" in stale.output and "MB" in stale.output


def test_plan_refuses_a_bad_file_in_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ntrain_levels: [true]\n")
    result = CliRunner().invoke(app, ["sweep", "plan", str(bad)])
    assert result.exit_code == 2 and "Traceback" not in result.output and "train_levels" in result.output
