"""Profile results as a terminal table, pandas frames, Markdown and CSV.

Every renderer takes a ``ProfileResult`` (or its document dict, read back from a file) and shows
what is present: meta sizing has state, activations and an estimated peak; real runs add allocator
and NVML peaks and latencies, and may have ``oom``/``error`` rows. A value that is not there is "-".

Layout: one column per optimizer, one row per figure (GiB with two decimals), so that a few
optimizers read side by side. The "vs AdamW" rows compare with the run named ``adamw`` (else the
first ``adamw-*`` run): torch's default path (foreach on CUDA, the loop on the CPU), whose step makes
a parameter-sized ``sqrt(exp_avg_sq)`` temporary; when an ``adamw-fused`` run is there too (the
default list has it), the peak saving is also shown against fused AdamW, which makes no such
temporary and is what a memory-short user runs (the row label names each baseline's impl).
"fits" rows mark the cards ``plan`` plans for (``gpus.FIT_GPUS``) by the planner's own rule
(``gpus.fits``): NVML's used peak of a real run as it is (it holds the context),
else the reserved peak (measured, or the allocator model's prediction) or the allocated one, plus
the card's context allowance.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sgdsai_cli.analysis.gpus import FIT_GPUS, GPUS, fits
from sgdsai_cli.render import format as fmt
from sgdsai_cli.results import MemoryResult, ProfileResult, RunResult

NOTE_META = ("Params, grads and state are exact from the meta device (optimizer.state after a real step()); "
             "activations, transient and peak are an estimate from a fake-tensor allocation trace. A real CUDA "
             "run adds the caching allocator's rounding (the predicted reserved peak) and the CUDA context.")
NOTE_MEASURED = ("Measured on {device}: allocated = live tensors, reserved = what the caching allocator holds, "
                 "NVML = the whole process (CUDA context included); estimated = the fake-tensor trace.")
# the peak a "fits" row is judged by: the first of these a run has
PEAK_ORDER = (("nvml_used_peak_bytes", "NVML used"), ("peak_reserved_bytes", "reserved"),
              ("peak_allocated_bytes", "allocated"), ("estimated_peak_bytes", "estimated"))
OPTIONAL_ROWS = (("step transient", "step_transient_bytes"), ("activations (peak)", "activation_peak_bytes"),
                 ("estimated peak", "estimated_peak_bytes"), ("peak allocated", "peak_allocated_bytes"),
                 ("peak reserved", "peak_reserved_bytes"), ("NVML used peak", "nvml_used_peak_bytes"))
LATENCY_ROWS = (("step p50 (ms)", "step_p50_ms"), ("step p90 (ms)", "step_p90_ms"),
                ("first step (ms)", "first_step_ms"), ("forward p50 (ms)", "forward_p50_ms"),
                ("backward p50 (ms)", "backward_p50_ms"))


def as_result(doc: ProfileResult | dict) -> ProfileResult:
    return doc if isinstance(doc, ProfileResult) else ProfileResult.from_dict(doc)


def state_keys(result: ProfileResult) -> list[str]:
    """State keys over all runs, in first-seen order."""
    keys: list[str] = []
    for run in result.runs:
        keys += [k for k in (run.memory.state_bytes_by_key if run.memory else {}) if k not in keys]
    return keys


def model_states_bytes(memory: MemoryResult | None) -> int | None:
    parts = [memory.param_bytes, memory.grad_bytes, memory.state_bytes] if memory else [None]
    return None if any(p is None for p in parts) else sum(parts)


def peak_bytes(run: RunResult | None) -> tuple[int | None, str | None]:
    """The run's peak for "does it fit?": measured (NVML, reserved, allocated) first, else estimated,
    else the model states; (bytes, what it is) or (None, None)."""
    if run is None or run.memory is None:
        return None, None
    for key, what in PEAK_ORDER:
        if getattr(run.memory, key) is not None:
            return getattr(run.memory, key), what
    states = model_states_bytes(run.memory)
    return (states, "model states") if states is not None else (None, None)


def _fits(gpu, run: RunResult, peak: int | None) -> bool | None:
    """``gpus.fits`` for one run: see the module docstring."""
    m = run.memory
    if peak is None or m is None:
        return None
    if m.nvml_used_peak_bytes is not None:
        return fits(gpu, m.nvml_used_peak_bytes, context_bytes=0)
    predicted = (m.details or {}).get("reserved_peak_bytes")
    reserved = m.peak_reserved_bytes if m.peak_reserved_bytes is not None else predicted
    return fits(gpu, reserved if isinstance(reserved, int) else peak)


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def adamw_run(result: ProfileResult) -> RunResult | None:
    """The AdamW run savings are measured against: ``adamw``, else the first ``adamw-*``."""
    runs = [r for r in result.runs if r.status == "ok" and r.memory]
    return next((r for r in runs if r.optimizer == "adamw"), None) or \
        next((r for r in runs if r.optimizer.startswith("adamw-")), None)


def fused_adamw_run(result: ProfileResult) -> RunResult | None:
    """The ``adamw-fused`` run, the second baseline of the peak saving; None when absent or it is the first."""
    run = next((r for r in result.runs if r.optimizer == "adamw-fused" and r.status == "ok" and r.memory), None)
    return None if run is None or run is adamw_run(result) else run


def _baseline_label(run: RunResult | None) -> str:
    """'AdamW' with the implementation it ran: 'AdamW (foreach)', 'AdamW (fused)'."""
    return f"AdamW ({run.impl})" if run is not None and run.impl else "AdamW"


@dataclass
class Saving:
    bytes: int | None
    pct: float | None


def _saving(base: int | None, value: int | None) -> Saving:
    if base is None or value is None:
        return Saving(None, None)
    return Saving(base - value, 100.0 * (base - value) / base if base else None)


def _latency(run: RunResult) -> dict[str, float | None]:
    lat = run.latency_ms or {}

    def p(phase: str, stat: str) -> float | None:
        return (lat.get(phase) or {}).get(stat)

    return {"step_p50_ms": p("optimizer_step", "p50"), "step_p90_ms": p("optimizer_step", "p90"),
            "first_step_ms": lat.get("first_step"), "forward_p50_ms": p("forward", "p50"),
            "backward_p50_ms": p("backward", "p50")}


def summary_row(result: ProfileResult, run: RunResult, base: RunResult | None,
                fused: RunResult | None = None) -> dict[str, Any]:
    """Every figure the renderers show for one run (bytes, ms, bools; None when absent).

    Savings are against ``base`` (``adamw_run``) and, for the peak, ``fused`` (``fused_adamw_run``).
    """
    m = run.memory or MemoryResult("none")
    peak, peak_what = peak_bytes(run) if run.status == "ok" else (None, None)
    versus = run is not base and base is not None
    state = _saving(base.memory.state_bytes, m.state_bytes) if versus else Saving(None, None)
    peak_saving = _saving(peak_bytes(base)[0], peak) if versus else Saving(None, None)
    versus_fused = fused is not None and run is not fused  # the default AdamW too: what foreach costs
    fused_saving = _saving(peak_bytes(fused)[0], peak) if versus_fused else Saving(None, None)
    return {
        "optimizer": run.optimizer, "impl": run.impl, "status": run.status,
        "column": run.optimizer + (f" r{rank}" if (rank := (run.extra or {}).get("rank")) is not None else ""),
        "param_bytes": m.param_bytes, "grad_bytes": m.grad_bytes, "state_bytes": m.state_bytes,
        **{f"state_bytes[{k}]": m.state_bytes_by_key.get(k) for k in state_keys(result)},
        **{key: getattr(m, key) for _, key in OPTIONAL_ROWS},
        "predicted_reserved_peak_bytes": _int_or_none((m.details or {}).get("reserved_peak_bytes")),
        "peak_bytes": peak, "peak_source": peak_what,
        "state_saving_vs_adamw_bytes": state.bytes, "state_saving_vs_adamw_pct": state.pct,
        "peak_saving_vs_adamw_bytes": peak_saving.bytes, "peak_saving_vs_adamw_pct": peak_saving.pct,
        "peak_saving_vs_adamw_fused_bytes": fused_saving.bytes, "peak_saving_vs_adamw_fused_pct": fused_saving.pct,
        **_latency(run),
        **{f"fits[{name}]": _fits(GPUS[name], run, peak) for name in FIT_GPUS},
        "error": run.error, "note": run.note,
    }


def summary_rows(doc: ProfileResult | dict) -> list[dict[str, Any]]:
    """One dict per run with every figure the renderers show."""
    result = as_result(doc)
    base, fused = adamw_run(result), fused_adamw_run(result)
    return [summary_row(result, run, base, fused) for run in result.runs]


def _table_spec(result: ProfileResult, rows: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    """(row label, summary key, kind) for the rows this result has; kind: gib, saving, ms, fit, text."""
    def present(key: str) -> bool:
        return any(r.get(key) is not None for r in rows)

    spec = [("impl", "impl", "text"), ("status", "status", "text"), ("parameters", "param_bytes", "gib"),
            ("gradients", "grad_bytes", "gib"), ("state", "state_bytes", "gib")]
    spec += [(f"  state[{k}]", f"state_bytes[{k}]", "gib") for k in state_keys(result)]
    spec += [(label, key, "gib") for label, key in OPTIONAL_ROWS
             if present(key) or (key == "estimated_peak_bytes" and not present("peak_allocated_bytes"))]
    if present("predicted_reserved_peak_bytes"):
        spec += [("reserved peak (predicted)", "predicted_reserved_peak_bytes", "gib")]
    base = adamw_run(result)
    if base is not None:
        spec += [("state saving vs AdamW", "state_saving_vs_adamw_bytes", "saving"),
                 (f"peak saving vs {_baseline_label(base)}", "peak_saving_vs_adamw_bytes", "saving")]
    if (fused := fused_adamw_run(result)) is not None:
        spec += [(f"peak saving vs {_baseline_label(fused)}", "peak_saving_vs_adamw_fused_bytes", "saving")]
    spec += [(label, key, "ms") for label, key in LATENCY_ROWS if present(key)]
    spec += [(f"fits {GPUS[n].label} ({GPUS[n].memory_bytes / fmt.GiB:.1f})", f"fits[{n}]", "fit") for n in FIT_GPUS]
    return spec


def cell(row: dict[str, Any], key: str, kind: str) -> str:
    value = row.get(key)
    if kind == "saving":
        pct = row.get(key.replace("_bytes", "_pct"))
        size = fmt.signed_gib(value)
        return f"{size} ({fmt.pct_value(pct)})" if value is not None and pct is not None else size
    if kind == "gib":
        return fmt.gib(value)
    if kind == "ms":
        return fmt.ms(value)
    if kind == "fit":
        return fmt.yes_no(value)
    return fmt.MISSING if value is None else str(value)


def title(doc: ProfileResult | dict) -> str:
    result = as_result(doc)
    spec, model = result.spec, result.model
    shape = f"batch {spec.batch_size}"
    if model.family != "vit":  # ViT runs at its configured image size: no sequence length
        shape += f" x seq {spec.seq_len}"
    device = result.environment.device.get("name") or spec.device
    return " | ".join([str(model.name or spec.model), spec.precision, str(device), shape])


def subtitle(result: ProfileResult) -> str:
    if result.model.params is None:
        return ""
    m = result.model
    text = f"{fmt.count(m.params)} parameters in {m.param_tensors} tensors"
    if m.trainable_params is not None and m.trainable_params != m.params:
        lora = m.extra.get("lora")
        how = f" (LoRA r={lora['r']} on {', '.join(lora['targets']) or 'peft defaults'}; base frozen)" if lora else ""
        text += f", {fmt.count(m.trainable_params)} trainable{how}"
    return text + "; GiB unless marked"


def notes(doc: ProfileResult | dict) -> list[str]:
    """The one-line explanation plus per-run notes and errors."""
    result = as_result(doc)
    measured = any(r.memory and r.memory.source == "measured" for r in result.runs)
    device = result.environment.device.get("name") or "the device"
    sources = sorted({r["peak_source"] for r in summary_rows(result) if r["peak_source"]})
    lines = [NOTE_MEASURED.format(device=device) if measured else NOTE_META,
             f"fits: {' / '.join(sources) or 'peak'} peak, by plan's rule: NVML used <= the card's memory, else "
             "(reserved peak, measured or predicted, else allocated) + the card's context allowance <= its memory "
             "(GiB in brackets)."]
    for run in result.runs:
        if run.error:
            lines.append(f"{run.optimizer}: {run.status}: {run.error}")
        if run.note:
            lines.append(f"{run.optimizer}: {run.note}")
    return lines


def profile_frames(doc: ProfileResult | dict) -> dict[str, Any]:
    """Title -> pandas DataFrame: the memory/latency table (metrics x optimizers, text as the terminal
    shows it) and the per-run numbers (bytes, one row per optimizer)."""
    import pandas as pd

    result = as_result(doc)
    rows = summary_rows(result)
    spec = _table_spec(result, rows)
    table = pd.DataFrame([[cell(r, key, kind) for r in rows] for _, key, kind in spec],
                         index=[label.strip() for label, _, _ in spec], columns=[r["column"] for r in rows])
    table.index.name = "GiB unless marked"
    return {f"Memory per optimizer: {title(result)}": table, "Runs (bytes)": pd.DataFrame(rows)}


def profile_renderables(doc: ProfileResult | dict) -> list:
    """Rich renderables: the title line, the table (a column per optimizer), the model line and the notes."""
    from rich.table import Table
    from rich.text import Text

    result = as_result(doc)
    rows = summary_rows(result)
    table = Table(show_lines=False)
    table.add_column("", style="bold", overflow="fold")
    for r in rows:
        table.add_column(r["column"], justify="right", overflow="fold")  # "sgdsai r1": one rank of a job
    for label, key, kind in _table_spec(result, rows):
        cells = []
        for r in rows:
            text = cell(r, key, kind)
            style = {"yes": "green", "no": "bold red"}.get(text, "") if kind == "fit" else ""
            if kind == "text" and key == "status" and text != "ok":
                style = "red"
            cells.append(Text(text, style=style))
        table.add_row(Text(label), *cells)
    head = Text(title(result), style="bold")  # outside the table: a title would wrap at the table's width
    sub = [Text(subtitle(result))] if subtitle(result) else []
    return [head, table] + sub + [Text(line, style="dim") for line in notes(result)]


def _markdown_table(frame, index_label: str = "") -> str:
    header = [index_label] + [str(c) for c in frame.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * len(frame.columns)) + "|"]
    for label, row in frame.iterrows():
        lines.append("| " + " | ".join([str(label)] + [str(v).replace("|", "\\|") for v in row]) + " |")
    return "\n".join(lines)


def profile_markdown(doc: ProfileResult | dict) -> str:
    """A Markdown section: title, parameter count, the table and the notes."""
    result = as_result(doc)
    table = next(iter(profile_frames(result).values()))
    parts = [f"### {title(result)}", ""]
    if subtitle(result):
        parts += [subtitle(result), ""]
    parts += [_markdown_table(table, "GiB unless marked"), ""]
    parts += [f"- {line}" for line in notes(result)]
    return "\n".join(parts) + "\n"


def profile_csv(doc: ProfileResult | dict) -> str:
    """One CSV row per run: spec, model and every figure in bytes / ms (empty when absent)."""
    import pandas as pd

    result = as_result(doc)
    frame = pd.DataFrame(summary_rows(result))
    spec = result.spec
    front = {"model": result.model.name or spec.model, "precision": spec.precision, "device": spec.device,
             "batch_size": spec.batch_size, "seq_len": spec.seq_len, "params": result.model.params}
    for i, (k, v) in enumerate(front.items()):
        frame.insert(i, k, v)
    for col in frame.columns:  # integers stay integers even with missing values
        if col.endswith("_bytes") or col.startswith("state_bytes["):
            frame[col] = frame[col].astype("Int64")
    return frame.to_csv(index=False)
