"""Evaluation cells as plain functions: decode a test level once, score trained models on it.

``lossyvision.runners.evaluate`` decodes each test level in one Ray task, shares the decoded
arrays through the object store, and scores every trained model on them; the functions here do
the work: a model's per-image :class:`~lossyvision.metrics.base.Outcomes` on a test level, and the
cell's results rows, each metric with its bootstrap interval.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from torch.utils.data import Dataset

from lossyvision.spec import Sweep
from lossyvision.sweep.plan import CellSpec, level_dcr
from lossyvision.sweep.trials import TrialError, images_of, load_trained, split_images, utc_now


class DecodedSamples(Dataset):
    """``(rgb uint8 HxWx3, target)`` pairs already decoded: one test level, shared by every model.

    ``ids`` name the images (their relpaths), so each model's outcomes can be paired per image.
    """

    def __init__(self, images: list[np.ndarray], targets: list[Any], level: float,
                 ids: list[str] | None = None) -> None:
        if len(images) != len(targets):
            raise ValueError(f"{len(images)} images but {len(targets)} targets")
        self.images = images
        self.targets = targets
        self.level = float(level)
        self.ids = list(ids) if ids is not None else [str(i) for i in range(len(images))]
        if len(self.ids) != len(images):
            raise ValueError(f"{len(self.ids)} ids for {len(images)} images")

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[np.ndarray, Any]:
        return self.images[i], self.targets[i]


def decode_test_level(sweep: Sweep, manifest: pd.DataFrame, level: float, codec_name: str = "jpegxl") -> DecodedSamples:
    """Read and decode every test image at ``codec_name``'s ``level`` from the store (once per level)."""
    from lossyvision.store import read_bytes

    rows, reader = split_images(sweep, manifest, sweep.test_split, level, codec=codec_name)
    if rows.empty:
        raise TrialError(f"no ok images in split {sweep.test_split!r} at {codec_name} level {level:g}")
    images = images_of(sweep, rows, reader, sweep.test_split)
    codec = sweep.arm(codec_name).create()
    decoded = [np.ascontiguousarray(codec.decode(read_bytes(u))) for u in images.uris]
    return DecodedSamples(decoded, images.targets, level, ids=images.relpaths)


def evaluate_trial(sweep: Sweep, cell: CellSpec, output: str, test: DecodedSamples, device: str = "cpu") -> Any:
    """The per-image outcomes of the cell's trained model on the decoded test level."""
    import torch

    task, model = load_trained(sweep, cell.trial, output, device=device)
    with torch.no_grad():
        return task.outcomes(model, test)


def cell_rows(sweep: Sweep, cell: CellSpec, outcomes: Any, trial_meta: dict[str, Any],
              manifest: pd.DataFrame) -> list[dict[str, Any]]:
    """The results rows of one cell: one per metric, with its image-bootstrap interval and the store's DCRs.

    The relative columns are filled later (:func:`lossyvision.sweep.summary.fill_relative`): the
    baseline cell may not be evaluated yet.
    """
    from lossyvision.intervals import metric_interval
    from lossyvision.seeding import derive_seed

    test = level_dcr(manifest, sweep.test_split, cell.test_level, cell.test_codec)
    train = level_dcr(manifest, sweep.train_split, cell.trial.train_level, cell.trial.codec)
    finished = utc_now()
    rows = []
    for name, value in outcomes.metrics().items():
        ci = metric_interval([outcomes], name, confidence=sweep.report.confidence,
                             n_resamples=sweep.report.resamples, seed=derive_seed("bootstrap", sweep.seed, cell.trial.model))
        rows.append({
            "sweep": sweep.name, "model": cell.trial.model, "task": trial_meta.get("task", ""),
            "codec": cell.trial.codec, "train_level": cell.trial.train_level,
            "test_codec": cell.test_codec, "test_level": cell.test_level,
            "repeat": cell.trial.repeat, "budget": cell.trial.budget,
            "metric": name, "value": float(value), "ci_low": ci.low, "ci_high": ci.high,
            "confidence": sweep.report.confidence, "n_test_images": len(outcomes),
            "rel": np.nan, "rel_low": np.nan, "rel_high": np.nan, "baseline_cell": None,
            "train_dcr": train.vs_source, "test_dcr": test.vs_source,
            "train_dcr_raw": train.vs_raw, "test_dcr_raw": test.vs_raw, "train_bpp": train.bpp, "test_bpp": test.bpp,
            "train_quality": train.quality, "test_quality": test.quality,
            "quality_metric": test.quality_metric or train.quality_metric,
            "n_train_images": int(trial_meta.get("n_train_images", -1)),
            "train_bytes": int(trial_meta.get("train_bytes", -1)),
            "trial_id": cell.trial.key, "trial_hash": cell.trial.config,
            "cell_id": cell.key, "cell_hash": cell.config, "finished_at": finished,
            "node": outcomes.node, "trial_node": trial_meta.get("node"),
        })
    return rows
