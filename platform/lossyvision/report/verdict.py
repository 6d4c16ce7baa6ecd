"""The answer, first: per model, one decision, then per metric and question the level to store at, or why not.

Three questions, as the study separates them, per codec, each over its levels from the most
faithful to the most compressed:

- **store everything at d** (the diagonal: trained and tested at d);
- **store training data at d** (trained at d, tested on the baseline's test level);
- **serve compressed test data at d** (trained at the baseline's level, tested at d).

The first two are claims about *models trained at d*: their intervals carry the spread between
training runs (:mod:`lossyvision.seedspread`), and with no spread measured they cannot tell, and
say what measuring it costs. The third is about the model trained at the baseline's level, the one
that would serve the files: its interval is over the test images (and its repeats).

A level *keeps* the threshold when the lower end of its relative value's interval is at least
``keep`` (e.g. 99 % of the baseline): the data say it is good enough with the stated confidence.
It *loses* when the upper end is below. Otherwise the data cannot tell. The answer is the last
level of the unbroken run of keeping levels from the least compressed one: fixed-sequence testing,
which needs no correction for testing several levels (Learn-then-Test, arXiv 2110.01052). A level
that keeps after one that could not be told is not advised (noise would choose it); the answer says
so and what would settle the gap. A metric that no level moves (every cell 100 % with a degenerate
interval, like top-5 on an easy set) gets one line. Per model, :func:`decisions` opens with one
sentence for the most demanding question the sweep measured.

With several codecs, one more line per model and metric names the codec and level that keep the
threshold with the smallest files (the highest DCR against the originals; bits per pixel beside it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from lossyvision.codecs import CODECS, DEFAULT_CODEC
from lossyvision.metrics import headline_first
from lossyvision.seedspread import extra_trainings

KEEPS, LOSES, UNSURE = "keeps", "loses", "cannot tell"
QUESTIONS = (
    ("matched", "Store everything at"),
    ("train", "Store training data at"),
    ("test", "Serve compressed test data at"),
)
#: Questions about models trained at a level (their intervals need the spread between training runs).
TRAINED_QUESTIONS = ("matched", "train")
#: A ``rel_interval`` saying the claim's interval could not include the seeds' spread.
SEEDS_NOT_MEASURED = "seeds not measured"


@dataclass(frozen=True)
class Verdict:
    model: str
    metric: str
    question: str             # matched | train | test | codecs (the best codec across them) | saturated
    level: float | None       # the advised level, None when none is advised
    dcr: float | None         # its mean DCR against the original files
    rel: float | None         # its relative value (%) and interval
    rel_low: float | None
    rel_high: float | None
    outcome: str              # "advised", "keep originals", "cannot tell", "saturated"
    text: str
    codec: str = DEFAULT_CODEC
    bpp: float | None = None  # its mean bits per pixel
    keep: float = 0.99        # the threshold, a fraction of the baseline
    confidence: float = 0.95
    levels: tuple = ()        # per level tried, in order: {level, status, rel, rel_low, rel_high}
    why: str = ""             # no level advised: the reason, in a few words

    def record(self) -> dict:
        """The verdict as ``verdict.json`` holds it."""
        return {"model": self.model, "metric": self.metric, "question": self.question, "codec": self.codec,
                "level": self.level, "outcome": self.outcome, "rel": self.rel, "rel_low": self.rel_low,
                "rel_high": self.rel_high, "keep": self.keep, "confidence": self.confidence, "dcr": self.dcr,
                "bpp": self.bpp, "levels": [dict(x) for x in self.levels], "text": self.text}


def _status(row: pd.Series, threshold: float) -> str:
    low, high = float(row["rel_low"]), float(row["rel_high"])
    if math.isfinite(low) and low >= threshold - 1e-9:
        return KEEPS
    if math.isfinite(high) and high < threshold - 1e-9:
        return LOSES
    return UNSURE


def percent(x: float) -> str:
    return f"{x:.1f}%"


def with_confidence(confidence: float) -> str:
    return f"{100 * confidence:g}% confidence"


def dcr_text(dcr: float) -> str:
    if not math.isfinite(dcr):
        return "DCR unknown"
    if dcr >= 0:
        return f"DCR {dcr:.2f}: files {100 * dcr:.0f}% smaller than the originals"
    return f"DCR {dcr:.2f}: files {-100 * dcr:.0f}% larger than the originals"


def codec_named(name: str):
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
    order = {lv: i for i, lv in enumerate(codec_named(codec).by_fidelity(c[col].unique()))}
    return c.assign(_order=c[col].map(order)).sort_values("_order").drop(columns="_order")


def _describe_size(row: pd.Series, question: str = "test") -> str:
    n_images = int(row.get("n_images", -1)) if pd.notna(row.get("n_images", -1)) else -1
    repeats = int(row.get("n", 1))
    parts = []
    if n_images > 0:
        parts.append(f"{n_images:,} test images")
    parts.append(f"{repeats} repeat{'s' if repeats != 1 else ''}")
    sd, df = _float(row.get("spread_sd")), int(row.get("spread_df", 0) or 0)
    if question in TRAINED_QUESTIONS and sd is not None and df > 0:
        parts.append(f"a between-run sd of {sd:.2f} points ({df} degrees of freedom)")
    return ", ".join(parts[:-1]) + " and " + parts[-1]


def _interval(row: pd.Series) -> str:
    return f"{percent(row['rel'])} [{percent(row['rel_low'])}, {percent(row['rel_high'])}]"


def _seeds_unmeasured(rows: pd.DataFrame) -> bool:
    return "rel_interval" in rows.columns and bool((rows["rel_interval"] == SEEDS_NOT_MEASURED).any())


def _what_settles(row: pd.Series) -> str:
    """More test images or more repeats: whichever part of the interval's width is larger."""
    test_half = (float(row.get("rel_test_high", math.nan)) - float(row.get("rel_test_low", math.nan))) / 2
    half = (float(row["rel_high"]) - float(row["rel_low"])) / 2
    if math.isfinite(test_half) and math.isfinite(half) and half > 0 and test_half ** 2 < 0.5 * half ** 2:
        return "add repeats at that level (the spread between training runs is most of the interval's width)"
    return "add test images (they are most of the interval's width), or repeats"


