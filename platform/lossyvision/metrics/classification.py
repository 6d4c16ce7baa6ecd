"""Top-k accuracy over class scores.

``scores`` is (N, C) (logits or probabilities: only the order matters), ``labels`` is (N,) class
indices. With ``k >= C`` every sample counts as correct (the true class is always among the top C),
which is what ``top5`` means on a dataset of fewer than five classes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from lossyvision.metrics.base import METRICS, OUTCOMES, Outcomes, as_str_ids


def _check(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores)
    labels = np.asarray(labels)
    if scores.ndim != 2:
        raise ValueError(f"scores must be (N, C), got shape {scores.shape}")
    if labels.shape != (scores.shape[0],):
        raise ValueError(f"labels must be ({scores.shape[0]},) to match scores, got shape {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= scores.shape[1]):
        raise ValueError(f"labels must lie in [0, {scores.shape[1]}), got {labels.min()}..{labels.max()}")
    return scores, labels.astype(np.int64)


def topk_correct(scores: np.ndarray, labels: np.ndarray, ks: Sequence[int] = (1, 5)) -> dict[int, int]:
    """How many samples have their label among the ``k`` highest scores, for each ``k``.

    Counts (not rates) so that batches can be summed. Ties are broken by a stable sort on the
    negated scores (the lower class index wins), as ``torch.topk`` does in practice.
    """
    scores, labels = _check(scores, labels)
    if any(k < 1 for k in ks):
        raise ValueError(f"k must be >= 1, got {list(ks)}")
    c = scores.shape[1]
    rank = label_ranks(scores, labels)
    return {k: int(np.count_nonzero(rank < min(k, c))) for k in ks}


def label_ranks(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Each sample's rank of its true label (0 = top-1), ties broken as :func:`topk_correct` does."""
    scores, labels = _check(scores, labels)
    if scores.shape[0] == 0:
        return np.zeros(0, dtype=np.int64)
    order = np.argsort(-scores, axis=1, kind="stable")
    return np.argmax(order == labels[:, None], axis=1).astype(np.int64)


@METRICS.register("topk_accuracy")
def topk_accuracy(scores: np.ndarray, labels: np.ndarray, k: int = 1) -> float:
    """Fraction of samples whose label is among the ``k`` highest scores (k > C counts all)."""
    scores, labels = _check(scores, labels)
    if len(labels) == 0:
        raise ValueError("accuracy of an empty set is undefined")
    return topk_correct(scores, labels, (k,))[k] / len(labels)


@METRICS.register("top1")
def top1_accuracy(scores: np.ndarray, labels: np.ndarray) -> float:
    return topk_accuracy(scores, labels, 1)


@METRICS.register("top5")
def top5_accuracy(scores: np.ndarray, labels: np.ndarray) -> float:
    return topk_accuracy(scores, labels, 5)


@OUTCOMES.register("classification")
@dataclass
class ClassificationOutcomes(Outcomes):
    """Per image: the true label, the predicted label (top-1) and the rank of the true label.

    ``top1`` and ``top5`` are the fractions of images whose true label ranks below 1 and below
    ``min(5, classes)``: exactly :func:`topk_correct`'s counts.
    """

    ids: np.ndarray          # (n,) image ids
    labels: np.ndarray       # (n,) true class
    predicted: np.ndarray    # (n,) top-1 class
    rank: np.ndarray         # (n,) rank of the true class among the scores (0 = top-1)
    num_classes: int

    kind = "classification"

    @classmethod
    def from_scores(cls, ids: Sequence[Any], scores: np.ndarray, labels: np.ndarray) -> "ClassificationOutcomes":
        scores, labels = _check(scores, labels)
        if len(ids) != len(labels):
            raise ValueError(f"{len(ids)} ids for {len(labels)} samples")
        predicted = (np.argsort(-scores, axis=1, kind="stable")[:, 0] if len(labels)
                     else np.zeros(0, dtype=np.int64))
        return cls(as_str_ids(ids), labels, predicted.astype(np.int64), label_ranks(scores, labels),
                   int(scores.shape[1]))

    metric_names = ("top1", "top5")

    def hits(self) -> dict[str, np.ndarray]:
        """Per image, 1.0 where the metric counts it as correct."""
        return {"top1": (self.rank < 1).astype(np.float64),
                "top5": (self.rank < min(5, self.num_classes)).astype(np.float64)}

    def metrics(self) -> dict[str, float]:
        if not len(self):
            raise ValueError("accuracy of an empty set is undefined")
        return {k: float(v.sum() / len(v)) for k, v in self.hits().items()}

    def weighted(self, weights: np.ndarray) -> dict[str, np.ndarray]:
        w = np.atleast_2d(np.asarray(weights, dtype=np.float64))
        total = w.sum(axis=1)
        return {k: (w @ v) / total for k, v in self.hits().items()}

    def take(self, index: np.ndarray) -> "ClassificationOutcomes":
        return ClassificationOutcomes(self.ids[index], self.labels[index], self.predicted[index], self.rank[index],
                                      self.num_classes)

    @classmethod
    def concat(cls, parts: Sequence["ClassificationOutcomes"]) -> "ClassificationOutcomes":
        if not parts:
            raise ValueError("nothing to concatenate")
        return cls(np.concatenate([p.ids for p in parts]), np.concatenate([p.labels for p in parts]),
                   np.concatenate([p.predicted for p in parts]), np.concatenate([p.rank for p in parts]),
                   parts[0].num_classes)

    def to_table(self) -> Any:
        import pyarrow as pa

        table = pa.table({"image": pa.array(self.ids.tolist(), pa.string()),
                          "label": pa.array(self.labels, pa.int64()),
                          "predicted": pa.array(self.predicted, pa.int64()),
                          "top1": pa.array(self.rank < 1, pa.bool_()),
                          "top5": pa.array(self.rank < min(5, self.num_classes), pa.bool_()),
                          "label_rank": pa.array(self.rank, pa.int64())})
        return table.replace_schema_metadata({b"num_classes": str(self.num_classes).encode()})

    @classmethod
    def from_table(cls, table: Any) -> "ClassificationOutcomes":
        cols = table.to_pydict()
        return cls(as_str_ids(cols["image"]), np.asarray(cols["label"], np.int64),
                   np.asarray(cols["predicted"], np.int64), np.asarray(cols["label_rank"], np.int64),
                   int(table.schema.metadata[b"num_classes"]))
