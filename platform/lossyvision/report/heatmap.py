"""The study's relative-performance heatmap: train DCR x test DCR, measured cells as circles over a
faded 2-D linear interpolation (``scipy.interpolate.griddata``, method 'linear') of the same cells.

Noise must not look like structure: the colour scale is diverging and symmetric around 100 %, at
least ±``MIN_SPAN`` points wide (a 1-point wobble stays pale), every circle is labelled with its
value and 95 % interval, and circles whose interval contains 100 % (a drop not distinguishable from
zero) are drawn pale with a dashed edge. Everything is in percent; a negative DCR gets a line saying why.
"""

from __future__ import annotations

import io

import numpy as np
import pandas as pd

from lossyvision.codecs import CODECS, DEFAULT_CODEC


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


def _axis(cells: pd.DataFrame, which: str, axis: str = "dcr") -> tuple[np.ndarray, str, bool]:
    """Positions on one axis: mean DCR per cell, or mean achieved quality (``axis="quality"``, when
    measured), or the level when neither is known."""
    if axis == "quality" and f"{which}_quality" in cells.columns:
        q = cells[f"{which}_quality"].to_numpy(dtype=float)
        if np.all(np.isfinite(q)):
            metric = next((str(m) for m in cells.get("quality_metric", []) if m), "quality")
            return q, f"{which}: mean achieved {metric}", True
    dcr = cells[f"{which}_dcr"].to_numpy(dtype=float)
    if np.all(np.isfinite(dcr)):
        return dcr, f"{which} DCR (1 − compressed / original bytes)", True
    return cells[f"{which}_level"].to_numpy(dtype=float), f"{which} level (DCR unknown)", False


def _level_ticks(ax_secondary, positions: np.ndarray, levels: np.ndarray, axis: str) -> None:
    """Mark each level's distance at its DCR (one tick per level, on the opposite side)."""
    table = pd.DataFrame({"pos": positions, "level": levels}).groupby("level")["pos"].mean().sort_index()
    labels = [f"{lv:g}" for lv in table.index]
    if axis == "x":
        ax_secondary.set_xticks(table.to_numpy(), labels, fontsize=10)
    else:
        ax_secondary.set_yticks(table.to_numpy(), labels, fontsize=10)


MIN_SPAN = 10.0  # percentage points either side of 100 that the colour scale always covers


def colour_range(values: np.ndarray, min_span: float = MIN_SPAN) -> tuple[float, float]:
    """Symmetric limits around 100 that cover every value and at least ``±min_span``."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    span = max(min_span, float(np.ceil(np.max(np.abs(v - 100.0))))) if v.size else min_span
    return 100.0 - span, 100.0 + span


def indistinguishable(cells: pd.DataFrame) -> np.ndarray:
    """True where a cell's interval contains 100 % (no drop or gain can be told); False without an interval."""
    lo = cells["rel_low"].to_numpy(dtype=float)
    hi = cells["rel_high"].to_numpy(dtype=float)
    return np.isfinite(lo) & np.isfinite(hi) & (lo <= 100.0) & (hi >= 100.0)


def negative_dcr_note(cells: pd.DataFrame, noun: str = "level") -> str:
    """A line explaining the negative DCRs of ``cells`` (train or test), or "" when there are none."""
    parts = []
    for which in ("train", "test"):
        if f"{which}_dcr" not in cells.columns:
            continue
        neg = cells[cells[f"{which}_dcr"].astype(float) < 0]
        if len(neg):
            levels = ", ".join(f"{lv:g}" for lv in sorted(set(neg[f"{which}_level"].astype(float))))
            parts.append(f"{which} {noun} {levels}")
    if not parts:
        return ""
    return (f"DCR < 0 at {' and '.join(parts)}: the compressed files are larger than the originals "
            "(re-encoding small or already compressed images, such as JPEGs, can grow them)")


def _as_percent(value: float) -> str:
    """A metric that is a fraction (accuracy, IoU, mAP) in percent; anything else as it is."""
    return f"{100 * value:.1f} %" if 0.0 <= value <= 1.0 else f"{value:.4g}"


