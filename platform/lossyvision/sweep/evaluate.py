"""Evaluation cells as plain functions: test levels cut into shards, each decoded once, scored by every model.

A test level is never held whole: :func:`plan_shards` cuts it into shards of bounded size (images
and decoded bytes, the sweep's ``evaluation`` block); ``lossyvision.runners.evaluate`` runs one Ray
task per shard, which decodes the shard once (:func:`decode_shard`) and scores it with every model
tested at that level (:func:`score_shard`). The task keeps the trained models it loaded
(:class:`TrainedModels`) for the next shards, so a model is loaded once per worker, not per shard.
Each cell's per-image :class:`~lossyvision.metrics.base.Outcomes` are the concatenation of its
shards' parts in the level's image order (relpath order, as :func:`split_rows` gives it), and its
results rows carry each metric with its bootstrap interval.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import pandas as pd
from torch.utils.data import Dataset

from lossyvision.codecs import DEFAULT_CODEC
from lossyvision.datasets.base import Record
from lossyvision.intervals import metric_interval
from lossyvision.seeding import bootstrap_seed
from lossyvision.spec import Sweep
from lossyvision.store import read_bytes
from lossyvision.sweep.plan import CellSpec, TrialSpec, level_dcr, reader_of
from lossyvision.sweep.trials import TrialError, load_trained, split_images, store_uri, utc_now


class DecodedSamples(Dataset):
    """``(rgb uint8 HxWx3, target)`` pairs already decoded: one shard of a test level, shared by every model.

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


# --- shards ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TestShard:
    """A bounded slice of one test level: what one task decodes once and every model scores.

    ``index`` orders the level's shards (its images in relpath order); ``decoded_bytes`` is the
    size of its pixels once decoded (width x height x 3 per image, from the manifest).
    """

    codec: str
    level: float
    index: int
    count: int
    uris: tuple[str, ...]
    records: tuple[Record, ...]
    decoded_bytes: int

    @property
    def ids(self) -> list[str]:
        return [r.relpath for r in self.records]

    def __len__(self) -> int:
        return len(self.uris)


