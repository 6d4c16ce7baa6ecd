"""The answer, first: per model and metric, the distance to store at, with its 95 % bound, or why the data cannot say.

Three questions, as the study separates them, each over the levels in order of compression:

- **store everything at d** (the diagonal: trained and tested at d);
- **store training data at d** (trained at d, tested on the baseline's test level);
- **serve compressed test data at d** (trained at the baseline's level, tested at d).

A level *keeps* the threshold when the lower end of its relative value's interval is at least
``keep`` (e.g. 99 % of the baseline): the data say it is good enough with confidence. It *loses*
when the upper end is below: the data say it is not. Otherwise the data cannot tell. The answer is
the last level of the unbroken run of keeping levels from the least compressed one; a level that
keeps after one that could not be told is not advised (noise would choose it). When no level keeps,
the answer says whether compression costs too much (the first level loses) or the sweep is too
small to tell, and by how much: the half-width of the interval is the smallest drop it can see.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

KEEPS, LOSES, UNSURE = "keeps", "loses", "cannot tell"
#: Metrics read first, as the study reports them; any other metric follows in name order.
HEADLINE_ORDER = ("top1", "map50", "miou", "top5", "macc")
QUESTIONS = (
    ("matched", "Store everything at"),
    ("train", "Store training data at"),
    ("test", "Serve compressed test data at"),
)


@dataclass(frozen=True)
class Verdict:
    model: str
    metric: str
    question: str             # matched | train | test
    level: float | None       # the advised level, None when none is advised
    dcr: float | None         # its mean DCR against the original files
    rel: float | None         # its relative value (%) and interval
    rel_low: float | None
    rel_high: float | None
    outcome: str              # "advised", "keep originals", "cannot tell", "not measured"
    text: str


def _status(row: pd.Series, threshold: float) -> str:
    low, high = float(row["rel_low"]), float(row["rel_high"])
    if math.isfinite(low) and low >= threshold - 1e-9:
        return KEEPS
    if math.isfinite(high) and high < threshold - 1e-9:
        return LOSES
    return UNSURE


def _pct(x: float) -> str:
    return f"{x:.1f}%"


def _dcr_text(dcr: float) -> str:
    if not math.isfinite(dcr):
        return "DCR unknown"
    if dcr >= 0:
        return f"DCR {dcr:.2f}: files {100 * dcr:.0f}% smaller than the originals"
    return f"DCR {dcr:.2f}: files {-100 * dcr:.0f}% larger than the originals"


def _candidates(g: pd.DataFrame, question: str, base_train: float, base_test: float) -> pd.DataFrame:
    if question == "matched":
        c = g[(g["train_level"] == g["test_level"]) & (g["train_level"] > base_train)]
        return c.sort_values("train_level")
    if question == "train":
        return g[(g["test_level"] == base_test) & (g["train_level"] > base_train)].sort_values("train_level")
    return g[(g["train_level"] == base_train) & (g["test_level"] > base_test)].sort_values("test_level")


def _describe_size(row: pd.Series) -> str:
    n_images = int(row.get("n_images", -1)) if pd.notna(row.get("n_images", -1)) else -1
    repeats = int(row.get("n", 1))
    parts = []
    if n_images > 0:
        parts.append(f"{n_images:,} test images")
    parts.append(f"{repeats} repeat{'s' if repeats != 1 else ''}")
    return " and ".join(parts)


def question_verdict(g: pd.DataFrame, question: str, keep: float) -> Verdict | None:
    """The verdict of one question for one (model, metric) group of relative cells (budget -1)."""
    first = g.iloc[0]
    model, metric = str(first["model"]), str(first["metric"])
    base_train, base_test = float(first["baseline_train_level"]), float(first["baseline_test_level"])
    lead = dict(QUESTIONS)[question]
    level_col = "test_level" if question == "test" else "train_level"
    dcr_col = "test_dcr" if question == "test" else "train_dcr"
    cands = _candidates(g, question, base_train, base_test)
    if cands.empty:
        return None
    threshold = 100.0 * keep
    kept = None
    blocked = None
    for _, row in cands.iterrows():
        status = _status(row, threshold)
        if status == KEEPS:
            kept = row
            continue
        blocked = (row, status)
        break
    who = {"matched": "Models trained and tested there keep",
           "train": f"Models trained there and tested at distance {base_test:g} keep",
           "test": f"A model trained at distance {base_train:g} and tested there keeps"}[question]
    confidence = "95% confidence"
    if kept is not None:
        level = float(kept[level_col])
        text = (f"{lead} distance {level:g} ({_dcr_text(float(kept[dcr_col]))}). {who} "
                f"≥ {threshold:g}% of the baseline {metric} with {confidence} (lower bound {_pct(kept['rel_low'])}).")
        if blocked is not None:
            row, status = blocked
            nxt = float(row[level_col])
            if status == LOSES:
                text += (f" Distance {nxt:g} drops below: {_pct(row['rel'])} "
                         f"[{_pct(row['rel_low'])}, {_pct(row['rel_high'])}].")
            else:
                text += (f" At distance {nxt:g} the data cannot tell ({_pct(row['rel'])} "
                         f"[{_pct(row['rel_low'])}, {_pct(row['rel_high'])}]).")
        return Verdict(model, metric, question, level, float(kept[dcr_col]), float(kept["rel"]),
                       float(kept["rel_low"]), float(kept["rel_high"]), "advised", text)
    row, status = blocked
    nxt = float(row[level_col])
    if status == LOSES:
        text = (f"{lead} no distance tried: even distance {nxt:g} ({_dcr_text(float(row[dcr_col]))}) keeps only "
                f"{_pct(row['rel'])} [{_pct(row['rel_low'])}, {_pct(row['rel_high'])}] of the baseline {metric}, "
                f"below {threshold:g}%. Keep the originals, or try smaller distances.")
        outcome = "keep originals"
    else:
        half = (float(row["rel_high"]) - float(row["rel_low"])) / 2
        if math.isfinite(half):
            text = (f"{lead} d: this sweep cannot tell. With {_describe_size(row)}, a drop smaller than "
                    f"{half:.1f} points of the baseline {metric} is undetectable (distance {nxt:g}: "
                    f"{_pct(row['rel'])} [{_pct(row['rel_low'])}, {_pct(row['rel_high'])}]); telling "
                    f"{threshold:g}% needs an interval narrower than {max(100.0 - threshold, 0.0):.1f} points. "
                    "Add repeats or test images.")
        else:
            text = (f"{lead} d: this sweep cannot tell: distance {nxt:g} has no interval "
                    f"(too few test images). Add repeats or test images.")
        outcome = "cannot tell"
    return Verdict(model, metric, question, None, None, float(row["rel"]), float(row["rel_low"]),
                   float(row["rel_high"]), outcome, text)


def verdicts(rel: pd.DataFrame, keep: float = 0.99, headline_only: bool = True) -> list[Verdict]:
    """Every (model, metric) group's verdicts, budget-free groups only; with ``headline_only`` the
    first metric of each model (top1, map50, miou: the order the task reports them in)."""
    if rel.empty:
        return []
    rows = rel[rel["budget"] < 0] if "budget" in rel.columns else rel
    out: list[Verdict] = []
    for model, mg in rows.groupby("model", sort=False):
        metrics = sorted(set(mg["metric"]), key=lambda m: (HEADLINE_ORDER.index(m) if m in HEADLINE_ORDER
                                                           else len(HEADLINE_ORDER), m))
        for metric in metrics[:1] if headline_only else metrics:
            g = mg[mg["metric"] == metric]
            for question, _ in QUESTIONS:
                v = question_verdict(g, question, keep)
                if v is not None:
                    out.append(v)
    return out


def headline(found: list[Verdict]) -> list[Verdict]:
    """The verdicts of each model's headline metric (its first in :data:`HEADLINE_ORDER`, then by name)."""
    first: dict[str, str] = {}
    for v in found:
        best = first.get(v.model)
        if best is None or _metric_rank(v.metric) < _metric_rank(best):
            first[v.model] = v.metric
    return [v for v in found if first.get(v.model) == v.metric]


def _metric_rank(metric: str) -> tuple[int, str]:
    return (HEADLINE_ORDER.index(metric) if metric in HEADLINE_ORDER else len(HEADLINE_ORDER), metric)


def verdict_lines(found: list[Verdict]) -> list[str]:
    """Plain-text lines: one heading per model/metric, one line per question."""
    lines: list[str] = []
    current = None
    for v in found:
        if (v.model, v.metric) != current:
            current = (v.model, v.metric)
            lines.append(f"{v.model} ({v.metric}):")
        lines.append(f"  {v.text}")
    return lines
