"""The sharded store layout without Ray: tar shards per level, (shard, member) rows, ranged reads,
resume per shard, no half-written shard ever visible, and readers that need not know the layout.

The same layout on Ray Data, on local disk and on moto's S3, end to end through a sweep, is in
``test_shards_ray.py``; on a multi-node cluster in ``test_multinode_ray.py``.
"""

from __future__ import annotations

import tarfile
from pathlib import Path

import numpy as np
import pytest

from lossyvision import compress, manifest, shards, store
from lossyvision.datasets import create_dataset
from test_compress import FAST, small_dataset


def run(root: Path, out: Path, executor=compress.execute_serially, **opts) -> compress.JobResult:
    records = create_dataset("imagefolder", str(root)).records()
    options = compress.CompressOptions(**{"codec_options": FAST, "levels": (0.0, 2.0), "layout": "shards",
                                          "shard_size": 5000, **opts})
    return compress.run_job(records, str(root), str(out), options, executor)


def tars(out: Path) -> list[Path]:
    return sorted(out.rglob("shard-*.tar"))


def read_row(out: Path, output_path: str) -> bytes:
    return store.read_bytes(manifest.output_uri(str(out), output_path))


# --- the shard file ------------------------------------------------------------------------------
def test_writer_offsets_are_tarfiles_own_and_nothing_is_visible_before_commit(tmp_path):
    members = {"train/cat/a.jxl": b"x" * 700, "train/cat/" + "long-name-" * 20 + ".jxl": b"y" * 512,
               "train/été/ü.jxl": b"", "train/dog/b.jxl": bytes(range(256)) * 9}
    writer = shards.ShardWriter(str(tmp_path), "jpegxl-1/shard-r1-abc.tar")
    paths = {name: writer.add(name, data) for name, data in members.items()}
    assert not (tmp_path / "jpegxl-1" / "shard-r1-abc.tar").exists()  # only a .tmp- file so far
    assert [p.name for p in (tmp_path / "jpegxl-1").iterdir()][0].startswith(".tmp-")
    size = writer.commit()
    shard = tmp_path / "jpegxl-1" / "shard-r1-abc.tar"
    assert shard.stat().st_size == size and [p.name for p in (tmp_path / "jpegxl-1").iterdir()] == [shard.name]
    with tarfile.open(shard) as tar:  # a plain tar (WebDataset-style): any tool reads it
        for info in tar.getmembers():
            assert shards.parse_member_path(paths[info.name]) == ("jpegxl-1/shard-r1-abc.tar", info.offset_data,
                                                                  info.size)
            assert tar.extractfile(info).read() == members[info.name]
    for name, data in members.items():  # the one resolver: row -> range URI -> bytes
        uri = manifest.output_uri(str(tmp_path), paths[name])
        assert uri.startswith("range://") and store.read_bytes(uri) == data


def test_discarded_writer_leaves_nothing(tmp_path):
    writer = shards.ShardWriter(str(tmp_path), "jpegxl-0/shard-r1-x.tar")
    writer.add("a.jxl", b"abc")
    writer.discard()
    assert list((tmp_path / "jpegxl-0").iterdir()) == []


def test_member_paths_never_mix_with_per_file_paths():
    assert shards.parse_member_path("jpegxl-1/shard-a_b-1.tar#512+20") == ("jpegxl-1/shard-a_b-1.tar", 512, 20)
    for per_file in ("jpegxl-1/cat/a.jxl", "jpegxl-1/cat/shard-x.tar#1+2.jxl", "jpegxl-1/a#5+6.jxl",
                     "jpeg2k-1/shard-x.tar#1+2.jp2", "jpegxl-1/shard-x.tar", None, ""):
        assert shards.parse_member_path(per_file) is None
    assert shards.layout_of("jpegxl-1/cat/a.jxl") == "files" and shards.layout_of(None) is None
    assert shards.layout_of("jpegxl-1/shard-x.tar#0+1") == "shards"
    with pytest.raises(manifest.CorruptRowError):  # leaving the store is refused in both forms
        manifest.output_uri("/s", "../jpegxl-1/shard-x.tar#0+1")