def cut_shards(sizes: Sequence[int], max_images: int, max_bytes: int, min_shards: int = 1,
               min_images: int = 1) -> list[slice]:
    """Consecutive slices of ``sizes`` (bytes per image) of at most ``max_images`` and ``max_bytes``, even.

    As few slices as the limits allow, of even image counts when that keeps within them (300
    images at 256 a shard: 150 + 150, not 256 + 44); an image larger than ``max_bytes`` is a shard
    of its own. With fewer than ``min_shards`` slices the images are cut into up to ``min_shards``
    even slices of at least ``min_images`` instead (small levels keep every evaluation worker busy).
    """
    n = len(sizes)
    if n == 0:
        return []
    greedy, start, held = [], 0, 0
    for i, size in enumerate(sizes):
        if i > start and (i - start >= max_images or held + int(size) > max_bytes):
            greedy.append(slice(start, i))
            start, held = i, 0
        held += int(size)
    greedy.append(slice(start, n))
    k = max(len(greedy), min(int(min_shards), max(1, n // max(1, int(min_images)))))
    bounds = [round(j * n / k) for j in range(k + 1)]
    even = [slice(a, b) for a, b in zip(bounds, bounds[1:])]
    fits = all(c.stop - c.start <= max_images and sum(sizes[c]) <= max_bytes for c in even)
    return even if fits or k > len(greedy) else greedy


def level_images(sweep: Sweep, manifest: pd.DataFrame, level: float, codec: str = DEFAULT_CODEC, *,
                 reader: Any | None = None, records: dict[str, Record] | None = None,
                 ) -> tuple[list[str], list[Record], np.ndarray]:
    """The test split's store URIs, records and decoded sizes at ``codec``'s ``level``, in relpath order.

    Raises :class:`TrialError` when the level has no ok image or the store is from another dataset.
    """
    split = sweep.test_split
    rows, reader = split_images(sweep, manifest, split, level, reader, codec=codec)
    if rows.empty:
        raise TrialError(f"no ok images in split {split!r} at {codec} level {level:g}")
    records = records if records is not None else {r.relpath: r for r in reader.select(split)}
    missing = [p for p in rows["relpath"] if p not in records]
    if missing:
        raise TrialError(f"{len(missing)} manifest image(s) of split {split!r} are not in the dataset "
                         f"(first: {missing[0]}); is the store from another dataset?")
    sizes = (rows["raw_bytes"].fillna(0).astype("int64").to_numpy() if "raw_bytes" in rows.columns
             else np.zeros(len(rows), dtype=np.int64))
    return [store_uri(sweep, p) for p in rows["output_path"]], [records[p] for p in rows["relpath"]], sizes


def plan_shards(sweep: Sweep, manifest: pd.DataFrame, level: float, codec: str = DEFAULT_CODEC, *,
                reader: Any | None = None, records: dict[str, Record] | None = None, min_shards: int = 1,
                min_images: int = 1) -> list[TestShard]:
    """The shards of the test split at ``codec``'s ``level`` (sizes from the sweep's ``evaluation`` block),
    in relpath order."""
    uris, recs, sizes = level_images(sweep, manifest, level, codec, reader=reader, records=records)
    ev = sweep.evaluation
    cuts = cut_shards(sizes, ev.shard_images, ev.shard_bytes, min_shards, min_images)
    return [TestShard(codec, float(level), i, len(cuts), tuple(uris[c]), tuple(recs[c]), int(sizes[c].sum()))
            for i, c in enumerate(cuts)]


def decode_shard(sweep: Sweep, shard: TestShard, reader: Any | None = None) -> DecodedSamples:
    """Read and decode the shard's images from the store, and load their targets."""
    reader = reader or reader_of(sweep)
    codec = sweep.arm(shard.codec).create()
    targets = [reader.load_target(r) for r in shard.records]
    images = [np.ascontiguousarray(codec.decode(read_bytes(u))) for u in shard.uris]
    return DecodedSamples(images, targets, shard.level, ids=shard.ids)


def decode_test_level(sweep: Sweep, manifest: pd.DataFrame, level: float, codec_name: str = DEFAULT_CODEC) -> DecodedSamples:
    """Every test image at ``codec_name``'s ``level`` decoded at once (small sets, tools and tests; sweeps
    stream shards)."""
    reader = reader_of(sweep)
    uris, recs, sizes = level_images(sweep, manifest, level, codec_name, reader=reader)
    return decode_shard(sweep, TestShard(codec_name, float(level), 0, 1, tuple(uris), tuple(recs), int(sizes.sum())), reader)


# --- scoring -----------------------------------------------------------------------------------
def weights_bytes(model: Any) -> int:
    """Bytes of a model's parameters and buffers (what keeping it in memory costs)."""
    tensors = list(model.parameters()) + list(model.buffers())
    return int(sum(t.numel() * t.element_size() for t in tensors))


class TrainedModels:
    """The trained models a worker has loaded, kept for the next shards it scores.

    Loading a model (building it, reading its checkpoint) costs far more than scoring one shard,
    and every shard of every level needs the same models. The first models loaded are kept while
    their weights fit ``max_bytes``; any beyond that are loaded again for each shard (no eviction:
    with models used in turn, evicting the oldest would miss on every shard). ``scope`` names one
    evaluation: a new scope drops the models of the last one.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = int(max_bytes)
        self.held: dict[tuple[str, str, str], tuple[Any, Any]] = {}
        self.held_bytes = 0
        self.loads = 0
        self._scope: str | None = None

    def scope(self, name: str, max_bytes: int | None = None) -> None:
        if name != self._scope:
            self.held.clear()
            self.held_bytes = 0
            self._scope = name
        if max_bytes is not None:
            self.max_bytes = int(max_bytes)

    def get(self, sweep: Sweep, trial: TrialSpec, output: str, device: str) -> tuple[Any, Any]:
        """``(task, model)`` of a finished trial, in eval mode on ``device``."""
        key = (str(output), trial.key, device)
        if key in self.held:
            return self.held[key]
        task, model = load_trained(sweep, trial, output, device=device)
        self.loads += 1
        size = weights_bytes(model)
        if self.held_bytes + size <= self.max_bytes:
            self.held[key] = (task, model)
            self.held_bytes += size
        return task, model


def describe_error(e: BaseException) -> str:
    """``Type: last line of the message`` (at most 500 characters): one line for the cell's status."""
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[-1][:500] if text else ''}"


def score_shard(sweep: Sweep, cells: Sequence[CellSpec], shard: TestShard, output: str, *,
                models: TrainedModels | None = None, device: str = "cpu",
                reader: Any | None = None) -> dict[str, Any]:
    """Decode ``shard`` once and score it with each cell's model: ``{cell key: outcomes, or an error line}``.

    A model that fails gives its cell an error line and the others go on; a shard that cannot be
    decoded raises (every cell of it fails).
    """
    import torch

    models = models if models is not None else TrainedModels(0)
    test = decode_shard(sweep, shard, reader)
    parts: dict[str, Any] = {}
    for cell in cells:
        try:
            task, model = models.get(sweep, cell.trial, output, device)
            with torch.no_grad():
                parts[cell.key] = task.outcomes(model, test)
        except Exception as e:  # one model's failure is its cell's, not the shard's
            parts[cell.key] = describe_error(e)
    return parts


def evaluate_trial(sweep: Sweep, cell: CellSpec, output: str, test: DecodedSamples, device: str = "cpu") -> Any:
    """The per-image outcomes of the cell's trained model on decoded test samples."""
    import torch

    task, model = load_trained(sweep, cell.trial, output, device=device)
    with torch.no_grad():
        return task.outcomes(model, test)


def cell_rows(sweep: Sweep, cell: CellSpec, outcomes: Any, trial_meta: dict[str, Any],
              manifest: pd.DataFrame) -> list[dict[str, Any]]:
    """The results rows of one cell: one per metric, with its image-bootstrap interval and the store's DCRs.

    The relative columns are filled later (:func:`lossyvision.sweep.relative.fill_relative`): the
    baseline cell may not be evaluated yet.
    """
    test = level_dcr(manifest, sweep.test_split, cell.test_level, cell.test_codec)
    train = level_dcr(manifest, sweep.train_split, cell.trial.train_level, cell.trial.codec)
    finished = utc_now()
    order = list(trial_meta.get("metric_names") or outcomes.metric_names)  # the task's, headline first
    rows = []
    for name, value in outcomes.metrics().items():
        ci = metric_interval([outcomes], name, confidence=sweep.report.confidence,
                             n_resamples=sweep.report.resamples, seed=bootstrap_seed(sweep.seed, cell.trial.model))
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
            "metric_rank": order.index(name) if name in order else len(order),
        })
    return rows
