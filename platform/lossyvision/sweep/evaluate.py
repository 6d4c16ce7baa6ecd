"""Evaluation cells as plain functions: decode a test level once, score trained models on it.

``lossyvision.runners.evaluate`` decodes each test level in one Ray task, shares the decoded
arrays through the object store, and scores every trained model on them; the functions here do
the work and build the results rows.
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
    """``(rgb uint8 HxWx3, target)`` pairs already decoded: one test level, shared by every model."""

    def __init__(self, images: list[np.ndarray], targets: list[Any], level: float) -> None:
        if len(images) != len(targets):
            raise ValueError(f"{len(images)} images but {len(targets)} targets")
        self.images = images
        self.targets = targets
        self.level = float(level)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[np.ndarray, Any]:
        return self.images[i], self.targets[i]


def decode_test_level(sweep: Sweep, manifest: pd.DataFrame, level: float) -> DecodedSamples:
    """Read and decode every test image at ``level`` from the store (once per level)."""
    from lossyvision.codecs import create_codec
    from lossyvision.store import read_bytes

    rows, reader = split_images(sweep, manifest, sweep.test_split, level)
    if rows.empty:
        raise TrialError(f"no ok images in split {sweep.test_split!r} at level {level:g}")
    images = images_of(sweep, rows, reader, sweep.test_split)
    codec = create_codec(sweep.codec.name, **sweep.codec.options)
    decoded = [np.ascontiguousarray(codec.decode(read_bytes(u))) for u in images.uris]
    return DecodedSamples(decoded, images.targets, level)


def evaluate_trial(sweep: Sweep, cell: CellSpec, output: str, test: DecodedSamples,
                   device: str = "cpu") -> dict[str, float]:
    """Metric name -> value of the cell's trained model on the decoded test level."""
    import torch

    task, model = load_trained(sweep, cell.trial, output, device=device)
    with torch.no_grad():
        metrics = task.evaluate(model, test)
    return {str(k): float(v) for k, v in metrics.items()}


def cell_rows(sweep: Sweep, cell: CellSpec, metrics: dict[str, float], trial_meta: dict[str, Any],
              manifest: pd.DataFrame) -> list[dict[str, Any]]:
    """The results rows of one cell: one per metric, with the train/test DCR of the store."""
    test = level_dcr(manifest, sweep.test_split, cell.test_level, sweep.codec.name)
    train = level_dcr(manifest, sweep.train_split, cell.trial.train_level, sweep.codec.name)
    finished = utc_now()
    return [{
        "sweep": sweep.name, "model": cell.trial.model, "task": trial_meta.get("task", ""),
        "train_level": cell.trial.train_level, "test_level": cell.test_level,
        "repeat": cell.trial.repeat, "budget": cell.trial.budget,
        "metric": name, "value": float(value),
        "train_dcr": train.vs_source, "test_dcr": test.vs_source,
        "train_dcr_raw": train.vs_raw, "test_dcr_raw": test.vs_raw,
        "n_train_images": int(trial_meta.get("n_train_images", -1)),
        "train_bytes": int(trial_meta.get("train_bytes", -1)),
        "trial_id": cell.trial.key, "finished_at": finished,
    } for name, value in metrics.items()]
