"""Reports: every input result (profile, gsnr, plan, bench-step) as one Markdown and one self-contained HTML page.

    paths = build_report(["runs/llama.json", "runs/gsnr.json", "runs/plan.json"], "reports/example")
    # -> reports/example/report.md, reports/example/report.html, reports/example/figures/*.png

For each input: its spec, model and environment, its tables and its figures, from the modules that
own each kind: ``render.profile`` (the main table) and ``render.real`` (memory by phase, estimate
against measurement) with ``render.profile_figures`` for profiles, ``render.gsnr`` and
``render.gsnr_figures`` for g-SNR, ``render.plan`` and ``render.plan_figures`` for plans; a parallel
job's profile also gets its figures rank by rank, side by side (``render.report_ranks``). A measured
profile gets its memory-over-time figure from the samples CSVs (``samples-<optimizer>.csv``) found
in the folder of its result file. When a renderer cannot be imported or fails on a document, that
part is replaced by a note and the rest of the report is still written. Every number reaches the
page through ``render.format``. The pages themselves are ``render.report_pages``.

Every input is read and validated before anything is written (``BadInput`` for a missing, corrupt
or wrong-schema file); the two pages are written atomically.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sgdsai_cli.errors import BadInput
from sgdsai_cli.render import format as fmt
from sgdsai_cli.render.report_pages import Section, Table, render_html, render_markdown

REPORT_KINDS = ("profile", "gsnr", "plan", "bench-step")
GSNR_TABLE_ROWS = 40  # per-tensor g-SNR tables longer than this show the largest and smallest only
MEASURED_NOTE = "estimate = the fake-tensor trace of the same step; error = (estimate - measured) / measured"


@dataclass
class ReportPaths:
    markdown: Path
    html: Path
    figures: list[Path]


def _numeric_format(column: str) -> Callable[[Any], str]:
    if column.endswith("_bytes"):
        return fmt.size
    if column.endswith("_ms"):
        return fmt.ms
    if column.endswith("_pct"):
        return lambda v: fmt.pct_value(v, signed=True)
    if column.endswith("rel_change"):
        return fmt.pct
    if column.startswith("ratio") or "over_sqrt" in column:
        return lambda v: fmt.fixed(v, 5)
    if column.startswith(("gsnr", "grad_norm", "loss")):
        return fmt.number
    return fmt.cell


def column_format(column: str) -> Callable[[Any], str]:
    """How a value of a results column reads: sizes with units, counts with separators, g-SNR to 4
    significant digits, its ratio to sqrt(n-1) with 5 decimals, changes as percentages; a value that
    is not a number (a name, a list) as ``format.cell`` has it."""
    numeric = _numeric_format(column)

    def form(value: Any) -> str:
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        return numeric(value) if number else fmt.cell(value)

    return form


# column -> header where the column's own name would not read well
COLUMN_LABELS = {
    "block_type": "block type", "numel": "elements", "degenerate": "degenerate",
    "gsnr_init": "g-SNR at init", "gsnr_min": "g-SNR min", "gsnr_median": "g-SNR median", "gsnr_max": "g-SNR max",
    "gsnr_over_sqrt_n_minus_1": "g-SNR / sqrt(n-1)", "ratio_min": "/sqrt(n-1) min",
    "ratio_median": "/sqrt(n-1) median", "ratio_max": "/sqrt(n-1) max", "grad_norm_init": "grad norm at step 0",
    "max_rel_change": "largest change", "max_rel_change_tensor": "tensor that changed most",
    "sgdsai_action": "what SGD-SaI does",
}


def column_label(column: str) -> str:
    """A results column as a table header: 'gsnr@10' -> 'g-SNR @ step 10', 'peak_bytes' -> 'peak'."""
    if column in COLUMN_LABELS:
        return COLUMN_LABELS[column]
    if column.startswith("gsnr@"):
        return f"g-SNR @ step {column[5:]}"
    for suffix, unit in (("_bytes", ""), ("_ms", " (ms)"), ("_pct", " (%)")):
        if column.endswith(suffix):
            return column[: -len(suffix)].replace("_", " ") + unit
    return column.replace("_", " ")


def _frame_table(caption: str, frame, index: bool = False, index_label: str = "") -> Table:
    """A pandas DataFrame -> Table of display strings (NA -> '-'), each column by ``column_format``."""
    import pandas as pd

    columns = [str(c) for c in frame.columns]
    header = ([index_label or (frame.index.name or "")] if index else []) + [column_label(c) for c in columns]
    formats = [column_format(c) for c in columns]

    def value(v: Any, form: Callable[[Any], str]) -> str:
        if not isinstance(v, (list, dict, tuple)) and pd.isna(v):
            return fmt.MISSING
        return form(v.item() if hasattr(v, "item") else v)

    rows = [([str(label)] if index else []) + [value(v, f) for v, f in zip(row, formats, strict=True)]
            for label, row in frame.iterrows()]
    if index:  # formatted-string tables of numbers (GiB columns) read better right-aligned
        return Table(caption, header, rows, [False] + [True] * len(frame.columns))
    numeric = [pd.api.types.is_numeric_dtype(frame[c]) and not pd.api.types.is_bool_dtype(frame[c])
               for c in frame.columns]
    return Table(caption, header, rows, numeric)


# --------------------------------------------------------------------------------------------------
# facts


def _device_text(doc: dict) -> str:
    dev = (doc.get("environment") or {}).get("device") or {}
    if (doc.get("spec") or {}).get("device") == "meta" or dev.get("type") == "meta":
        return "no device: an estimate (meta and fake tensors)"
    device = dev.get("type") or fmt.MISSING
    if dev.get("name") and dev.get("name") != device:
        device += f" ({dev['name']})"
    if dev.get("total_memory_bytes"):
        device += f", {fmt.size(dev['total_memory_bytes'])}"
    if dev.get("driver"):
        device += f", driver {dev['driver']}"
    return device


def _environment_facts(doc: dict) -> list[tuple[str, str]]:
    env = doc.get("environment") or {}
    return [("ran on", _device_text(doc)), ("torch", fmt.cell(env.get("torch"))),
            ("python", fmt.cell(env.get("python"))), ("platform", fmt.cell(env.get("platform"))),
            ("created", f"{fmt.cell(doc.get('created_utc'))} by sgdsai {fmt.cell(doc.get('tool_version'))}")]


def _spec_facts(doc: dict) -> list[tuple[str, str]]:
    facts = [(column_label(str(k)), "meta (estimate)" if (k, v) == ("device", "meta") else column_format(str(k))(v))
             for k, v in (doc.get("spec") or {}).items()]
    model = doc.get("model") or {}
    if model.get("params") is not None:
        facts.append(("parameters", f"{fmt.count(model['params'])} in {fmt.count(model.get('param_tensors'))} "
                                    "tensors"))
    return facts


def _title(doc: dict, kind: str) -> str:
    spec = doc.get("spec") or {}
    model = (doc.get("model") or {}).get("name") or spec.get("model") or "?"
    if kind == "plan":
        return f"Plan (estimate): {model}, batch {spec.get('batch_size')} x seq {spec.get('seq_len')}"
    if kind == "gsnr":
        return f"g-SNR: {model}"
    parts = [str(model)] + ([str(spec["precision"])] if spec.get("precision") else [])
    if kind == "profile" and spec.get("device") == "meta":
        return "Profile (estimate): " + ", ".join(parts)
    dev = (doc.get("environment") or {}).get("device") or {}
    parts.append(str(dev.get("name") or spec.get("device") or fmt.MISSING))
    return ("Profile (measured): " if kind == "profile" else f"{kind.capitalize()}: ") + ", ".join(parts)


# --------------------------------------------------------------------------------------------------
# sections per kind


def _figures(section: Section, draw: Callable[[dict, Path], list], doc: dict, fig_dir: Path, what: str) -> None:
    """Call a figure writer, keep its PNGs (SVGs are removed: the report embeds PNG)."""
    fig_dir.mkdir(parents=True, exist_ok=True)
    try:
        paths = draw(doc, fig_dir)
    except Exception as e:  # a figure must not cost the whole report
        section.notes.append(f"{what} figures skipped: {e.__class__.__name__}: {e}")
        return
    for p in map(Path, paths):
        if p.suffix == ".png":
            section.figures.append((figure_caption(p.stem), p))
        elif p.suffix == ".svg":
            p.unlink(missing_ok=True)


FIGURE_CAPTIONS = {
    "state-by-key": "Optimizer state per optimizer, stacked by state key",
    "latency": "Latency per phase: p50 of the measured steps, whiskers min..max",
    "memory-over-time": "Memory over time, one panel per optimizer (device memory left, host RSS right)",
    "gsnr_by_type": "g-SNR at initialisation of every tensor, by block type",
    "gsnr_by_layer": "g-SNR against layer index (median per block type)",
    "gsnr_over_steps": "g-SNR at each measured step, and its change from step 0",
    "gsnr_vs_sqrt_n": "g-SNR against sqrt(numel - 1), with its lower bound y = x",
}


def figure_caption(stem: str) -> str:
    """The caption under a figure file's image: 'plan-llama2-7b-bf16' -> 'Plan: memory on one GPU, ...'."""
    if stem.startswith("plan-"):
        return f"Memory on one GPU against each card's memory ({stem[len('plan-'):]})"
    return FIGURE_CAPTIONS.get(stem, stem.replace("_", " ").replace("-", " "))


