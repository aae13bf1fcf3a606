"""The measured figures of a real run that the main profile table does not show.

Per-phase memory (bytes before each phase, its peak, the reserved peak on CUDA), the estimate
against the measurement per component, and device counters with the runs' notes. Rows are plain
data (``phase_rows``, ``estimate_rows``, for the report too); ``real_renderables`` draws them.
"""

from __future__ import annotations

from typing import Any

from sgdsai_cli.render import format as fmt
from sgdsai_cli.render.profile import as_result
from sgdsai_cli.render.tables import new_table
from sgdsai_cli.results import ProfileResult

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
COUNTERS = ("allocator_backend", "energy_j_per_step", "rss_peak_bytes")


def _measured_runs(result: ProfileResult):
    return [r for r in result.runs if r.memory is not None and r.memory.source == "measured"]


def _measured(memory, key: str) -> Any:
    if key == "forward_backward_peak_bytes":
        return memory.details.get(key)
    return getattr(memory, "peak_allocated_bytes" if key == "peak_bytes" else key)


def phase_rows(doc: ProfileResult | dict) -> list[dict[str, Any]]:
    """One row per (optimizer, phase): bytes before, peak, reserved peak (None where unknown)."""
    rows = []
    for r in _measured_runs(as_result(doc)):
        phases = r.memory.details.get("phases") or {}
        for p in PHASES:
            rec = phases.get(p)
            if rec:
                rows.append({"optimizer": r.optimizer, "phase": p, "before_bytes": rec.get("before_bytes"),
                             "peak_bytes": rec.get("allocated_peak_bytes"),
                             "reserved_peak_bytes": rec.get("reserved_peak_bytes")})
    return rows


def estimate_rows(doc: ProfileResult | dict) -> list[dict[str, Any]]:
    """One row per (optimizer, component) where an estimate exists: estimate, measured, error in percent."""
    rows = []
    for r in _measured_runs(as_result(doc)):
        est = r.memory.details.get("estimate") or {}
        errs = r.memory.details.get("estimate_error_pct") or {}
        for key, label in COMPONENTS:
            if est.get(key) is not None:
                rows.append({"optimizer": r.optimizer, "status": r.status, "component": label,
                             "estimate_bytes": est[key], "measured_bytes": _measured(r.memory, key),
                             "error_pct": errs.get(key)})
    return rows


def _phase_table(result: ProfileResult, rows: list[dict[str, Any]]):
    cuda = any(r["reserved_peak_bytes"] is not None for r in rows)
    where = f"{result.spec.model} | {result.spec.precision} | {result.spec.device}"
    columns = ["optimizer", "phase", "before", "peak", "peak - before"] + (["reserved peak"] if cuda else [])
    t = new_table(f"Memory by phase (steady steps) — {where}",
                  [(c, "left" if c in ("optimizer", "phase") else "right") for c in columns])
    for r in rows:
        known = r["peak_bytes"] is not None and r["before_bytes"] is not None
        grown = r["peak_bytes"] - r["before_bytes"] if known else None
        cells = [r["optimizer"], r["phase"].replace("_", " "), fmt.size(r["before_bytes"]), fmt.size(r["peak_bytes"]),
                 fmt.size(grown)]
        t.add_row(*cells, *([fmt.size(r["reserved_peak_bytes"])] if cuda else []))
    return t


def _estimate_table(rows: list[dict[str, Any]]):
    t = new_table("Estimate against measurement (error = (estimate - measured) / measured)",
                  [(c, "left" if c in ("optimizer", "component") else "right")
                   for c in ("optimizer", "component", "estimate", "measured", "error")])
    for r in rows:
        measured = fmt.size(r["measured_bytes"])
        if r["status"] != "ok":
            at = f" at {measured}" if r["component"] == "peak" and r["measured_bytes"] is not None else ""
            measured = r["status"] + at
        t.add_row(r["optimizer"], r["component"], fmt.size(r["estimate_bytes"]), measured,
                  fmt.pct_value(r["error_pct"], signed=True))
    return t


def _counters_table(result: ProfileResult):
    runs = [r for r in result.runs if r.memory and (any(k in r.memory.details for k in COUNTERS) or r.note)]
    if not runs:
        return None
    t = new_table("Device counters and notes",
                  [(c, "left" if c in ("optimizer", "allocator", "notes") else "right") for c in
                   ("optimizer", "allocator", "alloc retries", "OOMs", "inactive split", "RSS peak", "J/step",
                    "power W", "util %", "notes")])
    for r in runs:
        d = r.memory.details
        t.add_row(r.optimizer, d.get("allocator_backend", fmt.MISSING), fmt.count(d.get("num_alloc_retries")),
                  fmt.count(d.get("num_ooms")), fmt.size(d.get("inactive_split_bytes")),
                  fmt.size(d.get("rss_peak_bytes")), fmt.fixed(d.get("energy_j_per_step"), 2),
                  fmt.fixed(d.get("power_w_mean"), 0), fmt.fixed(d.get("gpu_util_pct_mean"), 0), r.note or "")
    return t


def real_renderables(doc: ProfileResult | dict) -> list:
    """rich Tables for the measured figures: per phase, estimate against measurement, counters."""
    result = as_result(doc)
    out: list = []
    if rows := phase_rows(result):
        out.append(_phase_table(result, rows))
    if rows := estimate_rows(result):
        out.append(_estimate_table(rows))
    if (counters := _counters_table(result)) is not None:
        out.append(counters)
    return out
