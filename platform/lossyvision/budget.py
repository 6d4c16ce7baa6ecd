"""Storage-budget subsets: which training images a trial may use when it has B bytes.

The rule (:func:`select_subset`), stated once because every budget trial depends on it:

1. **A fixed order per seed.** Each candidate gets a rank key ``blake2b(seed, relpath)``. Within a
   class, images are ordered by that key: a seeded permutation that depends only on the seed and
   the image's name, never on its size or on the other rows. So the same image set gives the same
   order at every compression level, and dropping one image (failed at one level) does not
   reshuffle the others.
2. **Round-robin over classes.** The global order takes the 1st image of every class, then the
   2nd of every class, and so on (within a round, classes are ordered by the key of that round's
   image, so no class is favoured when the budget ends mid-round). A class that runs out of images
   simply drops out of later rounds.
3. **The subset is the longest prefix of that order whose compressed bytes fit the budget**
   (``sum <= budget``, never over). It stops at the first image that does not fit; it does not
   skip it to try later, smaller images.

Why a prefix and not "skip and keep trying smaller images": skipping breaks nesting (with a larger
budget an early large image fits and crowds out a small one the smaller budget took) and breaks
class balance (classes with small files would get more images), and hunting for small files
biases the subset towards simple, easily compressed images. The prefix gives, for one seed:

* **nested subsets**: the subset at a smaller budget is a prefix of the one at a larger budget,
  and at another level with the same images and no larger files it is at least as long;
* **class balance**: class counts differ by at most 1, except that a class with fewer images than
  the round reached contributes all of them;
* **near-maximal n**: the unused budget is less than the size of the next image in the order.

``exhausted`` is true when every candidate was taken: the level's images could not fill the
budget, so the trial used them all.

Seeds: the sweep engine passes ``seed = sweep.seed`` (the same subset in every repeat), or
``seed = sweep.seed + repeat`` when ``resample: true`` (a fresh subset per repeat).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import pandas as pd

OK = "ok"


@dataclass(frozen=True)
class Subset:
    """The images one budget trial trains on, in selection order."""

    relpaths: tuple[str, ...]
    n_images: int
    bytes_used: int
    budget: int
    exhausted: bool
    n_candidates: int = 0


def rank_keys(keys: pd.Series | list[str], seed: int) -> np.ndarray:
    """A seeded pseudo-random uint64 per key, stable across processes and platforms."""
    prefix = f"{int(seed)}\0".encode()
    return np.fromiter(
        (int.from_bytes(hashlib.blake2b(prefix + str(k).encode(), digest_size=8).digest(), "big")
         for k in keys),
        dtype=np.uint64, count=len(keys))


def selection_order(candidates: pd.DataFrame, seed: int = 0, *, label_col: str | None = "label",
                    key_col: str = "relpath") -> np.ndarray:
    """Row positions of ``candidates`` in the balanced round-robin order described above."""
    n = len(candidates)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    keys = rank_keys(candidates[key_col].tolist(), seed)
    if label_col is None:
        groups = np.zeros(n, dtype=np.int64)
    else:
        labels = candidates[label_col]
        # Missing labels (detection, segmentation) form one group of their own.
        groups = pd.factorize(labels.astype("object").where(labels.notna(), "\0unlabelled"),
                              sort=True)[0].astype(np.int64)
    frame = pd.DataFrame({"group": groups, "key": keys, "pos": np.arange(n)})
    frame = frame.sort_values(["group", "key", "pos"], kind="stable")
    frame["round"] = frame.groupby("group").cumcount()
    frame = frame.sort_values(["round", "key", "group", "pos"], kind="stable")
    return frame["pos"].to_numpy(dtype=np.int64)


def _check_candidates(candidates: pd.DataFrame, budget_bytes: int, label_col: str | None,
                      bytes_col: str, key_col: str) -> None:
    if not isinstance(candidates, pd.DataFrame):
        raise TypeError(f"candidates must be a pandas DataFrame, got {type(candidates).__name__}")
    needed = [c for c in (key_col, bytes_col, label_col) if c is not None]
    missing = [c for c in needed if c not in candidates.columns]
    if missing:
        raise ValueError(f"budget candidates lack column(s) {missing}; have {list(candidates.columns)}")
    if isinstance(budget_bytes, bool) or int(budget_bytes) != budget_bytes or budget_bytes < 0:
        raise ValueError(f"a budget must be a whole number of bytes >= 0, got {budget_bytes!r}")
    if "level" in candidates.columns and candidates["level"].nunique(dropna=False) > 1:
        raise ValueError("budget candidates mix several levels "
                         f"({sorted(candidates['level'].unique())}); pass the rows of one level "
                         "(see budget_candidates)")
    if "status" in candidates.columns and (candidates["status"] != OK).any():
        raise ValueError("budget candidates include rows whose status is not 'ok'; "
                         "failed images cannot be trained on (see budget_candidates)")
    sizes = pd.to_numeric(candidates[bytes_col], errors="coerce")
    if sizes.isna().any() or (sizes < 0).any():
        bad = candidates.loc[sizes.isna() | (sizes < 0), key_col].head(3).tolist()
        raise ValueError(f"column {bytes_col!r} must hold sizes >= 0; bad rows e.g. {bad}")
    dupes = candidates[key_col][candidates[key_col].duplicated()]
    if len(dupes):
        raise ValueError(f"budget candidates repeat {key_col!r} values, e.g. {dupes.head(3).tolist()}")


def select_subset(candidates: pd.DataFrame, budget_bytes: int, seed: int = 0, *,
                  label_col: str | None = "label", bytes_col: str = "compressed_bytes",
                  key_col: str = "relpath") -> Subset:
    """The longest class-balanced prefix of the seeded order whose bytes fit ``budget_bytes``.

    ``candidates`` are the ok images of one split at one level (one row each). ``label_col=None``
    treats all images as one class. See the module docstring for the exact rule.
    """
    _check_candidates(candidates, budget_bytes, label_col, bytes_col, key_col)
    budget = int(budget_bytes)
    order = selection_order(candidates, seed, label_col=label_col, key_col=key_col)
    sizes = candidates[bytes_col].to_numpy(dtype=np.int64)[order]
    cumulative = np.cumsum(sizes)
    n = int(np.searchsorted(cumulative, budget, side="right"))
    chosen = order[:n]
    return Subset(
        relpaths=tuple(str(k) for k in candidates[key_col].to_numpy()[chosen]),
        n_images=n,
        bytes_used=int(cumulative[n - 1]) if n else 0,
        budget=budget,
        exhausted=n == len(candidates),
        n_candidates=len(candidates),
    )


def budget_candidates(manifest: pd.DataFrame, level: float, split: str = "train",
                      codec: str | None = None) -> pd.DataFrame:
    """The ok rows of one split at one level of a store manifest: what :func:`select_subset` takes."""
    rows = manifest[(manifest["split"] == split) & np.isclose(manifest["level"].astype(float), float(level))]
    if codec is not None:
        rows = rows[rows["codec"] == codec]
    if "status" in rows.columns:
        rows = rows[rows["status"] == OK]
    return rows.reset_index(drop=True)


def bytes_per_image(manifest: pd.DataFrame, split: str = "train", codec: str | None = None) -> pd.Series:
    """Mean compressed bytes per ok image of ``split``, indexed by level (the advisor's level table)."""
    rows = manifest[manifest["split"] == split]
    if codec is not None:
        rows = rows[rows["codec"] == codec]
    if "status" in rows.columns:
        rows = rows[rows["status"] == OK]
    if rows.empty:
        raise ValueError(f"the manifest has no ok images in split {split!r}"
                         + (f" for codec {codec!r}" if codec else ""))
    table = rows.groupby(rows["level"].astype(float))["compressed_bytes"].mean()
    table.index.name = "level"
    return table.rename("bytes_per_image").sort_index()


def images_available(manifest: pd.DataFrame, split: str = "train") -> int:
    """Distinct images of ``split`` compressed ok at some level (what a budget subset can draw from)."""
    rows = manifest[manifest["split"] == split]
    if "status" in rows.columns:
        rows = rows[rows["status"] == OK]
    return int(rows["relpath"].nunique())