def _level_records(cands: pd.DataFrame, level_col: str, threshold: float, unmeasured: bool) -> tuple:
    def num(x) -> float | None:
        return _float(x)

    return tuple({"level": float(r[level_col]), "status": UNSURE if unmeasured else _status(r, threshold),
                  "rel": num(r["rel"]), "rel_low": num(r["rel_low"]), "rel_high": num(r["rel_high"])}
                 for _, r in cands.iterrows())


def question_verdict(g: pd.DataFrame, question: str, keep: float, confidence: float = 0.95) -> Verdict | None:
    """The verdict of one question for one (model, metric, codec) group of relative cells (budget -1)."""
    first = g.iloc[0]
    model, metric = str(first["model"]), str(first["metric"])
    codec = str(first["codec"]) if "codec" in g.columns else DEFAULT_CODEC
    kind = codec_named(codec)
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
    on = "" if codec == DEFAULT_CODEC else f" {codec}"
    unmeasured = question in TRAINED_QUESTIONS and _seeds_unmeasured(cands)
    levels = _level_records(cands, level_col, threshold, unmeasured)
    common = dict(codec=codec, keep=keep, confidence=confidence, levels=levels)
    if unmeasured:
        return _unmeasured_verdict(g, cands, model, metric, question, lead + on, base_train, kind, common)
    statuses = [x["status"] for x in levels]
    run = next((i for i, st in enumerate(statuses) if st != KEEPS), len(statuses))
    who = {"matched": "Models trained and tested there keep",
           "train": f"Models trained there and tested at {at(base_test)} keep",
           "test": f"A model trained at {at(base_train)} and tested there keeps"}[question]
    if run > 0:
        kept = cands.iloc[run - 1]
        level = float(kept[level_col])
        text = (f"{lead}{on} {at(level)} ({dcr_text(float(kept[dcr_col]))}). {who} "
                f"≥ {threshold:g}% of the baseline {metric} with {with_confidence(confidence)} "
                f"(lower bound {percent(kept['rel_low'])}).")
        if run < len(statuses):
            row = cands.iloc[run]
            text += _after_the_run(row, statuses[run], at(float(row[level_col])), cands, statuses, run, level_col, at)
        return Verdict(model, metric, question, level, float(kept[dcr_col]), float(kept["rel"]),
                       float(kept["rel_low"]), float(kept["rel_high"]), "advised", text,
                       bpp=_float(kept.get(bpp_col)), **common)
    row, status = cands.iloc[0], statuses[0]
    nxt = at(float(row[level_col]))
    if status == LOSES:
        text = (f"{lead}{on} no {kind.level_noun} tried: even {nxt} ({dcr_text(float(row[dcr_col]))}) keeps only "
                f"{_interval(row)} of the baseline {metric}, below {threshold:g}%. Keep the originals, or try more "
                "faithful levels.")
        outcome, why = "keep originals", f"even {nxt} loses ({_interval(row)})"
    else:
        half = (float(row["rel_high"]) - float(row["rel_low"])) / 2
        if math.isfinite(half):
            text = (f"{lead}{on} {nxt}? This sweep cannot tell. With {_describe_size(row, question)}, a drop "
                    f"smaller than {half:.1f} points of the baseline {metric} is undetectable ({nxt}: "
                    f"{_interval(row)}); telling {threshold:g}% needs an interval narrower than "
                    f"{max(100.0 - threshold, 0.0):.1f} points: {_what_settles(row)}.")
        else:
            text = (f"{lead}{on} {nxt}? This sweep cannot tell: it has no interval "
                    f"(too few test images). Add repeats or test images.")
        text += _later_keeps(cands, statuses, 0, level_col, at)
        outcome, why = "cannot tell", f"{nxt} cannot be told ({_interval(row)})"
    return Verdict(model, metric, question, None, None, float(row["rel"]), float(row["rel_low"]),
                   float(row["rel_high"]), outcome, text, why=why, **common)


