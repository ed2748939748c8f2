"""The report as one self-contained HTML page: inline CSS, figures as PNG files beside it, no script, no network.

A section is built by its own module as a :class:`Section` (title, the lesson it shows, HTML blocks, the numbers
for ``explain.json`` and one line per thing it could not show); this module only lays them out, so a part that
does not apply is a one-line note rather than a hole in the page.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0 auto; max-width: 1100px;
       padding: 1em 1.5em 3em; color: #1d1d1f; line-height: 1.45; }
h1 { margin-bottom: 0.2em; } h2 { margin-top: 2em; border-bottom: 1px solid #ddd; padding-bottom: 0.2em; }
.lesson { color: #555; font-style: italic; margin-top: 0; }
figure { margin: 1em 0; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { color: #555; font-size: 0.9em; }
table { border-collapse: collapse; font-size: 0.88em; margin: 0.8em 0; }
th, td { border: 1px solid #ddd; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
th { background: #f5f5f7; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.note { background: #fff8e1; border-left: 4px solid #f0b400; padding: 0.4em 0.8em; margin: 0.6em 0; }
.tokens { font-family: ui-monospace, monospace; font-size: 0.85em; line-height: 1.9; }
.tokens span { padding: 0.1em 0.15em; border-radius: 3px; }
nav a { margin-right: 0.8em; }
"""


@dataclass
class Section:
    """One part of the report."""

    key: str
    title: str
    lesson: str
    blocks: list[str] = field(default_factory=list)
    data: dict = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    figures: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def figure(self, name: str, caption: str) -> None:
        self.figures.append(name)
        self.blocks.append(f'<figure><img src="{html.escape(name)}" alt="{html.escape(caption)}">'
                           f"<figcaption>{html.escape(caption)}</figcaption></figure>")

    def table(self, headers: list[str], rows: list[list], caption: str | None = None) -> None:
        self.blocks.append(table(headers, rows, caption))

    def text(self, sentence: str) -> None:
        self.blocks.append(f"<p>{html.escape(sentence)}</p>")

    def raw(self, block: str) -> None:
        """Trusted HTML built by the section itself (every user string in it already escaped)."""
        self.blocks.append(block)

    def absent(self, sentence: str) -> None:
        """Something this section cannot show here, and why, in one line."""
        self.missing.append(sentence)


def table(headers: list[str], rows: list[list], caption: str | None = None) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in headers)
    body = "".join("<tr>" + "".join(_cell(v) for v in row) + "</tr>" for row in rows)
    cap = f"<caption>{html.escape(caption)}</caption>" if caption else ""
    return f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _cell(value) -> str:
    if isinstance(value, bool) or value is None:
        return f"<td>{'' if value is None else html.escape(str(value))}</td>"
    if isinstance(value, int):
        return f'<td class="num">{value:,}</td>'
    if isinstance(value, float):
        return f'<td class="num">{value:,.3g}</td>' if abs(value) < 1000 else f'<td class="num">{value:,.0f}</td>'
    return f"<td>{html.escape(str(value))}</td>"


def render(title: str, summary: list[str], sections: list[Section], notes: list[str], path: Path) -> Path:
    """Write the page to ``path``."""
    nav = "".join(f'<a href="#{s.key}">{html.escape(s.title)}</a>' for s in sections)
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             '<meta name="viewport" content="width=device-width, initial-scale=1">',
             f"<style>{CSS}</style></head><body>",
             f"<h1>{html.escape(title)}</h1>",
             "".join(f"<p>{html.escape(line)}</p>" for line in summary),
             "".join(f'<p class="note">{html.escape(line)}</p>' for line in notes),
             f"<nav>{nav}</nav>"]
    for number, section in enumerate(sections, start=1):
        parts.append(f'<section id="{section.key}"><h2>{number}. {html.escape(section.title)}</h2>')
        parts.append(f'<p class="lesson">{html.escape(section.lesson)}</p>')
        parts.extend(section.blocks)
        parts.extend(f'<p class="note">{html.escape(line)}</p>' for line in section.missing)
        parts.append("</section>")
    parts.append("</body></html>")
    path.write_text("\n".join(parts), encoding="utf-8")
    return path
