"""Every random choice of a trial comes from one seed: the sweep's ``seed`` and the repeat index.

Why it matters: without it the same sweep run twice moved single cells by several points and the
report's advice flipped. What is seeded, and where:

- model initialisation: :func:`seed_everything` right before ``task.build_model()``;
- data order: each epoch's DataLoader gets its own ``torch.Generator`` seeded from the trial seed
  and the epoch (``tasks.training.make_loader``), so a resumed epoch sees the same order (shard
  order, ``data_order: shards``, draws from the same per-epoch seed: :mod:`lossyvision.streaming`);
- augmentation: ``tasks.training.train_epochs`` reseeds torch's global RNG per epoch; DataLoader
  workers seed numpy and ``random`` from torch's per-worker seed (:func:`seed_worker`);
- budget subsets and evaluation samples: seeded from the sweep's seed (``budget.select_subset``,
  ``intervals``).

The trial seed depends on the repeat but not on the train level: repeat ``r`` of every train level
starts from the same initial weights and sees the same data order, so differences between train
levels come from the data, not from the draw (common random numbers; paired comparisons are
tighter). ``deterministic: true`` also asks PyTorch for deterministic kernels, which matters on
CUDA (cuDNN, cuBLAS); on the CPU the seeded run is already repeatable.
"""

from __future__ import annotations

import hashlib
import os
import random

#: cuBLAS needs a fixed workspace to be deterministic (PyTorch's reproducibility notes).
CUBLAS_WORKSPACE = ":4096:8"


def derive_seed(*parts: object) -> int:
    """A 31-bit seed from any parts, stable across processes, platforms and Python's hash salt."""
    text = "\0".join(str(p) for p in parts).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "big") & 0x7FFF_FFFF


def trial_seed(sweep_seed: int, repeat: int) -> int:
    """The seed of every trial of repeat ``repeat`` (the same for every model and train level)."""
    return derive_seed("trial", int(sweep_seed), int(repeat))


def bootstrap_seed(sweep_seed: int, model: str) -> int:
    """The seed of every bootstrap interval about ``model``'s cells (one per model, so the report, the
    sweep's results rows and the search resample the same test images and agree on the same runs)."""
    return derive_seed("bootstrap", int(sweep_seed), model)


def worker_seed(seed: int, rank: int, world: int) -> int:
    """The augmentation seed of data-parallel worker ``rank`` of ``world`` (``resources.trial.workers``):
    the trial seed itself for a single worker (its trials unchanged), else one derived per rank, so that
    workers draw different crops and flips. The data order stays the trial seed's on every rank."""
    return int(seed) if int(world) <= 1 else derive_seed("worker", int(seed), int(rank))


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, numpy's global RNG and torch (CPU and every CUDA device)."""
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: numpy and ``random`` follow torch's per-worker seed.

    torch seeds each worker from the loader's generator; numpy and ``random`` would otherwise
    start from the parent's state in every worker (or an arbitrary one with spawn).
    """
    import numpy as np
    import torch

    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def set_deterministic(enabled: bool) -> None:
    """Ask PyTorch for deterministic kernels (cuDNN, cuBLAS, scatter/index ops) or release them.

    Ops without a deterministic implementation then raise instead of silently varying; the cost
    on CUDA is measured in docs/benchmarks.md.
    """
    import torch

    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
    torch.use_deterministic_algorithms(bool(enabled))
    torch.backends.cudnn.deterministic = bool(enabled)
    torch.backends.cudnn.benchmark = False
