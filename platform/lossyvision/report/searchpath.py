"""An adaptive search in the report: its answer in place of the grid's verdict of its question, and a section on
its path (which levels it trained, in which order, and why it stopped)."""

from __future__ import annotations

import html

import pandas as pd

from lossyvision.codecs import DEFAULT_CODEC
from lossyvision.report.html import Section
from lossyvision.report.verdict import QUESTIONS, Verdict, codec_named, dcr_text, headline, percent, with_confidence
from lossyvision.sweep.searchgrid import describe_search, read_search


def search_sections(output: str) -> list[Section]:
    """One section when OUTPUT holds ``search.json`` (``lossyvision.sweep.searchgrid``), none otherwise."""
    data = read_search(output)
    if not data:
        return []
    lines = describe_search(data)
    answers = [ln.strip() for ln in lines if ln.strip().startswith(("answer:", "stopped:"))]
    text = (f"{lines[0]} The search explored on one training run per level (repeat 0), then confirmed its candidate "
            "on fresh seeds at the candidate and at the baseline, their test images paired as the grid's cells are; "
            "only the confirmation's interval supports its answer (docs/reproducibility.md, 'Adaptive search'). The verdict below states the search's answer for this "
            "question; its other questions read the trained cells (the exploration runs included).\n\n" + "\n\n".join(answers))
    return [Section("Adaptive search: the answer on fresh seeds, and its path", text=text,
                    tables_html=[f"<pre>{html.escape(chr(10).join(lines[1:]))}</pre>"])]


def with_search(found: list[Verdict], search: dict | None, rel: pd.DataFrame | None = None) -> list[Verdict]:
    """An adaptive search's answer (``OUTPUT/search.json``) in place of the grid's verdict of its question.

    The grid's verdict would read the search's one-run exploration cells (and has no cells at levels
    the search skipped); the search's claim rests on its fresh seeds alone, so it is the answer. Its
    DCR is the mean of ``rel``'s cells trained at the advised level (None without them).
    """
    if not search:
        return found
    question = str(search.get("question", ""))
    lead = dict(QUESTIONS).get(question)
    if lead is None:
        return found
    first = {v.model: v.metric for v in headline(found)}
    out = list(found)
    for s in search.get("searches", []):
        model, codec = str(s.get("model")), str(s.get("codec", DEFAULT_CODEC))
        idx = next((i for i, v in enumerate(out) if v.model == model and v.codec == codec
                    and v.question == question and v.metric == first.get(model)), None)
        if idx is None or not s.get("done"):
            continue
        old, claim = out[idx], s.get("claim") or {}
        at = codec_named(codec).describe_level
        seeds = f"{claim.get('repeats', search.get('repeats'))} fresh seeds"
        if s.get("advised") is not None and claim:
            level = float(s["advised"])
            dcr = _train_dcr(rel, model, codec, level)
            size = f", {dcr_text(dcr)}" if dcr is not None else ""
            text = (f"{lead} {at(level)} (adaptive search, confirmed on {seeds}{size}): models trained there keep ≥ "
                    f"{100 * old.keep:g}% of the baseline {old.metric} with {with_confidence(old.confidence)} "
                    f"(lower bound {percent(float(claim['low']))}).")
            out[idx] = Verdict(model, old.metric, question, level, dcr,
                               float(claim["rel"]), float(claim["low"]),
                               float(claim["high"]), "advised", text, codec, keep=old.keep,
                               confidence=old.confidence, levels=_searched_levels(old.levels, claim, level))
        else:
            reason = str(s.get("reason") or s.get("outcome") or "no level confirmed")
            text = f"{lead} a level? The adaptive search advises none: {reason}."
            out[idx] = Verdict(model, old.metric, question, None, None, None, None, None, "cannot tell", text, codec,
                               keep=old.keep, confidence=old.confidence,
                               levels=_searched_levels(old.levels, claim, claim.get("level")),
                               why=f"the adaptive search advises none ({reason})")
        # The search judged the headline metric alone; the grid's verdict of another metric would read its
        # exploration cells as a grid's and call the repeats it never ran unmeasured.
        for i, v in enumerate(out):
            if v.model == model and v.codec == codec and v.question == question and v.metric != old.metric:
                why = f"the adaptive search judged {old.metric} only"
                out[i] = Verdict(model, v.metric, question, None, None, None, None, None, "cannot tell",
                                 f"{lead} a level? Not asked: {why} (its cells of {v.metric} are in the tables).",
                                 codec, keep=v.keep, confidence=v.confidence, levels=v.levels, why=why)
    return out


def _searched_levels(levels: tuple, claim: dict, confirmed: float | None) -> tuple:
    """Each level's status as the search judged it: the confirmed level's from its fresh seeds, every other
    level "cannot tell" (the search claims nothing there; its cells, one exploration run, keep their value)."""
    out = []
    for rec in levels or ():
        if confirmed is not None and claim and float(rec["level"]) == float(confirmed):
            status = str(claim.get("status", "keeps"))
            out.append({**rec, "status": status, "rel": float(claim["rel"]), "rel_low": float(claim["low"]),
                        "rel_high": float(claim["high"])})
        else:
            out.append({**rec, "status": "cannot tell", "rel_low": None, "rel_high": None})
    return tuple(out)


def _train_dcr(rel: pd.DataFrame | None, model: str, codec: str, level: float) -> float | None:
    """The mean training DCR of ``rel``'s cells of ``model`` trained at ``level`` of ``codec``."""
    if rel is None or rel.empty or "train_dcr" not in rel:
        return None
    rows = rel[(rel["model"] == model) & (rel["train_level"] == level)]
    if "codec" in rows:
        rows = rows[rows["codec"] == codec]
    dcr = pd.to_numeric(rows["train_dcr"], errors="coerce").dropna()
    return float(dcr.mean()) if len(dcr) else None
