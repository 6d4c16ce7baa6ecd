"""Decoded samples for training and evaluation: what the model sees is what was stored."""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
from torch.utils.data import Dataset

from lossyvision.imageio import load_rgb
from lossyvision.store import read_bytes
from lossyvision.streaming import DATA_ORDERS, ShardOrderSampler, shard_groups


def decode_any(data: bytes) -> np.ndarray:
    """Decode an original file (JPEG, PNG, ...) to uint8 RGB with the project's normalisation."""
    return load_rgb(data).rgb


class ImageSamples(Dataset):
    """``(rgb uint8 HxWx3, target)`` pairs read from files or URIs and decoded by ``decode``.

    ``decode`` is a codec's ``decode`` for compressed stores (``create_codec('jpegxl').decode``)
    or :func:`decode_any` for original files. Targets are passed through untouched.

    ``order`` is the training order :func:`lossyvision.tasks.training.make_loader` uses when it
    shuffles: ``random`` (a seeded permutation), or ``shards`` (:mod:`lossyvision.streaming`: shard
    by shard through a buffer of ``shuffle_buffer`` images; every URI a byte range of a shard).
    ``read`` fetches one URI's bytes (a :class:`lossyvision.streaming.BlockReader` for shard order
    from an object store).
    """

    def __init__(self, uris: Sequence[str], targets: Sequence[Any],
                 decode: Callable[[bytes], np.ndarray] = decode_any, *, order: str = "random",
                 shuffle_buffer: int = 1000, read: Callable[[str], bytes] = read_bytes) -> None:
        if len(uris) != len(targets):
            raise ValueError(f"{len(uris)} images but {len(targets)} targets")
        if order not in DATA_ORDERS:
            raise ValueError(f"unknown data order {order!r}; known: {', '.join(DATA_ORDERS)}")
        self.uris = list(uris)
        self.targets = list(targets)
        self.decode = decode
        self.order = order
        self.shuffle_buffer = int(shuffle_buffer)
        self.read = read
        self._groups = shard_groups(self.uris) if order == "shards" else None

    def __len__(self) -> int:
        return len(self.uris)

    def __getitem__(self, i: int) -> tuple[np.ndarray, Any]:
        return self.decode(self.read(self.uris[i])), self.targets[i]

    def train_sampler(self, seed: int) -> ShardOrderSampler | None:
        """The shuffled order of one epoch for ``order: shards``; None for ``random`` (the loader's own)."""
        if self._groups is None:
            return None
        if hasattr(self.read, "new_pass"):
            self.read.new_pass()  # a new epoch starts every shard again
        return ShardOrderSampler(self._groups, self.shuffle_buffer, seed)
