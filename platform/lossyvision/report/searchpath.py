"""The report's section on an adaptive search: which levels it trained, in which order, and why it stopped."""

from __future__ import annotations

import html

from lossyvision.report.html import Section


def search_sections(output: str) -> list[Section]:
    """One section when OUTPUT holds ``search.json`` (``lossyvision.sweep.searchgrid``), none otherwise."""
    from lossyvision.sweep.searchgrid import describe_search, read_search

    data = read_search(output)
    if not data:
        return []
    lines = describe_search(data)
    text = (f"{lines[0]} The search explored on one training run per level (repeat 0), then confirmed its candidate "
            "on fresh seeds at the candidate and at the baseline; only the confirmation's interval supports the "
            "advice (docs/reproducibility.md, 'Adaptive search'). Levels it did not train have no cells.")
    return [Section("Adaptive search: its path", text=text,
                    tables_html=[f"<pre>{html.escape(chr(10).join(lines[1:]))}</pre>"])]
