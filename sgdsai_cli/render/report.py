"""Reports: every input result (profile, gsnr, plan) as one Markdown page and one self-contained HTML page.

    paths = build_report(["runs/llama.json", "runs/gsnr.json", "runs/plan.json"], "reports/example")
    # -> reports/example/report.md, reports/example/report.html, reports/example/figures/*.png

For each input: its spec, model and environment, its tables and its figures. The tables and figures
come from the modules that own each kind (``render.profile_frames`` and ``plots.profile_plots`` for
profiles, ``gsnr.summary_frames`` and ``gsnr_plots.gsnr_plots`` for g-SNR, ``plan`` for plans); when
one of them cannot be imported or fails on a document, that part is replaced by a note and the rest
of the report is still written. ``report.html`` embeds its figures as base64 PNG and its style
inline: no external asset, it can be mailed or attached to a CI run as one file.

Every input is read and validated before anything is written (``BadInput`` for a missing, corrupt
or wrong-schema file); the two pages are written atomically.
"""

from __future__ import annotations

import base64
import html
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sgdsai_cli.errors import BadInput
from sgdsai_cli.files import prepare_out_dir

REPORT_KINDS = ("profile", "gsnr", "plan", "bench-step")
GSNR_TABLE_ROWS = 40  # per-tensor g-SNR tables longer than this show the largest and smallest only


@dataclass
class Table:
    caption: str
    header: list[str]
    rows: list[list[str]]
    numeric: list[bool] = field(default_factory=list)  # right-align these columns


@dataclass
class Section:
    """One input file: what it is, its settings, tables, figures (PNG paths) and notes."""

    title: str
    anchor: str
    source: str
    kind: str
    facts: list[tuple[str, str]] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    figures: list[tuple[str, Path]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass
class ReportPaths:
    markdown: Path
    html: Path
    figures: list[Path]


# --------------------------------------------------------------------------------------------------
# cells


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if value != value:  # NaN
            return "-"
        return f"{value:,.4g}" if abs(value) < 1000 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, (list, tuple)):
        return ", ".join(_cell(v) for v in value)
    if isinstance(value, dict):
        return ", ".join(f"{k}={_cell(v)}" for k, v in value.items())
    return str(value)


def _frame_table(caption: str, frame, index: bool = False, index_label: str = "") -> Table:
    """A pandas DataFrame -> Table of display strings (NA -> '-')."""
    import pandas as pd

    header = ([index_label or (frame.index.name or "")] if index else []) + [str(c) for c in frame.columns]
    def value(v: Any) -> str:
        if isinstance(v, (list, dict, tuple)):
            return _cell(v)
        if pd.isna(v):
            return "-"
        return _cell(v.item() if hasattr(v, "item") else v)

    rows = [([str(label)] if index else []) + [value(v) for v in row] for label, row in frame.iterrows()]
    numeric = ([False] if index else []) + [pd.api.types.is_numeric_dtype(frame[c]) and not
                                            pd.api.types.is_bool_dtype(frame[c]) for c in frame.columns]
    if index:  # formatted-string tables of numbers (GiB columns) read better right-aligned
        numeric = [False] + [True] * len(frame.columns)
    return Table(caption, header, rows, numeric)


# --------------------------------------------------------------------------------------------------
# sections per kind


def _environment_facts(doc: dict) -> list[tuple[str, str]]:
    env = doc.get("environment") or {}
    dev = env.get("device") or {}
    device = dev.get("type") or "-"
    if dev.get("name") and dev.get("name") != device:
        device += f" ({dev['name']})"
    if dev.get("total_memory_bytes"):
        device += f", {dev['total_memory_bytes'] / 1024**3:,.1f} GiB"
    if dev.get("driver"):
        device += f", driver {dev['driver']}"
    return [("ran on", device), ("torch", _cell(env.get("torch"))), ("python", _cell(env.get("python"))),
            ("platform", _cell(env.get("platform"))),
            ("created", f"{_cell(doc.get('created_utc'))} by sgdsai {_cell(doc.get('tool_version'))}")]