def test_a_range_past_the_end_is_a_damaged_shard_not_short_bytes(tmp_path):
    (tmp_path / "s.tar").write_bytes(b"0123456789")
    assert store.read_bytes(store.range_uri(str(tmp_path / "s.tar"), 2, 5)) == b"23456"
    with pytest.raises(store.DamagedFileError, match="12 bytes expected at offset 0, 10 there"):
        store.read_bytes(store.range_uri(str(tmp_path / "s.tar"), 0, 12))
    with pytest.raises(ValueError, match="malformed byte range"):
        store.read_bytes("range://x/y")


def test_remote_sequential_reads_share_one_request_per_block(monkeypatch):
    """On an object store, reading members in order costs a request per block, random reads one each."""
    import fsspec

    fs = fsspec.filesystem("memory")
    data = bytes(np.random.default_rng(0).integers(0, 256, 50_000, dtype=np.uint8))
    fs.pipe_file("/lv-shards/a.tar", data)
    monkeypatch.setattr(store, "READAHEAD_BYTES", 10_000)
    monkeypatch.setattr(store, "_REMOTE_RANGES", store._RangeReader())
    calls = []
    real = type(fs).cat_file
    monkeypatch.setattr(type(fs), "cat_file", lambda self, path, start=None, end=None, **kw: (
        calls.append((start, end)), real(self, path, start=start, end=end, **kw))[1])
    uri = "memory:///lv-shards/a.tar"
    ranges = [(i * 1000 + 24, 900) for i in range(40)]  # 40 members in order
    for off, n in ranges:
        assert store.read_bytes(store.range_uri(uri, off, n)) == data[off:off + n]
    assert len(calls) <= 6  # the first exact read, then one 10 kB block per ~10 members
    calls.clear()
    for off, n in reversed(ranges[::7]):  # backwards: no readahead, exact ranges
        assert store.read_bytes(store.range_uri(uri, off, n)) == data[off:off + n]
    assert all(end - start == 900 for start, end in calls if (start, end) != (None, None))
    calls.clear()
    monkeypatch.setattr(store, "_REMOTE_RANGES", store._RangeReader())
    monkeypatch.setattr(store, "READAHEAD_GAP", 4000)
    for off, n in ranges[::9]:  # forward, but jumping more than READAHEAD_GAP: exact ranges too
        assert store.read_bytes(store.range_uri(uri, off, n)) == data[off:off + n]
    assert [end - start for start, end in calls] == [900] * len(ranges[::9])
    fs.rm("/lv-shards", recursive=True)


def test_groups_keep_splits_apart_and_sizes_under_the_target():
    items = [{"uri": f"u{s}{i}", "relpath": f"{s}/c/{i:02d}.jpg", "split": s, "source_size": 100 + i, "level": lv}
             for s in ("test", "train") for i in range(30) for lv in (0.0, 1.0)]
    groups = compress.work_chunks([{**it, "shard_size": 1000} for it in items], n_workers=2)
    assert sorted(it["uri"] + str(it["level"]) for g in groups for it in g) == sorted(
        it["uri"] + str(it["level"]) for it in items)  # every item once
    for g in groups:
        assert len({it["split"] for it in g}) == 1  # a shard holds one split
        per_image = {it["uri"]: it["source_size"] for it in g}
        assert sum(per_image.values()) <= 1000
        relpaths = [it["relpath"] for it in g]
        assert relpaths == sorted(relpaths)  # consecutive images in relpath order: sequential reads
    # small data: smaller shards, so that every worker gets some (two per worker at least)
    few = compress.work_chunks([{**it, "shard_size": 10**9} for it in items], n_workers=4)
    assert len(few) >= 8


