"""The grid as data: trial and cell keys, resume skipping, eval levels for budgets, the DCR join."""

from __future__ import annotations

import math
import re

import pandas as pd
import pytest

from lossyvision.spec import ModelSpec, Sweep
from lossyvision.sweep.plan import (CellSpec, Grid, PlanError, TrialSpec, compress_levels, done_cell_keys,
                                    grid_size, level_dcr, pending, plan)
from lossyvision.sweep.layout import NO_BUDGET


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
                                 level=level, status="ok", compressed_bytes=100 + i, source_sha256=f"sha{i}",
                                 dcr_vs_source=level / 10 + i / 100, dcr_vs_raw=0.9 + level / 100))
    return pd.DataFrame(rows)


class Reader:
    """The two things planning asks of a dataset reader: class names and a split's records."""

    classes = ["c0", "c1"]

    def select(self, split):
        from lossyvision.datasets.base import Record

        return [Record(f"{split}/c{i % 2}/{i}.jpg", split, i % 2) for i in range(3)]


def grid_of(sweep, manifest=None):
    return plan(sweep, manifest_rows() if manifest is None else manifest, reader=Reader())


def test_trial_and_cell_keys_are_stable_and_path_safe():
    t = TrialSpec("vit-b16", 2.0, 0, config="3f9a2c1b07")
    assert t.key == "vit-b16__jpegxl-2__r0__3f9a2c1b07"  # the codec and level as the store's folder reads
    assert TrialSpec("m", 0.5, 1, 50_000_000, "abc").key == "m__jpegxl-0.5__r1__b50000000__abc"
    assert CellSpec(t, 10.0, "0123456789").key == "vit-b16__jpegxl-2__r0__3f9a2c1b07__t-jpegxl-10__0123456789"
    assert CellSpec(t, 70.0, "x", "avif").key.endswith("__t-avif-70__x")  # a cross-codec cell
    assert TrialSpec("m", 70.0, codec="avif", config="h").key == "m__avif-70__r0__h"
    assert TrialSpec.from_dict(t.as_dict()) == t
    assert CellSpec.from_dict(CellSpec(t, 1.0, "x").as_dict()) == CellSpec(t, 1.0, "x")
    assert "/" not in CellSpec(TrialSpec("m.x_1", 0.25, 3, config="ab"), 1.5, "cd").key


def test_plan_is_the_product_in_stable_order(tmp_path):
    sweep = make_sweep(tmp_path, repeats=2)
    grid = grid_of(sweep)
    trials = grid.trials
    assert len(trials) == 2 * 3 * 2
    assert (trials[0].model, trials[0].train_level, trials[0].repeat, trials[0].budget) == ("a", 0.0, 0, NO_BUDGET)
    assert [t.train_level for t in trials[:6:2]] == [0.0, 1.0, 2.0]  # levels sorted by the spec
    assert len({t.key for t in trials}) == len(trials)
    assert all(len(t.config) == 10 and t.key.endswith(t.config) for t in trials)
    assert grid_of(sweep).to_dict() == grid.to_dict()  # pure: same input, same grid
    assert len(grid.cells) == len(trials) * 3 and len({c.key for c in grid.cells}) == len(grid.cells)
    assert grid_size(grid, trials, grid.cells).describe().startswith("grid: 12 trials, 36 evaluations")
    assert compress_levels(sweep) == {"jpegxl": [0.0, 1.0, 2.0, 5.0]}
    assert Grid.from_dict(grid.to_dict()).digest == grid.digest


def keys(grid):
    return {t.key for t in grid.trials}, {c.key for c in grid.cells}


