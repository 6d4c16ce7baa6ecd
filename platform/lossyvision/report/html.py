"""One self-contained HTML page: figures inlined as base64 PNG, tables as HTML, no external resources."""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass, field
from html import escape



def slug(text: str) -> str:
    """A file-name-safe form of ``text`` (a figure's name from a model or metric)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(text)).strip("_") or "x"

@dataclass
class Figure:
    """A PNG figure: ``name`` is its file name under ``OUTPUT/report/``."""

    name: str
    png: bytes
    caption: str = ""


@dataclass
class Section:
    title: str
    text: str = ""                                  # plain text, escaped
    figures: list[Figure] = field(default_factory=list)
    tables_html: list[str] = field(default_factory=list)   # trusted HTML built by this package


_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto; max-width: 1100px;
       color: #222; line-height: 1.45; padding: 0 1rem; }
h1 { font-size: 1.6rem; } h2 { font-size: 1.25rem; border-bottom: 1px solid #ddd; padding-bottom: .2rem;
     margin-top: 2.2rem; }
figure { margin: 1rem 0; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { font-size: .85rem; color: #555; }
table { border-collapse: collapse; font-size: .82rem; margin: .8rem 0; }
th, td { border: 1px solid #ccc; padding: .2rem .45rem; text-align: right; }
th { background: #f4f4f4; } td:first-child, td:nth-child(2) { text-align: left; }
.note { color: #555; font-size: .9rem; } nav a { margin-right: .8rem; }
"""


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _anchor(i: int) -> str:
    return f"s{i}"


def render_html(title: str, sections: list[Section], *, subtitle: str = "") -> str:
    """The whole page as a string (UTF-8, no scripts, no external links)."""
    parts = [
        "<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{escape(title)}</title>", f"<style>{_STYLE}</style>", "</head>", "<body>",
        f"<h1>{escape(title)}</h1>",
    ]
    if subtitle:
        parts.append(f'<p class="note">{escape(subtitle)}</p>')
    parts.append("<nav>" + "".join(f'<a href="#{_anchor(i)}">{escape(s.title)}</a>'
                                   for i, s in enumerate(sections)) + "</nav>")
    for i, s in enumerate(sections):
        parts.append(f'<section id="{_anchor(i)}"><h2>{escape(s.title)}</h2>')
        if s.text:
            parts.extend(f"<p>{escape(p)}</p>" for p in s.text.split("\n\n"))
        for t in s.tables_html:
            parts.append(t)
        for f in s.figures:
            alt = escape(f.caption or f.name)
            parts.append(f'<figure><img src="{data_uri(f.png)}" alt="{alt}">'
                         + (f"<figcaption>{escape(f.caption)} ({escape(f.name)})</figcaption>" if f.caption else "")
                         + "</figure>")
        parts.append("</section>")
    parts += ["</body>", "</html>"]
    return "\n".join(parts)