# --- the job ---------------------------------------------------------------------------------------
def test_sharded_job_stores_the_same_bytes_as_files_in_a_few_objects(tmp_path):
    root = small_dataset(tmp_path / "src", n=5)
    sharded = run(root, tmp_path / "sharded")
    files = compress.run_job(create_dataset("imagefolder", str(root)).records(), str(root), str(tmp_path / "files"),
                             compress.CompressOptions(codec_options=FAST, levels=(0.0, 2.0)), compress.execute_serially)
    assert sharded.done == files.done == 20 and (sharded.manifest.status == "ok").all()
    a = sharded.manifest.set_index(["relpath", "level"]).sort_index()
    b = files.manifest.set_index(["relpath", "level"]).sort_index()
    assert (a.compressed_bytes == b.compressed_bytes).all() and (a.dcr_vs_source == b.dcr_vs_source).all()
    for key, row in a.iterrows():  # the member holds exactly the file the per-file layout wrote
        assert read_row(tmp_path / "sharded", row.output_path) == read_row(tmp_path / "files", b.loc[key].output_path)
    n_tars = len(tars(tmp_path / "sharded"))
    assert n_tars == len(shards.referenced(a.output_path)) and 2 <= n_tars < 20
    assert len(list((tmp_path / "files").rglob("*.jxl"))) == 20
    for shard in {shards.parse_member_path(p)[0] for p in a.output_path}:
        assert len({r.split("/")[0] for r in a[a.output_path.str.startswith(shard + "#")].index.get_level_values(0)}) == 1
    # The readers of trials and evaluation: the same decoded pixels from either layout.
    from lossyvision.codecs import create_codec
    from lossyvision.data import ImageSamples

    uris = [manifest.output_uri(str(tmp_path / "sharded"), p) for p in a.output_path]
    samples = ImageSamples(uris, [0] * len(uris), decode=create_codec("jpegxl").decode)
    ref = ImageSamples([manifest.output_uri(str(tmp_path / "files"), p) for p in b.output_path], [0] * len(uris),
                       decode=create_codec("jpegxl").decode)
    assert all(np.array_equal(samples[i][0], ref[i][0]) for i in range(len(uris)))


def test_rerun_does_nothing_and_a_changed_image_redoes_its_shard_whole(tmp_path):
    root = small_dataset(tmp_path / "src", n=5)
    out = tmp_path / "out"
    first = run(root, out)
    stamps = {p: p.stat().st_mtime_ns for p in tars(out)}
    again = run(root, out)
    assert again.done == 0 and again.skipped == 20 and {p: p.stat().st_mtime_ns for p in tars(out)} == stamps

    from badimages import jpeg_bytes, photo

    (root / "train" / "cat" / "img0.jpg").write_bytes(jpeg_bytes(photo("astronaut", (50, 50))))
    m0 = first.manifest.set_index(["relpath", "level"])
    shard_of = {k: shards.parse_member_path(p)[0] for k, p in m0.output_path.items()}
    old = {shard_of[("train/cat/img0.jpg", lv)] for lv in (0.0, 2.0)}
    mates = sorted({k for k, s in shard_of.items() if s in old})
    third = run(root, out)
    assert third.done == len(mates) > 2  # the changed image and every other member of its shards
    m = third.manifest.set_index(["relpath", "level"])
    assert all(shards.parse_member_path(m.loc[k].output_path)[0] not in old for k in mates)
    assert not any((out / s).exists() for s in old)  # replaced shards are gone, the others untouched
    assert {p for p in tars(out) if p in stamps} == {p for p in stamps if str(p.relative_to(out)) not in old}
    assert m.loc[("train/cat/img0.jpg", 2.0)].width == 50
    for _k, row in m.iterrows():
        assert len(read_row(out, row.output_path)) == row.compressed_bytes


