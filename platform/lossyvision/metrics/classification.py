"""Top-k accuracy over class scores.

``scores`` is (N, C) (logits or probabilities: only the order matters), ``labels`` is (N,) class
indices. With ``k >= C`` every sample counts as correct (the true class is always among the top C),
which is what ``top5`` means on a dataset of fewer than five classes.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from lossyvision.metrics.base import METRICS


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
    n, c = scores.shape
    if n == 0:
        return {k: 0 for k in ks}
    order = np.argsort(-scores, axis=1, kind="stable")
    rank = np.argmax(order == labels[:, None], axis=1)  # 0 = top-1
    return {k: int(np.count_nonzero(rank < min(k, c))) for k in ks}


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
