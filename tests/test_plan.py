"""The grid as data: trial and cell keys, resume skipping, eval levels for budgets, the DCR join."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from lossyvision.spec import ModelSpec, Sweep
from lossyvision.sweep.plan import (CellSpec, PlanError, TrialSpec, cells, compress_levels, done_cell_keys,
                                    grid_size, level_dcr, pending, plan)
from lossyvision.sweep.results import NO_BUDGET


def model(name: str) -> ModelSpec:
    # model_construct: the plan never looks at the task registry.
    return ModelSpec.model_construct(name=name, task="classification", arch="resnet10t", epochs=1)


def make_sweep(tmp_path, **over) -> Sweep:
    data = dict(name="s", dataset={"kind": "imagefolder", "root": str(tmp_path)},
                train_levels=[0, 2, 1], test_levels=[0, 1, 5], models=[model("a"), model("b")],
                output=str(tmp_path / "out"))
    data.update(over)
    return Sweep(**data)


def manifest_rows(levels=(0.0, 1.0, 2.0, 5.0), splits=("train", "test")) -> pd.DataFrame:
    rows = []
    for split in splits:
        for level in levels:
            for i in range(3):
                rows.append(dict(relpath=f"{split}/c{i % 2}/{i}.jpg", split=split, label=i % 2, codec="jpegxl",
                                 level=level, status="ok", compressed_bytes=100 + i,
                                 dcr_vs_source=level / 10 + i / 100, dcr_vs_raw=0.9 + level / 100))
    return pd.DataFrame(rows)


def test_trial_and_cell_keys_are_stable_and_path_safe():
    t = TrialSpec("vit-b16", 2.0, 0)
    assert t.key == "vit-b16__d2__r0"
    assert TrialSpec("m", 0.5, 1, 50_000_000).key == "m__d0.5__r1__b50000000"
    assert CellSpec(t, 10.0).key == "vit-b16__d2__r0__t10"
    assert TrialSpec.from_dict(t.as_dict()) == t
    assert "/" not in CellSpec(TrialSpec("m.x_1", 0.25, 3), 1.5).key


def test_plan_is_the_product_in_stable_order(tmp_path):
    sweep = make_sweep(tmp_path, repeats=2)
    trials = plan(sweep)
    assert len(trials) == 2 * 3 * 2
    assert trials[0] == TrialSpec("a", 0.0, 0, NO_BUDGET)
    assert [t.train_level for t in trials[:6:2]] == [0.0, 1.0, 2.0]  # levels sorted by the spec
    assert len({t.key for t in trials}) == len(trials)
    assert plan(sweep) == trials  # pure: same input, same list
    all_cells = cells(sweep, trials)
    assert len(all_cells) == len(trials) * 3
    assert grid_size(trials, all_cells).describe().startswith("grid: 12 trials, 36 evaluations")
    assert compress_levels(sweep) == [0.0, 1.0, 2.0, 5.0]


def test_budget_axis_and_eval_levels(tmp_path):
    sweep = make_sweep(tmp_path, budgets=["1KB", "2KB"], eval_levels="same", models=[model("a")])
    trials = plan(sweep)
    assert {t.budget for t in trials} == {1000, 2000} and len(trials) == 3 * 2
    same = cells(sweep, trials)
    assert all(c.test_level == c.trial.train_level for c in same) and len(same) == 6
    base = cells(make_sweep(tmp_path, budgets=["1KB"], eval_levels="baseline", models=[model("a")]),
                 plan(make_sweep(tmp_path, budgets=["1KB"], models=[model("a")])))
    assert {c.test_level for c in base} == {0.0}
    everything = cells(make_sweep(tmp_path, budgets=["1KB"], models=[model("a")]), trials)
    assert len(everything) == len(trials) * 3


def test_resume_skips_done_keys(tmp_path):
    sweep = make_sweep(tmp_path)
    trials = plan(sweep)
    done = {trials[0].key, trials[3].key}
    todo = pending(trials, done)
    assert len(todo) == len(trials) - 2 and trials[0] not in todo and todo[0] == trials[1]
    all_cells = cells(sweep, trials)
    c = all_cells[4]
    results = pd.DataFrame([dict(model=c.trial.model, train_level=c.trial.train_level, repeat=c.trial.repeat,
                                 budget=c.trial.budget, test_level=c.test_level, metric=m, value=0.5)
                            for m in ("top1", "top5")])
    assert done_cell_keys(results) == {c.key}
    assert [x.key for x in pending(all_cells, done_cell_keys(results))] == \
        [x.key for x in all_cells if x.key != c.key]
    assert done_cell_keys(pd.DataFrame()) == set()


def test_level_dcr_is_the_mean_over_ok_rows_of_the_split_and_level():
    m = manifest_rows()
    m.loc[(m.split == "test") & (m.level == 1.0) & (m.relpath.str.endswith("2.jpg")), "status"] = "failed"
    dcr = level_dcr(m, "test", 1.0)
    assert dcr.n_images == 2
    assert dcr.vs_source == pytest.approx((0.1 + 0.11) / 2)
    assert dcr.vs_raw == pytest.approx(0.91)
    assert math.isnan(level_dcr(m, "test", 7.0).vs_source)
    assert level_dcr(m, "train", 2.0, codec="webp").n_images == 0


def test_plan_with_manifest_names_missing_levels(tmp_path):
    sweep = make_sweep(tmp_path)
    assert len(plan(sweep, manifest_rows())) == 6
    with pytest.raises(PlanError, match=r"no 'test' images at level\(s\) 5"):
        plan(sweep, manifest_rows(levels=(0.0, 1.0, 2.0)))


def test_budget_trials_train_on_the_selected_subset(tmp_path):
    """A budget trial's images: budget.select_subset over the ok train rows at its level."""
    from lossyvision.demo import build_demo_dataset
    from lossyvision.sweep.trials import train_images

    root = tmp_path / "demo"
    build_demo_dataset(str(root), train_per_class=3, test_per_class=1, image_size=16)
    from lossyvision.datasets import create_dataset

    reader = create_dataset("imagefolder", str(root))
    rows = [dict(relpath=r.relpath, split=r.split, label=r.label, codec="jpegxl", level=1.0, status="ok",
                 compressed_bytes=100, dcr_vs_source=0.5, dcr_vs_raw=0.9,
                 output_path=f"jpegxl-1/{r.relpath}") for r in reader.records()]
    manifest = pd.DataFrame(rows)
    n_classes = len(reader.classes)
    sweep = make_sweep(root, train_levels=[1], test_levels=[1], budgets=[f"{100 * n_classes + 50}B"],
                       models=[model("a")], output=str(tmp_path / "out"))
    trial = plan(sweep)[0]
    images = train_images(sweep, trial, manifest)
    assert len(images) == n_classes and images.compressed_bytes == 100 * n_classes  # fits, never over
    assert sorted(images.targets) == list(range(n_classes))  # class-balanced: one of each
    assert images.uris[0].startswith(sweep.store_uri) and not images.exhausted
    again = train_images(sweep, trial, manifest)
    assert again.relpaths == images.relpaths  # deterministic
    everything = train_images(make_sweep(root, train_levels=[1], test_levels=[1], budgets=["1MB"],
                                         models=[model("a")], output=str(tmp_path / "out")),
                              trial.__class__("a", 1.0, 0, 1_000_000), manifest)
    assert everything.exhausted and len(everything) == 3 * n_classes


def test_a_local_ray_without_the_resources_asked_for_is_a_clear_error(tmp_path):
    from lossyvision.spec import SpecError
    from lossyvision.sweep.run import check_local_resources

    sweep = make_sweep(tmp_path, resources={"trial": {"cpu": 1, "gpu": 1}})
    with pytest.raises(SpecError, match=r"resources.trial.gpu: asks for 1 but the local Ray has 0"):
        check_local_resources(sweep, {"CPU": 2.0})
    check_local_resources(make_sweep(tmp_path), {"CPU": 2.0})  # the defaults fit