def test_an_edit_changes_exactly_the_keys_of_what_it_changes(tmp_path):
    """Same input, same keys; an edited model retrains only its own trials; where things run is not identity."""
    base = grid_of(make_sweep(tmp_path))
    trials, cells = keys(base)
    # Where the output, store and tracking live, the resources and retries: not part of a result.
    moved = make_sweep(tmp_path, output=str(tmp_path / "elsewhere"), store=str(tmp_path / "st"),
                       resources={"trial": {"cpu": 2}}, max_failures=5, tracking={"experiment": "x"})
    assert keys(grid_of(moved)) == (trials, cells)
    # A model edit: only model a's trials and cells move.
    edited = make_sweep(tmp_path, models=[model("a").model_copy(update={"epochs": 12}), model("b")])
    et, ec = keys(grid_of(edited))
    assert {k for k in et - trials} == {k for k in et if k.startswith("a__")}
    assert trials - et == {k for k in trials if k.startswith("a__")}
    assert {k for k in ec if k.startswith("b__")} == {k for k in cells if k.startswith("b__")}
    # The seed, a codec option, the dataset options: every trial moves.
    for change in (dict(seed=1), dict(codec={"name": "jpegxl", "effort": 3}), dict(limit_per_split=2),
                   dict(deterministic=True)):
        ct, _ = keys(grid_of(make_sweep(tmp_path, **change)))
        assert not ct & trials, change
    # More repeats add trials and keep the existing ones.
    assert trials < keys(grid_of(make_sweep(tmp_path, repeats=2)))[0]
    # Analysis settings are not identity.
    assert keys(grid_of(make_sweep(tmp_path, report={"keep": 0.9, "resamples": 500}))) == (trials, cells)


def test_keys_handed_out_before_data_order_stand_and_shard_order_moves_its_model(tmp_path):
    """A default sweep keeps the keys it had before ``data_order`` existed; shard order (and its buffer)
    is part of a trial's result, so it moves that model's trials and cells, nobody else's."""
    base = grid_of(make_sweep(tmp_path))
    assert sorted(t.key for t in base.trials) == [  # planned by c647fa2, before the field
        "a__jpegxl-0__r0__2ce964f994", "a__jpegxl-1__r0__b94fadf82d", "a__jpegxl-2__r0__e5bbc16b24",
        "b__jpegxl-0__r0__93bb1c0cd8", "b__jpegxl-1__r0__b855161c18", "b__jpegxl-2__r0__8e6f4c36d8"]
    assert "a__jpegxl-0__r0__2ce964f994__t-jpegxl-1__5518fe0b94" in {c.key for c in base.cells}
    trials, cells = keys(base)
    shards = make_sweep(tmp_path, compress={"layout": "shards"})
    assert keys(grid_of(shards)) == (trials, cells)  # the layout alone is where things live
    streamed = make_sweep(tmp_path, compress={"layout": "shards"},
                          models=[model("a").model_copy(update={"data_order": "shards"}), model("b")])
    st, sc = keys(grid_of(streamed))
    assert st - trials == {k for k in st if k.startswith("a__")} and len(st - trials) == 3
    assert {k for k in sc if k.startswith("b__")} == {k for k in cells if k.startswith("b__")}
    assert grid_of(streamed).identities[sorted(st)[0]]["data_order"] == {"order": "shards", "shuffle_buffer": 1000}
    bigger = make_sweep(tmp_path, compress={"layout": "shards"}, models=[
        model("a").model_copy(update={"data_order": "shards", "shuffle_buffer": 5000}), model("b")])
    assert not keys(grid_of(bigger))[0] & (st - trials)  # another buffer, another order


def test_the_rows_a_trial_trains_on_are_part_of_its_identity(tmp_path):
    sweep = make_sweep(tmp_path)
    base = grid_of(sweep)
    m = manifest_rows()
    m.loc[(m.split == "train") & (m.level == 1.0) & (m.relpath.str.endswith("0.jpg")), "compressed_bytes"] = 999
    changed = grid_of(sweep, m)
    moved = {t.key for t in base.trials} - {t.key for t in changed.trials}
    assert moved and all(k.split("__")[1] == "jpegxl-1" for k in moved)  # only the trials trained at level 1
    # A test image that changed moves the cells tested on it, not the trials.
    m2 = manifest_rows()
    m2.loc[(m2.split == "test") & (m2.level == 5.0) & (m2.relpath.str.endswith("1.jpg")), "compressed_bytes"] = 7
    again = grid_of(sweep, m2)
    assert {t.key for t in again.trials} == {t.key for t in base.trials}
    moved_cells = {c.key for c in base.cells} - {c.key for c in again.cells}
    assert moved_cells and all("__t-jpegxl-5__" in k for k in moved_cells)
    assert base.identities[base.trials[0].key]["train_rows"] == changed.identities[changed.trials[0].key]["train_rows"]


