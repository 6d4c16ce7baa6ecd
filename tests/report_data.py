"""A small synthetic sweep output for the report tests: results, a JPEG XL store with its manifest,
and a sensitivity result. Real codecs and real files; only the numbers in results are made up."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from lossyvision import store
from lossyvision.sweep.results import SCHEMA

TRAIN_LEVELS = (0.0, 1.0, 3.0)
TEST_LEVELS = (0.0, 1.0, 3.0)
DCR = {0.0: 0.2, 1.0: 0.6, 3.0: 0.8}


def result_rows(models=("vit", "cnn"), repeats=3, seed=0, baseline=0.8) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for model in models:
        for tr in TRAIN_LEVELS:
            for te in TEST_LEVELS:
                for r in range(repeats):
                    value = baseline * (1 - 0.02 * tr - 0.05 * te) + (rng.normal(0, 0.005) if repeats > 1 else 0)
                    rows.append(dict(sweep="t", model=model, task="classification", train_level=tr, test_level=te,
                                     repeat=r, budget=-1, metric="top1", value=value, train_dcr=DCR[tr],
                                     test_dcr=DCR[te], train_dcr_raw=0.9 + DCR[tr] / 10,
                                     test_dcr_raw=0.9 + DCR[te] / 10, n_train_images=10, train_bytes=1000,
                                     trial_id=f"{model}-{tr}-{r}", finished_at="2026-01-01T00:00:00Z"))
    return pd.DataFrame(rows)


def write_results(output: Path, df: pd.DataFrame) -> None:
    table = pa.Table.from_pandas(df[SCHEMA.names], schema=SCHEMA, preserve_index=False)
    pq.write_table(table, str(output / "results.parquet"))


def _photos(n: int) -> list[np.ndarray]:
    from skimage import data

    imgs = [data.astronaut(), data.chelsea(), data.coffee()]
    return [np.ascontiguousarray(imgs[i % len(imgs)][:96, :128]) for i in range(n)]


def write_store(output: Path, levels=TRAIN_LEVELS, n_images=2) -> Path:
    """A jpegxl store with a manifest (schema subset the report reads) under OUTPUT/store."""
    import imagecodecs

    root = output / "store"
    rows = []
    for k, rgb in enumerate(_photos(n_images)):
        relpath = f"test/class{k}/img{k}.jpg"
        source = imagecodecs.jpeg8_encode(rgb, level=90)
        png = imagecodecs.png_encode(rgb)
        for level in levels:
            data = (imagecodecs.jpegxl_encode(rgb, lossless=True, effort=1) if level == 0
                    else imagecodecs.jpegxl_encode(rgb, distance=level, effort=1))
            out = store.join(store.level_dir("jpegxl", level), store.output_relpath(relpath, ".jxl"))
            store.atomic_write_bytes(str(root / out), bytes(data))
            raw = rgb.size
            rows.append(dict(relpath=relpath, split="test", label=k, codec="jpegxl", level=float(level), status="ok",
                             error=None, source_bytes=len(source), raw_bytes=raw, png_bytes=len(png),
                             compressed_bytes=len(data), dcr_vs_source=1 - len(data) / len(source),
                             dcr_vs_raw=1 - len(data) / raw, width=rgb.shape[1], height=rgb.shape[0],
                             output_path=out))
    rows.append(dict(relpath="test/bad.jpg", split="test", label=0, codec="jpegxl", level=1.0, status="failed",
                     error="truncated", source_bytes=10, raw_bytes=None, png_bytes=None, compressed_bytes=None,
                     dcr_vs_source=None, dcr_vs_raw=None, width=None, height=None, output_path=None))
    pd.DataFrame(rows).to_parquet(root / store.MANIFEST_NAME, index=False)
    return root


def write_sweep_copy(output: Path) -> None:
    (output / "sweep.yaml").write_text(
        "name: report-test\n"
        "dataset: {root: /nonexistent/dataset}\n"
        "codec: {name: jpegxl, effort: 1}\n"
        "train_levels: [0, 1, 3]\ntest_levels: [0, 1, 3]\n"
        "models: [{name: vit, task: classification, arch: vit_tiny_patch16_224}]\n"
        f"output: {output}\n")


def write_sensitivity(output: Path) -> None:
    from lossyvision.sensitivity import SensitivityResult, plot_basis_illustration
    import torch

    folder = output / "sensitivity"
    folder.mkdir(parents=True, exist_ok=True)
    maps = np.abs(np.random.default_rng(1).normal(size=(3, 8, 8))) / (1 + np.arange(8))[None, :, None]
    res = SensitivityResult(maps=maps, per_image=maps[None], mode="gradient", eps=None, n_images=1, n_classes=3,
                            blocks_per_image=16, blocks_total=16, image_size=(32, 32), seconds=0.1)
    (folder / "vit-train0.npz").write_bytes(res.to_npz_bytes())
    img = torch.full((3, 16, 16), 0.4)
    (folder / "vit-train0-basis-Y.png").write_bytes(plot_basis_illustration(img, 0))


def make_output(tmp: Path, *, repeats=3, sensitivity=True) -> Path:
    out = tmp / "out"
    out.mkdir(parents=True)
    write_results(out, result_rows(repeats=repeats))
    write_store(out)
    write_sweep_copy(out)
    if sensitivity:
        write_sensitivity(out)
    return out