def _phase_table(doc: dict, rows: list[dict]) -> Table:
    cuda = any(r["reserved_peak_bytes"] is not None for r in rows)
    header = ["optimizer", "phase", "allocated before", "peak", "peak - before"] + (["reserved peak"] if cuda else [])
    cells = []
    for r in rows:
        known = r["peak_bytes"] is not None and r["before_bytes"] is not None
        cells.append([r["optimizer"], r["phase"].replace("_", " "), fmt.size(r["before_bytes"]),
                      fmt.size(r["peak_bytes"]), fmt.size(r["peak_bytes"] - r["before_bytes"] if known else None)]
                     + ([fmt.size(r["reserved_peak_bytes"])] if cuda else []))
    device = (doc.get("spec") or {}).get("device")
    return Table(f"Memory by phase (maxima over the steady steps, {device})", header, cells,
                 [False, False] + [True] * (len(header) - 2))


def _measured_cell(r: dict) -> str:
    measured = fmt.size(r["measured_bytes"])
    if r["status"] == "ok":
        return measured
    return r["status"] + (f" at {measured}" if r["component"] == "peak" and r["measured_bytes"] else "")  # OOM


def _estimate_table(rows: list[dict]) -> Table:
    """One row per component; per optimizer its estimate, the measurement and the error."""
    optimizers = list(dict.fromkeys(r["optimizer"] for r in rows))
    by_component: dict[str, dict[str, dict]] = {}
    for r in rows:
        by_component.setdefault(r["component"], {})[r["optimizer"]] = r
    header = ["component"] + [f"{o} {what}" for o in optimizers for what in ("estimate", "measured", "error")]
    cells = []
    for component, runs in by_component.items():
        line = [component]
        for o in optimizers:
            r = runs.get(o)
            line += ([fmt.size(r["estimate_bytes"]), _measured_cell(r), fmt.pct_value(r["error_pct"], signed=True)]
                     if r else [fmt.MISSING] * 3)
        cells.append(line)
    return Table("Estimate against measurement", header, cells, [False] + [True] * (len(header) - 1))