def _spec_facts(doc: dict) -> list[tuple[str, str]]:
    facts = [(str(k), _cell(v)) for k, v in (doc.get("spec") or {}).items()]
    model = doc.get("model") or {}
    if model.get("params") is not None:
        facts.append(("parameters", f"{model['params']:,} in {_cell(model.get('param_tensors'))} tensors"))
    return facts


def _figures(section: Section, draw, doc: dict, fig_dir: Path, what: str) -> None:
    """Call a plotting function, keep its PNGs (SVGs are removed: the report embeds PNG)."""
    fig_dir.mkdir(parents=True, exist_ok=True)
    try:
        paths = draw(doc, fig_dir)
    except Exception as e:  # a figure must not cost the whole report
        section.notes.append(f"{what} figures skipped: {e.__class__.__name__}: {e}")
        return
    for p in paths:
        p = Path(p)
        if p.suffix == ".png":
            section.figures.append((p.stem.replace("_", " ").replace("-", " "), p))
        elif p.suffix == ".svg":
            p.unlink(missing_ok=True)


def _profile_section(section: Section, doc: dict, fig_dir: Path) -> None:
    try:
        from sgdsai_cli.render.profile import notes, profile_frames
    except ImportError as e:
        section.notes.append(f"profile tables skipped: {e}")
    else:
        try:
            frames = profile_frames(doc)
            caption, table = next(iter(frames.items()))
            section.tables.append(_frame_table(caption, table, index=True, index_label="GiB unless marked"))
            section.notes += notes(doc)
        except Exception as e:
            section.notes.append(f"profile tables skipped: {e.__class__.__name__}: {e}")
    try:
        from sgdsai_cli.render.profile_figures import profile_plots
    except ImportError as e:
        section.notes.append(f"profile figures skipped: {e}")
    else:
        _figures(section, profile_plots, doc, fig_dir, "profile")


def _gsnr_section(section: Section, doc: dict, fig_dir: Path) -> None:
    import pandas as pd

    try:
        from sgdsai_cli.analysis.gsnr import summary_frames
    except ImportError as e:
        section.notes.append(f"g-SNR tables skipped: {e}")
    else:
        try:
            frames = summary_frames(doc)
            by_type = frames["by_type"]
            if len(by_type):
                section.tables.append(_frame_table("g-SNR by block type", by_type))
            degenerate = frames["degenerate"]
            section.tables.append(_frame_table(f"Degenerate tensors ({len(degenerate)})", degenerate)
                                  if len(degenerate) else Table("Degenerate tensors: none", [], []))
            tensors = frames["tensors"]
            if len(tensors) > GSNR_TABLE_ROWS and "gsnr_init" in tensors:
                half = GSNR_TABLE_ROWS // 2
                ordered = tensors.sort_values("gsnr_init", ascending=False)
                shown = pd.concat([ordered.head(half), ordered.tail(half)])
                section.tables.append(_frame_table(
                    f"Tensors: the {half} largest and {half} smallest initial g-SNR of {len(tensors)}", shown))
            elif len(tensors):
                section.tables.append(_frame_table("Tensors", tensors))
        except Exception as e:
            section.notes.append(f"g-SNR tables skipped: {e.__class__.__name__}: {e}")
    try:
        from sgdsai_cli.render.gsnr_figures import gsnr_plots
    except ImportError as e:
        section.notes.append(f"g-SNR figures skipped: {e}")
    else:
        _figures(section, gsnr_plots, doc, fig_dir, "g-SNR")


