"""Decoded samples for training and evaluation: what the model sees is what was stored."""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
from torch.utils.data import Dataset

from lossyvision.store import read_bytes


def decode_any(data: bytes) -> np.ndarray:
    """Decode an original file (JPEG, PNG, ...) to uint8 RGB with the project's normalisation."""
    from lossyvision.imageio import load_rgb

    return load_rgb(data).rgb


class ImageSamples(Dataset):
    """``(rgb uint8 HxWx3, target)`` pairs read from files or URIs and decoded by ``decode``.

    ``decode`` is a codec's ``decode`` for compressed stores (``create_codec('jpegxl').decode``)
    or :func:`decode_any` for original files. Targets are passed through untouched.
    """

    def __init__(self, uris: Sequence[str], targets: Sequence[Any],
                 decode: Callable[[bytes], np.ndarray] = decode_any) -> None:
        if len(uris) != len(targets):
            raise ValueError(f"{len(uris)} images but {len(targets)} targets")
        self.uris = list(uris)
        self.targets = list(targets)
        self.decode = decode

    def __len__(self) -> int:
        return len(self.uris)

    def __getitem__(self, i: int) -> tuple[np.ndarray, Any]:
        return self.decode(read_bytes(self.uris[i])), self.targets[i]
