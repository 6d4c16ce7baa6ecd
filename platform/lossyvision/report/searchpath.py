"""The report's section on an adaptive search: which levels it trained, in which order, and why it stopped."""

from __future__ import annotations

import html

from lossyvision.report.html import Section
from lossyvision.sweep.searchgrid import describe_search, read_search


def search_sections(output: str) -> list[Section]:
    """One section when OUTPUT holds ``search.json`` (``lossyvision.sweep.searchgrid``), none otherwise."""
    data = read_search(output)
    if not data:
        return []
    lines = describe_search(data)
    answers = [ln.strip() for ln in lines if ln.strip().startswith(("answer:", "stopped:"))]
    text = (f"{lines[0]} The search explored on one training run per level (repeat 0), then confirmed its candidate "
            "on fresh seeds at the candidate and at the baseline; only the confirmation's interval supports its "
            "answer (docs/reproducibility.md, 'Adaptive search'). The verdict below states the search's answer for this "
            "question; its other questions read the trained cells (the exploration runs included).\n\n" + "\n\n".join(answers))
    return [Section("Adaptive search: the answer on fresh seeds, and its path", text=text,
                    tables_html=[f"<pre>{html.escape(chr(10).join(lines[1:]))}</pre>"])]