def _after_the_run(row: pd.Series, status: str, nxt: str, cands: pd.DataFrame, statuses: list[str], run: int,
                   level_col: str, at) -> str:
    if status == LOSES:
        return f" At {nxt} it drops below: {_interval(row)}."
    return f" At {nxt} the data cannot tell ({_interval(row)})." + _later_keeps(cands, statuses, run, level_col, at)


def _later_keeps(cands: pd.DataFrame, statuses: list[str], gap: int, level_col: str, at) -> str:
    """When a more compressed level keeps past a level that cannot be told: say so, and what settles it."""
    later = [i for i in range(gap + 1, len(statuses)) if statuses[i] == KEEPS]
    if not later:
        return ""
    row = cands.iloc[gap]
    shown = ", ".join(at(float(cands.iloc[i][level_col])) for i in later)
    return (f" {shown[0].upper() + shown[1:]} keep{'s' if len(later) == 1 else ''}, but is not advised past "
            f"{at(float(row[level_col]))}, which cannot be told; to settle it, {_what_settles(row)}.")


def _unmeasured_verdict(g: pd.DataFrame, cands: pd.DataFrame, model: str, metric: str, question: str, lead: str,
                        base_train: float, kind, common: dict) -> Verdict:
    trained = kind.by_fidelity(g["train_level"].unique())
    n, setting = extra_trainings(trained)
    text = (f"{lead} a level? Cannot tell about models trained at a level: the spread between training runs is "
            f"not measured (one run per level). Measure it with `{setting}` ({n} more trainings) or `repeats: 2`.")
    row = cands.iloc[0]
    return Verdict(model, metric, question, None, None, _float(row["rel"]), None, None, "cannot tell", text,
                   why=f"the spread between training runs is not measured ({n} more trainings would measure it)",
                   **common)