def _measured_tables(section: Section, doc: dict) -> None:
    """The per-phase memory and estimate-vs-measured tables of a measured profile (none for an estimate)."""
    from sgdsai_cli.render.real import estimate_rows, phase_rows

    phases, estimates = phase_rows(doc), estimate_rows(doc)
    if phases:
        section.tables.append(_phase_table(doc, phases))
    if estimates:
        section.tables.append(_estimate_table(estimates))
        section.notes.append(MEASURED_NOTE)


def _rank_tables(section: Section, doc: dict) -> None:
    """A parallel job's figures rank by rank (``render.report_ranks``): nothing for other profiles."""
    from sgdsai_cli.render.report_ranks import rank_notes, rank_tables

    section.tables += rank_tables(doc)
    section.notes += rank_notes(doc)


def _profile_section(section: Section, doc: dict, fig_dir: Path) -> None:
    try:
        from sgdsai_cli.render.profile import notes, profile_frames
    except ImportError as e:
        section.notes.append(f"profile tables skipped: {e}")
    else:
        try:
            caption, table = next(iter(profile_frames(doc).items()))
            section.tables.append(_frame_table(caption, table, index=True, index_label="GiB unless marked"))
            _rank_tables(section, doc)
            _measured_tables(section, doc)
            section.notes += notes(doc)
        except Exception as e:
            section.notes.append(f"profile tables skipped: {e.__class__.__name__}: {e}")
    try:
        from sgdsai_cli.render.profile_figures import samples_beside, write_profile_figures
    except ImportError as e:
        section.notes.append(f"profile figures skipped: {e}")
        return
    folder = Path(section.source).parent

    def draw(d: dict, out: Path) -> list[Path]:
        return write_profile_figures(d, out, samples_beside(d, folder))

    _figures(section, draw, doc, fig_dir, "profile")
    if (doc.get("spec") or {}).get("device") not in (None, "meta") and not samples_beside(doc, folder):
        section.notes.append(f"no memory-over-time figure: no samples-<optimizer>.csv beside {section.source}")