def test_killed_job_leaves_no_partial_shard_and_resumes_per_shard(tmp_path):
    """A kill while a shard is written leaves only a temp file; a kill after a shard is written but
    before its rows were saved leaves an orphan: the next job removes both and redoes those images."""
    root = small_dataset(tmp_path / "src", n=5)
    out = tmp_path / "out"

    def dies_in_the_third_group(items, params):
        groups = compress.work_chunks(items, 1)
        yield compress.compress_items(groups[0], params)  # saved
        compress.compress_items(groups[1], params)  # written, its rows never reach the manifest
        (out / "jpegxl-2" / ".tmp-half.tar").write_bytes(b"half a shard")  # as SIGKILL mid-write leaves it
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(root, out, executor=dies_in_the_third_group)
    kept = manifest.read_manifest(str(out))
    saved = shards.referenced(kept.output_path)
    assert len(kept) > 0 and len(saved) == 2  # one group, two levels
    orphans = [p for p in tars(out) if str(p.relative_to(out)) not in saved]
    assert len(orphans) == 2
    logs = []
    records = create_dataset("imagefolder", str(root)).records()
    options = compress.CompressOptions(codec_options=FAST, levels=(0.0, 2.0), layout="shards", shard_size=5000)
    res = compress.run_job(records, str(root), str(out), options, compress.execute_serially, log=logs.append)
    assert res.skipped == len(kept) and res.done == 20 - len(kept)
    assert any("removed 2 shard(s) that no manifest row points into" in line for line in logs)
    assert not any(p.exists() for p in orphans) and not list(out.rglob(".tmp-*"))
    final = manifest.read_manifest(str(out))
    assert {str(p.relative_to(out)) for p in tars(out)} == shards.referenced(final.output_path)
    assert (final.status == "ok").all() and len(final) == 20


def test_a_store_has_one_layout(tmp_path):
    root = small_dataset(tmp_path / "src", n=2)
    run(root, tmp_path / "out")
    with pytest.raises(compress.CompressError, match="holds its images in the shards layout and a store has one "
                                                     "layout: compress with layout shards, or into another store"):
        run(root, tmp_path / "out", layout="files")


def test_a_truncated_shard_is_redone_and_reads_as_damaged(tmp_path):
    root = small_dataset(tmp_path / "src", n=2)
    out = tmp_path / "out"
    first = run(root, out, shard_size=10**6)
    shard = tars(out)[0]
    row = first.manifest[first.manifest.output_path.str.startswith(str(shard.relative_to(out)))].iloc[-1]
    shard.write_bytes(shard.read_bytes()[:1024])
    with pytest.raises(store.DamagedFileError, match="rerun `lossyvision compress`"):
        read_row(out, row.output_path)
    again = run(root, out, shard_size=10**6)
    members = (first.manifest.output_path.str.startswith(str(shard.relative_to(out)) + "#")).sum()
    assert again.done == members and not shard.exists()


def test_options_and_cli_refuse_bad_layouts(tmp_path):
    with pytest.raises(compress.CompressError, match="layout must be one of"):
        compress.validate(compress.CompressOptions(layout="tar"))
    with pytest.raises(compress.CompressError, match="shard_size: at least 1kB, got 0"):
        compress.validate(compress.CompressOptions(layout="shards", shard_size=0))
    from typer.testing import CliRunner

    from lossyvision.cli import app

    src = small_dataset(tmp_path / "src", n=1)
    result = CliRunner().invoke(app, ["compress", "--source", str(src), "--out", str(tmp_path / "o"),
                                      "--layout", "shards", "--shard-size", "12"])
    assert result.exit_code == 2 and "--shard-size: at least 1kB, got '12'" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "o").exists()


def test_sweep_file_layout_reaches_the_compress_job(tmp_path):
    import yaml

    from lossyvision.spec import load_sweep

    src = small_dataset(tmp_path / "src", n=1)
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({
        "name": "s", "dataset": {"root": str(src)}, "train_levels": [0], "test_levels": [0],
        "models": [{"name": "m", "task": "classification", "arch": "resnet10t"}], "output": str(tmp_path / "out"),
        "compress": {"layout": "shards", "shard_size": "64MB"}}))
    (job,) = compress.sweep_job_args(load_sweep(path))
    assert job["layout"] == "shards" and job["shard_size"] == 64_000_000


def test_reading_a_sharded_row_is_one_ranged_read(tmp_path, monkeypatch):
    """A member is read with pread at its offset: never the whole shard."""
    root = small_dataset(tmp_path / "src", n=5)
    out = tmp_path / "out"
    res = run(root, out, shard_size=10**6)
    row = res.manifest.iloc[3]
    calls = []
    import os

    real = os.pread
    monkeypatch.setattr(os, "pread", lambda fd, n, off: (calls.append((n, off)), real(fd, n, off))[1])
    data = read_row(out, row.output_path)
    _, offset, size = shards.parse_member_path(row.output_path)
    assert calls == [(size, offset)] and len(data) == row.compressed_bytes
    with tarfile.open(out / shards.parse_member_path(row.output_path)[0]) as tar:
        assert tar.extractfile(row.relpath.replace(".jpg", ".jxl")).read() == data


