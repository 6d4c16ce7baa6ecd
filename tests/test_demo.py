"""The demo dataset: deterministic bytes, counts, distinct train/test crops, licences, CLI."""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from lossyvision.cli import app
from lossyvision.datasets import create_dataset
from lossyvision.demo import IMAGE_SIZE, SOURCES, TEST_PER_CLASS, TRAIN_PER_CLASS, build_demo_dataset


def _tree_digest(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "data"
    return out, build_demo_dataset(str(out))


def test_demo_is_byte_identical_on_rebuild(demo, tmp_path):
    out, _ = demo
    again = tmp_path / "again"
    build_demo_dataset(str(again))
    first, second = _tree_digest(out), _tree_digest(again)
    assert len(first) == 9 * (TRAIN_PER_CLASS + TEST_PER_CLASS) + 4  # + classes.txt, crops.csv, 2 .md
    assert first == second


def test_demo_counts_classes_and_reader(demo):
    out, summary = demo
    classes = (out / "classes.txt").read_text().split("\n")[:-1]
    assert classes == sorted(s.label for s in SOURCES) == summary.classes and len(classes) == 9
    assert summary.images("train") == 9 * TRAIN_PER_CLASS and summary.images("test") == 9 * TEST_PER_CLASS
    assert set(summary.counts["test"].values()) == {TEST_PER_CLASS}
    total = sum(p.stat().st_size for p in (out / "train").rglob("*.jpg"))
    assert summary.bytes["train"] == total
    reader = create_dataset("imagefolder", str(out))
    assert reader.classes == classes  # ImageFolder labels = classes.txt line index
    assert reader.splits() == ["test", "train"]
    assert len(reader.select("train")) == 9 * TRAIN_PER_CLASS
    rec = reader.select("test")[0]
    with Image.open(out / rec.relpath) as img:
        assert img.format == "JPEG" and img.size == (IMAGE_SIZE, IMAGE_SIZE) and img.mode == "RGB"


def test_demo_train_and_test_crops_differ(demo):
    out, _ = demo
    with (out / "crops.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 9 * (TRAIN_PER_CLASS + TEST_PER_CLASS)
    boxes = {split: {(r["class"], r["x"], r["y"], r["side"], r["flipped"]) for r in rows if r["split"] == split}
             for split in ("train", "test")}
    assert len(boxes["train"]) == 9 * TRAIN_PER_CLASS and not boxes["train"] & boxes["test"]
    assert len({r["side"] for r in rows if r["class"] == "cat"}) > 4  # several scales
    pixels = {split: {hashlib.sha1(np.asarray(Image.open(p)).tobytes()).hexdigest()
                      for p in (out / split).rglob("*.jpg")} for split in ("train", "test")}
    assert len(pixels["test"]) == 9 * TEST_PER_CLASS and not pixels["train"] & pixels["test"]


def test_demo_records_licences(demo):
    out, _ = demo
    licences = (out / "LICENSES.md").read_text()
    for source in SOURCES:
        assert f"| {source.label} | {source.file} |" in licences and source.licence in licences
    assert "CC BY 2.0" in licences and "china.jpg" in licences and "flower.jpg" in licences
    assert "motorcycle" not in licences  # no stated licence: left out
    assert "| train | 360 |" in (out / "README.md").read_text()


def test_demo_rebuild_as_png_replaces_jpegs_and_refuses_foreign_folders(tmp_path):
    out = tmp_path / "small"
    build_demo_dataset(str(out), train_per_class=2, test_per_class=1)
    summary = build_demo_dataset(str(out), png=True, train_per_class=2, test_per_class=1)
    assert summary.image_format == "png"
    assert not list(out.rglob("*.jpg")) and len(list(out.rglob("*.png"))) == 27
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("x")
    with pytest.raises(ValueError, match=r"foreign is not empty and holds no earlier demo dataset"):
        build_demo_dataset(str(foreign))
    assert (foreign / "thesis.tex").read_text() == "x"


def test_demo_interrupted_build_is_rebuilt(tmp_path):
    clean, broken = tmp_path / "clean", tmp_path / "broken"
    build_demo_dataset(str(clean), train_per_class=3, test_per_class=2)
    build_demo_dataset(str(broken), train_per_class=3, test_per_class=2)
    for p in [broken / "README.md", broken / "classes.txt", *sorted((broken / "train").rglob("*.jpg"))[::2]]:
        p.unlink()  # as if killed mid-way: LICENSES.md is written first, README.md last
    (broken / "test" / "cat" / "cat_099.jpg").write_bytes(b"stale")
    build_demo_dataset(str(broken), train_per_class=3, test_per_class=2)
    assert _tree_digest(broken) == _tree_digest(clean)


def test_cli_demo_data(tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["demo-data", str(tmp_path / "d"), "--png"])
    assert result.exit_code == 0, result.output
    assert "9 classes" in result.output and "PNG" in result.output
    assert "train  360 images" in result.output and "test   900 images" in result.output
    assert len(list((tmp_path / "d" / "test").rglob("*.png"))) == 900
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "other.txt").write_text("keep")
    bad = runner.invoke(app, ["demo-data", str(tmp_path / "x")])
    assert bad.exit_code == 2 and "not empty" in bad.output and "Traceback" not in bad.output


def test_the_readme_states_the_demos_real_image_and_class_counts(demo):
    """The README's `demo-data` line is what the command builds: it drifted once (468 vs 1,260)."""
    import re

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    line = next(ln for ln in readme.splitlines() if ln.startswith("lossyvision demo-data data/demo"))
    found = re.search(r"#\s*([\d,]+) real-photo crops, (\d+) classes", line)
    assert found, line
    _, summary = demo
    assert int(found.group(1).replace(",", "")) == sum(summary.images(s) for s in summary.counts)
    assert int(found.group(2)) == len(summary.classes)


def test_make_demo_ends_by_saying_how_to_get_the_command_on_the_path():
    makefile = (Path(__file__).resolve().parents[1] / "Makefile").read_text(encoding="utf-8")
    demo = makefile.split("\ndemo:", 1)[1].split("\n\n", 1)[0]
    assert demo.strip().splitlines()[-1].lstrip("\t@").startswith("echo") and "source $(BIN)/activate" in demo
