"""Extra tables for measured (``--device cpu|cuda``) profile documents.

    for item in real_renderables(doc):
        console.print(item)

Three rich tables, each only when the document has its figures:

- memory by phase: for each optimizer and phase, allocated before it, its peak (and the
  allocator's reserved peak on CUDA), maxima over the steady steps;
- estimate against measurement: each component's estimate, measured value and error %
  (``memory.details["estimate_error_pct"]``), OOM runs with the estimate beside their peak;
- device counters: allocator backend, alloc retries, OOMs, inactive split bytes, energy per
  step, mean power and utilisation, and each run's notes.

Numbers are formatted here and nowhere else; a meta document gives an empty list.
"""

from __future__ import annotations

from typing import Any


def fmt_size(n_bytes: int | float | None) -> str:
    """Bytes -> '1.25 GiB' / '551.0 KiB' / '12 B' for tables; '-' for unknown."""
    if n_bytes is None:
        return "-"
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n_bytes) >= scale:
            return f"{n_bytes / scale:,.{3 if unit == 'GiB' else 1}f} {unit}"
    return f"{int(n_bytes)} B"

PHASES = ("forward", "backward", "optimizer_step", "zero_grad")
COMPONENTS = (
    ("param_bytes", "parameters"),
    ("grad_bytes", "gradients"),
    ("state_bytes", "state"),
    ("activation_peak_bytes", "activations (peak)"),
    ("forward_backward_peak_bytes", "forward+backward peak"),
    ("step_transient_bytes", "step transient"),
    ("peak_bytes", "peak"),
)
MEASURED_KEY = {"forward_backward_peak_bytes": None, "peak_bytes": "peak_allocated_bytes"}


def _measured_runs(doc: dict) -> list[dict]:
    return [r for r in doc.get("runs", []) if (r.get("memory") or {}).get("source") == "measured"]


def _measured(mem: dict, key: str) -> Any:
    if key == "forward_backward_peak_bytes":
        return (mem.get("details") or {}).get(key)
    return mem.get(MEASURED_KEY.get(key) or key)


def phase_rows(doc: dict) -> list[dict[str, Any]]:
    """One row per (optimizer, phase): bytes before, peak, reserved peak (None where unknown)."""
    rows = []
    for r in _measured_runs(doc):
        phases = ((r["memory"].get("details") or {}).get("phases")) or {}
        for p in PHASES:
            rec = phases.get(p)
            if rec:
                rows.append({"optimizer": r["optimizer"], "phase": p, "before_bytes": rec.get("before_bytes"),
                             "peak_bytes": rec.get("allocated_peak_bytes"),
                             "reserved_peak_bytes": rec.get("reserved_peak_bytes")})
    return rows


def estimate_rows(doc: dict) -> list[dict[str, Any]]:
    """One row per (component, optimizer) where an estimate exists."""
    rows = []
    for r in _measured_runs(doc):
        details = r["memory"].get("details") or {}
        est = details.get("estimate") or {}
        errs = details.get("estimate_error_pct") or {}
        for key, label in COMPONENTS:
            if est.get(key) is None:
                continue
            rows.append({"optimizer": r["optimizer"], "status": r["status"], "component": label,
                         "estimate_bytes": est.get(key),
                         "measured_bytes": _measured(r["memory"], key),
                         "error_pct": errs.get(key)})
    return rows


def real_renderables(doc: dict) -> list:
    """rich Tables for the measured figures the main profile table does not show."""
    from rich.table import Table

    out: list = []
    spec = doc.get("spec", {})
    where = f"{spec.get('model')} | {spec.get('precision')} | {spec.get('device')}"
    rows = phase_rows(doc)
    if rows:
        cuda = any(r["reserved_peak_bytes"] is not None for r in rows)
        t = Table(title=f"Memory by phase (steady steps) — {where}", title_justify="left")
        for c in ("optimizer", "phase", "before", "peak", "peak - before") + (("reserved peak",) if cuda else ()):
            t.add_column(c, justify="left" if c in ("optimizer", "phase") else "right")
        for r in rows:
            known = r["peak_bytes"] is not None and r["before_bytes"] is not None
            grown = r["peak_bytes"] - r["before_bytes"] if known else None
            cells = [r["optimizer"], r["phase"].replace("_", " "), fmt_size(r["before_bytes"]),
                     fmt_size(r["peak_bytes"]), fmt_size(grown)]
            if cuda:
                cells.append(fmt_size(r["reserved_peak_bytes"]))
            t.add_row(*cells)
        out.append(t)
    est = estimate_rows(doc)
    if est:
        t = Table(title="Estimate against measurement (error = (estimate - measured) / measured)",
                  title_justify="left")
        for c in ("optimizer", "component", "estimate", "measured", "error %"):
            t.add_column(c, justify="left" if c in ("optimizer", "component") else "right")
        for r in est:
            err = "-" if r["error_pct"] is None else f"{r['error_pct']:+.1f}"
            measured = fmt_size(r["measured_bytes"])
            if r["status"] != "ok":
                measured = f"{r['status']}" + (f" at {measured}" if r["component"] == "peak" and measured != "-"
                                               else "")
            t.add_row(r["optimizer"], r["component"], fmt_size(r["estimate_bytes"]), measured, err)
        out.append(t)
    counters = []
    for r in doc.get("runs", []):
        d = (r.get("memory") or {}).get("details") or {}
        if any(k in d for k in ("allocator_backend", "energy_j_per_step", "rss_peak_bytes")) or r.get("note"):
            counters.append((r, d))
    if counters:
        t = Table(title="Device counters and notes", title_justify="left")
        for c in ("optimizer", "allocator", "alloc retries", "OOMs", "inactive split", "RSS peak", "J/step",
                  "power W", "util %", "notes"):
            t.add_column(c, justify="left" if c in ("optimizer", "allocator", "notes") else "right")
        num = lambda v, f: "-" if v is None else format(v, f)
        for r, d in counters:
            t.add_row(r["optimizer"], d.get("allocator_backend", "-"), num(d.get("num_alloc_retries"), "d"),
                      num(d.get("num_ooms"), "d"), fmt_size(d.get("inactive_split_bytes")),
                      fmt_size(d.get("rss_peak_bytes")), num(d.get("energy_j_per_step"), ".2f"),
                      num(d.get("power_w_mean"), ".0f"), num(d.get("gpu_util_pct_mean"), ".0f"),
                      r.get("note") or "")
        out.append(t)
    return out
