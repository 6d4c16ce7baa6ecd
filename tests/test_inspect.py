"""``lossyvision inspect`` on the demo data and every fixture kind: counts, bad files, the estimate; writes nothing."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).parent))

from datasets_fixtures import encode_image, make_imagefolder, photo_crop, write_image  # noqa: E402
from sources_fixtures import CLASSES, make_coco, make_csv_list, make_hf, make_webdataset  # noqa: E402

from lossyvision.cli import app  # noqa: E402
from lossyvision.inspect import histogram, inspect_dataset  # noqa: E402


def tree(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``root`` with its size and mtime: what "writes nothing" is checked against."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")}


@pytest.fixture(scope="module")
def roots(tmp_path_factory) -> dict[str, tuple[str, list[str]]]:
    """``kind -> (root, cli options)`` for the demo data and every fixture."""
    from lossyvision.demo import build_demo_dataset

    base = tmp_path_factory.mktemp("inspect")
    demo = base / "demo"
    build_demo_dataset(str(demo), train_per_class=3, test_per_class=1, image_size=32)
    return {
        "imagefolder": (str(demo), []),
        "coco": (str(make_coco(base / "coco")), []),
        "csv": (str(make_csv_list(base / "csv")), []),
        "hf": (str(make_hf(base / "hf")), []),
        "webdataset": (str(make_webdataset(base / "wds")), ["-o", f"classes=[{', '.join(CLASSES)}]"]),
    }


@pytest.mark.parametrize("kind", ["imagefolder", "coco", "csv", "hf", "webdataset"])
def test_inspect_runs_on_the_demo_data_and_every_kind_and_writes_nothing(roots, kind, tmp_path, monkeypatch):
    root, extra = roots[kind]
    folder = Path(root) if Path(root).is_dir() else Path(root).parent
    monkeypatch.chdir(tmp_path)
    before, cwd_before = tree(folder), tree(tmp_path)
    runner = CliRunner()
    text = runner.invoke(app, ["inspect", root, "--kind", kind, *extra, "--levels", "0,3", "--effort", "1",
                               "--sample", "3"])
    assert text.exit_code == 0, text.output
    assert "images per split and class" in text.output and "estimated store (jpegxl effort=1" in text.output
    assert "nothing was written" in text.output
    out = runner.invoke(app, ["inspect", root, "--kind", kind, *extra, "--levels", "0,3", "--effort", "1",
                              "--sample", "3", "--json"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.stdout)
    assert data["kind"] == kind and data["images"] == sum(s["images"] for s in data["splits"].values())
    assert data["bad"] == [] and sum(data["formats"].values()) == data["images"]
    assert [lv["level"] for lv in data["estimate"]["levels"]] == [0.0, 3.0]
    assert len(data["estimate"]["sample"]) == 3 and data["estimate"]["cpu_seconds"] > 0
    level3 = data["estimate"]["levels"][1]
    assert 0 < level3["store_bytes"] < data["source_bytes"]  # distance 3 shrinks these photos
    assert data["estimate"]["store_bytes"] == sum(lv["store_bytes"] for lv in data["estimate"]["levels"])
    assert tree(folder) == before and tree(tmp_path) == cwd_before


def test_counts_imbalance_formats_and_bad_files(tmp_path):
    make_imagefolder(tmp_path, classes=("a", "b"), per_class=2, splits=("train",), size=(40, 30))
    for i in range(4):
        write_image(tmp_path / "train" / "c" / f"c{i}.png", photo_crop("rocket", i, (100, 20)))
    jpg = encode_image(photo_crop("coffee", 0, (16, 16)), ".jpg")
    (tmp_path / "train" / "a" / "cut.jpg").write_bytes(jpg[: len(jpg) // 2])
    (tmp_path / "train" / "b" / "empty.jpg").write_bytes(b"")
    ins = inspect_dataset("imagefolder", str(tmp_path), codec_options={"effort": 1}, levels=[1.0], sample=2)
    train = ins.splits["train"]
    assert train["images"] == 10 and train["bad"] == 2
    assert train["per_class"] == {"a": 3, "b": 3, "c": 4} and train["imbalance"] == pytest.approx(4 / 3)
    assert ins.formats == {"PNG": 4, "JPEG": 4} and ins.modes == {"RGB": 8}
    assert sorted((b["relpath"], b["reason"]) for b in ins.bad) == [
        ("train/a/cut.jpg", "truncated file"), ("train/b/empty.jpg", "empty file")]
    assert ins.resolutions["width"] == {"min": 40, "median": 70.0, "max": 100}
    assert sum(h["count"] for h in ins.side_histogram) == 8 and ins.side_histogram[-1]["hi"] == 128


def test_the_estimate_is_the_real_store_when_the_sample_is_everything(tmp_path):
    from lossyvision import compress
    from lossyvision.datasets import create_dataset

    root = make_csv_list(tmp_path / "src", per_class=2, n_test=1)
    ins = inspect_dataset("csv", str(root), codec_options={"effort": 1}, levels=[0.0, 2.0], sample=100)
    reader = create_dataset("csv", str(root))
    job = compress.run_job(reader.records(), str(root), str(tmp_path / "store"),
                           compress.CompressOptions(codec_options={"effort": 1}, levels=(0.0, 2.0)),
                           compress.execute_serially, reader=reader)
    real = job.manifest.groupby("level")["compressed_bytes"].sum()
    assert {lv.level: lv.store_bytes for lv in ins.estimate.levels} == {0.0: real[0.0], 2.0: real[2.0]}
    assert ins.source_bytes == job.manifest.drop_duplicates("relpath")["source_bytes"].sum()


def test_limit_sweep_file_and_errors(tmp_path):
    root = make_imagefolder(tmp_path / "d", per_class=4, size=(24, 24))
    ins = inspect_dataset("imagefolder", str(root), sample=0, limit=2)
    assert {s: t["images"] for s, t in ins.splits.items()} == {"test": 2, "train": 2} and ins.estimate is None
    sweep = tmp_path / "s.yaml"
    sweep.write_text(f"name: s\ndataset: {{kind: imagefolder, root: {root}}}\ncodec: {{name: jpegxl, effort: 2}}\n"
                     "train_levels: [0, 4]\ntest_levels: [1, 4]\n"
                     "models: [{name: m, task: classification, arch: resnet10t}]\noutput: out\n")
    runner = CliRunner()
    r = runner.invoke(app, ["inspect", "--sweep", str(sweep), "--sample", "1", "--json"])
    assert r.exit_code == 0, r.output
    est = json.loads(r.stdout)["estimate"]
    assert [lv["level"] for lv in est["levels"]] == [0.0, 1.0, 4.0] and est["codec_options"] == {"effort": 2}
    for args, message in ((["inspect", str(root), "--kind", "nope"], "unknown dataset 'nope'; known:"),
                          (["inspect", str(tmp_path / "missing")], "not found"),
                          (["inspect", str(root), "-o", "x"], "expected KEY=VALUE"),
                          (["inspect", str(root), "-o", "colour=1"], "unknown option"),
                          (["inspect"], "give a DATASET")):
        r = runner.invoke(app, args)
        assert r.exit_code == 2 and message in r.output and "Traceback" not in r.output, (args, r.output)
    assert not (tmp_path / "out").exists()


def test_histogram_bins():
    assert histogram([], [10]) == []
    h = histogram([1, 5, 50, 5000], [10, 100, 1000])
    assert [(b["lo"], b["hi"], b["count"]) for b in h] == [(0, 10, 2), (10, 100, 1), (100, 1000, 0),
                                                           (1000, float("inf"), 1)]


def test_compress_cli_takes_dataset_options(tmp_path):
    """``compress --kind K -o KEY=VALUE`` (error paths only: no Ray starts)."""
    root = make_webdataset(tmp_path / "wds", per_class=1, n_test_per_class=1)
    runner = CliRunner()
    r = runner.invoke(app, ["compress", "--source", str(root), "--kind", "webdataset", "--out", str(tmp_path / "o")])
    assert r.exit_code == 1 and "labels mix class indices" in r.output and "give option classes" in r.output
    r = runner.invoke(app, ["compress", "--source", str(root), "--kind", "webdataset", "-o", "classes",
                            "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "expected KEY=VALUE" in r.output
    r = runner.invoke(app, ["compress", "--source", str(root), "--kind", "webdataset", "-o", "colour=red",
                            "--out", str(tmp_path / "o")])
    assert r.exit_code == 1 and "unknown option(s) ['colour']" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "o").exists()

