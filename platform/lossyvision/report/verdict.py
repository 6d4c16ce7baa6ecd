"""The answer, first: per model and metric, the level to store at, with its 95 % bound, or why the data cannot say.

Three questions, as the study separates them, per codec, each over its levels from the most
faithful to the most compressed:

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

With several codecs, one more line per model and metric names the codec and level that keep the
threshold with the smallest files (the highest DCR against the originals; bits per pixel beside it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from lossyvision.codecs import CODECS

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
    question: str             # matched | train | test | codecs (the best codec across them)
    level: float | None       # the advised level, None when none is advised
    dcr: float | None         # its mean DCR against the original files
    rel: float | None         # its relative value (%) and interval
    rel_low: float | None
    rel_high: float | None
    outcome: str              # "advised", "keep originals", "cannot tell", "not measured"
    text: str
    codec: str = "jpegxl"
    bpp: float | None = None  # its mean bits per pixel


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


def _codec(name: str):
    if name in CODECS:
        return CODECS.get(name)

    class Unknown:  # a codec this install lacks: ascending levels, "level"
        level_noun = "level"

        @staticmethod
        def by_fidelity(levels):
            return sorted(float(x) for x in levels)

        @staticmethod
        def describe_level(level):
            return f"level {float(level):g}"

    return Unknown


def _candidates(g: pd.DataFrame, question: str, base_train: float, base_test: float, codec: str) -> pd.DataFrame:
    """The question's cells past the baseline, from the most faithful level to the most compressed."""
    own = g[g["test_codec"] == codec] if "test_codec" in g.columns else g
    if question == "matched":
        c, col = own[(own["train_level"] == own["test_level"]) & (own["train_level"] != base_train)], "train_level"
    elif question == "train":
        c, col = own[(own["test_level"] == base_test) & (own["train_level"] != base_train)], "train_level"
    else:
        c, col = own[(own["train_level"] == base_train) & (own["test_level"] != base_test)], "test_level"
    order = {lv: i for i, lv in enumerate(_codec(codec).by_fidelity(c[col].unique()))}
    return c.assign(_order=c[col].map(order)).sort_values("_order").drop(columns="_order")


def _describe_size(row: pd.Series) -> str:
    n_images = int(row.get("n_images", -1)) if pd.notna(row.get("n_images", -1)) else -1
    repeats = int(row.get("n", 1))
    parts = []
    if n_images > 0:
        parts.append(f"{n_images:,} test images")
    parts.append(f"{repeats} repeat{'s' if repeats != 1 else ''}")
    return " and ".join(parts)


def question_verdict(g: pd.DataFrame, question: str, keep: float) -> Verdict | None:
    """The verdict of one question for one (model, metric, codec) group of relative cells (budget -1)."""
    first = g.iloc[0]
    model, metric = str(first["model"]), str(first["metric"])
    codec = str(first["codec"]) if "codec" in g.columns else "jpegxl"
    kind = _codec(codec)
    at = kind.describe_level
    base_train, base_test = float(first["baseline_train_level"]), float(first["baseline_test_level"])
    lead = dict(QUESTIONS)[question]
    level_col = "test_level" if question == "test" else "train_level"
    dcr_col = "test_dcr" if question == "test" else "train_dcr"
    bpp_col = "test_bpp" if question == "test" else "train_bpp"
    cands = _candidates(g, question, base_train, base_test, codec)
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
           "train": f"Models trained there and tested at {at(base_test)} keep",
           "test": f"A model trained at {at(base_train)} and tested there keeps"}[question]
    confidence = "95% confidence"
    on = "" if codec == "jpegxl" else f" {codec}"
    if kept is not None:
        level = float(kept[level_col])
        text = (f"{lead}{on} {at(level)} ({_dcr_text(float(kept[dcr_col]))}). {who} "
                f"≥ {threshold:g}% of the baseline {metric} with {confidence} (lower bound {_pct(kept['rel_low'])}).")
        if blocked is not None:
            row, status = blocked
            nxt = at(float(row[level_col]))
            if status == LOSES:
                text += (f" At {nxt} it drops below: {_pct(row['rel'])} "
                         f"[{_pct(row['rel_low'])}, {_pct(row['rel_high'])}].")
            else:
                text += (f" At {nxt} the data cannot tell ({_pct(row['rel'])} "
                         f"[{_pct(row['rel_low'])}, {_pct(row['rel_high'])}]).")
        return Verdict(model, metric, question, level, float(kept[dcr_col]), float(kept["rel"]),
                       float(kept["rel_low"]), float(kept["rel_high"]), "advised", text, codec,
                       _float(kept.get(bpp_col)))
    row, status = blocked
    nxt = at(float(row[level_col]))
    if status == LOSES:
        text = (f"{lead}{on} no {kind.level_noun} tried: even {nxt} ({_dcr_text(float(row[dcr_col]))}) keeps only "
                f"{_pct(row['rel'])} [{_pct(row['rel_low'])}, {_pct(row['rel_high'])}] of the baseline {metric}, "
                f"below {threshold:g}%. Keep the originals, or try more faithful levels.")
        outcome = "keep originals"
    else:
        half = (float(row["rel_high"]) - float(row["rel_low"])) / 2
        if math.isfinite(half):
            text = (f"{lead}{on} {nxt}? This sweep cannot tell. With {_describe_size(row)}, a drop "
                    f"smaller than {half:.1f} points of the baseline {metric} is undetectable ({nxt}: "
                    f"{_pct(row['rel'])} [{_pct(row['rel_low'])}, {_pct(row['rel_high'])}]); telling "
                    f"{threshold:g}% needs an interval narrower than {max(100.0 - threshold, 0.0):.1f} points. "
                    "Add repeats or test images.")
        else:
            text = (f"{lead}{on} {nxt}? This sweep cannot tell: it has no interval "
                    f"(too few test images). Add repeats or test images.")
        outcome = "cannot tell"
    return Verdict(model, metric, question, None, None, float(row["rel"]), float(row["rel_low"]),
                   float(row["rel_high"]), outcome, text, codec)


