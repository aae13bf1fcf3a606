"""A report's pages: its sections as Markdown and as one self-contained HTML page.

    md = render_markdown(sections, out_dir, generated)   # figures linked relative to out_dir
    page = render_html(sections, generated)             # figures embedded as base64 PNG, style inline

A ``Section`` is one input file of the report (what it is, its settings, tables, figures and notes);
a ``Table`` holds display strings only: every number was formatted (``render.format``) before it.
The HTML page has no external asset (no stylesheet, script or image link): it can be mailed or
attached to a CI run as one file.
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Table:
    caption: str
    header: list[str]
    rows: list[list[str]]
    numeric: list[bool] = field(default_factory=list)  # right-align these columns


@dataclass
class Section:
    """One input file: what it is, its settings, tables, figures (caption, PNG path) and notes."""

    title: str
    anchor: str
    source: str
    kind: str
    facts: list[tuple[str, str]] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    figures: list[tuple[str, Path]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _md_escape(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _md_table(table: Table) -> str:
    if not table.header:
        return f"**{table.caption}**\n"
    align = ["---:" if table.numeric and i < len(table.numeric) and table.numeric[i] else "---"
             for i in range(len(table.header))]
    lines = [f"**{_md_escape(table.caption)}**", "",
             "| " + " | ".join(_md_escape(h) for h in table.header) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(_md_escape(c) for c in row) + " |" for row in table.rows]
    return "\n".join(lines) + "\n"


def render_markdown(sections: list[Section], out_dir: Path, generated: str) -> str:
    parts = ["# sgdsai report", "", f"Generated {generated} from {len(sections)} result file(s).", ""]
    parts += [f"{i}. [{s.title}](#{s.anchor})" for i, s in enumerate(sections, 1)] + [""]
    for s in sections:
        parts += [f'<a id="{s.anchor}"></a>', "", f"## {s.title}", "", f"Source: `{s.source}` (kind `{s.kind}`)", ""]
        parts += ["| setting | value |", "| --- | --- |"]
        parts += [f"| {_md_escape(k)} | {_md_escape(v)} |" for k, v in s.facts] + [""]
        for t in s.tables:
            parts += [_md_table(t)]
        for caption, path in s.figures:
            parts += [f"![{caption}]({path.relative_to(out_dir).as_posix()})", ""]
        if s.notes:
            parts += [f"- {_md_escape(n)}" for n in s.notes] + [""]
    return "\n".join(parts).rstrip() + "\n"


CSS = """
:root { --fg: #1f2328; --muted: #59636e; --line: #d1d9e0; --head: #f6f8fa; --accent: #0969da; }
* { box-sizing: border-box; }
body { font: 15px/1.5 -apple-system, BlinkMacSystemFont, "Segoe UI", Helvetica, Arial, sans-serif;
       color: var(--fg); margin: 0; background: #fff; }
main { max-width: 1180px; margin: 0 auto; padding: 24px 32px 64px; }
h1 { font-size: 28px; margin: 0 0 4px; }
h2 { font-size: 21px; margin: 40px 0 8px; padding-top: 16px; border-top: 2px solid var(--line); }
h3 { font-size: 15px; margin: 20px 0 6px; }
.muted { color: var(--muted); }
nav ol { margin: 8px 0 0; padding-left: 22px; }
a { color: var(--accent); text-decoration: none; }
code { font: 13px ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; background: var(--head);
       padding: 1px 4px; border-radius: 4px; }
.scroll { overflow-x: auto; margin: 6px 0 14px; }
table { border-collapse: collapse; font-size: 13px; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid var(--line); padding: 4px 9px; text-align: left; white-space: nowrap; }
th { background: var(--head); font-weight: 600; }
td.num { text-align: right; }
td.yes { color: #1a7f37; font-weight: 600; }
td.no { color: #cf222e; font-weight: 600; }
dl.facts { display: grid; grid-template-columns: repeat(auto-fill, minmax(250px, 1fr)); gap: 0 18px;
           margin: 4px 0 10px; font-size: 13px; }
dl.facts div { display: flex; gap: 8px; padding: 3px 0; border-bottom: 1px solid var(--line); min-width: 0; }
dl.facts dt { color: var(--muted); flex: 0 0 84px; }
dl.facts dd { margin: 0; overflow-wrap: anywhere; }
figure { margin: 14px 0 22px; }
figure img { max-width: 100%; height: auto; border: 1px solid var(--line); border-radius: 6px; }
figcaption { color: var(--muted); font-size: 13px; }
ul.notes { color: var(--muted); font-size: 13px; padding-left: 20px; }
.grid { display: grid; grid-template-columns: minmax(0, 980px); gap: 8px; }
"""


def _html_table(table: Table, css_class: str = "") -> str:
    e = html.escape
    if not table.header:
        return f"<h3>{e(table.caption)}</h3>"
    out = [f"<h3>{e(table.caption)}</h3>", '<div class="scroll">', f'<table class="{css_class}">', "<thead><tr>"]
    out += [f"<th>{e(h)}</th>" for h in table.header]
    out.append("</tr></thead><tbody>")
    for row in table.rows:
        out.append("<tr>")
        for i, c in enumerate(row):
            classes = []
            if table.numeric and i < len(table.numeric) and table.numeric[i]:
                classes.append("num")
            if c in ("yes", "no"):
                classes.append(c)
            out.append(f'<td class="{" ".join(classes)}">{e(c)}</td>' if classes else f"<td>{e(c)}</td>")
        out.append("</tr>")
    out.append("</tbody></table></div>")
    return "".join(out)


def render_html(sections: list[Section], generated: str) -> str:
    e = html.escape
    body = ["<h1>sgdsai report</h1>",
            f'<p class="muted">Generated {e(generated)} from {len(sections)} result file(s).</p>', "<nav><ol>"]
    body += [f'<li><a href="#{s.anchor}">{e(s.title)}</a></li>' for s in sections]
    body.append("</ol></nav>")
    for s in sections:
        body.append(f'<section id="{s.anchor}"><h2>{e(s.title)}</h2>')
        body.append(f'<p class="muted">Source: <code>{e(s.source)}</code> (kind <code>{e(s.kind)}</code>)</p>')
        body.append('<h3>Settings and environment</h3><dl class="facts">'
                    + "".join(f"<div><dt>{e(k)}</dt><dd>{e(v)}</dd></div>" for k, v in s.facts) + "</dl>")
        body += [_html_table(t) for t in s.tables]
        if s.figures:
            body.append('<div class="grid">')
            for caption, path in s.figures:
                data = base64.b64encode(path.read_bytes()).decode("ascii")
                body.append(f'<figure><img alt="{e(caption)}" src="data:image/png;base64,{data}">'
                            f"<figcaption>{e(caption)}</figcaption></figure>")
            body.append("</div>")
        if s.notes:
            body.append('<ul class="notes">' + "".join(f"<li>{e(n)}</li>" for n in s.notes) + "</ul>")
        body.append("</section>")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>sgdsai report</title><style>{CSS}</style></head>\n<body><main>\n"
            + "\n".join(body) + "\n</main></body></html>\n")
