"""The compress job without Ray: one image at one level, the plan, resume, the manifest, the summary.

The jobs here run with the serial executor (``lossyvision.compress.execute_serially``); the same
job on Ray is in ``test_compress_ray.py``.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from badimages import EXPECTED_REASONS, jpeg_bytes, photo, write_bad_images
from lossyvision import compress, manifest
from lossyvision.codecs.jpegxl import reconstruct_jpeg
from lossyvision.datasets import create_dataset

FAST = {"effort": 1}


def small_dataset(root: Path, n: int = 3, bad: bool = False) -> Path:
    """train/test class folders of small real photos (+ every bad-input kind in train/odd)."""
    for i in range(n):
        for split, name in (("train", "chelsea"), ("test", "coffee")):
            d = root / split / "cat"
            d.mkdir(parents=True, exist_ok=True)
            (d / f"img{i}.jpg").write_bytes(jpeg_bytes(photo(name, (64 + 4 * i, 48))))
    if bad:
        write_bad_images(root / "train" / "odd")
    return root


def run(root: Path, out: Path, **opts) -> compress.JobResult:
    records = create_dataset("imagefolder", str(root)).records()
    options = compress.CompressOptions(**{"codec_options": FAST, "levels": (0.0, 1.0, 4.0), **opts})
    return compress.run_job(records, str(root), str(out), options, compress.execute_serially)


# --- one image -----------------------------------------------------------------------------------
def test_level0_jpeg_is_bit_exact_and_dcr_matches_disk(tmp_path):
    src = tmp_path / "src" / "a b.jpg"
    src.parent.mkdir()
    data = jpeg_bytes(photo("chelsea", (80, 60)))
    src.write_bytes(data)
    store_dir = tmp_path / "store"
    row = compress.compress_one(str(src), "a b.jpg", 0, str(store_dir), codec_options=FAST, split="train", label=3)

    assert row["status"] == "ok" and row["error"] is None
    out = store_dir / "jpegxl-0" / "a b.jxl"
    assert row["output_path"] == "jpegxl-0/a b.jxl"
    assert reconstruct_jpeg(out.read_bytes()) == data  # the store file gives back the JPEG exactly
    assert row["compressed_bytes"] == os.path.getsize(out)
    assert row["source_bytes"] == len(data) == os.path.getsize(src)
    assert row["dcr_vs_source"] == pytest.approx(1 - os.path.getsize(out) / len(data))
    assert row["raw_bytes"] == 80 * 60 * 3
    assert row["dcr_vs_raw"] == pytest.approx(1 - os.path.getsize(out) / (80 * 60 * 3))
    assert (row["width"], row["height"], row["label"], row["split"]) == (80, 60, 3, "train")
    assert row["source_sha256"] == hashlib.sha256(data).hexdigest()
    assert row["codec_options"] == '{"effort": 1}'
    assert row["png_bytes"] > 0 and row["encode_seconds"] > 0
    assert src.read_bytes() == data  # the source is never modified


def test_lossy_level_decodes_to_same_size_and_shrinks(tmp_path):
    src = tmp_path / "p.png"
    rgb = photo("astronaut", (96, 64))
    from badimages import pil_bytes
    from PIL import Image

    src.write_bytes(pil_bytes(Image.fromarray(rgb), "PNG"))
    rows = [compress.compress_one(str(src), "p.png", lv, str(tmp_path / "s"), codec_options=FAST)
            for lv in (0, 2, 8)]
    sizes = [r["compressed_bytes"] for r in rows]
    assert sizes[0] > sizes[1] > sizes[2]
    from lossyvision.codecs import create_codec

    decoded = create_codec("jpegxl").decode((tmp_path / "s" / "jpegxl-0" / "p.jxl").read_bytes())
    assert np.array_equal(decoded, rgb)  # lossless from pixels for a PNG source


def test_failures_are_rows_with_reasons(tmp_path):
    cases = write_bad_images(tmp_path / "src")
    for name, (path, outcome) in cases.items():
        row = compress.compress_one(str(path), path.name, 1, str(tmp_path / "s"), codec_options=FAST)
        assert row["status"] == outcome, (name, row["error"])
        if outcome == "failed":
            assert EXPECTED_REASONS[name] in row["error"]
            assert row["compressed_bytes"] is None and row["output_path"] is None
        else:
            assert (tmp_path / "s" / row["output_path"]).stat().st_size == row["compressed_bytes"]
    missing = compress.compress_one(str(tmp_path / "nope.jpg"), "nope.jpg", 1, str(tmp_path / "s"))
    assert missing["status"] == "failed" and "not found" in missing["error"]


def test_max_pixels_is_configurable(tmp_path):
    src = tmp_path / "a.jpg"
    src.write_bytes(jpeg_bytes(photo("chelsea", (64, 48))))
    row = compress.compress_one(str(src), "a.jpg", 1, str(tmp_path / "s"), max_pixels=1000)
    assert row["status"] == "failed" and "too large" in row["error"]


# --- a whole job, serially -----------------------------------------------------------------------
def test_job_records_every_bad_kind_and_goes_on(tmp_path):
    root = small_dataset(tmp_path / "src", bad=True)
    before = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    res = run(root, tmp_path / "out")
    m = res.manifest
    n_images = len(create_dataset("imagefolder", str(root)).records())
    assert len(m) == n_images * 3 and not m.duplicated(list(manifest.KEY)).any()
    by_name = m[m["level"] == 1.0].set_index(m[m["level"] == 1.0]["relpath"].str.rsplit("/", n=1).str[-1])
    for name, (path, outcome) in write_bad_images(tmp_path / "again").items():
        row = by_name.loc[path.name]
        assert row["status"] == outcome, name
        if outcome == "failed":
            assert EXPECTED_REASONS[name] in row["error"]
    ok = m[m["status"] == "ok"]
    for r in ok.to_dict("records"):
        assert os.path.getsize(tmp_path / "out" / r["output_path"]) == r["compressed_bytes"]
        assert r["dcr_vs_source"] == pytest.approx(1 - r["compressed_bytes"] / r["source_bytes"])
    assert ok["png_bytes"].notna().all()  # computed once per image, shared by its rows
    assert {p: p.read_bytes() for p in root.rglob("*") if p.is_file()} == before
    on_disk = manifest.read_manifest(str(tmp_path / "out"))
    assert len(on_disk) == len(m) and not manifest.list_parts(str(tmp_path / "out"))
    summary = pd.read_csv(tmp_path / "out" / "summary.csv")
    assert list(summary["level"].iloc[:3]) == [0.0, 1.0, 4.0]
    assert (summary["images_failed"].iloc[:3] == 6).all()


def test_on_error_fail_stops_and_names_the_file(tmp_path):
    root = small_dataset(tmp_path / "src")
    (root / "train" / "cat" / "broken.jpg").write_bytes(b"")
    with pytest.raises(compress.CompressError, match=r"train/cat/broken\.jpg: empty file"):
        run(root, tmp_path / "out", on_error="fail")
    m = manifest.read_manifest(str(tmp_path / "out"))
    assert "failed" in set(m["status"])  # what finished before the stop is kept


def test_resume_redoes_only_what_changed(tmp_path):
    root = small_dataset(tmp_path / "src")
    out = tmp_path / "out"
    first = run(root, out)
    assert first.done == 18 and first.skipped == 0
    stamp = {p: p.stat().st_mtime_ns for p in out.rglob("*.jxl")}

    again = run(root, out)
    assert again.done == 0 and again.skipped == 18
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.jxl")} == stamp

    changed = root / "train" / "cat" / "img0.jpg"
    changed.write_bytes(jpeg_bytes(photo("astronaut", (50, 50))))
    (out / "jpegxl-4" / "test" / "cat" / "img1.jxl").unlink()
    third = run(root, out)
    assert third.done == 3 + 1
    m = third.manifest
    row = m[(m["relpath"] == "train/cat/img0.jpg") & (m["level"] == 1.0)].iloc[0]
    assert (row["width"], row["height"]) == (50, 50)
    assert len(m) == 18 and not m.duplicated(list(manifest.KEY)).any()

    other_effort = run(root, out, codec_options={"effort": 2})
    assert other_effort.done == 18  # different encoder settings: nothing is reused


def test_interrupted_job_keeps_flushed_rows_and_resumes(tmp_path):
    root = small_dataset(tmp_path / "src", n=4)
    out = tmp_path / "out"
    records = create_dataset("imagefolder", str(root)).records()
    options = compress.CompressOptions(codec_options=FAST, levels=(1.0, 2.0))

    def dies_after_two_batches(items, params):
        batches = compress.execute_serially(items, params, batch_size=4)
        yield next(batches)
        yield next(batches)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        compress.run_job(records, str(root), str(out), options, dies_after_two_batches)
    kept = manifest.read_manifest(str(out))
    assert len(kept) == 8
    res = compress.run_job(records, str(root), str(out), options, compress.execute_serially)
    assert res.skipped == 8 and res.done == 8 and len(res.manifest) == 16


# --- the plan ------------------------------------------------------------------------------------
def test_plan_flags_png_once_per_image_and_a_fixed_quality_sample(tmp_path):
    root = small_dataset(tmp_path / "src", n=5)
    records = create_dataset("imagefolder", str(root)).records()
    options = compress.CompressOptions(codec_options=FAST, levels=(0.0, 1.0), quality_metric="ssimulacra2",
                                       quality_sample=3)
    items, skipped = compress.plan(records, str(root), str(tmp_path / "out"), options, manifest.empty())
    assert skipped == 0 and len(items) == 20
    assert sum(it["png"] for it in items) == 10 and all(it["png"] for it in items if it["level"] == 0.0)
    sampled = {it["relpath"] for it in items if it["quality"]}
    assert sampled == compress.quality_sample(records, 3) and len(sampled) == 3
    assert compress.quality_sample(list(reversed(records)), 3) == sampled  # order-independent


def test_png_baseline_on_a_fixed_sample_per_split_and_on_every_image_when_asked(tmp_path):
    root = small_dataset(tmp_path / "src", n=5)
    records = create_dataset("imagefolder", str(root)).records()
    sample = compress.png_sample(records, 2)
    assert len(sample) == 4 and {r.split for r in records if r.relpath in sample} == {"train", "test"}
    assert compress.png_sample(list(reversed(records)), 2) == sample  # fixed: order-independent
    assert compress.png_sample(records, None) == {r.relpath for r in records}

    out = tmp_path / "out"
    first = run(root, out, levels=(1.0, 4.0), png_sample=2)
    m = first.manifest
    assert set(m.loc[m["png_bytes"].notna(), "relpath"]) == sample  # sampled images only, on both their rows
    assert (m.groupby("relpath")["png_bytes"].count().loc[sorted(sample)] == 2).all()
    png_row = first.summary[first.summary["codec"] == "png"].iloc[0]
    assert png_row["images_ok"] == 4

    # Asking for every image later adds the PNG of the others, redoing one level of each, nothing else.
    again = run(root, out, levels=(1.0, 4.0), png_sample=None)
    assert again.done == 10 - 4 and again.skipped == 20 - 6
    assert again.manifest["png_bytes"].notna().all()
    assert run(root, out, levels=(1.0, 4.0), png_sample=None).done == 0


def test_png_sample_option_parses_numbers_and_all():
    assert compress.parse_png_sample("256") == 256 and compress.parse_png_sample(" ALL ") is None
    for bad in ("-1", "some"):
        with pytest.raises(compress.CompressError, match="--png-sample"):
            compress.parse_png_sample(bad)


# --- manifest ------------------------------------------------------------------------------------
def _row(relpath, level, status="ok", **kw):
    base = {"relpath": relpath, "codec": "jpegxl", "level": level, "status": status, "split": "train"}
    return {**base, **kw}


def test_consolidate_keeps_newest_row_per_key_and_fills_png(tmp_path):
    out = str(tmp_path / "out")
    run_id = manifest.new_run_id()
    manifest.write_part(out, [_row("a.jpg", 1.0, "failed", error="x"), _row("b.jpg", 1.0)], run_id, 0)
    manifest.write_part(out, [_row("a.jpg", 1.0, source_sha256="s", png_bytes=7),
                              _row("a.jpg", 2.0, source_sha256="s")], run_id, 1)
    df = manifest.consolidate(out)
    assert len(df) == 3 and not manifest.list_parts(out)
    a = df[df["relpath"] == "a.jpg"].set_index("level")
    assert a.loc[1.0, "status"] == "ok" and list(a["png_bytes"]) == [7, 7]
    assert manifest.consolidate(out).equals(df)  # idempotent
    assert manifest.read_manifest(out)["label"].dtype == pd.Int64Dtype()  # ints stay ints


def test_consolidate_removes_temp_files_of_writes_cut_by_a_kill(tmp_path):
    out = tmp_path / "out"
    manifest.write_part(str(out), [_row("a.jpg", 1.0)], manifest.new_run_id(), 0)
    (out / manifest.PARTS_DIR / ".tmp-part").write_bytes(b"half a part")
    (out / ".tmp-manifest").write_bytes(b"half a manifest")
    df = manifest.consolidate(str(out))
    assert len(df) == 1 and not list(out.rglob(".tmp-*"))


def test_summary_arithmetic():
    rows = pd.DataFrame([
        _row("a", 1.0, dcr_vs_source=0.5, dcr_vs_raw=0.9, source_bytes=100, raw_bytes=1000,
             compressed_bytes=50, png_bytes=400),
        _row("b", 1.0, dcr_vs_source=0.7, dcr_vs_raw=0.95, source_bytes=200, raw_bytes=1200,
             compressed_bytes=60, png_bytes=600),
        _row("c", 1.0, status="failed", source_bytes=5),
    ])
    s = compress.summarize(rows)
    lvl = s.iloc[0]
    assert (lvl["images_ok"], lvl["images_failed"]) == (2, 1)
    assert lvl["dcr_vs_source_mean"] == pytest.approx(0.6) and lvl["dcr_vs_raw_median"] == pytest.approx(0.925)
    assert (lvl["source_bytes"], lvl["compressed_bytes"]) == (300, 110)
    png = s.iloc[1]
    assert png["codec"] == "png" and png["compressed_bytes"] == 1000
    assert png["dcr_vs_raw_mean"] == pytest.approx(((1 - 400 / 1000) + (1 - 600 / 1200)) / 2)


# --- options and the command line (error paths only: no Ray is started) --------------------------
def test_bad_options_are_clear_errors(tmp_path):
    with pytest.raises(compress.CompressError, match="effort"):
        compress.validate(compress.CompressOptions(codec_options={"effort": 99}))
    with pytest.raises(compress.CompressError, match="unknown codec"):
        compress.validate(compress.CompressOptions(codec="nope"))
    with pytest.raises(compress.CompressError, match="25"):
        compress.validate(compress.CompressOptions(levels=(1.0, 30.0)))
    with pytest.raises(compress.CompressError, match="--levels"):
        compress.parse_levels("1,x")
    assert compress.parse_levels("0, 0.5,1") == (0.0, 0.5, 1.0)


def test_cli_errors_have_no_traceback(tmp_path):
    from lossyvision.cli import app

    runner = CliRunner()
    r = runner.invoke(app, ["compress"])
    assert r.exit_code == 2 and "--source" in r.output and "Traceback" not in r.output
    r = runner.invoke(app, ["compress", "--source", str(tmp_path / "missing"), "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "--source: " in r.output and "not found" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "o").exists()  # refused before anything was written
    r = runner.invoke(app, ["compress", "--source", str(tmp_path), "--out", str(tmp_path / "o"), "--levels", "a"])
    assert r.exit_code != 0 and "--levels" in r.output
    r = runner.invoke(app, ["compress", "--source", str(tmp_path), "--out", str(tmp_path / "o"), "--png-sample", "x"])
    assert r.exit_code == 2 and "--png-sample" in r.output and "Traceback" not in r.output
    r = runner.invoke(app, ["compress", "--source", str(tmp_path), "--out", str(tmp_path / "o"), "--kind", "nope"])
    assert r.exit_code == 2 and "error: unknown dataset 'nope'; known: cityscapes, coco" in r.output
    assert not (tmp_path / "o").exists()
    sweep = tmp_path / "s.yaml"
    sweep.write_text("name: x\n")
    r = runner.invoke(app, ["compress", str(sweep), "--source", str(tmp_path)])
    assert r.exit_code == 2 and "cannot be combined" in r.output


def test_sweep_file_gives_levels_union_store_and_options(tmp_path):
    from lossyvision.spec import parse_sweep

    root = small_dataset(tmp_path / "src", n=3)
    # models need a registered task; use whichever exists.
    from lossyvision.tasks import TASKS

    if not TASKS.names():
        pytest.skip("no task registered yet")
    sweep = parse_sweep({
        "name": "t", "dataset": {"kind": "imagefolder", "root": str(root)},
        "codec": {"name": "jpegxl", "effort": 3}, "train_levels": [0, 2], "test_levels": [1, 2],
        "models": [{"name": "m", "task": TASKS.names()[0], "arch": "resnet18"}],
        "output": str(tmp_path / "run"), "compress": {"on_error": "fail", "quality_sample": 2},
        "limit_per_split": 2,
    })
    [args] = compress.sweep_job_args(sweep)  # one job: one codec
    assert args["levels"] == (0.0, 1.0, 2.0)
    assert args["store_uri"] == os.path.join(str(tmp_path / "run"), "store")
    assert args["codec_options"] == {"effort": 3} and args["on_error"] == "fail"
    assert args["quality_sample"] == 2 and args["png_sample"] == compress.PNG_SAMPLE
    assert [r.split for r in args["records"]] == ["test", "test", "train", "train"]
    several = parse_sweep({
        "name": "t", "dataset": {"kind": "imagefolder", "root": str(root)},
        "codecs": [{"name": "jpegxl", "effort": 3, "levels": [0, 2]}, {"name": "avif", "speed": 8, "levels": [60]}],
        "models": [{"name": "m", "task": TASKS.names()[0], "arch": "resnet18"}],
        "output": str(tmp_path / "run"), "compress": {"quality_sample": "all"},
    })
    jobs = compress.sweep_job_args(several)  # one job per codec, into one store
    assert [(j["codec"], j["levels"], j["codec_options"]) for j in jobs] == [
        ("jpegxl", (0.0, 2.0), {"effort": 3}), ("avif", (60.0,), {"speed": 8})]
    assert {j["store_uri"] for j in jobs} == {os.path.join(str(tmp_path / "run"), "store")}
    assert jobs[0]["quality_sample"] == compress.EVERY_IMAGE
    assert compress.quality_sample(jobs[0]["records"], compress.EVERY_IMAGE) == {r.relpath for r in jobs[0]["records"]}
    assert compress.parse_quality_sample("all") == compress.EVERY_IMAGE and compress.parse_quality_sample("4") == 4
    with pytest.raises(compress.CompressError, match="a count or 'all'"):
        compress.parse_quality_sample("some")
    every = parse_sweep({**sweep.model_dump(mode="json", exclude_none=True), "compress": {"png_sample": "all"}})
    assert compress.sweep_job_args(every)[0]["png_sample"] is None


def test_sources_sharing_an_output_name_keep_their_extension():
    names = compress.output_names(["a/x.jpg", "a/x.png", "a/y.JPG", "b/x.jpg", "c/Z.jpg", "c/z.png"], ".jxl")
    assert names == {"a/x.jpg": "a/x.jpg.jxl", "a/x.png": "a/x.png.jxl", "a/y.JPG": "a/y.jxl",
                     "b/x.jpg": "b/x.jxl", "c/Z.jpg": "c/Z.jpg.jxl", "c/z.png": "c/z.png.jxl"}


def test_food101_layout_carries_splits_and_labels(tmp_path):
    from datasets_fixtures import make_food101

    root = make_food101(tmp_path / "food", n_train=2, n_test=1)
    reader = create_dataset("food101", str(root))
    res = compress.run_job(reader.records(), str(root), str(tmp_path / "out"),
                           compress.CompressOptions(codec_options=FAST, levels=(2.0,)), compress.execute_serially)
    m = res.manifest
    assert len(m) == 9 and (m["status"] == "ok").all()
    assert sorted(m["split"].value_counts().items()) == [("test", 3), ("train", 6)]
    row = m.iloc[0]
    assert row["output_path"] == "jpegxl-2/" + row["relpath"][:-4] + ".jxl"
    assert row["label"] == reader.classes.index(row["relpath"].split("/")[1])


def _items(sizes: dict[str, int], levels: int = 6) -> list[dict]:
    return [{"uri": uri, "level": float(k), "source_size": size} for uri, size in sizes.items()
            for k in range(levels)]


def test_work_chunks_cover_every_item_once_largest_sources_first():
    sizes = {f"img{i:03d}.jpg": (i * 37) % 101 for i in range(120)}
    items = _items(sizes)
    chunks = compress.work_chunks(items, n_workers=2)
    flat = [it for c in chunks for it in c]
    assert sorted((it["uri"], it["level"]) for it in flat) == sorted((it["uri"], it["level"]) for it in items)
    order = list(dict.fromkeys(it["uri"] for it in flat))
    assert [sizes[u] for u in order] == sorted(sizes.values(), reverse=True)
    for uri in sizes:  # an image's levels stay together and in order
        mine = [i for i, it in enumerate(flat) if it["uri"] == uri]
        assert mine == list(range(mine[0], mine[0] + 6))
        assert [flat[i]["level"] for i in mine] == [float(k) for k in range(6)]


def test_work_chunks_shrink_towards_the_end_so_the_tail_is_short():
    items = _items({f"{i:04d}.jpg": 100 for i in range(400)})  # 2,400 items
    sizes = [len(c) for c in compress.work_chunks(items, n_workers=2, max_size=48, per_worker=4)]
    assert sum(sizes) == 2400
    assert max(sizes) == 48 and sizes[0] == 48
    assert sizes == sorted(sizes, reverse=True)  # never grows again
    assert sizes[-1] <= 2 and sizes[-2] <= 2   # the last rounds are tiny
    # Even 48-item chunks would leave one worker alone with up to a whole chunk at the end.
    assert sum(sizes[-4:]) < 48
    assert compress.work_chunks([], 2) == []
    assert [len(c) for c in compress.work_chunks(_items({"a": 1}, levels=3), 16)] == [2, 1]
