"""Figures of a storage-budget sweep: accuracy by level per budget, by budget per level, and the fit.

Per (model, metric), on the test level the advisor uses (:func:`lossyvision.scaling.scaling_points`):

* ``budget-level-<model>-<metric>.png``: the metric against the train level, one line per budget;
* ``budget-budget-<model>-<metric>.png``: the metric against the budget, one line per level;
* ``budget-fit-<model>-<metric>.png``: the observed error against bytes per image, with the fitted
  law's iso-budget curves ``Err(min(N, S/L), L)`` and their 95% bootstrap bands; the title says
  when the fit is too poor to advise from, and only the points are drawn when there is no fit.

Error bars are the spread (standard deviation) over repeats. Rows without a budget are ignored.
``N`` on the curves caps ``n`` at the train set's size when the sweep shows it (see
:func:`images_cap`); the curves span the observed bytes per image only.
"""

from __future__ import annotations

import io
import math
import re

import numpy as np
import pandas as pd

from lossyvision import store
from lossyvision.scaling import AdviceRefused, check_fit, fit_scaling_law, scaling_points
from lossyvision.units import format_bytes

FIT_BOOTSTRAP = 200


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(text)).strip("_") or "x"


def _png(fig) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _where(selection: dict) -> str:
    level = selection["test_level"]
    return "tested at the train level" if level == "same" else f"tested at level {level:g}"


def plot_accuracy_by_level(points: pd.DataFrame, selection: dict) -> bytes:
    """The metric against the train level, one line per budget."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for budget, g in points.groupby("budget", sort=True):
        g = g.sort_values("train_level")
        ax.errorbar(g["train_level"], 1 - g["error"], yerr=g["error_std"].fillna(0), marker="o", capsize=3,
                    label=format_bytes(budget))
    ax.set_xlabel("train level")
    ax.set_ylabel(selection["metric"])
    ax.set_title(f"{selection['model']}: {selection['metric']} by level at each budget ({_where(selection)})",
                 fontsize=9)
    ax.legend(title="budget", fontsize=8)
    ax.grid(alpha=0.3)
    return _png(fig)


def plot_accuracy_by_budget(points: pd.DataFrame, selection: dict) -> bytes:
    """The metric against the budget (log), one line per train level."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for level, g in points.groupby("train_level", sort=True):
        g = g.sort_values("budget")
        ax.errorbar(g["budget"], 1 - g["error"], yerr=g["error_std"].fillna(0), marker="o", capsize=3,
                    label=f"{level:g}")
    ax.set_xscale("log")
    ax.set_xlabel("storage budget (bytes)")
    ax.set_ylabel(selection["metric"])
    ax.set_title(f"{selection['model']}: {selection['metric']} by budget at each level ({_where(selection)})",
                 fontsize=9)
    ax.legend(title="train level", fontsize=8)
    ax.grid(alpha=0.3, which="both")
    return _png(fig)


def images_cap(points: pd.DataFrame) -> float:
    """The train set's size, when the points show that some level used all its images.

    A trial's subset stops within one image of its budget, so a trial that left more than three
    images' worth of its budget unused, or a level whose ``n`` did not grow between its two largest
    budgets, used every image. Without such evidence there is no cap (``inf``).
    """
    caps = []
    unused = points["budget"] - points["n"] * points["bytes_per_image"]
    caps += points.loc[unused > 3 * points["bytes_per_image"], "n"].astype(float).tolist()
    for _, g in points.groupby("train_level"):
        top = g.sort_values("budget")["n"].to_numpy()[-2:]
        if len(top) == 2 and math.isclose(top[0], top[1], rel_tol=5e-3):
            caps.append(float(top[1]))
    return max(caps) if caps else math.inf


