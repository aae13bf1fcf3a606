"""Renderers for profile documents: rich tables, pandas frames, Markdown and CSV.

All of them take the JSON-ready document (``sizing.profile_meta`` or ``realrun.profile_real``, or
a file read back with ``results.load_document``) and show what is present: meta and fake
documents have state, activations and an estimated peak; measured ones add allocator and NVML
peaks and latencies, and may have ``oom``/``error`` rows. A value that is not there is ``-``.

Layout: one column per optimizer, one row per figure (GiB with two decimals), so that a few
optimizers read side by side within 100 columns. The "vs AdamW" rows compare with the run named
``adamw`` (else the first ``adamw-*`` run). "fits" rows mark the common cards of
``gpus.FIT_GPUS`` against the estimated (or measured) peak.
"""

from __future__ import annotations

from typing import Any

from sgdsai_cli.analysis.gpus import FIT_GPUS, GPUS
from sgdsai_cli.units import GiB

NOTE_META = ("Params, grads and state are exact from the meta device (optimizer.state after a real step()); "
             "activations, transient and peak from a fake-tensor allocation trace. A real CUDA run adds the "
             "CUDA context (~0.3-0.6 GiB) and allocator rounding.")
NOTE_MEASURED = ("Measured on {device}: allocated = live tensors, reserved = what the caching allocator holds, "
                 "NVML = the whole process (CUDA context included); estimated = the fake-tensor trace.")


# ----------------------------------------------------------------------------------------------
# the numbers behind every renderer


def _mem(run: dict) -> dict:
    return run.get("memory") or {}


def state_keys(doc: dict) -> list[str]:
    """State keys over all runs, in first-seen order."""
    keys: list[str] = []
    for run in doc.get("runs", []):
        for k in (_mem(run).get("state_bytes_by_key") or {}):
            if k not in keys:
                keys.append(k)
    return keys


def model_states_bytes(run: dict) -> int | None:
    m = _mem(run)
    parts = [m.get("param_bytes"), m.get("grad_bytes"), m.get("state_bytes")]
    return None if any(p is None for p in parts) else sum(parts)


def peak_bytes(run: dict) -> tuple[int | None, str | None]:
    """The run's peak for "does it fit?": measured (NVML, reserved, allocated) first, else estimated.

    Returns (bytes, what it is) or (None, None).
    """
    m = _mem(run)
    for key, what in (("nvml_used_peak_bytes", "NVML used"), ("peak_reserved_bytes", "reserved"),
                      ("peak_allocated_bytes", "allocated"), ("estimated_peak_bytes", "estimated")):
        if m.get(key) is not None:
            return m[key], what
    states = model_states_bytes(run)
    return (states, "model states") if states is not None else (None, None)


def adamw_run(doc: dict) -> dict | None:
    """The AdamW run savings are measured against: ``adamw``, else the first ``adamw-*``."""
    runs = [r for r in doc.get("runs", []) if r.get("status") == "ok" and r.get("memory")]
    for run in runs:
        if run.get("optimizer") == "adamw":
            return run
    return next((r for r in runs if str(r.get("optimizer", "")).startswith("adamw")), None)


def _saving(base: int | None, value: int | None) -> tuple[int | None, float | None]:
    if base is None or value is None:
        return None, None
    diff = base - value
    return diff, (100.0 * diff / base if base else None)


def summary_rows(doc: dict) -> list[dict[str, Any]]:
    """One dict per run with every figure the renderers show (bytes, ms, bools; None when absent)."""
    base = adamw_run(doc)
    base_state = _mem(base).get("state_bytes") if base else None
    base_peak = peak_bytes(base)[0] if base else None
    rows = []
    for run in doc.get("runs", []):
        m = _mem(run)
        peak, peak_what = peak_bytes(run) if run.get("status") == "ok" else (None, None)
        state_saving, state_pct = _saving(base_state, m.get("state_bytes"))
        peak_saving, peak_pct = _saving(base_peak, peak)
        lat = run.get("latency_ms") or {}
        step = lat.get("optimizer_step") or {}
        row = {
            "optimizer": run.get("optimizer"),
            "impl": run.get("impl"),
            "status": run.get("status"),
            "param_bytes": m.get("param_bytes"),
            "grad_bytes": m.get("grad_bytes"),
            "state_bytes": m.get("state_bytes"),
            **{f"state_bytes[{k}]": (m.get("state_bytes_by_key") or {}).get(k) for k in state_keys(doc)},
            "step_transient_bytes": m.get("step_transient_bytes"),
            "activation_peak_bytes": m.get("activation_peak_bytes"),
            "estimated_peak_bytes": m.get("estimated_peak_bytes"),
            "peak_allocated_bytes": m.get("peak_allocated_bytes"),
            "peak_reserved_bytes": m.get("peak_reserved_bytes"),
            "nvml_used_peak_bytes": m.get("nvml_used_peak_bytes"),
            "peak_bytes": peak,
            "peak_source": peak_what,
            "state_saving_vs_adamw_bytes": None if run is base else state_saving,
            "state_saving_vs_adamw_pct": None if run is base else state_pct,
            "peak_saving_vs_adamw_bytes": None if run is base else peak_saving,
            "peak_saving_vs_adamw_pct": None if run is base else peak_pct,
            "step_p50_ms": step.get("p50"),
            "step_p90_ms": step.get("p90"),
            "first_step_ms": lat.get("first_step"),
            "forward_p50_ms": (lat.get("forward") or {}).get("p50"),
            "backward_p50_ms": (lat.get("backward") or {}).get("p50"),
            **{f"fits[{name}]": (None if peak is None else peak <= GPUS[name].memory_bytes) for name in FIT_GPUS},
            "error": run.get("error"),
            "note": run.get("note"),
        }
        rows.append(row)
    return rows


