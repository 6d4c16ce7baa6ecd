"""Which codec, at how many bytes: accuracy against bits per pixel, and the bytes saved at equal accuracy.

Two curves per codec, for each model and metric (from the relative cells of :mod:`.cells`):

- **matched**: models trained and tested at the same level of the codec (store everything at it);
- **originals**: the model trained on the originals (the sweep's lossless level, JPEG XL distance 0)
  tested at each level of every codec (serve compressed images to an existing model).

The rate is the mean bits per pixel of the test images at that level (the axis that compares codecs
whose levels mean different things); error bars are the cells' 95 % intervals. The table gives a
Bjøntegaard-style delta (:mod:`lossyvision.bdrate`) of each codec against the first one: the mean %
change in bits per pixel at equal accuracy over the accuracy range both reach, with its bootstrap
interval over the test images (repeat 0's predictions).
"""

from __future__ import annotations

import io
import math
from typing import Any, Callable

import numpy as np
import pandas as pd

from lossyvision.bdrate import CodecCurve, bd_rate_interval
from lossyvision.report.verdict import codec_named

CURVES = ("matched", "originals")


def rate_points(rel: pd.DataFrame, originals: tuple[str, float] | None) -> pd.DataFrame:
    """One row per (model, metric, curve, codec, level): bits per pixel, value, its interval, cell ids."""
    if rel.empty or "test_bpp" not in rel.columns:
        return pd.DataFrame()
    rel = rel[rel["budget"] < 0]
    matched = rel[(rel["codec"] == rel["test_codec"]) & (rel["train_level"] == rel["test_level"])]
    parts = [matched.assign(curve="matched", point_codec=matched["codec"], level=matched["train_level"])]
    if originals is not None:
        codec, level = originals
        orig = rel[(rel["codec"] == codec) & (rel["train_level"] == level)]
        parts.append(orig.assign(curve="originals", point_codec=orig["test_codec"], level=orig["test_level"]))
    out = pd.concat(parts, ignore_index=True)
    cols = ["model", "metric", "curve", "point_codec", "level", "test_bpp", "mean", "ci_low", "ci_high", "test_dcr",
            "cell_ids"]
    return out[[c for c in cols if c in out.columns]].rename(columns={"point_codec": "codec", "test_bpp": "bpp"})


def plot_rate_accuracy(points: pd.DataFrame, model: str, metric: str) -> bytes:
    """Two panels (matched, originals): the metric against bits per pixel (log), one curve per codec."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sel = points[(points["model"] == model) & (points["metric"] == metric)]
    curves = [c for c in CURVES if (sel["curve"] == c).any()]
    fig, axes = plt.subplots(1, len(curves), figsize=(6.2 * len(curves), 4.6), squeeze=False)
    titles = {"matched": "trained and tested at the level", "originals": "trained on the originals, tested at the level"}
    for ax, curve in zip(axes[0], curves):
        for codec, g in sel[sel["curve"] == curve].groupby("codec", sort=False):
            g = g.sort_values("bpp")
            err = np.vstack([(g["mean"] - g["ci_low"]).clip(lower=0).fillna(0),
                             (g["ci_high"] - g["mean"]).clip(lower=0).fillna(0)])
            ax.errorbar(g["bpp"], g["mean"], yerr=err, marker="o", capsize=3, label=codec)
            noun = codec_named(codec).level_noun[0]
            for x, y, lv in zip(g["bpp"], g["mean"], g["level"]):
                ax.annotate(f"{noun}{lv:g}", (x, y), textcoords="offset points", xytext=(4, -10), fontsize=6)
        ax.set_xscale("log")
        ax.set_xlabel("bits per pixel (mean over the test images, log scale)")
        ax.set_ylabel(metric)
        ax.set_title(f"{model}: {metric}, {titles[curve]}", fontsize=9)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8, title="codec")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def bd_table(points: pd.DataFrame, outcomes: Callable[[str], Any], bpp_of: Callable[[str, float], dict[str, float]],
             *, confidence: float = 0.95, resamples: int = 1000, seed_of: Callable[[str], int] = lambda m: 0,
             order: list[str] | None = None) -> pd.DataFrame:
    """Per (model, metric, curve), each codec against the first (in ``order``, the sweep's): the BD-rate and its interval.

    ``outcomes(cell_id)`` reads a cell's predictions; ``bpp_of(codec, level)`` maps test image ids to
    their bits per pixel at that level.
    """
    rows = []
    for (model, metric, curve), g in points.groupby(["model", "metric", "curve"], sort=False):
        codecs = list(dict.fromkeys(g["codec"]))
        if order:
            codecs.sort(key=lambda c: order.index(c) if c in order else len(order))
        if len(codecs) < 2:
            continue

        def curve_of(codec: str) -> CodecCurve:
            c = g[g["codec"] == codec].sort_values("level")  # noqa: B023  (called within this iteration)
            return CodecCurve(codec, list(c["level"]), [outcomes(ids[0]) for ids in c["cell_ids"]],
                              [bpp_of(codec, lv) for lv in c["level"]])

        anchor = curve_of(codecs[0])
        for codec in codecs[1:]:
            res = bd_rate_interval(anchor, curve_of(codec), metric, confidence=confidence, n_resamples=resamples,
                                   seed=seed_of(model))
            rows.append({"model": model, "metric": metric, "curve": curve, "anchor": codecs[0], "codec": codec,
                         "bd_rate": res.bd_rate, "low": res.low, "high": res.high, "n_images": res.n_images,
                         "resamples_compared": res.compared})
    return pd.DataFrame(rows)


def describe_bd(row: Any) -> str:
    """One sentence for a BD row: who needs fewer bytes at equal accuracy, and how sure that is."""
    if not math.isfinite(row.bd_rate):
        return (f"{row.codec} against {row.anchor}: no comparison at equal {row.metric}: over these levels the "
                f"{row.metric} does not fall with the bytes (or the two ranges do not overlap), so bytes cannot be "
                "told apart at equal accuracy")
    more_or_fewer = "fewer" if row.bd_rate < 0 else "more"
    interval = (f" (95% interval {row.low:+.0f}% to {row.high:+.0f}%)" if math.isfinite(row.low)
                and math.isfinite(row.high) else " (no interval: most resamples of the test images do not overlap)")
    sure = ""
    if math.isfinite(row.low) and math.isfinite(row.high) and row.low <= 0 <= row.high:
        sure = "; the data cannot tell them apart"
    return (f"{row.codec} needs {abs(row.bd_rate):.0f}% {more_or_fewer} bits per pixel than {row.anchor} "
            f"for the same {row.metric}{interval}{sure}")
