"""Which codec, at how many bytes: the demo-codecs sweep end to end, on reduced settings.

The shipped ``sweeps/demo-codecs.yaml`` with fewer levels, smaller images and one epoch: three codecs in
one store, the originals' model tested on every codec, a report with accuracy against bits per pixel,
the bytes saved at equal accuracy and a verdict naming a codec.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.nightly]

REPO = Path(__file__).resolve().parents[1]


def test_demo_codecs_sweep_end_to_end(tmp_path, monkeypatch):
    from lossyvision.demo import build_demo_dataset
    from lossyvision.runners.cluster import init_ray, shutdown_ray
    from lossyvision.sweep.run import run_sweep

    build_demo_dataset(str(tmp_path / "data" / "demo"), train_per_class=8, test_per_class=12, image_size=32)
    data = yaml.safe_load((REPO / "sweeps" / "demo-codecs.yaml").read_text())
    for c, levels in zip(data["codecs"], ([0, 3], [90, 40], [90, 40])):
        c["levels"] = levels
    data["codecs"][0]["effort"] = 3
    data["models"][0].update(image_size=32, epochs=1)
    data["report"] = {"resamples": 300}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(data))
    monkeypatch.chdir(tmp_path)
    init_ray(num_cpus=2)
    try:
        outcome = run_sweep("s.yaml", echo=lambda m: None)
    finally:
        shutdown_ray()
    assert outcome.ok and outcome.trials_run == 6
    out = tmp_path / "runs" / "demo-codecs"
    results = pd.read_parquet(out / "results.parquet")
    # each codec's own 2x2 grid, plus the originals' model (jpegxl 0) on the other codecs' 4 levels
    assert outcome.cells_run == 3 * 4 + 4 and results.cell_id.nunique() == 16
    assert set(results.codec) == {"jpegxl", "avif", "jpeg"} and set(results.test_codec) == {"jpegxl", "avif", "jpeg"}
    cross = results[results.codec != results.test_codec]
    assert set(cross.codec) == {"jpegxl"} and set(cross.train_level) == {0.0}
    assert (results.test_bpp > 0).all() and results.rel.notna().all()
    # the store holds all three codecs in one manifest
    manifest = pd.read_parquet(out / "store" / "manifest.parquet")
    assert set(manifest.codec) == {"jpegxl", "avif", "jpeg"}
    # the report: accuracy against bits per pixel, the bytes at equal accuracy, a verdict naming a codec
    html = (out / "report" / "index.html").read_text()
    assert "Codecs: accuracy against bits per pixel" in html and (out / "report" / "rate-resnet10t-top1.png").exists()
    bd = pd.read_csv(out / "report" / "bd_rate.csv")
    assert set(bd.anchor) == {"jpegxl"} and set(bd.codec) == {"avif", "jpeg"} and set(bd.curve) <= {"matched", "originals"}
    assert any(line.strip().startswith("Across codecs:") for line in outcome.verdict)
    assert html.index("Across codecs:") < html.index("<h2>Codecs: accuracy against bits per pixel</h2>")
    assert "Warnings" not in html or "samples.png" not in html.split("<h2>Warnings</h2>")[-1]