def test_budget_axis_and_eval_levels(tmp_path):
    sweep = make_sweep(tmp_path, budgets=["1KB", "2KB"], eval_levels="same", models=[model("a")])
    grid = grid_of(sweep)
    assert {t.budget for t in grid.trials} == {1000, 2000} and len(grid.trials) == 3 * 2
    assert all(c.test_level == c.trial.train_level for c in grid.cells) and len(grid.cells) == 6
    base = grid_of(make_sweep(tmp_path, budgets=["1KB"], eval_levels="baseline", models=[model("a")]))
    assert {c.test_level for c in base.cells} == {0.0}
    everything = grid_of(make_sweep(tmp_path, budgets=["1KB"], models=[model("a")]))
    assert len(everything.cells) == len(everything.trials) * 3
    resampled = grid_of(make_sweep(tmp_path, budgets=["1KB", "2KB"], eval_levels="same", models=[model("a")],
                                   resample=True))
    assert not {t.key for t in resampled.trials} & {t.key for t in grid.trials}


def test_resume_skips_done_keys(tmp_path):
    grid = grid_of(make_sweep(tmp_path))
    trials = grid.trials
    done = {trials[0].key, trials[3].key}
    todo = pending(trials, done)
    assert len(todo) == len(trials) - 2 and trials[0] not in todo and todo[0] == trials[1]
    c = grid.cells[4]
    results = pd.DataFrame([dict(cell_id=c.key, metric=m, value=0.5) for m in ("top1", "top5")])
    assert done_cell_keys(results) == {c.key}
    assert [x.key for x in pending(grid.cells, done_cell_keys(results))] == \
        [x.key for x in grid.cells if x.key != c.key]
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
    assert len(grid_of(sweep).trials) == 6
    with pytest.raises(PlanError, match=r"no 'test' images at level\(s\) 5"):
        grid_of(sweep, manifest_rows(levels=(0.0, 1.0, 2.0)))
    m = manifest_rows()  # rows at every level, but every test image at level 5 failed: says so, not "missing"
    m.loc[(m.split == "test") & (m.level == 5.0), "status"] = "failed"
    with pytest.raises(PlanError, match=r"every 'test' image at level\(s\) 5 for codec 'jpegxl' failed to "
                                        r"compress \(\d+ images; their reasons are in the manifest's 'error'"):
        grid_of(sweep, m)


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
    trial = plan(sweep, manifest).trials[0]
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
    from lossyvision.sweep.resources import check_local_resources

    sweep = make_sweep(tmp_path, resources={"trial": {"cpu": 1, "gpu": 1}})
    with pytest.raises(SpecError, match=r"resources.trial.gpu: asks for 1 but the local Ray has 0"):
        check_local_resources(sweep, {"CPU": 2.0})
    check_local_resources(make_sweep(tmp_path), {"CPU": 2.0})  # the defaults fit