def _float(x) -> float | None:
    try:
        x = float(x)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def best_codec(found: list[Verdict], model: str, metric: str, keep: float) -> Verdict | None:
    """Across codecs: the advised "store everything" level with the smallest files, or why there is none."""
    matched = [v for v in found if v.model == model and v.metric == metric and v.question == "matched"]
    if len({v.codec for v in matched}) < 2:
        return None
    advised = sorted((v for v in matched if v.outcome == "advised" and v.dcr is not None),
                     key=lambda v: v.dcr, reverse=True)
    others = "; ".join(f"{v.codec} {_codec(v.codec).describe_level(v.level)}: DCR {v.dcr:.2f}"
                       + (f", {v.bpp:.2f} bpp" if v.bpp else "") for v in advised[1:])
    none = [v.codec for v in matched if v.outcome != "advised"]
    tail = (f" Next: {others}." if others else "") + (f" No level advised: {', '.join(none)}." if none else "")
    if not advised:
        return Verdict(model, metric, "codecs", None, None, None, None, None, "cannot tell",
                       f"Across codecs: no codec keeps ≥ {100 * keep:g}% of its baseline {metric} at any level tried "
                       "with 95% confidence (see each codec's line).", "")
    best = advised[0]
    text = (f"Across codecs: store with {best.codec} at {_codec(best.codec).describe_level(best.level)} "
            f"(DCR {best.dcr:.2f}" + (f", {best.bpp:.2f} bits per pixel" if best.bpp else "") +
            f"): the smallest files that keep ≥ {100 * keep:g}% of the baseline {metric} with 95% confidence "
            f"(lower bound {_pct(best.rel_low)}).{tail}")
    return Verdict(model, metric, "codecs", best.level, best.dcr, best.rel, best.rel_low, best.rel_high, "advised",
                   text, best.codec, best.bpp)


def verdicts(rel: pd.DataFrame, keep: float = 0.99, headline_only: bool = True,
             order: list[str] | None = None) -> list[Verdict]:
    """Every (model, metric) group's verdicts, budget-free groups only; with ``headline_only`` the
    first metric of each model (top1, map50, miou: the order the task reports them in)."""
    if rel.empty:
        return []
    rows = rel[rel["budget"] < 0] if "budget" in rel.columns else rel
    if "codec" not in rows.columns:
        rows = rows.assign(codec="jpegxl")
    out: list[Verdict] = []
    for model, mg in rows.groupby("model", sort=False):
        metrics = sorted(set(mg["metric"]), key=_metric_rank)
        for metric in metrics[:1] if headline_only else metrics:
            found: list[Verdict] = []
            groups = list(mg[mg["metric"] == metric].groupby("codec", sort=False))
            if order:  # the sweep file's order of codecs
                groups.sort(key=lambda kg: order.index(kg[0]) if kg[0] in order else len(order))
            for _, g in groups:
                for question, _ in QUESTIONS:
                    v = question_verdict(g, question, keep)
                    if v is not None:
                        found.append(v)
            best = best_codec(found, model, metric, keep)
            out += ([best] if best is not None else []) + found
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