# Row label, summary key, kind: "gib", "saving", "pct", "ms", "fit", "text"
def _table_spec(doc: dict) -> list[tuple[str, str, str]]:
    rows = summary_rows(doc)

    def present(key: str) -> bool:
        return any(r.get(key) is not None for r in rows)

    spec: list[tuple[str, str, str]] = [("impl", "impl", "text"), ("status", "status", "text"),
                                         ("parameters", "param_bytes", "gib"), ("gradients", "grad_bytes", "gib"),
                                         ("state", "state_bytes", "gib")]
    spec += [(f"  state[{k}]", f"state_bytes[{k}]", "gib") for k in state_keys(doc)]
    for label, key in (("step transient", "step_transient_bytes"), ("activations (peak)", "activation_peak_bytes"),
                       ("estimated peak", "estimated_peak_bytes"), ("peak allocated", "peak_allocated_bytes"),
                       ("peak reserved", "peak_reserved_bytes"), ("NVML used peak", "nvml_used_peak_bytes")):
        if present(key) or key == "estimated_peak_bytes" and not present("peak_allocated_bytes"):
            spec.append((label, key, "gib"))
    if adamw_run(doc) is not None:
        spec += [("state saving vs AdamW", "state_saving_vs_adamw_bytes", "saving"),
                 ("peak saving vs AdamW", "peak_saving_vs_adamw_bytes", "saving")]
    for label, key in (("step p50 (ms)", "step_p50_ms"), ("step p90 (ms)", "step_p90_ms"),
                       ("first step (ms)", "first_step_ms"), ("forward p50 (ms)", "forward_p50_ms"),
                       ("backward p50 (ms)", "backward_p50_ms")):
        if present(key):
            spec.append((label, key, "ms"))
    for name in FIT_GPUS:
        gpu = GPUS[name]
        spec.append((f"fits {gpu.label} ({gpu.memory_bytes / GiB:.1f})", f"fits[{name}]", "fit"))
    return spec


def _fit_basis(doc: dict) -> str:
    sources = sorted({r["peak_source"] for r in summary_rows(doc) if r["peak_source"]})
    return " / ".join(sources) if sources else "peak"


def gib_cell(n_bytes: int | None) -> str:
    """Bytes as GiB with 2 decimals ('25.10'); sizes too small for that in B, KiB or MiB; '-' for None."""
    if n_bytes is None:
        return "-"
    if 0 < n_bytes < 0.005 * GiB:
        if n_bytes < 1024:
            return f"{n_bytes:,} B"
        return f"{n_bytes / 1024:,.1f} KiB" if n_bytes < 1024**2 else f"{n_bytes / 1024**2:,.1f} MiB"
    return f"{n_bytes / GiB:,.2f}"


def _fmt(row: dict, key: str, kind: str) -> str:
    value = row.get(key)
    if kind == "saving":
        pct = row.get(key.replace("_bytes", "_pct"))
        if value is None:
            return "-"
        size = gib_cell(value) if value >= 0 else "-" + gib_cell(-value)
        return f"{size} ({pct:.1f}%)" if pct is not None else size
    if value is None:
        return "-"
    if kind == "gib":
        return gib_cell(value)
    if kind == "ms":
        return f"{value:,.3f}" if value < 10 else f"{value:,.1f}"
    if kind == "fit":
        return "yes" if value else "no"
    return str(value)


def _title(doc: dict) -> str:
    spec = doc.get("spec") or {}
    model = doc.get("model") or {}
    dev = ((doc.get("environment") or {}).get("device") or {})
    device = dev.get("name") or spec.get("device") or "-"
    shape = f"batch {spec.get('batch_size', '-')}"
    if model.get("family") != "vit":  # ViT runs at its configured image size: no sequence length
        shape += f" x seq {spec.get('seq_len', '-')}"
    parts = [str(model.get("name") or spec.get("model") or "-"), str(spec.get("precision") or "-"), str(device),
             shape]
    return " | ".join(parts)