def test_a_cluster_without_a_node_for_a_trial_is_a_clear_error(tmp_path):
    from lossyvision.spec import SpecError
    from lossyvision.sweep.resources import check_cluster_resources

    sweep = make_sweep(tmp_path, resources={"trial": {"cpu": 4, "gpu": 1}, "eval": {"cpu": 1}})
    head = {"CPU": 8.0, "memory": 1e9, "node:10.0.0.1": 1.0}
    small_gpu = {"CPU": 2.0, "GPU": 1.0, "accelerator_type:A10G": 1.0}
    # 8 CPUs and 1 GPU in all, but never on one node: a trial would wait forever.
    with pytest.raises(SpecError, match=r"^resources.trial: no node of the cluster offers 4 CPU, 1 GPU "
                                        r"\(its nodes: 2 CPU, 1 GPU; 8 CPU\); lower it, add such nodes"):
        check_cluster_resources(sweep, [head, small_gpu], groups_known=False)
    # An autoscaler that does not report its groups may add the node: a warning with --wait-for-nodes.
    [warning] = check_cluster_resources(sweep, [head, small_gpu], groups_known=False, wait_for_nodes=True)
    assert warning.startswith("warning: resources.trial: no node") and "--wait-for-nodes" in warning
    # A node group the autoscaler reports counts, and then its report is the truth.
    assert check_cluster_resources(sweep, [head, {"CPU": 8.0, "GPU": 1.0}], groups_known=True) == []
    with pytest.raises(SpecError, match="lower it or add such nodes$"):
        check_cluster_resources(sweep, [head, small_gpu], groups_known=True, wait_for_nodes=True)
    custom = make_sweep(tmp_path, resources={"trial": {"cpu": 1, "custom": {"trainer": 1}}})
    with pytest.raises(SpecError, match=r"offers 1 CPU, 1 trainer"):
        check_cluster_resources(custom, [head], groups_known=False)
    assert check_cluster_resources(custom, [head, {"CPU": 1.0, "trainer": 1.0}], groups_known=False) == []


def codec_rows(levels: dict[str, tuple[float, ...]]) -> pd.DataFrame:
    frames = []
    for codec, lv in levels.items():
        m = manifest_rows(levels=lv)
        m["codec"] = codec
        frames.append(m)
    return pd.concat(frames, ignore_index=True)


def test_codecs_are_a_grid_axis_with_their_own_levels_and_the_originals_tested_on_every_codec(tmp_path):
    """Several codecs: each its own trials and ladder; the model trained on the originals (JPEG XL's
    lossless level) is also tested on the others' levels; cross_codec tests everything on everything."""
    from lossyvision.spec import grid_counts

    codecs = [{"name": "jpegxl", "effort": 1, "levels": [0, 2]}, {"name": "avif", "levels": [90, 50]},
              {"name": "jpeg", "train_levels": [90], "test_levels": [90, 40]}]
    data = dict(name="s", dataset={"kind": "imagefolder", "root": str(tmp_path)}, codecs=codecs,
                models=[model("a")], output=str(tmp_path / "out"))
    sweep = Sweep(**data)
    manifest = codec_rows({"jpegxl": (0.0, 2.0), "avif": (50.0, 90.0), "jpeg": (40.0, 90.0)})
    grid = plan(sweep, manifest, reader=Reader())
    assert [(t.codec, t.train_level) for t in grid.trials] == [("jpegxl", 0.0), ("jpegxl", 2.0), ("avif", 50.0),
                                                              ("avif", 90.0), ("jpeg", 90.0)]
    by_trial = {(t.codec, t.train_level): [(c.test_codec, c.test_level) for c in grid.cells_of(t)] for t in grid.trials}
    assert by_trial[("jpegxl", 2.0)] == [("jpegxl", 0.0), ("jpegxl", 2.0)]
    assert by_trial[("avif", 50.0)] == [("avif", 50.0), ("avif", 90.0)]
    # the originals' model: its own levels, then every other codec's test levels
    assert by_trial[("jpegxl", 0.0)] == [("jpegxl", 0.0), ("jpegxl", 2.0), ("avif", 50.0), ("avif", 90.0),
                                         ("jpeg", 40.0), ("jpeg", 90.0)]
    assert (len(grid.trials), len(grid.cells)) == grid_counts(sweep) == (5, 14)
    assert len({c.key for c in grid.cells}) == len(grid.cells)
    # the codec's options are identity: a changed AVIF speed moves AVIF's trials only
    faster = Sweep(**{**data, "codecs": [codecs[0], {**codecs[1], "speed": 9}, codecs[2]]})
    moved = {t.key for t in grid.trials} ^ {t.key for t in plan(faster, manifest, reader=Reader()).trials}
    assert moved and all("__avif-" in k for k in moved)
    cross = Sweep(**{**data, "cross_codec": True})
    assert grid_counts(cross) == (5, 5 * 6)
    assert compress_levels(sweep) == {"jpegxl": [0.0, 2.0], "avif": [50.0, 90.0], "jpeg": [40.0, 90.0]}
    with pytest.raises(PlanError, match=r"no 'test' images at level\(s\) 40 for codec 'jpeg'"):
        plan(sweep, codec_rows({"jpegxl": (0.0, 2.0), "avif": (50.0, 90.0), "jpeg": (90.0,)}), reader=Reader())


