"""Visual samples: the same crop of a few images at several levels, side by side."""

from __future__ import annotations

import io
from typing import Callable

import numpy as np
import pandas as pd

from lossyvision import store
from lossyvision.manifest import output_uri
from lossyvision.report.curves import ok_rows


def pick_levels(levels: list[float], max_levels: int = 6) -> list[float]:
    """At most ``max_levels`` levels spread over the range, always keeping the first and the last."""
    levels = sorted(set(float(x) for x in levels))
    if len(levels) <= max_levels:
        return levels
    idx = np.unique(np.round(np.linspace(0, len(levels) - 1, max_levels)).astype(int))
    return [levels[i] for i in idx]


def pick_images(manifest: pd.DataFrame, levels: list[float], n_images: int = 2, split: str | None = None) -> list[str]:
    """The first ``n_images`` relpaths (sorted) present and ok at every level, preferring ``split``."""
    rows = ok_rows(manifest)
    if split is not None and "split" in rows.columns and (rows["split"] == split).any():
        rows = rows[rows["split"] == split]
    counts = rows[rows["level"].isin(levels)].groupby("relpath")["level"].nunique()
    return sorted(counts[counts == len(levels)].index)[:n_images]


def centre_crop(rgb: np.ndarray, size: int) -> np.ndarray:
    h, w = rgb.shape[:2]
    ch, cw = min(h, size), min(w, size)
    top, left = (h - ch) // 2, (w - cw) // 2
    return rgb[top:top + ch, left:left + cw]


def plot_samples(manifest: pd.DataFrame, store_uri: str, decode: Callable[[bytes], np.ndarray], *,
                 levels: list[float] | None = None, n_images: int = 2, crop: int = 160,
                 split: str | None = None, codec: str = "") -> bytes | None:
    """Rows = images, columns = levels: a centre crop of each decoded file. None if nothing to show."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = ok_rows(manifest)
    if codec and "codec" in rows.columns:  # a store may hold several codecs: one codec's files only
        rows = rows[rows["codec"] == codec]
    if rows.empty:
        return None
    levels = pick_levels(levels if levels is not None else list(rows["level"].unique()))
    names = pick_images(rows, levels, n_images, split)
    if not names:
        return None
    fig, axes = plt.subplots(len(names), len(levels), figsize=(2.3 * len(levels), 2.5 * len(names)),
                             squeeze=False, constrained_layout=True)
    for r, name in enumerate(names):
        for c, level in enumerate(levels):
            row = rows[(rows["relpath"] == name) & (rows["level"] == level)].iloc[0]
            rgb = decode(store.read_bytes(output_uri(store_uri, row["output_path"])))  # never leaves the store
            ax = axes[r, c]
            ax.imshow(centre_crop(rgb, crop), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            dcr = row.get("dcr_vs_raw", np.nan)
            ax.set_title(f"level {level:g}" + (f"\nDCR vs raw {dcr:.3f}" if np.isfinite(dcr) else ""), fontsize=8)
            if c == 0:
                ax.set_ylabel(name if len(name) < 28 else "…" + name[-27:], fontsize=7)
    fig.suptitle(f"{codec} levels side by side (centre crops of {crop} px)", fontsize=9)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()
