"""The dataset kinds for data in other shapes: coco, csv, hf, webdataset (no Ray).

Records, classes, splits and targets of each on tiny real-photo fixtures; their layout errors; and
the compress job on each (serially): same normalisation and bad-input rules as ImageFolder,
bit-exact level-0 JPEG transcodes, resume.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import fsspec
import imagecodecs
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from datasets_fixtures import encode_image, photo_crop  # noqa: E402
from sources_fixtures import (  # noqa: E402
    CLASSES,
    COCO_CATEGORIES,
    COCO_SIZES,
    coco_annotations,
    make_coco,
    make_csv_list,
    make_hf,
    make_webdataset,
    tar_members,
    write_shard,
)

from lossyvision import compress, compress_images, manifest  # noqa: E402
from lossyvision.datasets import DATASETS, create_dataset  # noqa: E402
from lossyvision.datasets.base import TASK_CLASSIFICATION, TASK_DETECTION, TASK_SEGMENTATION  # noqa: E402

FAST = {"effort": 1}
WDS = {"classes": list(CLASSES)}  # the fixture's .cls members hold indices, its .json members names


def test_the_new_kinds_are_registered():
    assert {"coco", "csv", "hf", "webdataset"} <= set(DATASETS.names())
    assert DATASETS.get("coco").task == TASK_DETECTION
    for kind in ("csv", "hf", "webdataset"):
        assert DATASETS.get(kind).task == TASK_CLASSIFICATION


def _sorted(records):
    keys = [(r.split, r.relpath) for r in records]
    return keys == sorted(keys) and len(set(keys)) == len(keys)


# --- coco ----------------------------------------------------------------------------------------
def test_coco_records_splits_and_boxes(tmp_path):
    root = make_coco(tmp_path, n_train=4, n_val=2)
    reader = create_dataset("coco", str(root))
    assert reader.classes == [COCO_CATEGORIES[i] for i in sorted(COCO_CATEGORIES)]  # by category id
    records = reader.records()
    assert _sorted(records) and reader.splits() == ["train", "val"]
    assert [r.relpath for r in reader.select("val")] == ["val2017/000000000004.jpg", "val2017/000000000005.jpg"]
    label_of = {cid: reader.classes.index(name) for cid, name in COCO_CATEGORIES.items()}
    next_id = 1
    for k, r in enumerate(reader.select("train") + reader.select("val")):
        assert (root / r.relpath).is_file() and r.target.startswith("annotations/instances_")
        expected = coco_annotations(k, *COCO_SIZES[k % 3], next_id)
        next_id += len(expected)
        t = reader.load_target(r)
        assert t["boxes"].dtype == np.float32 and t["labels"].dtype == np.int64 and t["difficult"].dtype == bool
        np.testing.assert_array_equal(t["boxes"], [[x, y, x + w, y + h]
                                                   for x, y, w, h in (a["bbox"] for a in expected)])
        assert t["labels"].tolist() == [label_of[a["category_id"]] for a in expected]
        assert t["difficult"].tolist() == [bool(a["iscrowd"]) for a in expected]  # iscrowd as VOC's difficult
    assert reader.load_target(records[0])["difficult"].tolist() == [False, False, True]


def test_coco_images_without_annotations_stay_as_negatives_and_split_map(tmp_path):
    root = make_coco(tmp_path, n_train=2, n_val=1)
    ann = root / "annotations" / "instances_val2017.json"
    data = json.loads(ann.read_text())
    data["annotations"] = []
    ann.write_text(json.dumps(data))
    reader = create_dataset("coco", str(root), split_map={"val": "test"})
    assert reader.splits() == ["test", "train"]
    t = reader.load_target(reader.select("test")[0])
    assert t["boxes"].shape == (0, 4) and t["labels"].shape == (0,)


def test_coco_masks_for_segmentation(tmp_path):
    from pycocotools import mask as mask_utils

    root = make_coco(tmp_path, n_train=2, n_val=1)
    reader = create_dataset("coco", str(root), masks=True)
    assert reader.task == TASK_SEGMENTATION
    assert reader.classes == ["background"] + [COCO_CATEGORIES[i] for i in sorted(COCO_CATEGORIES)]
    first = reader.records()[0]
    mask = reader.load_target(first)
    w, h = COCO_SIZES[0]
    assert mask.dtype == np.uint8 and mask.shape == (h, w)
    anns = coco_annotations(0, w, h, 1)
    obj, bottle, crowd = anns
    # the object's polygon, as pycocotools rasterises it, carries its class (index + 1) ...
    poly = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(obj["segmentation"], h, w))).astype(bool)
    small = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(bottle["segmentation"], h, w))).astype(bool)
    person = reader.classes.index("person")
    assert (mask[poly & ~small & (np.arange(w)[None, :] >= 4)] == person).all()
    assert (mask[small] == reader.classes.index("bottle")).all()
    assert (mask[2:6, 0:4] == 255).all()  # the crowd RLE region is ignored
    assert (mask[~poly & ~small] == 0).sum() > 0 and set(np.unique(mask)) <= {0, person, 4, 255}
    assert crowd["iscrowd"] == 1


def test_coco_roboflow_layout_and_explicit_options(tmp_path):
    for split in ("train", "valid"):
        folder = tmp_path / split
        folder.mkdir()
        images, anns = [], []
        for k in range(2):
            (folder / f"im{k}.jpg").write_bytes(encode_image(photo_crop("coffee", k, (32, 24)), ".jpg"))
            images.append({"id": k, "file_name": f"im{k}.jpg", "width": 32, "height": 24})
            anns.append({"id": k + 1, "image_id": k, "category_id": 0, "bbox": [1, 2, 10, 5], "iscrowd": 0})
        (folder / "_annotations.coco.json").write_text(json.dumps(
            {"images": images, "annotations": anns, "categories": [{"id": 0, "name": "mug"}]}))
    reader = create_dataset("coco", str(tmp_path))
    assert reader.splits() == ["train", "valid"] and reader.classes == ["mug"]
    assert [r.relpath for r in reader.select("valid")] == ["valid/im0.jpg", "valid/im1.jpg"]
    only = create_dataset("coco", str(tmp_path), annotations=["train/_annotations.coco.json"])
    assert only.splits() == ["train"]


def test_coco_errors_name_the_file_and_the_annotation(tmp_path):
    root = make_coco(tmp_path / "c", n_train=2, n_val=1)
    ann = root / "annotations" / "instances_train2017.json"
    good = ann.read_text()
    with pytest.raises(ValueError, match="no annotation files under"):
        create_dataset("coco", str(tmp_path / "c" / "train2017")).records()
    with pytest.raises(ValueError, match="unknown option"):
        create_dataset("coco", str(root), mask=True)
    for mutate, message in (
        (lambda d: d["annotations"][0].update(category_id=99),
         r"instances_train2017.json: annotation 1 has unknown category_id 99"),
        (lambda d: d["annotations"][0].update(bbox=[0, 0, -3, 4]), r"annotation 1 has an invalid bbox"),
        (lambda d: d["annotations"][0].update(image_id=42), r"annotation 1 refers to no listed image"),
        (lambda d: d["images"][0].pop("width"), r"image 0 needs id, file_name, width and height"),
        (lambda d: d["categories"].append({"id": 77, "name": "cat"}), r"category name\(s\) \['cat'\]"),
    ):
        data = json.loads(good)
        mutate(data)
        ann.write_text(json.dumps(data))
        with pytest.raises(ValueError, match=message):
            create_dataset("coco", str(root)).records()
    ann.write_text(good[:-20])
    with pytest.raises(ValueError, match=r"instances_train2017.json is not valid JSON"):
        create_dataset("coco", str(root)).records()


# --- csv -----------------------------------------------------------------------------------------
def test_csv_list_records_labels_and_splits(tmp_path):
    path = make_csv_list(tmp_path, per_class=4, n_test=2)
    reader = create_dataset("csv", str(path))
    assert reader.classes == sorted(CLASSES)
    records = reader.records()
    assert _sorted(records) and len(reader.select("train")) == 6 and len(reader.select("test")) == 6
    for r in records:
        assert r.relpath.startswith(f"images/{reader.classes[r.label]}/")
        assert r.source == str(tmp_path / r.relpath) and reader.read_source(r) == (tmp_path / r.relpath).read_bytes()
    jsonl = make_csv_list(tmp_path, per_class=4, n_test=2, fmt="jsonl")
    assert create_dataset("csv", str(jsonl)).records() == records


def test_csv_paths_outside_the_folder_and_uris_get_uri_keys(tmp_path):
    images = tmp_path / "elsewhere"
    images.mkdir()
    (images / "x.jpg").write_bytes(encode_image(photo_crop("rocket", 0, (16, 16)), ".jpg"))
    mem = fsspec.filesystem("memory")
    mem.pipe_file("/lv-csv/y.jpg", (images / "x.jpg").read_bytes())
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "l.csv").write_text(f"file,cls\n../elsewhere/x.jpg,0\n{images / 'x.jpg'}z,1\nmemory://lv-csv/y.jpg,1\n")
    try:
        reader = create_dataset("csv", str(lists / "l.csv"), path_column="file", label_column="cls",
                                classes=["rocket", "other"])
        by_rel = {r.relpath: r for r in reader.records()}
        rel_outside = f"_uri/file{images / 'x.jpg'}"
        assert set(by_rel) == {rel_outside, f"_uri/file{images / 'x.jpg'}z", "_uri/memory/lv-csv/y.jpg"}
        assert reader.classes == ["rocket", "other"] and by_rel[rel_outside].label == 0
        assert reader.read_source(by_rel["_uri/memory/lv-csv/y.jpg"]) == (images / "x.jpg").read_bytes()
        assert reader.splits() == ["train"]  # no split column
        info = reader.source_info(reader.records())
        assert info[rel_outside]["size"] == (images / "x.jpg").stat().st_size
        assert f"_uri/file{images / 'x.jpg'}z" not in info  # missing: compress records it as failed
    finally:
        mem.rm("/lv-csv", recursive=True)


def test_csv_integer_labels_and_test_fraction(tmp_path):
    rows = "".join(f"i{i}.jpg,{i % 3}\n" for i in range(12))
    (tmp_path / "l.csv").write_text("path,label\n" + rows)
    reader = create_dataset("csv", str(tmp_path / "l.csv"), test_fraction=0.25)
    assert reader.classes == ["0", "1", "2"]
    assert sorted(r.label for r in reader.records()) == [0] * 4 + [1] * 4 + [2] * 4
    for label in range(3):
        assert sum(r.split == "test" and r.label == label for r in reader.records()) == 1


def test_csv_errors_are_one_line_naming_the_line(tmp_path):
    path = tmp_path / "l.csv"
    cases = [
        ("path,lbl\na.jpg,x\n", {}, r"l.csv has no column 'label' \(label_column\); its columns: path, lbl"),
        ("path,label\na.jpg,x\n", {"split_column": "fold"}, r"no column 'fold' \(split_column\)"),
        ("path,label\na.jpg,x\n,y\n", {}, r"l.csv: line 3: no path in column 'path'"),
        ("path,label\na.jpg,x\nb.jpg,\n", {}, r"l.csv: line 3: no label"),
        ("path,label\na.jpg,x\n./a.jpg,y\n", {}, r"line 3: ./a.jpg is listed twice \(first at .*line 2\)"),
        ("path,label\na.jpg,x\nb.jpg,3\n", {}, r"labels mix class indices .*line 3: '3'.* give option classes"),
        ("path,label\na.jpg,dog\n", {"classes": ["cat"]}, r"line 2: label 'dog' is not one of the 1 classes"),
        ("path,label\na.jpg,x,extra\n", {}, r"line 2 has more fields than the header"),
        ("path,label\n", {}, r"lists no images"),
    ]
    for text, options, message in cases:
        path.write_text(text)
        with pytest.raises(ValueError, match=message):
            create_dataset("csv", str(path), **options).records()
    (tmp_path / "l.jsonl").write_text('{"path": "a.jpg", "label": 1}\n[1, 2]\n')
    with pytest.raises(ValueError, match=r"l.jsonl: line 2 is not a JSON object"):
        create_dataset("csv", str(tmp_path / "l.jsonl")).records()
    with pytest.raises(ValueError, match=r"csv: .*nope.csv not found"):
        create_dataset("csv", str(tmp_path / "nope.csv")).records()
    with pytest.raises(ValueError, match="unknown option"):
        create_dataset("csv", str(path), column="x")


# --- hf ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def hf_roots(tmp_path_factory):
    base = tmp_path_factory.mktemp("hf")
    return {"save_to_disk": make_hf(base / "disk"), "parquet": make_hf(base / "pq", layout="parquet")}


@pytest.mark.parametrize("layout", ["save_to_disk", "parquet"])
def test_hf_dataset_records_labels_and_bytes(hf_roots, layout):
    import datasets

    root = hf_roots[layout]
    reader = create_dataset("hf", str(root))
    assert reader.classes == list(CLASSES)  # the ClassLabel feature's names, in its order
    records = reader.records()
    assert _sorted(records) and reader.splits() == ["test", "train"]
    assert [r.relpath for r in reader.select("test")] == [f"test/{i:06d}" for i in range(6)]
    expected = datasets.load_from_disk(str(hf_roots["save_to_disk"])).cast_column(
        "image", datasets.Image(decode=False))
    for r in records:
        row = int(r.relpath.split("/")[1])
        assert r.label == expected[r.split][row]["label"]
        assert reader.read_source(r) == expected[r.split][row]["image"]["bytes"]  # the stored bytes, untouched
    assert reader.source_info(records)[records[0].relpath]["size"] is None


def test_hf_single_dataset_single_parquet_file_and_options(tmp_path, hf_roots):
    import datasets

    ds = datasets.Dataset.from_dict({"img": [{"bytes": encode_image(photo_crop("chelsea", i, (16, 16)), ".jpg"),
                                              "path": None} for i in range(6)],
                                     "name": ["cat", "mug"] * 3},
                                    features=datasets.Features({"img": datasets.Image(),
                                                                "name": datasets.Value("string")}))
    ds.save_to_disk(str(tmp_path / "one"))
    reader = create_dataset("hf", str(tmp_path / "one"), image_column="img", label_column="name", test_fraction=0.5)
    assert reader.classes == ["cat", "mug"] and reader.splits() == ["test", "train"]
    assert len(reader.select("test")) == 2 * round(3 * 0.5 + 1e-9)  # half of each class, rounded half up
    single = create_dataset("hf", str(hf_roots["parquet"] / "data" / "train-00000-of-00001.parquet"))
    assert single.splits() == ["train"] and len(single.records()) == 12
    with pytest.raises(ValueError, match=r"has no column 'image' \(image_column\); its columns: img, name"):
        create_dataset("hf", str(tmp_path / "one"), label_column="name").records()
    with pytest.raises(ValueError, match=r"neither a save_to_disk folder .* nor Parquet files"):
        create_dataset("hf", str(tmp_path)).records()


def test_hf_reads_through_fsspec(hf_roots):
    """Parquet files and a save_to_disk folder under a URI (fsspec's memory filesystem here, s3:// alike)."""
    mem = fsspec.filesystem("memory")
    for layout in ("parquet", "save_to_disk"):
        local = hf_roots[layout]
        for path in sorted(p for p in local.rglob("*") if p.is_file()):
            mem.pipe_file(f"/lv-hf/{layout}/{path.relative_to(local).as_posix()}", path.read_bytes())
    try:
        for layout in ("parquet", "save_to_disk"):
            remote = create_dataset("hf", f"memory://lv-hf/{layout}")
            local = create_dataset("hf", str(hf_roots[layout]))
            assert [(r.relpath, r.label) for r in remote.records()] == [(r.relpath, r.label) for r in local.records()]
            r = remote.records()[-1]
            assert remote.read_source(r) == local.read_source(r)
    finally:
        mem.rm("/lv-hf", recursive=True)


# --- webdataset ----------------------------------------------------------------------------------
def test_webdataset_shards_samples_labels_and_ranged_reads(tmp_path):
    root = make_webdataset(tmp_path, per_class=4, n_test_per_class=2, shards_per_split=2)
    reader = create_dataset("webdataset", str(root), **WDS)
    assert reader.classes == list(CLASSES) and reader.splits() == ["test", "train"]
    records = reader.records()
    assert _sorted(records) and len(reader.select("train")) == 12 and len(reader.select("test")) == 6
    members = {shard.name: tar_members(shard) for shard in root.glob("*.tar")}
    for r in records:
        shard, name = r.relpath.split("/", 1)
        assert reader.read_source(r) == members[shard + ".tar"][name]  # a ranged read of exactly the member
        assert name.startswith(CLASSES[r.label])
    info = reader.source_info(records)
    assert all(info[r.relpath]["size"] == len(reader.read_source(r)) for r in records)
    # One shard as the root; splits by glob; labels as indices without the classes option.
    one = create_dataset("webdataset", str(root / "test-000000.tar"), **WDS)
    assert {r.split for r in one.records()} == {"test"} and len(one.records()) == 3
    by_glob = create_dataset("webdataset", str(root), splits={"a": "train-000001.tar", "b": "test-*"}, **WDS)
    assert by_glob.splits() == ["a", "b"] and len(by_glob.select("a")) == 6


def test_webdataset_split_folders_and_sample_keys(tmp_path):
    jpg = encode_image(photo_crop("rocket", 0, (16, 16)), ".jpg")
    # the key is the path up to the first dot of the file name; a field like seg.png is no image
    write_shard(tmp_path / "val" / "0000.tar", [("a/b.c/x", "jpg", jpg, {"cls": b"1", "seg.png": jpg})])
    webp = encode_image(photo_crop("rocket", 1, (16, 16)), ".webp")
    write_shard(tmp_path / "train" / "0000.tar", [("k", "webp", webp, {"json": b'{"cls_id": 0}'})])
    reader = create_dataset("webdataset", str(tmp_path), label_key="cls_id")
    assert reader.classes == ["0", "1"]
    assert [(r.split, r.relpath) for r in reader.records()] == [
        ("train", "train/0000/k.webp"), ("val", "val/0000/a/b.c/x.jpg")]


def test_webdataset_errors(tmp_path):
    jpg = encode_image(photo_crop("rocket", 0, (16, 16)), ".jpg")
    with pytest.raises(ValueError, match="no .tar shards under"):
        create_dataset("webdataset", str(tmp_path)).records()
    write_shard(tmp_path / "train-0.tar", [("a", "jpg", jpg, {})])
    with pytest.raises(ValueError, match=r"train-0.tar: sample a has no .cls or .json label member"):
        create_dataset("webdataset", str(tmp_path)).records()
    write_shard(tmp_path / "train-0.tar", [("a", "jpg", jpg, {"cls": b"0", "png": jpg})])
    with pytest.raises(ValueError, match=r"sample a has several images \(jpg, png\)"):
        create_dataset("webdataset", str(tmp_path)).records()
    write_shard(tmp_path / "train-0.tar", [("a", "jpg", jpg, {"json": b"{nope"})])
    with pytest.raises(ValueError, match=r"sample a.json is not valid JSON"):
        create_dataset("webdataset", str(tmp_path)).records()
    (tmp_path / "train-0.tar").write_bytes(b"x" * 100)
    with pytest.raises(ValueError, match=r"train-0.tar is not a readable plain tar file"):
        create_dataset("webdataset", str(tmp_path)).records()
    (tmp_path / "train-0.tar").unlink()
    (tmp_path / "train-1.tar.gz").write_bytes(b"")
    with pytest.raises(ValueError, match=r"train-1.tar.gz is a compressed shard"):
        create_dataset("webdataset", str(tmp_path)).records()


# --- the compress job on every kind --------------------------------------------------------------
def _fixture(kind: str, base: Path) -> tuple[str, dict]:
    if kind == "coco":
        return str(make_coco(base, n_train=2, n_val=1)), {}
    if kind == "csv":
        return str(make_csv_list(base, per_class=2, n_test=1)), {}
    if kind == "hf":
        return str(make_hf(base, per_class=2, n_test_per_class=1)), {}
    return str(make_webdataset(base, per_class=2, n_test_per_class=1, shards_per_split=1)), dict(WDS)


@pytest.mark.parametrize("kind", ["coco", "csv", "hf", "webdataset"])
def test_compress_every_kind_bit_exact_level0_and_resume(tmp_path, kind):
    root, options = _fixture(kind, tmp_path / "src")
    reader = create_dataset(kind, root, **options)
    records = reader.records()
    out = tmp_path / "store"
    opts = compress.CompressOptions(codec_options=FAST, levels=(0.0, 3.0))
    job = compress.run_job(records, root, str(out), opts, compress.execute_serially, reader=reader)
    m = job.manifest
    assert len(m) == 2 * len(records) and (m["status"] == "ok").all(), m[m["status"] != "ok"][["relpath", "error"]]
    n_jpeg = 0
    for r in records:
        original = reader.read_source(r)
        rows = m[m["relpath"] == r.relpath].set_index("level")
        assert rows.loc[0.0, "source_bytes"] == len(original) and rows.loc[0.0, "split"] == r.split
        level0 = (out / rows.loc[0.0, "output_path"]).read_bytes()
        if original[:3] == b"\xff\xd8\xff":
            assert imagecodecs.jpegxl_decode_jpeg(level0) == original  # the JPEG file comes back bit-exactly
            n_jpeg += 1
        assert (out / rows.loc[3.0, "output_path"]).stat().st_size == rows.loc[3.0, "compressed_bytes"]
    assert n_jpeg >= 3
    again = compress.run_job(records, root, str(out), opts, compress.execute_serially, reader=reader)
    assert again.done == 0 and again.skipped == 2 * len(records)


def test_bad_sources_are_recorded_with_their_reason_for_every_kind(tmp_path):
    """A truncated JPEG, an RGBA PNG and a non-image, in a CSV list and in a shard: recorded or converted."""
    photo = photo_crop("chelsea", 3, (24, 24))
    jpg = encode_image(photo, ".jpg")
    rgba = np.dstack([photo, np.full(photo.shape[:2], 128, np.uint8)])
    files = {"trunc.jpg": jpg[: len(jpg) // 2], "alpha.png": encode_image(rgba, ".png"), "text.jpg": b"hello",
             "good.jpg": jpg}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    (tmp_path / "l.csv").write_text("path,label\n" + "".join(f"{n},0\n" for n in [*files, "gone.jpg"]))
    write_shard(tmp_path / "wds" / "train-0.tar",
                [(n.split(".")[0], n.split(".")[1], d, {"cls": b"0"}) for n, d in files.items()])
    opts = compress.CompressOptions(codec_options=FAST, levels=(1.0,))
    for kind, root in (("csv", tmp_path / "l.csv"), ("webdataset", tmp_path / "wds")):
        reader = create_dataset(kind, str(root))
        job = compress.run_job(reader.records(), str(root), str(tmp_path / f"out-{kind}"), opts,
                               compress.execute_serially, reader=reader)
        m = job.manifest.assign(name=lambda d: d["relpath"].str.rsplit("/", n=1).str[-1]).set_index("name")
        assert m.loc["trunc.jpg", "status"] == "failed" and m.loc["trunc.jpg", "error"] == "truncated file"
        assert m.loc["text.jpg", "error"] == "not an image (unrecognised format)"
        assert m.loc["alpha.png", "status"] == "ok" and m.loc["alpha.png", "source_mode"] == "RGBA"
        assert m.loc["good.jpg", "status"] == "ok"
        if kind == "csv":
            assert m.loc["gone.jpg", "error"] == "cannot read: file not found"
        assert (tmp_path / "good.jpg").read_bytes() == jpg  # originals untouched


def test_compress_workers_rebuild_the_reader_from_plain_params(tmp_path):
    """Work items and params of non-file sources are plain data: a fresh process can read them."""
    import pickle

    root, options = _fixture("webdataset", tmp_path / "src")
    reader = create_dataset("webdataset", root, **options)
    opts = compress.CompressOptions(codec_options=FAST, levels=(1.0,))
    params = compress_images.job_params(opts, str(tmp_path / "o"), reader)
    assert params["dataset"] == {"kind": "webdataset", "root": root, "options_json": json.dumps(WDS)}
    items, _ = compress.plan(reader.records(), root, str(tmp_path / "o"), opts, manifest.empty(), params, reader)
    item = pickle.loads(pickle.dumps(items[0]))
    record = next(r for r in reader.records() if r.relpath == item["relpath"])
    assert compress_images.read_source(item, params) == reader.read_source(record)
    shutil.rmtree(tmp_path / "src")
    compress_images._reader.cache_clear()
    assert compress_images.compress_items([item], params)[0]["error"].startswith("cannot read")


# --- the README's sweep file per kind ------------------------------------------------------------
@pytest.mark.parametrize("name, kind", [("coco-detection", "coco"), ("csv-list", "csv"), ("hf-dataset", "hf"),
                                        ("webdataset", "webdataset")])
def test_the_readme_sweep_file_of_each_kind_is_valid(tmp_path, name, kind):
    import yaml

    from lossyvision.spec import expand_env, parse_sweep
    from lossyvision.store import is_remote

    repo = Path(__file__).resolve().parents[1]
    text = (repo / "sweeps" / f"{name}.yaml").read_text()
    assert text in (repo / "README.md").read_text()  # the README shows the file as it is
    data = yaml.safe_load(expand_env(text, {}))
    assert data["dataset"]["kind"] == kind
    if not is_remote(data["dataset"]["root"]):
        data["dataset"]["root"] = str(tmp_path)  # a local root must exist to validate
    sweep = parse_sweep(data, source=name)  # models included: arch checked offline
    reader = create_dataset(kind, sweep.dataset.root, **sweep.dataset.options)  # the options are the kind's
    assert reader.name == kind