def _plan_section(section: Section, doc: dict, fig_dir: Path) -> None:
    from sgdsai_cli.analysis.plan import plan_plots, plan_table_rows, plan_title

    try:
        header, cells = plan_table_rows(doc)
        section.tables.append(Table(plan_title(doc), header, cells, [False] * 3 + [True] * (len(header) - 3)))
        ctx = (doc.get("assumptions") or {}).get("context_bytes")
        section.notes += [
            "states = params + grads + optimizer state (exact); activ. = activation peak of forward + backward "
            "(fake-tensor estimate); step tmp = optimizer.step() temporaries.",
            "total = params + state + max(forward/backward peak incl. grads, grads + step tmp) + CUDA context "
            "allowance"
            + (f" ({ctx / 1024**3:g} GiB)" if ctx is not None else "") + "; fits = total <= the card's memory.",
            "DDP / ZeRO-1 / ZeRO-2 / ZeRO-3: GPUs needed, each running one micro-batch; '-' = no count fits.",
        ]
    except Exception as e:
        section.notes.append(f"plan table skipped: {e.__class__.__name__}: {e}")
    _figures(section, plan_plots, doc, fig_dir, "plan")


def _generic_section(section: Section, doc: dict) -> None:
    """Kinds without a renderer: every list of records becomes a table, scalars become facts."""
    skip = {"schema_version", "kind", "tool_version", "created_utc", "environment", "spec", "model"}
    for key, value in doc.items():
        if key in skip:
            continue
        if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            header = list(dict.fromkeys(k for v in value for k in v))
            section.tables.append(Table(key, header, [[_cell(v.get(h)) for h in header] for v in value]))
        elif not isinstance(value, (list, dict)):
            section.facts.append((key, _cell(value)))


def _title(doc: dict, kind: str) -> str:
    spec = doc.get("spec") or {}
    model = (doc.get("model") or {}).get("name") or spec.get("model") or "?"
    if kind == "plan":
        return f"Plan: {model}, batch {spec.get('batch_size')} x seq {spec.get('seq_len')}"
    if kind == "gsnr":
        return f"g-SNR: {model}"
    parts = [str(model)]
    if spec.get("precision"):
        parts.append(str(spec["precision"]))
    dev = ((doc.get("environment") or {}).get("device") or {})
    parts.append(str(dev.get("name") or spec.get("device") or "-"))
    return f"{kind.capitalize()}: " + ", ".join(parts)


def build_sections(docs: list[tuple[str, dict]], out_dir: Path) -> list[Section]:
    sections = []
    for i, (source, doc) in enumerate(docs, 1):
        kind = doc["kind"]
        section = Section(title=_title(doc, kind), anchor=f"s{i}-{kind}", source=source, kind=kind)
        section.facts = _spec_facts(doc) + _environment_facts(doc)
        fig_dir = out_dir / "figures" / f"{i:02d}-{kind}"
        if kind == "profile":
            _profile_section(section, doc, fig_dir)
        elif kind == "gsnr":
            _gsnr_section(section, doc, fig_dir)
        elif kind == "plan":
            _plan_section(section, doc, fig_dir)
        else:
            _generic_section(section, doc)
        sections.append(section)
    return sections


# --------------------------------------------------------------------------------------------------
# Markdown


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


# --------------------------------------------------------------------------------------------------
# HTML (self-contained)

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
            f'<p class="muted">Generated {e(generated)} from {len(sections)} result file(s). '
            "Sizes in GiB unless marked.</p>", "<nav><ol>"]
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


# --------------------------------------------------------------------------------------------------
# entry point


def _prepare_out_dir(out_dir: Path) -> None:
    prepare_out_dir(out_dir, "report.html")

def build_report(inputs: list[str | os.PathLike], out_dir: str | os.PathLike) -> ReportPaths:
    """Read every input (all validated before anything is written), write report.md, report.html and
    figures/ under ``out_dir``; return their paths."""
    from sgdsai_cli.files import write_text_atomic
    from sgdsai_cli.results import utc_now
    from sgdsai_cli.schema import load_document

    if not inputs:
        raise BadInput("no result files given")
    docs = [(str(p), load_document(p, kinds=REPORT_KINDS)) for p in inputs]
    out = Path(out_dir)
    _prepare_out_dir(out)
    generated = utc_now()
    sections = build_sections(docs, out)
    md = write_text_atomic(out / "report.md", render_markdown(sections, out, generated))
    page = write_text_atomic(out / "report.html", render_html(sections, generated))
    return ReportPaths(md, page, [p for s in sections for _, p in s.figures])
