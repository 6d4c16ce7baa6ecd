"""Dataset readers on tiny real-photo fixtures: records, splits, labels, targets and layout errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import fsspec
import numpy as np
import pytest
from datasets_fixtures import (
    CITYSCAPES_FIXTURE_LABEL_IDS,
    VOC_FIXTURE_SIZES,
    make_cityscapes,
    make_food101,
    make_imagefolder,
    make_voc,
    photo_crop,
    voc_image_id,
    voc_objects,
    write_image,
)

from lossyvision.datasets import DATASETS, create_dataset
from lossyvision.datasets.base import TASK_CLASSIFICATION, TASK_DETECTION, TASK_SEGMENTATION
from lossyvision.datasets.cityscapes import CITYSCAPES_CLASSES, LABEL_ID_TO_TRAIN_ID, label_ids_to_train_ids
from lossyvision.datasets.voc import VOC_CLASSES, parse_voc_xml


def test_registry_and_tasks():
    assert {"imagefolder", "food101", "voc", "cityscapes"} <= set(DATASETS.names())
    assert DATASETS.get("imagefolder").task == TASK_CLASSIFICATION
    assert DATASETS.get("food101").task == TASK_CLASSIFICATION
    assert DATASETS.get("voc").task == TASK_DETECTION
    assert DATASETS.get("cityscapes").task == TASK_SEGMENTATION


def _assert_sorted(records):
    keys = [(r.split, r.relpath) for r in records]
    assert keys == sorted(keys) and len(set(keys)) == len(keys)


# --- imagefolder ---------------------------------------------------------------------------------
def test_imagefolder_with_split_folders(tmp_path):
    root = make_imagefolder(tmp_path, classes=("b_cls", "a_cls", "c_cls"), per_class=3)
    (tmp_path / "README.txt").write_text("not an image")  # ignored
    reader = create_dataset("imagefolder", str(root))
    records = reader.records()
    assert reader.classes == ["a_cls", "b_cls", "c_cls"]
    assert reader.splits() == ["test", "train"]
    assert len(reader.select("train")) == 9 and len(reader.select("test")) == 9
    _assert_sorted(records)
    for r in records:
        assert r.relpath == f"{r.split}/{reader.classes[r.label]}/{Path(r.relpath).name}"
        assert (root / r.relpath).is_file() and r.target is None
        assert reader.load_target(r) == r.label


def test_imagefolder_val_folder_and_class_union(tmp_path):
    make_imagefolder(tmp_path, classes=("x", "y"), per_class=1, splits=("train",))
    make_imagefolder(tmp_path, classes=("y", "z"), per_class=2, splits=("val",))
    reader = create_dataset("imagefolder", str(tmp_path))
    assert reader.classes == ["x", "y", "z"]
    assert reader.splits() == ["train", "val"]
    assert {r.label for r in reader.select("val")} == {1, 2}  # y keeps label 1 in both splits


def test_imagefolder_without_split_folders_is_train(tmp_path):
    make_imagefolder(tmp_path, classes=("cat", "dog"), per_class=4, splits=None)
    reader = create_dataset("imagefolder", str(tmp_path))
    assert reader.splits() == ["train"]
    assert [r.label for r in reader.records()] == [0] * 4 + [1] * 4


def test_imagefolder_test_fraction_is_deterministic_and_per_class(tmp_path):
    make_imagefolder(tmp_path, classes=("cat", "dog", "emu"), per_class=10, splits=None, size=(16, 16))
    a = create_dataset("imagefolder", str(tmp_path), test_fraction=0.3).records()
    b = create_dataset("imagefolder", str(tmp_path), test_fraction=0.3).records()
    assert a == b
    for label in range(3):
        assert sum(r.split == "test" for r in a if r.label == label) == 3
    test_names = {Path(r.relpath).name for r in a if r.split == "test"}
    assert test_names != {f"{c}_{i}.jpg" for c in ("cat", "dog", "emu") for i in range(3)}  # not just the first files


def test_imagefolder_case_spaces_and_non_ascii_names(tmp_path):
    crop = photo_crop("chelsea", 0, (20, 16))
    write_image(tmp_path / "Katze süß" / "Foto 1.JPG", crop)
    write_image(tmp_path / "Katze süß" / "b.Jpeg", crop)
    write_image(tmp_path / "猫" / "写真.PNG", crop)
    write_image(tmp_path / "猫" / "x.tif", crop)
    write_image(tmp_path / "猫" / "deeper" / "y.webp", crop)
    (tmp_path / "猫" / "notes.txt").write_text("x")
    (tmp_path / "猫" / ".hidden.jpg").write_bytes(b"")
    reader = create_dataset("imagefolder", str(tmp_path))
    assert reader.classes == ["Katze süß", "猫"]
    assert [(r.relpath, r.label) for r in reader.records()] == [
        ("Katze süß/Foto 1.JPG", 0), ("Katze süß/b.Jpeg", 0),
        ("猫/deeper/y.webp", 1), ("猫/x.tif", 1), ("猫/写真.PNG", 1)]


def test_imagefolder_errors(tmp_path):
    with pytest.raises(ValueError, match=r"imagefolder: .*missing.* not found"):
        create_dataset("imagefolder", str(tmp_path / "missing")).records()
    with pytest.raises(ValueError, match=r"no images .* under"):
        create_dataset("imagefolder", str(tmp_path)).records()
    write_image(tmp_path / "loose.jpg", photo_crop("coffee", 0, (8, 8)))
    with pytest.raises(ValueError, match=r"loose\.jpg is not inside a class folder"):
        create_dataset("imagefolder", str(tmp_path)).records()
    with pytest.raises(ValueError, match="test_fraction must be between 0 and 1"):
        create_dataset("imagefolder", str(tmp_path), test_fraction=1.5)
    with pytest.raises(ValueError, match="unknown option"):
        create_dataset("imagefolder", str(tmp_path), test_frac=0.2)
    split_root = make_imagefolder(tmp_path / "s", per_class=1)
    with pytest.raises(ValueError, match="test_fraction only applies"):
        create_dataset("imagefolder", str(split_root), test_fraction=0.2).records()


def test_imagefolder_split_folders_option(tmp_path):
    make_imagefolder(tmp_path, classes=("test", "train"), per_class=1, splits=None)  # classes named like splits
    reader = create_dataset("imagefolder", str(tmp_path), split_folders=False)
    assert reader.classes == ["test", "train"] and reader.splits() == ["train"]


def test_imagefolder_reads_through_fsspec(tmp_path):
    local = make_imagefolder(tmp_path, per_class=1)
    fs = fsspec.filesystem("memory")
    for path in sorted(local.rglob("*.jpg")):
        fs.pipe_file(f"/lv-test/{path.relative_to(local).as_posix()}", path.read_bytes())
    try:
        remote = create_dataset("imagefolder", "memory://lv-test").records()
        assert remote == create_dataset("imagefolder", str(local)).records()
    finally:
        fs.rm("/lv-test", recursive=True)


# --- food101 -------------------------------------------------------------------------------------
def test_food101(tmp_path):
    root = make_food101(tmp_path, classes=("ramen", "apple_pie", "sushi"), n_train=3, n_test=2)
    reader = create_dataset("food101", str(root))
    assert reader.classes == ["ramen", "apple_pie", "sushi"]  # classes.txt order, not sorted
    records = reader.records()
    _assert_sorted(records)
    assert len(reader.select("train")) == 9 and len(reader.select("test")) == 6
    train_txt = set((root / "meta" / "train.txt").read_text().split())
    for r in records:
        cls, image_id = r.relpath[len("images/"):-len(".jpg")].split("/")
        assert reader.classes[r.label] == cls
        assert (f"{cls}/{image_id}" in train_txt) == (r.split == "train")


def test_food101_errors(tmp_path):
    with pytest.raises(ValueError, match=r"food101: .*meta/classes.txt not found"):
        create_dataset("food101", str(tmp_path)).records()
    root = make_food101(tmp_path, n_train=1, n_test=1)
    victim = next((root / "images" / "apple_pie").glob("*.jpg"))
    victim.unlink()
    with pytest.raises(ValueError, match=rf"{victim.name} not found \(listed in .*meta/(train|test).txt\)"):
        create_dataset("food101", str(root)).records()
    write_image(victim, photo_crop("coffee", 0, (8, 8)))
    with (root / "meta" / "test.txt").open("a") as f:
        f.write("pizza/1\n")
    with pytest.raises(ValueError, match=r"class 'pizza' is not in meta/classes.txt"):
        create_dataset("food101", str(root)).records()


# --- voc -----------------------------------------------------------------------------------------
def test_voc_records_and_targets(tmp_path):
    root = make_voc(tmp_path, n_train=4, n_val=2)
    reader = create_dataset("voc", str(root))
    assert reader.classes == list(VOC_CLASSES) and len(VOC_CLASSES) == 20
    assert reader.classes[0] == "aeroplane" and reader.classes[-1] == "tvmonitor"
    records = reader.records()
    _assert_sorted(records)
    assert reader.splits() == ["train", "val"]
    assert [r.relpath for r in reader.select("val")] == [f"JPEGImages/{voc_image_id('val', i)}.jpg" for i in range(2)]
    for k, r in enumerate(reader.select("train") + reader.select("val")):
        assert r.target == r.relpath.replace("JPEGImages", "Annotations").replace(".jpg", ".xml")
        target = reader.load_target(r)
        expected = voc_objects(k, *VOC_FIXTURE_SIZES[k % len(VOC_FIXTURE_SIZES)])
        assert target["boxes"].dtype == np.float32 and target["boxes"].shape == (len(expected), 4)
        assert target["labels"].dtype == np.int64 and target["difficult"].dtype == bool
        np.testing.assert_array_equal(
            target["boxes"], [[o["xmin"] - 1, o["ymin"] - 1, o["xmax"], o["ymax"]] for o in expected])
        assert [VOC_CLASSES[i] for i in target["labels"]] == [o["name"] for o in expected]
        assert target["difficult"].tolist() == [bool(o["difficult"]) for o in expected]
    first = reader.load_target(records[0])
    assert first["difficult"].tolist() == [False, False, True]
    assert first["boxes"][2].tolist() == [9.0, 9.0, 30.0, 25.0]  # xmin=10,ymin=10 -> 9,9; xmax/ymax kept


def test_voc_devkit_parent_and_split_options(tmp_path):
    root = make_voc(tmp_path, n_train=2, n_val=1, devkit=True)
    for given, prefix in ((root, "VOCdevkit/VOC2012/"), (root / "VOCdevkit", "VOC2012/")):
        reader = create_dataset("voc", str(given), split_map={"val": "test"})
        assert reader.splits() == ["test", "train"]
        r = reader.select("test")[0]
        assert r.relpath == f"{prefix}JPEGImages/{voc_image_id('val', 0)}.jpg"
        assert (Path(given) / r.relpath).is_file()
        assert reader.load_target(r)["boxes"].shape[1] == 4
    reader = create_dataset("voc", str(root), splits=["trainval"])
    assert reader.splits() == ["trainval"] and len(reader.records()) == 3


def test_voc_parse_edge_cases():
    empty = parse_voc_xml(b"<annotation><size><width>5</width></size></annotation>")
    assert empty["boxes"].shape == (0, 4) and empty["labels"].shape == (0,)
    xml = (b"<annotation><object><name>dog</name><bndbox><xmin>10.5</xmin><ymin>2</ymin>"
           b"<xmax>20</xmax><ymax>30.5</ymax></bndbox></object></annotation>")  # no <difficult>: not difficult
    t = parse_voc_xml(xml)
    assert t["boxes"].tolist() == [[9.5, 1.0, 20.0, 30.5]] and t["labels"].tolist() == [11]
    assert t["difficult"].tolist() == [False]
    with pytest.raises(ValueError, match=r"a\.xml: object 0 has unknown class 'unicorn'"):
        parse_voc_xml(xml.replace(b"dog", b"unicorn"), "a.xml")
    with pytest.raises(ValueError, match="not valid XML"):
        parse_voc_xml(b"<annotation><object>", "b.xml")
    with pytest.raises(ValueError, match="no valid bndbox"):
        parse_voc_xml(xml.replace(b"<xmin>10.5</xmin>", b""), "c.xml")


def test_voc_errors(tmp_path):
    with pytest.raises(ValueError, match=r"voc: .*Annotations not found"):
        create_dataset("voc", str(tmp_path)).records()
    root = make_voc(tmp_path, n_train=2, n_val=1)
    (root / "Annotations" / f"{voc_image_id('train', 1)}.xml").unlink()
    with pytest.raises(ValueError, match=r"2008_000001\.xml not found \(listed in .*ImageSets/Main/train\.txt\)"):
        create_dataset("voc", str(root)).records()
    with pytest.raises(ValueError, match="splits=.* must be a non-empty subset"):
        create_dataset("voc", str(root), splits=["training"])
    with pytest.raises(ValueError, match="unknown option"):
        create_dataset("voc", str(root), classes=["cat"])


# --- cityscapes ----------------------------------------------------------------------------------
def test_cityscapes_constants_match_official_table():
    assert len(LABEL_ID_TO_TRAIN_ID) == 34 and sorted(LABEL_ID_TO_TRAIN_ID) == list(range(34))
    assert len(CITYSCAPES_CLASSES) == 19
    assert CITYSCAPES_CLASSES[:3] == ("road", "sidewalk", "building") and CITYSCAPES_CLASSES[-1] == "bicycle"
    assert sorted(v for v in LABEL_ID_TO_TRAIN_ID.values() if v != 255) == list(range(19))
    spot = {0: 255, 6: 255, 7: 0, 9: 255, 11: 2, 17: 5, 19: 6, 23: 10, 26: 13, 29: 255, 31: 16, 33: 18}
    assert {k: LABEL_ID_TO_TRAIN_ID[k] for k in spot} == spot
    ids = np.array([[7, 8, 255], [34, 0, 33]], np.uint8)
    assert label_ids_to_train_ids(ids).tolist() == [[0, 1, 255], [255, 255, 18]]


def test_cityscapes_train_ids(tmp_path):
    root = make_cityscapes(tmp_path, n_train=2, n_val=2)
    reader = create_dataset("cityscapes", str(root))
    records = reader.records()
    _assert_sorted(records)
    assert reader.classes == list(CITYSCAPES_CLASSES)
    assert reader.splits() == ["train", "val"] and len(records) == 4
    for r in records:
        assert r.target.endswith("_gtFine_labelTrainIds.png")
        mask = reader.load_target(r)
        assert mask.dtype == np.uint8 and mask.shape == (64, 128)
        assert set(np.unique(mask)) <= set(range(19)) | {255}


def test_cityscapes_label_ids_are_mapped_to_train_ids(tmp_path):
    with_train = create_dataset("cityscapes", str(make_cityscapes(tmp_path / "a")))
    ids_only = create_dataset("cityscapes", str(make_cityscapes(tmp_path / "b", label_ids_only=True)))
    from PIL import Image

    for ra, rb in zip(with_train.records(), ids_only.records()):
        assert ra.relpath == rb.relpath and rb.target.endswith("_gtFine_labelIds.png")
        expected = with_train.load_target(ra)
        got = ids_only.load_target(rb)
        np.testing.assert_array_equal(got, expected)
        raw = np.asarray(Image.open(tmp_path / "b" / rb.target))
        for label_id, train_id in CITYSCAPES_FIXTURE_LABEL_IDS.items():
            if (raw == label_id).any():
                assert (got[raw == label_id] == train_id).all()
        assert (got[(raw == 0) | (raw == 9)] == 255).all() and ((raw == 0) | (raw == 9)).any()


def test_cityscapes_options_and_errors(tmp_path):
    root = make_cityscapes(tmp_path, n_train=1, n_val=1, n_test=1)
    assert create_dataset("cityscapes", str(root)).splits() == ["train", "val"]  # test not read by default
    reader = create_dataset("cityscapes", str(root), splits=["train", "val", "test"], split_map={"val": "valid"})
    assert reader.splits() == ["test", "train", "valid"]
    gt = next((root / "gtFine" / "val").rglob("*_labelTrainIds.png"))
    write_image(gt, np.full((4, 4), 26, np.uint8))  # a labelIds mask under the trainIds name
    with pytest.raises(ValueError, match="is it a labelIds image"):
        reader.load_target(reader.select("valid")[0])
    for f in (root / "gtFine" / "train").rglob("*.png"):
        f.unlink()
    with pytest.raises(ValueError, match=r"cityscapes: .*_gtFine_labelTrainIds\.png not found \(nor _labelIds\.png\)"):
        create_dataset("cityscapes", str(root)).records()
    shutil.rmtree(root / "leftImg8bit" / "val")
    with pytest.raises(ValueError, match=r"leftImg8bit.val not found"):
        create_dataset("cityscapes", str(root), splits=["val"]).records()
    write_image(root / "leftImg8bit" / "train" / "Oops.png", np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(ValueError, match=r"Oops\.png is not leftImg8bit/<split>/<city>/<name>_leftImg8bit\.png"):
        create_dataset("cityscapes", str(root), splits=["train"]).records()