def test_sweep_plan_counts_shards_not_files(tmp_path):
    import re

    import yaml
    from typer.testing import CliRunner

    from datasets_fixtures import make_imagefolder
    from lossyvision.cli import app

    make_imagefolder(tmp_path / "data", per_class=20)
    written = {}
    for layout in ("files", "shards"):
        path = tmp_path / f"{layout}.yaml"
        path.write_text(yaml.safe_dump({
            "name": "p", "dataset": {"kind": "imagefolder", "root": str(tmp_path / "data")},
            "codec": {"name": "jpegxl", "effort": 1}, "train_levels": [0, 2], "test_levels": [0, 2],
            "models": [{"name": "m", "task": "classification", "arch": "resnet10t", "image_size": 32}],
            "output": str(tmp_path / layout), "compress": {"layout": layout, "shard_size": "20kB"}}))
        result = CliRunner().invoke(app, ["sweep", "plan", str(path), "--sample", "2"])
        assert result.exit_code == 0, result.output
        written[layout] = int(re.search(r"writes: about .* in ([\d,]+) files", result.output)[1].replace(",", ""))
        if layout == "shards":
            shards_line = re.search(r"240 to compress.*in about (\d+) shards", result.output)
            assert shards_line and 2 <= int(shards_line[1]) < 240, result.output
    assert written["files"] - written["shards"] == 240 - int(shards_line[1])


def test_training_stages_remote_shards_whole_and_reads_the_same_bytes(tmp_path, monkeypatch):
    """A trial copies each remote shard once, front to back, and reads its random order from the copies;
    over the trial's stage_bytes, or from a local store, it reads in place."""
    import fsspec

    from lossyvision.staging import stage_shards

    fs = fsspec.filesystem("memory")
    rng = np.random.default_rng(1)
    blobs = {f"/lv-stage/jpegxl-1/shard-{i}.tar": bytes(rng.integers(0, 256, 30_000, dtype=np.uint8)) for i in range(3)}
    for path, data in blobs.items():
        fs.pipe_file(path, data)
    members = [(f"memory://{p}", off, 700) for p in blobs for off in range(512, 29_000, 1536)]
    order = rng.permutation(len(members))  # a trial's shuffled order
    uris = [store.range_uri(*members[i]) for i in order] + ["memory:///lv-stage/plain.jxl"]
    fs.pipe_file("/lv-stage/plain.jxl", b"a file of the files layout")
    expected = [store.read_bytes(u) for u in uris]

    opened = []
    real_open = type(fs)._open
    monkeypatch.setattr(type(fs), "_open", lambda self, path, *a, **kw: (opened.append(path), real_open(self, path, *a, **kw))[1])
    monkeypatch.setattr(type(fs), "cat_file", lambda *a, **kw: pytest.fail("a ranged read of a staged shard"))
    staged = stage_shards(uris, str(tmp_path / "stage"), max_bytes=10**6)
    assert staged.staged and staged.shards == 3 and staged.bytes == 90_000 and "staged 3 shard(s)" in staged.reason
    assert sorted(opened) == sorted(blobs)  # each shard read once, whole
    assert all(store.parse_range_uri(u)[0].startswith(str(tmp_path)) for u in staged.uris[:-1])
    assert staged.uris[-1] == uris[-1]  # not a shard member: read as before
    monkeypatch.undo()
    assert [store.read_bytes(u) for u in staged.uris] == expected  # the same bytes, in the same order
    assert not list((tmp_path / "stage").glob("*.part"))

    over = stage_shards(uris, str(tmp_path / "small"), max_bytes=50_000)
    assert not over.staged and over.uris == uris and "exceed resources.trial.stage_bytes" in over.reason
    assert not (tmp_path / "small").exists()
    local = [store.range_uri(str(tmp_path / "x.tar"), 0, 10)]
    assert stage_shards(local, str(tmp_path / "none"), 10**9).uris == local  # a local store: nothing to gain
    fs.rm("/lv-stage", recursive=True)
