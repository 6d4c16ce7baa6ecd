"""A task is one file: a task class registered from this file alone runs through a small sweep (compress, train,
evaluate, intervals, report; the plain functions `sweep run` drives through Ray) and its own headline leads the
verdict. Nothing else in lossyvision names it: the verdict's metric order, the outcome kind and the logged model's
pip requirements all come from the class's declarations."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
import torch

from lossyvision.metrics.classification import ClassificationOutcomes
from lossyvision.tasks.base import TASKS, Task, sample_ids

NAME = "tiny-texture"


class TinyTexture(Task):
    """A four-layer CNN from scratch that is judged by top-5 first: a headline no built-in task has."""

    name = NAME
    metric_names = ("top5", "top1")
    outcome_kind = "classification"
    requirements = ("scipy",)

    def build_model(self) -> Any:
        return torch.nn.Sequential(
            torch.nn.Conv2d(3, 8, 3, stride=2, padding=1), torch.nn.ReLU(),
            torch.nn.Conv2d(8, 16, 3, stride=2, padding=1), torch.nn.ReLU(),
            torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(16, len(self.classes)))

    @staticmethod
    def _batch(samples: Any) -> tuple[torch.Tensor, np.ndarray]:
        pairs = [samples[i] for i in range(len(samples))]
        x = torch.from_numpy(np.stack([rgb for rgb, _ in pairs])).permute(0, 3, 1, 2).float() / 255.0
        return x, np.asarray([int(t) for _, t in pairs], dtype=np.int64)

    def fit(self, model: Any, train: Any, *, on_epoch: Any = None, state: dict[str, Any] | None = None) -> None:
        torch.manual_seed(self.seed)
        x, y = self._batch(train)
        optimizer = torch.optim.SGD(model.parameters(), lr=self.spec.lr, momentum=0.9)
        model.train()
        for epoch in range(1, self.spec.epochs + 1):
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x), torch.from_numpy(y))
            loss.backward()
            optimizer.step()
            if on_epoch is not None:
                on_epoch(epoch, {"loss": loss.item()}, {"model": model.state_dict(), "epoch": epoch})

    def outcomes(self, model: Any, test: Any) -> ClassificationOutcomes:
        x, y = self._batch(test)
        model.eval()
        with torch.no_grad():
            scores = model(x).numpy()
        return ClassificationOutcomes.from_scores(sample_ids(test), scores, y)


@pytest.fixture
def tiny_task():
    """Registered for this test only (other tests list the known tasks)."""
    TASKS.register(NAME)(TinyTexture)
    try:
        yield TinyTexture
    finally:
        TASKS._entries.pop(NAME, None)


def test_a_task_registered_from_one_file_runs_a_sweep_and_leads_the_verdict_with_its_headline(tmp_path, tiny_task):
    from lossyvision import compress
    from lossyvision import output as outdir
    from lossyvision.demo import build_demo_dataset
    from lossyvision.preflight import preflight
    from lossyvision.report import build_report
    from lossyvision.spec import parse_sweep
    from lossyvision.sweep.evaluate import cell_rows, decode_test_level, evaluate_trial
    from lossyvision.sweep.models import requirements
    from lossyvision.sweep.plan import plan
    from lossyvision.sweep.relative import fill_relative
    from lossyvision.sweep.results import append_results, read_results
    from lossyvision.sweep.trials import read_manifest, read_meta, run_trial

    root = tmp_path / "demo"
    build_demo_dataset(str(root), train_per_class=4, test_per_class=3, image_size=32)
    sweep = preflight(parse_sweep({
        "name": "one-file", "dataset": {"kind": "imagefolder", "root": str(root)},
        "codec": {"name": "jpegxl", "effort": 1}, "train_levels": [0, 8], "test_levels": [0, 8],
        "models": [{"name": "tiny", "task": NAME, "arch": "four-layers", "epochs": 3, "lr": 0.05,
                    "image_size": 32}],
        "output": str(tmp_path / "out"), "report": {"resamples": 200},
    }))
    output = sweep.output

    # The sweep, as `sweep run` drives it (without Ray): compress, plan, train, evaluate, fill the intervals.
    outdir.mark(output)
    outdir.write_sweep(output, sweep)
    job = compress.run_job(sweep_reader(sweep).records(), str(root), sweep.store_uri,
                           compress.CompressOptions(codec="jpegxl", codec_options={"effort": 1}, levels=(0.0, 8.0)),
                           compress.execute_serially)
    assert (job.manifest.status == "ok").all()
    manifest = read_manifest(sweep)
    grid = plan(sweep, manifest)
    outdir.write_plan(output, grid)
    for trial in grid.trials:
        run_trial(sweep, trial, output, manifest=manifest)
    for cell in grid.cells:
        outcomes = evaluate_trial(sweep, cell, output, decode_test_level(sweep, manifest, cell.test_level))
        outdir.write_predictions(output, cell.key, outcomes)
        append_results(output, cell_rows(sweep, cell, outcomes, read_meta(output, cell.trial.key), manifest))
    fill_relative(output, sweep, grid)

    results = read_results(output)
    assert len(results) == 2 * len(grid.cells) == 8 and set(results["task"]) == {NAME}
    assert {m: set(g["metric_rank"]) for m, g in results.groupby("metric")} == {"top5": {0}, "top1": {1}}

    report = build_report(output)
    records = json.loads((tmp_path / "out" / "verdict.json").read_text())
    assert records and records[0]["model"] == "tiny" and records[0]["metric"] == "top5"
    assert [r["metric"] for r in records] == sorted((r["metric"] for r in records), reverse=True)  # top5 first
    headings = [line for line in report.verdict if line.startswith("tiny (")]
    assert headings and headings[0].startswith("tiny (top5)"), report.verdict
    assert any(line.startswith("tiny (top1)") for line in report.verdict)

    # The logged model's requirements: the base packages and the task's own.
    assert [r.split("==")[0] for r in requirements(tiny_task)] == ["torch", "torchvision", "numpy", "scipy"]


def sweep_reader(sweep: Any) -> Any:
    from lossyvision.datasets import create_dataset

    return create_dataset(sweep.dataset.kind, sweep.dataset.root, **sweep.dataset.options)


def test_a_task_whose_declarations_do_not_hold_fails_when_it_registers():
    class Unknown(TinyTexture):
        outcome_kind = "captioning"

    class Foreign(TinyTexture):
        metric_names = ("top1", "miou")

    with pytest.raises(ValueError, match="unknown outcome kind 'captioning'; known: classification, detection"):
        TASKS.register("bad-kind")(Unknown)
    class Vague(TinyTexture):
        supports_workers = "yes"

    with pytest.raises(ValueError, match=r"miou not among the classification outcomes' metrics \(top1, top5\)"):
        TASKS.register("bad-metric")(Foreign)
    with pytest.raises(ValueError, match="supports_workers must be True or False"):
        TASKS.register("bad-flag")(Vague)
    assert "bad-kind" not in TASKS and "bad-metric" not in TASKS and "bad-flag" not in TASKS


def test_headline_first_takes_the_order_the_sweep_recorded_and_falls_back_on_the_outcome_kinds():
    import pandas as pd

    from lossyvision.metrics import headline_first

    rows = pd.DataFrame({"metric": ["top1", "top5", "top1", "miou", "macc"], "metric_rank": [1, 0, 1, None, None]})
    assert headline_first(rows[:3]) == ["top5", "top1"]  # the task's own headline, as recorded
    assert headline_first(rows[3:]) == ["miou", "macc"]  # not recorded: the segmentation outcomes' order
    assert headline_first(pd.DataFrame({"metric": ["zeta", "macc", "miou"]})) == ["miou", "macc", "zeta"]
