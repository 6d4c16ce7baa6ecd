"""The study's relative-performance heatmap: train DCR x test DCR, observed cells as circles over a
2-D linear interpolation (``scipy.interpolate.griddata``, method 'linear') of the same cells."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd


def interpolate(x: np.ndarray, y: np.ndarray, values: np.ndarray, xi: np.ndarray, yi: np.ndarray) -> np.ndarray:
    """Linear interpolation of scattered ``values`` at ``(xi, yi)`` (NaN outside the convex hull).

    Returns an all-NaN array when the points do not span an area (one train or test level, or
    collinear DCRs): then there is nothing to interpolate and only the circles are drawn.
    """
    from scipy.interpolate import griddata
    from scipy.spatial import QhullError

    points = np.column_stack([np.asarray(x, float), np.asarray(y, float)])
    xi, yi = np.asarray(xi, float), np.asarray(yi, float)
    if len(np.unique(points[:, 0])) < 2 or len(np.unique(points[:, 1])) < 2:
        return np.full(np.broadcast(xi, yi).shape, np.nan)
    try:
        return griddata(points, np.asarray(values, float), (xi, yi), method="linear")
    except (QhullError, ValueError):
        return np.full(np.broadcast(xi, yi).shape, np.nan)


def _axis(cells: pd.DataFrame, which: str) -> tuple[np.ndarray, str, bool]:
    """Positions on one axis: mean DCR per cell, or the level when DCRs are unknown."""
    dcr = cells[f"{which}_dcr"].to_numpy(dtype=float)
    if np.all(np.isfinite(dcr)):
        return dcr, f"{which} DCR (1 − compressed / original bytes)", True
    return cells[f"{which}_level"].to_numpy(dtype=float), f"{which} level (DCR unknown)", False


def _level_ticks(ax_secondary, positions: np.ndarray, levels: np.ndarray, axis: str) -> None:
    """Mark each level's distance at its DCR (one tick per level, on the opposite side)."""
    table = pd.DataFrame({"pos": positions, "level": levels}).groupby("level")["pos"].mean().sort_index()
    labels = [f"{lv:g}" for lv in table.index]
    if axis == "x":
        ax_secondary.set_xticks(table.to_numpy(), labels, rotation=90, fontsize=7)
    else:
        ax_secondary.set_yticks(table.to_numpy(), labels, fontsize=7)


def plot_relative_heatmap(rel: pd.DataFrame, *, model: str, metric: str, budget: int = -1,
                          resolution: int = 200) -> bytes:
    """One (model, metric[, budget]) heatmap as PNG bytes; ``rel`` comes from ``relative_cells``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import Normalize

    cells = rel[(rel["model"] == model) & (rel["metric"] == metric) & (rel["budget"] == budget)]
    if cells.empty:
        raise ValueError(f"no cells for model {model!r}, metric {metric!r}, budget {budget}")
    x, xlabel, _ = _axis(cells, "train")
    y, ylabel, _ = _axis(cells, "test")
    v = cells["rel"].to_numpy(dtype=float)
    lo = float(np.floor(min(v.min(), 100.0)))
    hi = float(np.ceil(max(v.max(), 100.0)))
    if hi - lo < 1:
        lo, hi = lo - 0.5, hi + 0.5
    norm = Normalize(vmin=lo, vmax=hi)
    cmap = "viridis"

    fig, ax = plt.subplots(figsize=(7.8, 6.4), constrained_layout=True)
    pad_x = 0.04 * (np.ptp(x) or 1.0)
    pad_y = 0.04 * (np.ptp(y) or 1.0)
    gx, gy = np.meshgrid(np.linspace(x.min(), x.max(), resolution), np.linspace(y.min(), y.max(), resolution))
    background = interpolate(x, y, v, gx, gy)
    if np.isfinite(background).any():
        ax.pcolormesh(gx, gy, np.ma.masked_invalid(background), cmap=cmap, norm=norm, shading="auto", alpha=0.85)
    sc = ax.scatter(x, y, c=v, cmap=cmap, norm=norm, s=110, edgecolors="black", linewidths=0.8, zorder=3)
    if len(cells) <= 49:
        for xx, yy, vv in zip(x, y, v):
            ax.annotate(f"{vv:.0f}", (xx, yy), textcoords="offset points", xytext=(0, 8), ha="center",
                        fontsize=7, zorder=4)
    ax.set_xlim(x.min() - pad_x, x.max() + pad_x)
    ax.set_ylim(y.min() - pad_y, y.max() + pad_y)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    top = ax.secondary_xaxis("top")
    _level_ticks(top, x, cells["train_level"].to_numpy(float), "x")
    top.set_xlabel("train level (distance)", fontsize=8)
    right = ax.secondary_yaxis("right")
    _level_ticks(right, y, cells["test_level"].to_numpy(float), "y")
    right.set_ylabel("test level (distance)", fontsize=8)
    cbar = fig.colorbar(sc, ax=ax, pad=0.02)
    cbar.set_label(f"{metric} relative to baseline (%)")
    first = cells.iloc[0]
    base_train, base_test, base = first["baseline_train_level"], first["baseline_test_level"], first["baseline"]
    repeats = int(cells["n"].max())
    budget_txt = f", budget {budget:,} B" if budget >= 0 else ""
    ax.set_title(f"{model} — {metric}{budget_txt}: % of baseline (train level {base_train:g}, "
                 f"test level {base_test:g}) = {base:.4g}"
                 + (f"; mean of {repeats} repeats" if repeats > 1 else ""), fontsize=9)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def heatmap_groups(rel: pd.DataFrame) -> list[tuple[str, str, int]]:
    """(model, metric, budget) groups that have cells, in a stable order."""
    if rel.empty:
        return []
    keys = rel[["model", "metric", "budget"]].drop_duplicates().sort_values(["model", "metric", "budget"])
    return [(str(m), str(k), int(b)) for m, k, b in keys.itertuples(index=False)]

