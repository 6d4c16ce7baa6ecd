"""The DCR curve: mean DCR against level, against the original files (left axis) and against raw
pixels (right axis), with the quartiles across images and the PNG lossless baseline."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd

OK = "ok"


def ok_rows(manifest: pd.DataFrame) -> pd.DataFrame:
    """Rows of images that compressed (``status == 'ok'`` when the column exists)."""
    if "status" in manifest.columns:
        manifest = manifest[manifest["status"] == OK]
    return manifest


def dcr_by_level(manifest: pd.DataFrame) -> pd.DataFrame:
    """Per level: images, mean and quartiles of ``dcr_vs_source`` and ``dcr_vs_raw``, and the PNG DCR.

    ``png_dcr_vs_raw`` / ``png_dcr_vs_source`` are the means over images of ``1 - png / raw`` and
    ``1 - png / source`` over the ``png_images`` images that have a PNG baseline (the compress
    job's fixed sample per split; NaN when none has).
    """
    rows = ok_rows(manifest)
    missing = sorted({"level", "dcr_vs_source", "dcr_vs_raw"} - set(rows.columns))
    if missing:
        raise ValueError(f"manifest lacks column(s) {missing}")
    out = []
    for level, g in rows.groupby("level", sort=True):
        rec = {"level": float(level), "images": len(g)}
        for col in ("dcr_vs_source", "dcr_vs_raw"):
            v = g[col].to_numpy(dtype=float)
            v = v[np.isfinite(v)]
            rec[f"{col}_mean"] = float(v.mean()) if len(v) else np.nan
            rec[f"{col}_q25"], rec[f"{col}_q75"] = (np.percentile(v, [25, 75]) if len(v) else (np.nan, np.nan))
        out.append(rec)
    table = pd.DataFrame(out)
    png = png_baseline(rows)
    table["png_dcr_vs_raw"], table["png_dcr_vs_source"] = png
    table["png_images"] = len(_png_rows(rows))
    return table


def _png_rows(manifest: pd.DataFrame) -> pd.DataFrame:
    """One row per image with a PNG baseline (the compress job computes it on a sample)."""
    if "png_bytes" not in manifest.columns:
        return manifest.iloc[:0]
    rows = manifest.dropna(subset=["png_bytes"])
    return rows.drop_duplicates("relpath") if "relpath" in rows.columns else rows


def png_baseline(manifest: pd.DataFrame) -> tuple[float, float]:
    """Mean DCR of lossless PNG against raw pixels and against the originals, over the images that
    have one (the sampled rows; NaN if none)."""
    per_image = _png_rows(manifest)
    if per_image.empty:
        return np.nan, np.nan
    png = per_image["png_bytes"].to_numpy(float)
    vs_raw = float(np.mean(1 - png / per_image["raw_bytes"].to_numpy(float))) if "raw_bytes" in per_image else np.nan
    vs_src = (float(np.mean(1 - png / per_image["source_bytes"].to_numpy(float)))
              if "source_bytes" in per_image else np.nan)
    return vs_raw, vs_src


def plot_dcr_curve(table: pd.DataFrame, *, codec: str = "", title: str | None = None) -> bytes:
    """The curve as PNG bytes, from :func:`dcr_by_level`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lv = table["level"].to_numpy(float)
    fig, left = plt.subplots(figsize=(7.8, 4.8), constrained_layout=True)
    right = left.twinx()
    handles = []
    for ax, col, colour, label in ((left, "dcr_vs_source", "tab:blue", "vs original files"),
                                   (right, "dcr_vs_raw", "tab:orange", "vs raw pixels")):
        (h,) = ax.plot(lv, table[f"{col}_mean"], "o-", color=colour, label=f"mean DCR {label}")
        ax.fill_between(lv, table[f"{col}_q25"], table[f"{col}_q75"], color=colour, alpha=0.2,
                        label=f"quartiles across images ({label})")
        handles.append(h)
        ax.set_ylabel(f"DCR {label}", color=colour)
        ax.tick_params(axis="y", colors=colour)
    png_raw = float(table["png_dcr_vs_raw"].iloc[0]) if len(table) else np.nan
    if np.isfinite(png_raw):
        sampled = f", {int(table['png_images'].iloc[0])} images" if "png_images" in table else ""
        handles.append(right.axhline(png_raw, color="tab:gray", linestyle="--",
                                     label=f"PNG lossless vs raw pixels ({png_raw:.2f}{sampled})"))
    left.set_xlabel(f"{codec} level (distance)" if codec else "level")
    left.grid(alpha=0.3)
    left.legend(handles=handles, loc="lower right", fontsize=8)
    n = int(table["images"].max()) if len(table) else 0
    left.set_title(title or f"Data compression rate (DCR = 1 − compressed / uncompressed) by level; {n} images, "
                   "shaded: quartiles", fontsize=9)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()