def _gsnr_tables(section: Section, doc: dict) -> None:
    import pandas as pd

    from sgdsai_cli.render.gsnr import summary_frames

    frames = summary_frames(doc)
    if len(frames["by_type"]):
        section.tables.append(_frame_table("g-SNR by block type", frames["by_type"]))
    degenerate = frames["degenerate"]
    section.tables.append(_frame_table(f"Degenerate tensors ({len(degenerate)})", degenerate)
                          if len(degenerate) else Table("Degenerate tensors: none", [], []))
    tensors = frames["tensors"]
    if len(tensors) > GSNR_TABLE_ROWS and "gsnr_init" in tensors:
        half = GSNR_TABLE_ROWS // 2
        ordered = tensors.sort_values("gsnr_init", ascending=False)
        section.tables.append(_frame_table(
            f"Tensors: the {half} largest and {half} smallest initial g-SNR of {len(tensors)}",
            pd.concat([ordered.head(half), ordered.tail(half)])))
    elif len(tensors):
        section.tables.append(_frame_table("Tensors", tensors))


def _gsnr_section(section: Section, doc: dict, fig_dir: Path) -> None:
    try:
        _gsnr_tables(section, doc)
    except ImportError as e:
        section.notes.append(f"g-SNR tables skipped: {e}")
    except Exception as e:
        section.notes.append(f"g-SNR tables skipped: {e.__class__.__name__}: {e}")
    try:
        from sgdsai_cli.render.gsnr_figures import gsnr_plots
    except ImportError as e:
        section.notes.append(f"g-SNR figures skipped: {e}")
    else:
        _figures(section, gsnr_plots, doc, fig_dir, "g-SNR")


def _plan_section(section: Section, doc: dict, fig_dir: Path) -> None:
    from sgdsai_cli.render.plan import NOTES, plan_table_rows, plan_title
    from sgdsai_cli.render.plan_figures import write_plan_figures

    try:
        header, cells = plan_table_rows(doc)
        section.tables.append(Table(plan_title(doc), header, cells, [False] * 3 + [True] * (len(header) - 3)))
        section.notes += [line for line in NOTES.split("\n") if line]
    except Exception as e:
        section.notes.append(f"plan table skipped: {e.__class__.__name__}: {e}")
    _figures(section, write_plan_figures, doc, fig_dir, "plan")


def _generic_section(section: Section, doc: dict) -> None:
    """Kinds without a renderer: every list of records becomes a table, scalars become facts."""
    skip = {"schema_version", "kind", "tool_version", "created_utc", "environment", "spec", "model"}
    for key, value in doc.items():
        if key in skip:
            continue
        if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            header = list(dict.fromkeys(k for v in value for k in v))
            section.tables.append(Table(column_label(key), [column_label(h) for h in header],
                                        [[column_format(h)(v.get(h)) for h in header] for v in value]))
        elif not isinstance(value, (list, dict)):
            section.facts.append((column_label(key), column_format(key)(value)))


def build_sections(docs: list[tuple[str, dict]], out_dir: Path) -> list[Section]:
    """One Section per (source path, document), its figures written under ``out_dir/figures/``."""
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


def build_report(inputs: list[str | os.PathLike], out_dir: str | os.PathLike) -> ReportPaths:
    """Read every input (all validated before anything is written), write report.md, report.html and
    figures/ under ``out_dir``; return their paths."""
    from sgdsai_cli.files import prepare_out_dir, write_text_atomic
    from sgdsai_cli.results import utc_now
    from sgdsai_cli.schema import load_document

    if not inputs:
        raise BadInput("no result files given")
    docs = [(str(p), load_document(p, kinds=REPORT_KINDS)) for p in inputs]
    out = Path(out_dir)
    prepare_out_dir(out, "report.html")
    generated = utc_now()
    sections = build_sections(docs, out)
    md = write_text_atomic(out / "report.md", render_markdown(sections, out, generated))
    page = write_text_atomic(out / "report.html", render_html(sections, generated))
    return ReportPaths(md, page, [p for s in sections for _, p in s.figures])