def _float(x) -> float | None:
    try:
        x = float(x)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def bestcodec_named(found: list[Verdict], model: str, metric: str, keep: float, confidence: float = 0.95) -> Verdict | None:
    """Across codecs: the advised "store everything" level with the smallest files, or why there is none."""
    matched = [v for v in found if v.model == model and v.metric == metric and v.question == "matched"]
    if len({v.codec for v in matched}) < 2:
        return None
    advised = sorted((v for v in matched if v.outcome == "advised" and v.dcr is not None),
                     key=lambda v: v.dcr, reverse=True)
    others = "; ".join(f"{v.codec} {codec_named(v.codec).describe_level(v.level)}: DCR {v.dcr:.2f}"
                       + (f", {v.bpp:.2f} bpp" if v.bpp else "") for v in advised[1:])
    none = [v.codec for v in matched if v.outcome != "advised"]
    tail = (f" Next: {others}." if others else "") + (f" No level advised: {', '.join(none)}." if none else "")
    if not advised:
        return Verdict(model, metric, "codecs", None, None, None, None, None, "cannot tell",
                       f"Across codecs: no codec keeps ≥ {100 * keep:g}% of its baseline {metric} at any level tried "
                       f"with {with_confidence(confidence)} (see each codec's line).", "", keep=keep, confidence=confidence)
    best = advised[0]
    text = (f"Across codecs: store with {best.codec} at {codec_named(best.codec).describe_level(best.level)} "
            f"(DCR {best.dcr:.2f}" + (f", {best.bpp:.2f} bits per pixel" if best.bpp else "") +
            f"): the smallest files that keep ≥ {100 * keep:g}% of the baseline {metric} with {with_confidence(confidence)} "
            f"(lower bound {percent(best.rel_low)}).{tail}")
    return Verdict(model, metric, "codecs", best.level, best.dcr, best.rel, best.rel_low, best.rel_high, "advised",
                   text, best.codec, best.bpp, keep=keep, confidence=confidence, levels=best.levels)


def saturated(g: pd.DataFrame, keep: float, confidence: float, tolerance: float = 0.05) -> str | None:
    """One line for a metric no level moves, or None. Either every cell is the baseline's value with
    a degenerate interval (within ``tolerance`` points of 100 %: every image right at every level), or
    the baseline's interval reaches the metric's ceiling (1.0) and every cell the three questions
    read keeps ``keep``: top-5 on an easy set, where every sentence would only repeat "keeps"."""
    metric = str(g["metric"].iloc[0])
    low = g["rel_test_low"] if "rel_test_low" in g.columns else g["rel_low"]
    high = g["rel_test_high"] if "rel_test_high" in g.columns else g["rel_high"]
    values = np.concatenate([g["rel"].to_numpy(dtype=float), low.to_numpy(dtype=float), high.to_numpy(dtype=float)])
    if len(g) > 1 and bool(np.all(np.isfinite(values) & (np.abs(values - 100.0) <= tolerance))):
        return (f"{metric} is saturated: every cell equals the baseline (100.0%, with an interval narrower than "
                "0.1 points), so it cannot tell levels apart.")
    base = g[(g["train_level"] == g["baseline_train_level"]) & (g["test_level"] == g["baseline_test_level"])]
    on_questions = ((g["train_level"] == g["test_level"]) | (g["test_level"] == g["baseline_test_level"])
                    | (g["train_level"] == g["baseline_train_level"]))
    others = g[on_questions].drop(base.index)
    if base.empty or others.empty or "ci_high" not in g.columns:
        return None
    lows = others["rel_low"].to_numpy(dtype=float)
    at_ceiling = float(base["ci_high"].iloc[0]) >= 1.0 - 1e-9
    if at_ceiling and bool(np.all(np.isfinite(lows) & (lows >= 100.0 * keep - 1e-9))):
        return (f"{metric} is at its ceiling (baseline {float(base['mean'].iloc[0]):.3f}, its interval reaching 1): "
                f"every level of the three questions keeps ≥ {100 * keep:g}% with {with_confidence(confidence)} (lowest lower bound "
                f"{percent(float(lows.min()))}), so it does not tell levels apart.")
    return None