def plot_relative_heatmap(rel: pd.DataFrame, *, model: str, metric: str, budget: int = -1, codec: str | None = None,
                          axis: str = "dcr", resolution: int = 200) -> bytes:
    """One (model, metric[, budget][, codec]) heatmap as PNG bytes; ``rel`` comes from ``relative_cells``.

    A codec's grid: models trained on it, tested on it (cross-codec cells are in the rate figures).
    Measured cells are large circles labelled with their value; the background between them is a
    faded interpolation (never measured), and the legend sits below the axes, off the data.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import Normalize
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    cells = rel[(rel["model"] == model) & (rel["metric"] == metric) & (rel["budget"] == budget)]
    if "codec" in cells.columns:
        codec = codec or str(cells["codec"].iloc[0]) if len(cells) else codec
        cells = cells[(cells["codec"] == codec) & (cells["test_codec"] == codec)]
    if cells.empty:
        raise ValueError(f"no cells for model {model!r}, metric {metric!r}, budget {budget}")
    noun = CODECS.get(codec).level_noun if codec in CODECS else "level"
    x, xlabel, _ = _axis(cells, "train", axis)
    y, ylabel, _ = _axis(cells, "test", axis)
    v = cells["rel"].to_numpy(dtype=float)
    lo, hi = colour_range(np.concatenate([v, cells["rel_low"].to_numpy(float), cells["rel_high"].to_numpy(float)]))
    norm = Normalize(vmin=lo, vmax=hi)
    cmap = "RdBu"
    same = indistinguishable(cells)
    lows, highs = cells["rel_low"].to_numpy(float), cells["rel_high"].to_numpy(float)
    unknown = ~(np.isfinite(lows) & np.isfinite(highs))  # e.g. trained once, the seeds' spread not measured
    solid = ~same & ~unknown

    fig, ax = plt.subplots(figsize=(9.0, 7.6), constrained_layout=True)
    pad_x = 0.12 * (np.ptp(x) or 1.0)
    pad_y = 0.10 * (np.ptp(y) or 1.0)
    gx, gy = np.meshgrid(np.linspace(x.min(), x.max(), resolution), np.linspace(y.min(), y.max(), resolution))
    background = interpolate(x, y, v, gx, gy)
    faded = np.isfinite(background).any()
    if faded:  # faded: it is a guess between measured cells, never a measurement
        ax.pcolormesh(gx, gy, np.ma.masked_invalid(background), cmap=cmap, norm=norm, shading="auto", alpha=0.3,
                      linewidth=0, rasterized=True)
    ax.scatter(x[solid], y[solid], c=v[solid], cmap=cmap, norm=norm, s=340, edgecolors="black",
               linewidths=1.2, zorder=3)
    ax.scatter(x[unknown], y[unknown], c=v[unknown], cmap=cmap, norm=norm, s=340, edgecolors="black",
               linewidths=1.2, linestyles=":", alpha=0.55, zorder=3)
    ax.scatter(x[same], y[same], c=v[same], cmap=cmap, norm=norm, s=340, edgecolors="black", linewidths=1.2,
               linestyles="--", alpha=0.55, zorder=3)
    if len(cells) <= 49:
        middle = (y.min() + y.max()) / 2
        for xx, yy, vv, l, h in zip(x, y, v, lows, highs):
            label = f"{vv:.1f}" + (f"\n[{l:.1f}, {h:.1f}]" if np.isfinite(l) and np.isfinite(h) else "\n[no interval]")
            above = yy <= middle or np.ptp(y) == 0  # top-row labels go below: off the level ticks
            ax.annotate(label, (xx, yy), textcoords="offset points", xytext=(0, 13 if above else -13),
                        ha="center", va="bottom" if above else "top", fontsize=9, zorder=4, linespacing=1.0,
                        bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.8})
    ax.set_xlim(x.min() - pad_x, x.max() + pad_x)
    ax.set_ylim(y.min() - pad_y, y.max() + pad_y)
    note = negative_dcr_note(cells, noun) if axis == "dcr" else ""
    ax.set_xlabel(xlabel, fontsize=11)
    ax.set_ylabel(ylabel, fontsize=11)
    ax.tick_params(labelsize=10)
    top = ax.secondary_xaxis("top")
    _level_ticks(top, x, cells["train_level"].to_numpy(float), "x")
    top.tick_params(labelsize=10, labelrotation=0)
    top.set_xlabel(f"train {noun}", fontsize=10)
    right = ax.secondary_yaxis("right")
    _level_ticks(right, y, cells["test_level"].to_numpy(float), "y")
    right.tick_params(labelsize=10)
    right.set_ylabel(f"test {noun}", fontsize=10)
    from matplotlib.cm import ScalarMappable

    cbar = fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=ax, pad=0.02, shrink=0.9)
    cbar.set_label(f"{metric}, % of the baseline (scale symmetric around 100 %)", fontsize=10)
    grey = "#bbbbbb"
    handles = [Line2D([], [], marker="o", ls="", ms=13, mfc=grey, mec="black", mew=1.2,
                      label="measured cell: % of baseline [95 % interval]"),
               Line2D([], [], marker="o", ls="", ms=13, mfc=grey, mec="black", mew=1.2, alpha=0.55,
                      label="measured, interval contains 100 %: not distinguishable from the baseline")]
    if unknown.any():
        handles.append(Line2D([], [], marker="o", ls="", ms=13, mfc=grey, mec="black", mew=1.2, alpha=0.55,
                              label="measured, no interval: the spread between training runs is not measured "
                                    "(one run per level; seed_spread measures it)"))
    if faded:
        handles.append(Patch(facecolor=grey, alpha=0.3, label="faded background: interpolated between "
                                                               "measured cells, not measured"))
    fig.legend(handles=handles, loc="outside lower center", ncols=1, fontsize=9, frameon=False)
    if note:  # under the DCR axis's label, in the layout (so the legend moves down for it)
        import textwrap

        fig.canvas.draw()  # places the axis label the note hangs from
        ax.annotate(textwrap.fill(note, 95), xy=(0.5, 0.0), xycoords=ax.xaxis.label, xytext=(0, -4),
                    textcoords="offset points", ha="center", va="top", fontsize=9, style="italic")
    first = cells.iloc[0]
    base_train, base_test, base = first["baseline_train_level"], first["baseline_test_level"], first["baseline"]
    repeats = int(cells["n"].max())
    budget_txt = f", budget {budget:,} B" if budget >= 0 else ""
    base_row = cells[(cells["train_level"] == base_train) & (cells["test_level"] == base_test)]
    base_ci = ""
    if len(base_row) and np.isfinite(base_row["ci_low"].iloc[0]):
        base_ci = f" [{_as_percent(base_row['ci_low'].iloc[0])}, {_as_percent(base_row['ci_high'].iloc[0])}]"
    codec_txt = f" on {codec}" if codec else ""
    ax.set_title(f"{model} — {metric}{codec_txt}{budget_txt}: each cell in % of the baseline\n"
                 f"baseline (train {noun} {base_train:g}, test {noun} {base_test:g}): {metric} "
                 f"{_as_percent(float(base))}{base_ci}" + (f", mean of {repeats} repeats" if repeats > 1 else ""),
                 fontsize=11)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def heatmap_groups(rel: pd.DataFrame) -> list[tuple[str, str, int, str]]:
    """(model, metric, budget, codec) groups that have cells, in a stable order."""
    if rel.empty:
        return []
    cols = ["model", "metric", "budget", "codec"]
    keys = rel.assign(codec=rel["codec"] if "codec" in rel.columns else DEFAULT_CODEC)[cols].drop_duplicates()
    return [(str(m), str(k), int(b), str(c)) for m, k, b, c in keys.sort_values(cols).itertuples(index=False)]

