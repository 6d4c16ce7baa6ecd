"""How far can a team compress? Per model, metric and test level, the largest train DCR that keeps X%.

A train level *keeps* ``keep_fraction`` of the baseline at a test level when its cell's value is at
least ``keep_fraction · baseline``. The judgement uses the lower end of the cell's relative 95%
interval (paired with the baseline), not the mean: a level is only advised when the data say it is
good enough with confidence. Only a cell without any interval is judged on its mean (the table says so).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from lossyvision.report.cells import GROUP


def advice_table(rel: pd.DataFrame, keep_fraction: float = 0.99) -> pd.DataFrame:
    """One row per (model, metric, budget, test level) from :func:`~lossyvision.report.cells.relative_cells` rows.

    Columns: ``test_dcr``, ``train_level``/``train_dcr``/``rel``/``rel_low`` of the advised train
    level (NaN when no level keeps enough), ``judged_on`` ("95% CI lower bound" or "mean").
    """
    if not 0 < keep_fraction <= 1.5:
        raise ValueError(f"keep_fraction must be in (0, 1.5], got {keep_fraction}")
    rows = []
    threshold = 100.0 * keep_fraction
    if "test_codec" in rel.columns:  # a codec's own grid: cross-codec cells are judged in the rate section
        rel = rel[rel["test_codec"] == rel["codec"]]
    for key, g in rel.groupby(list(GROUP) + ["test_level"], sort=True):
        with_ci = np.isfinite(g["rel_low"].to_numpy(dtype=float))
        judged = np.where(with_ci, g["rel_low"], g["rel"]).astype(float)
        if "rel_interval" in g.columns:  # a trained level whose seeds' spread is unmeasured cannot be judged
            judged[(g["rel_interval"] == "seeds not measured").to_numpy()] = math.nan
        ok = g[judged >= threshold - 1e-9]
        order = ok.assign(_dcr=ok["train_dcr"].fillna(-math.inf)).sort_values(["_dcr", "train_level"])
        best = order.iloc[-1] if len(order) else None
        rows.append({
            **dict(zip(list(GROUP) + ["test_level"], key)),
            "test_dcr": float(g["test_dcr"].mean()),
            "train_level": float(best["train_level"]) if best is not None else math.nan,
            "train_dcr": float(best["train_dcr"]) if best is not None else math.nan,
            "rel": float(best["rel"]) if best is not None else math.nan,
            "rel_low": float(best["rel_low"]) if best is not None else math.nan,
            "judged_on": "95% interval lower bound" if bool(with_ci.any()) else "mean",
        })
    return pd.DataFrame(rows)


def _fmt_level(x: float) -> str:
    return "—" if not math.isfinite(x) else f"{x:g}"


def _fmt_pct(x: float) -> str:
    return "—" if not math.isfinite(x) else f"{x:.1f}%"


def advice_html(advice: pd.DataFrame, keep_fraction: float) -> str:
    """The advice as an HTML table (escaped)."""
    from html import escape

    head = ("<tr><th>model</th><th>metric</th><th>budget</th><th>codec</th><th>test level</th><th>test DCR</th>"
            f"<th>largest train DCR keeping &ge; {100 * keep_fraction:g}%</th><th>train level</th>"
            "<th>relative (mean)</th><th>judged on</th></tr>")
    body = []
    for r in advice.itertuples(index=False):
        found = math.isfinite(r.train_level)
        body.append(
            "<tr>" + "".join(f"<td>{escape(str(c))}</td>" for c in (
                r.model, r.metric, "none" if r.budget < 0 else r.budget, r.codec, _fmt_level(r.test_level),
                f"{r.test_dcr:.3f}" if math.isfinite(r.test_dcr) else "—",
                f"{r.train_dcr:.3f}" if found and math.isfinite(r.train_dcr) else ("none" if not found else "—"),
                _fmt_level(r.train_level), _fmt_pct(r.rel), r.judged_on)) + "</tr>")
    return f'<table class="advice">{head}{"".join(body)}</table>'


def cells_html(rel: pd.DataFrame) -> str:
    """Every cell's value: mean and, with repeats, its 95% CI, also relative to the baseline."""
    from html import escape

    head = ("<tr><th>model</th><th>metric</th><th>budget</th><th>codec</th><th>train level</th><th>test codec</th>"
            "<th>test level</th><th>train DCR</th><th>test DCR</th><th>repeats</th><th>mean [95% interval]</th>"
            "<th>relative [95% interval]</th></tr>")
    body = []
    for r in rel.sort_values(list(GROUP) + ["train_level", "test_codec", "test_level"]).itertuples(index=False):
        ci = f" [{r.ci_low:.4g}, {r.ci_high:.4g}]" if math.isfinite(r.ci_low) else ""
        rci = f" [{r.rel_low:.1f}, {r.rel_high:.1f}]" if math.isfinite(r.rel_low) else ""
        cells = (r.model, r.metric, "none" if r.budget < 0 else r.budget, r.codec, f"{r.train_level:g}", r.test_codec,
                 f"{r.test_level:g}",
                 f"{r.train_dcr:.3f}", f"{r.test_dcr:.3f}", r.n, f"{r.mean:.4g}{ci}", f"{r.rel:.1f}%{rci}")
        body.append("<tr>" + "".join(f"<td>{escape(str(c))}</td>" for c in cells) + "</tr>")
    return f'<table class="cells">{head}{"".join(body)}</table>'