def verdicts(rel: pd.DataFrame, keep: float = 0.99, headline_only: bool = True,
             order: list[str] | None = None, confidence: float = 0.95) -> list[Verdict]:
    """Every (model, metric) group's verdicts, budget-free groups only, each model's metrics headline first
    (its task's order, as the sweep recorded it: :func:`lossyvision.metrics.headline_first`); with
    ``headline_only`` the headline alone."""
    if rel.empty:
        return []
    rows = rel[rel["budget"] < 0] if "budget" in rel.columns else rel
    if "codec" not in rows.columns:
        rows = rows.assign(codec=DEFAULT_CODEC)
    out: list[Verdict] = []
    for model, mg in rows.groupby("model", sort=False):
        metrics = headline_first(mg)
        for metric in metrics[:1] if headline_only else metrics:
            found: list[Verdict] = []
            line = saturated(mg[mg["metric"] == metric], keep, confidence)
            if line:
                out.append(Verdict(str(model), metric, "saturated", None, None, None, None, None, "saturated", line,
                                   keep=keep, confidence=confidence))
                continue
            groups = list(mg[mg["metric"] == metric].groupby("codec", sort=False))
            if order:  # the sweep file's order of codecs
                groups.sort(key=lambda kg: order.index(kg[0]) if kg[0] in order else len(order))
            for _, g in groups:
                for question, _ in QUESTIONS:
                    v = question_verdict(g, question, keep, confidence)
                    if v is not None:
                        found.append(v)
            best = bestcodec_named(found, str(model), metric, keep, confidence)
            out += ([best] if best is not None else []) + found
    return out


def headline(found: list[Verdict]) -> list[Verdict]:
    """The verdicts of each model's headline metric: its first metric that is not saturated, in the order
    :func:`verdicts` lists them (headline first)."""
    first: dict[str, str] = {}
    for v in found:
        if v.question != "saturated":
            first.setdefault(v.model, v.metric)
    return [v for v in found if first.get(v.model) == v.metric]


def decisions(found: list[Verdict]) -> list[str]:
    """One sentence per model: the most demanding question measured (everything, then training data,
    then test data; across codecs when there are several) for its headline metric."""
    lines = []
    for model in dict.fromkeys(v.model for v in found):
        own = headline([v for v in found if v.model == model])
        if not own:
            continue
        pick = next((v for q in ("codecs", "matched", "train", "test") for v in own if v.question == q), own[0])
        if pick.question == "codecs":
            lines.append(f"{model}: {pick.text}")
            continue
        lead = dict(QUESTIONS)[pick.question]
        at = codec_named(pick.codec).describe_level
        if pick.outcome == "advised":
            bound = f"lower bound {percent(pick.rel_low)} of the baseline {pick.metric}"
            dcr = "" if pick.dcr is None else f" (DCR {pick.dcr:.2f})"
            lines.append(f"{model}: {lead.lower()} {at(pick.level)}{dcr}: it keeps ≥ "
                         f"{100 * pick.keep:g}% with {with_confidence(pick.confidence)} ({bound}).")
        else:
            lines.append(f"{model}: no level to {lead.lower()} with {with_confidence(pick.confidence)}: "
                         f"{pick.why or pick.outcome}.")
    return lines


def verdict_lines(found: list[Verdict]) -> list[str]:
    """Plain-text lines: the decisions first, then one heading per model/metric and one line per question."""
    lines: list[str] = list(decisions(found))
    current = None
    for v in found:
        if v.question == "saturated":
            lines.append(f"{v.model} ({v.metric}): {v.text}")
            current = None
            continue
        if (v.model, v.metric) != current:
            current = (v.model, v.metric)
            lines.append(f"{v.model} ({v.metric}):")
        lines.append(f"  {v.text}")
    return lines


def verdict_records(found: list[Verdict]) -> list[dict]:
    """``verdict.json``: one object per model, metric and question."""
    return [v.record() for v in found]