def plot_fit(points: pd.DataFrame, selection: dict, *, n_bootstrap: int = FIT_BOOTSTRAP) -> bytes:
    """Observed error against bytes per image, with the fitted iso-budget curves when there is a fit."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.8, 4.6))
    budgets = sorted(points["budget"].unique())
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    try:
        fit = fit_scaling_law(points, n_bootstrap=n_bootstrap)
    except AdviceRefused as e:
        fit, note = None, f"no fit: {e}"
    else:
        try:
            check_fit(fit)
            note = f"fit R²={fit.r2:.3f}, α={fit.params['alpha']:.2f}, β={fit.params['beta']:.2f}"
        except AdviceRefused as e:
            note = f"poor fit, not used for advice: {e}"
    cap = images_cap(points)
    for i, budget in enumerate(budgets):
        color = colors[i % len(colors)]
        g = points[points["budget"] == budget]
        ax.errorbar(g["bytes_per_image"], g["error"], yerr=g["error_std"].fillna(0), fmt="o", color=color,
                    capsize=3, label=format_bytes(budget))
        for _, p in g.iterrows():
            ax.annotate(f"{p['train_level']:g}", (p["bytes_per_image"], p["error"]), fontsize=7,
                        xytext=(3, 3), textcoords="offset points", color=color)
        if fit is not None:
            lo, hi = fit.bytes_range  # drawn over the observed range only: no extrapolation
            L = np.geomspace(lo, hi, 120)
            n = np.minimum(cap, budget / L)
            ok = n >= 1
            pred = fit.predict(n[ok], L[ok])
            band_lo, band_hi = fit.predict_interval(n[ok], L[ok])
            ax.plot(L[ok], pred, color=color, lw=1.2)
            ax.fill_between(L[ok], np.clip(band_lo, 0, 1), np.clip(band_hi, 0, 1), color=color, alpha=0.12, lw=0)
            best = int(np.flatnonzero(pred <= pred.min() + 1e-9)[-1])  # ties: the least compressed
            ax.plot(L[ok][best], pred[best], marker="*", ms=11, color=color, mec="black", mew=0.5)
    ax.set_xscale("log")
    ax.set_xlabel("bytes per image L (log); labels: train level")
    ax.set_ylabel(f"error = 1 - {selection['metric']}")
    wrapped = note if len(note) < 110 else note[:107] + "..."
    ax.set_title(f"{selection['model']}: Err* + A·n^-α + B·L^-β, iso-budget curves ({_where(selection)})\n"
                 f"{wrapped}", fontsize=8)
    ax.legend(title="budget (★ fitted optimum)", fontsize=7, loc="best", framealpha=0.6)
    ax.grid(alpha=0.3, which="both")
    return _png(fig)


def budget_figure_pngs(results: pd.DataFrame, *, n_bootstrap: int = FIT_BOOTSTRAP) -> list[tuple[str, bytes]]:
    """``(file name, PNG bytes)`` of every budget figure, or ``[]`` for a sweep without budgets."""
    if results.empty or "budget" not in results.columns:
        return []
    rows = results[results["budget"] >= 0]
    if rows.empty:
        return []
    out = []
    for model in sorted(rows["model"].unique()):
        for metric in sorted(rows.loc[rows["model"] == model, "metric"].unique()):
            try:
                points, selection = scaling_points(rows, model=model, metric=metric)
            except ValueError:
                continue  # e.g. a metric outside [0, 1]: no error to plot
            stem = f"{_slug(model)}-{_slug(metric)}"
            out.append((f"budget-level-{stem}.png", plot_accuracy_by_level(points, selection)))
            out.append((f"budget-budget-{stem}.png", plot_accuracy_by_budget(points, selection)))
            out.append((f"budget-fit-{stem}.png", plot_fit(points, selection, n_bootstrap=n_bootstrap)))
    return out


def budget_figures(results: pd.DataFrame, out_dir: str, *, n_bootstrap: int = FIT_BOOTSTRAP) -> list[str]:
    """Write the budget figures into ``out_dir`` (folder or URI), atomically; returns their paths."""
    paths = []
    for name, png in budget_figure_pngs(results, n_bootstrap=n_bootstrap):
        uri = store.join(str(out_dir), name)
        store.atomic_write_bytes(uri, png)
        paths.append(uri)
    return paths