def _subtitle(doc: dict) -> str:
    model = doc.get("model") or {}
    if model.get("params") is None:
        return ""
    return f"{model['params']:,} parameters in {model.get('param_tensors', '-')} tensors; GiB unless marked"


def _source(doc: dict) -> str:
    sources = {_mem(r).get("source") for r in doc.get("runs", []) if _mem(r)}
    return "measured" if "measured" in sources else "meta"


def notes(doc: dict) -> list[str]:
    """The one-line explanation plus per-run notes and errors."""
    device = ((doc.get("environment") or {}).get("device") or {}).get("name") or "the device"
    lines = [NOTE_MEASURED.format(device=device) if _source(doc) == "measured" else NOTE_META,
             f"fits: {_fit_basis(doc)} peak <= the card's total memory (GiB in brackets)."]
    for run in doc.get("runs", []):
        if run.get("error"):
            lines.append(f"{run.get('optimizer')}: {run.get('status')}: {run['error']}")
        if run.get("note"):
            lines.append(f"{run.get('optimizer')}: {run['note']}")
    return lines


# ----------------------------------------------------------------------------------------------
# renderers


def profile_frames(doc: dict) -> dict[str, Any]:
    """Title -> pandas DataFrame: the memory/latency table (metrics x optimizers, formatted strings
    for display) and the per-run numbers (bytes, one row per optimizer)."""
    import pandas as pd

    rows = summary_rows(doc)
    names = [str(r["optimizer"]) for r in rows]
    spec = _table_spec(doc)
    table = pd.DataFrame([[_fmt(r, key, kind) for r in rows] for _, key, kind in spec],
                         index=[label.strip() for label, _, _ in spec], columns=names)
    table.index.name = "GiB unless marked"
    numbers = pd.DataFrame(rows)
    return {f"Memory per optimizer: {_title(doc)}": table, "Runs (bytes)": numbers}


def profile_renderables(doc: dict) -> list:
    """Rich renderables: the title line, the table (a column per optimizer), the model line and the notes."""
    from rich.table import Table
    from rich.text import Text

    rows = summary_rows(doc)
    table = Table(show_lines=False)
    table.add_column("", style="bold", no_wrap=True)
    for r in rows:
        table.add_column(str(r["optimizer"]), justify="right", no_wrap=True)
    for label, key, kind in _table_spec(doc):
        cells = []
        for r in rows:
            text = _fmt(r, key, kind)
            style = {"yes": "green", "no": "red"}.get(text, "") if kind == "fit" else ""
            if kind == "text" and key == "status" and text != "ok":
                style = "red"
            cells.append(Text(text, style=style))
        table.add_row(Text(label), *cells)
    title = Text(_title(doc), style="bold")  # outside the table: a title would wrap at the table's width
    sub = [Text(_subtitle(doc))] if _subtitle(doc) else []
    return [title, table] + sub + [Text(line, style="dim") for line in notes(doc)]


def _markdown_table(frame, index_label: str = "") -> str:
    header = [index_label] + [str(c) for c in frame.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * len(frame.columns)) + "|"]
    for label, row in frame.iterrows():
        lines.append("| " + " | ".join([str(label)] + [str(v).replace("|", "\\|") for v in row]) + " |")
    return "\n".join(lines)


def profile_markdown(doc: dict) -> str:
    """A Markdown section: title, parameter count, the table and the notes."""
    table = next(iter(profile_frames(doc).values()))
    parts = [f"### {_title(doc)}", ""]
    if _subtitle(doc):
        parts += [_subtitle(doc), ""]
    parts += [_markdown_table(table, "GiB unless marked"), ""]
    parts += [f"- {line}" for line in notes(doc)]
    return "\n".join(parts) + "\n"


def profile_csv(doc: dict) -> str:
    """One CSV row per run: spec, model and every figure in bytes / ms (empty when absent)."""
    import pandas as pd

    frame = pd.DataFrame(summary_rows(doc))
    spec = doc.get("spec") or {}
    model = doc.get("model") or {}
    front = {"model": model.get("name") or spec.get("model"), "precision": spec.get("precision"),
             "device": spec.get("device"), "batch_size": spec.get("batch_size"), "seq_len": spec.get("seq_len"),
             "params": model.get("params")}
    for i, (k, v) in enumerate(front.items()):
        frame.insert(i, k, v)
    for col in frame.columns:  # integers stay integers even with missing values
        if col.endswith("_bytes") or col.startswith("state_bytes["):
            frame[col] = frame[col].astype("Int64")
    return frame.to_csv(index=False)
