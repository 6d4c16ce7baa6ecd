"""A small synthetic sweep output for the report tests: results, a JPEG XL store with its manifest,
and a sensitivity result. Real codecs and real files; only the numbers in results are made up."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

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


def keyed(df: pd.DataFrame) -> tuple[pd.DataFrame, object]:
    """``df`` with every results column the engine writes (keys, hashes, empty intervals) and its grid.

    The keys carry made-up configuration hashes: one per trial and cell, as ``sweep run`` plans them.
    """
    from lossyvision.sweep.plan import CellSpec, Grid, TrialSpec

    df = df.copy()
    if "budget" not in df.columns:
        df["budget"] = -1
    if "codec" not in df.columns:
        df["codec"] = "jpegxl"
    if "test_codec" not in df.columns:
        df["test_codec"] = df["codec"]
    grid = Grid([], [])
    trial_ids, cell_ids, trial_hashes, cell_hashes = [], [], [], []
    trials: dict = {}
    cells: dict = {}
    for r in df.itertuples(index=False):
        t = TrialSpec(r.model, float(r.train_level), int(r.repeat), int(r.budget), "c0ffee0000", r.codec)
        if t not in trials:
            trials[t] = t
            grid.trials.append(t)
        c = CellSpec(t, float(r.test_level), "5eed000000", r.test_codec)
        if c not in cells:
            cells[c] = c
            grid.cells.append(c)
        trial_ids.append(t.key), cell_ids.append(c.key), trial_hashes.append(t.config), cell_hashes.append(c.config)
    df["trial_id"], df["cell_id"], df["trial_hash"], df["cell_hash"] = trial_ids, cell_ids, trial_hashes, cell_hashes
    for col, default in (("ci_low", np.nan), ("ci_high", np.nan), ("confidence", 0.95), ("n_test_images", 100),
                         ("rel", np.nan), ("rel_low", np.nan), ("rel_high", np.nan), ("baseline_cell", None),
                         ("train_dcr_raw", np.nan), ("test_dcr_raw", np.nan), ("train_bpp", np.nan),
                         ("test_bpp", np.nan), ("train_quality", np.nan), ("test_quality", np.nan),
                         ("quality_metric", None), ("n_train_images", 10),
                         ("train_bytes", 1000), ("sweep", "t"), ("task", "classification"),
                         ("finished_at", "2026-01-01T00:00:00Z"), ("node", None), ("trial_node", None),
                         ("metric_rank", None)):
        if col not in df.columns:
            df[col] = default
    return df[SCHEMA.names], grid


def outcomes_for(accuracy: float, n: int = 200, num_classes: int = 9, seed: int = 0):
    """Classification outcomes of ``n`` images with top-1 accuracy ``round(accuracy * n) / n``.

    Correct images are a seeded random subset, so cells differ image by image as real ones do.
    """
    from lossyvision.metrics.classification import ClassificationOutcomes

    rng = np.random.default_rng(seed)
    labels = np.arange(n) % num_classes
    scores = rng.random((n, num_classes))
    correct = rng.permutation(n)[: int(round(accuracy * n))]
    scores[correct, labels[correct]] = 2.0
    scores[np.setdiff1d(np.arange(n), correct), labels[np.setdiff1d(np.arange(n), correct)]] = -1.0
    return ClassificationOutcomes.from_scores([f"test/c{k % num_classes}/{k}.jpg" for k in range(n)], scores, labels)


def write_results(output: Path, df: pd.DataFrame, predictions: bool = False) -> object:
    """``df`` as a sweep output of the current format: the marker, ``plan.json`` and ``results.parquet``.

    With ``predictions``, every top-1 cell also gets a predictions file whose accuracy is its value
    (values are rounded to the file's 200 images), as ``sweep run`` leaves them.
    """
    from lossyvision import output as outdir
    from lossyvision.sweep import results

    df, grid = keyed(df)
    outdir.mark(str(output))
    outdir.write_plan(str(output), grid)
    if predictions:
        for i, row in df.iterrows():
            o = outcomes_for(float(row["value"]), seed=i)
            df.loc[i, "value"] = o.metrics()["top1"]
            outdir.write_predictions(str(output), row["cell_id"], o)
    results.write_results(str(output), df)
    return grid


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
    write_results(out, result_rows(repeats=repeats), predictions=True)
    write_store(out)
    write_sweep_copy(out)
    if sensitivity:
        write_sensitivity(out)
    return out