@pytest.mark.parametrize("change, message", [
    (dict(codec={"name": "jpegxl"}), "codec cannot be combined with codecs"),
    (dict(codecs=[{"name": "avif", "levels": [90]}, {"name": "avif", "levels": [50]}]), "repeated: ['avif']"),
    (dict(codecs=[{"name": "avif"}]), "give levels (train and test), or train_levels and test_levels"),
    (dict(codecs=[{"name": "avif", "levels": [190]}]), "codecs.0.levels: avif level is a quality"),
    (dict(codecs=[{"name": "avif", "levels": [90], "colour": 1}]), "unknown option(s) ['colour']"),
    (dict(codecs=[{"name": "avif", "levels": [90]}, {"name": "jpeg", "levels": [90]}], budgets=["1MB"]),
     "a budget sweep compares levels of one codec"),
])
def test_a_malformed_codecs_list_is_one_clear_line(tmp_path, change, message):
    from lossyvision.spec import SpecError, parse_sweep

    data = dict(name="s", dataset={"kind": "imagefolder", "root": str(tmp_path)},
                codecs=[{"name": "jpegxl", "levels": [0, 1]}], models=[model("a").model_dump()],
                output=str(tmp_path / "out"))
    data.update(change)
    with pytest.raises(SpecError, match=re.escape(message)):
        parse_sweep(data)


def test_a_trial_run_names_its_data_order_in_mlflow_params(tmp_path):
    from lossyvision.sweep.trackdata import trial_params

    sweep = make_sweep(tmp_path, compress={"layout": "shards"},
                       models=[model("a").model_copy(update={"data_order": "shards", "shuffle_buffer": 64}),
                               model("b")])
    grid = grid_of(sweep)
    by_model = {t.model: t for t in grid.trials}
    streamed = trial_params(sweep, by_model["a"], None, None)
    assert streamed["data_order"] == "shards" and streamed["shuffle_buffer"] == 64
    shuffled = trial_params(sweep, by_model["b"], None, None)
    assert shuffled["data_order"] == "random" and "shuffle_buffer" not in shuffled


def test_seed_spread_adds_repeats_at_its_levels_only_and_keeps_every_other_key(tmp_path):
    from lossyvision.spec import SpecError, grid_counts, parse_sweep

    plain = grid_of(make_sweep(tmp_path))
    spread = make_sweep(tmp_path, seed_spread={"levels": [0, 2], "repeats": 3})
    grid = grid_of(spread)
    runs = {(t.model, t.train_level): sorted(x.repeat for x in grid.trials
                                              if (x.model, x.train_level) == (t.model, t.train_level))
            for t in grid.trials}
    assert runs[("a", 0.0)] == [0, 1, 2] and runs[("a", 2.0)] == [0, 1, 2] and runs[("a", 1.0)] == [0]
    assert len(grid.trials) == 2 * (3 + 3 + 1) and grid_counts(spread) == (len(grid.trials), len(grid.cells))
    # the runs a plain sweep has keep their keys: adding seed_spread only adds trainings
    assert keys(plain)[0] < keys(grid)[0] and keys(plain)[1] < keys(grid)[1]
    with pytest.raises(SpecError, match=r"seed_spread.levels: 3 not among the train levels \(0, 1, 2\)"):
        parse_sweep({**make_sweep(tmp_path).model_dump(mode="json"), "seed_spread": {"levels": [3]}})
    with pytest.raises(SpecError, match="seed_spread.repeats"):
        parse_sweep({**make_sweep(tmp_path).model_dump(mode="json"), "seed_spread": {"levels": [0], "repeats": 1}})
