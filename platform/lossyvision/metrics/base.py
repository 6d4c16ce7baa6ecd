"""The metric registry (name -> plain function over numpy arrays) and per-sample outcomes.

:class:`Outcomes` are what one evaluated cell keeps per test image: enough to recompute the cell's
metrics exactly, and to recompute them on any resample of its images, which is what the bootstrap
intervals (:mod:`lossyvision.intervals`) and paired comparisons between cells need. Each task's
family registers one kind in :data:`OUTCOMES`; a cell's outcomes are saved as one Parquet file
whose schema metadata names the kind, so reading it back never unpickles anything.
"""

from __future__ import annotations

import io
from abc import ABC, abstractmethod
from typing import Any, Callable, ClassVar, Sequence

import numpy as np

from lossyvision.registry import Registry

METRICS: Registry[Callable[..., object]] = Registry("metric")

KIND_KEY = b"lossyvision.outcomes"


class Outcomes(ABC):
    """Per-image outcomes of one model on one test set; ``ids`` name the images (relpaths)."""

    kind: ClassVar[str] = ""
    ids: np.ndarray
    #: The Ray node that computed them (set by the runner; not saved with the predictions).
    node: str | None = None

    def __len__(self) -> int:
        return len(self.ids)

    #: The metrics :meth:`metrics` returns, in the kind's own order (its usual headline first).
    metric_names: ClassVar[tuple[str, ...]] = ()

    @abstractmethod
    def metrics(self) -> dict[str, float]:
        """The cell's metrics over every image (what the task's ``evaluate`` reports)."""

    @abstractmethod
    def weighted(self, weights: np.ndarray) -> dict[str, np.ndarray]:
        """Each metric recomputed with image ``i`` counted ``weights[b, i]`` times, for every row ``b``.

        ``weights`` is (B, n) resample counts (a bootstrap draw); returns arrays of shape (B,).
        """

    @abstractmethod
    def take(self, index: np.ndarray) -> "Outcomes":
        """The outcomes of the images at ``index`` (in that order)."""

    @abstractmethod
    def to_table(self) -> Any:
        """A ``pyarrow.Table`` (one row per image) that :meth:`from_table` reads back."""

    @classmethod
    @abstractmethod
    def from_table(cls, table: Any) -> "Outcomes":
        """The outcomes a :meth:`to_table` table holds."""

    @classmethod
    @abstractmethod
    def concat(cls, parts: Sequence["Outcomes"]) -> "Outcomes":
        """One set of outcomes from disjoint parts (shards of a test set), in order."""

    @property
    def resample_cost(self) -> int:
        """Numbers touched per resample, to size bootstrap batches (memory stays bounded)."""
        return len(self)

    def aligned(self, ids: Sequence[str]) -> "Outcomes":
        """The outcomes of exactly ``ids`` (each must be present), in that order."""
        pos = {str(k): i for i, k in enumerate(self.ids)}
        missing = [k for k in ids if k not in pos]
        if missing:
            raise KeyError(f"{len(missing)} image(s) have no outcome (first: {missing[0]})")
        return self.take(np.fromiter((pos[k] for k in ids), dtype=np.int64, count=len(ids)))


OUTCOMES: Registry[type[Outcomes]] = Registry("outcome kind")


def headline_first(rows: Any) -> list[str]:
    """The metrics of results rows (``rows["metric"]``), the headline first.

    A task declares its metrics headline first (``Task.metric_names``); the sweep records each metric's
    place there in the rows it writes (``metric_rank``, 0 for the headline), so that the report, which
    loads no task (and no torch), leads with the task's own headline. Rows without it (tables made by
    hand, older outputs) fall back on the order of the outcome kind that lists the metric, then on names.
    """
    metrics = [str(m) for m in rows["metric"]]
    recorded: dict[str, int] = {}
    if "metric_rank" in getattr(rows, "columns", ()):
        for metric, rank in zip(metrics, rows["metric_rank"]):
            if rank is not None and rank == rank:  # NaN: not recorded
                recorded.setdefault(metric, int(rank))

    def rank(metric: str) -> tuple[int, str]:
        return (recorded[metric] if metric in recorded else outcome_rank(metric), metric)

    return sorted(set(metrics), key=rank)


def outcome_rank(metric: str) -> int:
    """``metric``'s place in the first outcome kind that lists it (0: the kind's headline); large if none does."""
    for kind in OUTCOMES:
        names = OUTCOMES.get(kind).metric_names
        if metric in names:
            return names.index(metric)
    return 1 << 16


def outcomes_to_parquet(outcomes: Outcomes) -> bytes:
    """Parquet bytes of ``outcomes``; the schema metadata names the kind."""
    import pyarrow.parquet as pq

    table = outcomes.to_table()
    meta = dict(table.schema.metadata or {})
    meta[KIND_KEY] = outcomes.kind.encode()
    buf = io.BytesIO()
    pq.write_table(table.replace_schema_metadata(meta), buf)
    return buf.getvalue()


def outcomes_from_parquet(data: bytes, source: str = "predictions") -> Outcomes:
    """Read :func:`outcomes_to_parquet` bytes back; a damaged or foreign file raises ``ValueError``."""
    import pyarrow as pa
    import pyarrow.parquet as pq


    try:
        table = pq.read_table(io.BytesIO(data))
    except (pa.ArrowException, OSError) as e:
        raise ValueError(f"{source}: not a readable Parquet file ({e}); delete it to re-evaluate the cell") from None
    kind = (table.schema.metadata or {}).get(KIND_KEY, b"").decode()
    if kind not in OUTCOMES:
        raise ValueError(f"{source}: not a lossyvision predictions file (outcome kind {kind!r})")
    return OUTCOMES.get(kind).from_table(table)


def weights_from_indices(index: np.ndarray, n: int) -> np.ndarray:
    """(B, n) counts of each image in each row of a (B, n) array of resampled indices."""
    index = np.atleast_2d(np.asarray(index, dtype=np.int64))
    rows = index.shape[0]
    flat = index + (np.arange(rows, dtype=np.int64) * n)[:, None]
    return np.bincount(flat.ravel(), minlength=rows * n).reshape(rows, n).astype(np.float64)


def as_str_ids(ids: Sequence[Any]) -> np.ndarray:
    return np.asarray([str(i) for i in ids], dtype=object)
