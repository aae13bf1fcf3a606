"""The no-GPU estimate beside a real run's measurement, component by component.

Each measured run gets ``memory.estimated_peak_bytes`` and, in ``memory.details``, the
``estimate`` ({component: bytes}, from ``sizing.size_profile`` on meta with the estimate) and,
for a run that finished, ``estimate_error_pct``: ``100 * (estimate - measured) / measured`` per
component both have (measured > 0). An out-of-memory run shows the estimate beside the peak it
reached. The comparison is extra: a failed estimate is a note, never a failed run.
"""

from __future__ import annotations

import dataclasses

from sgdsai_cli.results import MemoryResult, ProfileSpec, RunResult

ESTIMATE_COMPONENTS = ("param_bytes", "grad_bytes", "state_bytes", "activation_peak_bytes",
                       "forward_backward_peak_bytes", "step_transient_bytes", "peak_bytes",
                       "reserved_peak_bytes")  # the last: the allocator model against the CUDA reserved peak


def estimate_name(optimizer: str, impl: str | None) -> str:
    """The optimizer to estimate for a run: plain ``adamw`` as the implementation that ran.

    The estimate follows torch's CUDA default path (foreach AdamW, a full-size temporary); on the
    CPU torch's default is the per-tensor loop, so a CPU ``adamw`` run is compared with
    ``adamw-loop`` (and a CPU ``muon`` run with ``muon-loop``).
    """
    if optimizer == "adamw" and impl in ("loop", "foreach", "fused"):
        return f"adamw-{impl}"
    if optimizer == "muon" and impl in ("muon+loop", "muon+foreach", "muon+fused"):
        return f"muon-{impl.split('+')[1]}"  # the Muon hybrid's AdamW part, likewise
    return optimizer


def _components(mem: MemoryResult) -> dict[str, int]:
    """An estimate run's components (those known)."""
    d = {k: getattr(mem, k) for k in ("param_bytes", "grad_bytes", "state_bytes", "activation_peak_bytes",
                                       "step_transient_bytes")}
    d["peak_bytes"] = mem.estimated_peak_bytes
    d["forward_backward_peak_bytes"] = mem.details.get("forward_backward_peak_bytes")
    d["reserved_peak_bytes"] = mem.details.get("reserved_peak_bytes")
    return {k: v for k, v in d.items() if v is not None}


def estimates(spec: ProfileSpec, model_spec, optimizers: list[str]) -> tuple[dict[str, dict[str, int]], str | None]:
    """optimizer -> {component: bytes} from the no-GPU estimate, and a note when it failed."""
    from sgdsai_cli.errors import error_text
    from sgdsai_cli.measure.sizing import size_profile

    try:
        result = size_profile(dataclasses.replace(spec, device="meta"), model_spec, optimizers, estimate=True)
    except Exception as e:  # the comparison is extra: never fail a real run for it
        return {}, f"estimate failed ({error_text(e)})"
    return {run.optimizer: _components(run.memory) for run in result.runs if run.memory is not None}, None


def measured_components(mem: MemoryResult) -> dict[str, int | None]:
    return {
        "param_bytes": mem.param_bytes,
        "grad_bytes": mem.grad_bytes,
        "state_bytes": mem.state_bytes,
        "activation_peak_bytes": mem.activation_peak_bytes,
        "forward_backward_peak_bytes": mem.details.get("forward_backward_peak_bytes"),
        "step_transient_bytes": mem.step_transient_bytes,
        "peak_bytes": mem.peak_allocated_bytes,
        "reserved_peak_bytes": mem.peak_reserved_bytes,
    }


def estimate_error_pct(estimate: dict, measured: dict) -> dict[str, float]:
    """100 * (estimate - measured) / measured for each component both have (measured > 0)."""
    out = {}
    for k in ESTIMATE_COMPONENTS:
        e, m = estimate.get(k), measured.get(k)
        if e is not None and m:
            out[k] = round(100.0 * (e - m) / m, 3)
    return out


def attach_estimate(run: RunResult, estimate: dict | None) -> None:
    """Put ``estimate`` beside the measurement in ``run.memory`` (in place)."""
    if not estimate:
        return
    if run.memory is None:
        run.memory = MemoryResult(source="measured")
    mem = run.memory
    mem.estimated_peak_bytes = estimate.get("peak_bytes")
    mem.details["estimate"] = dict(estimate)
    if run.status == "ok":
        mem.details["estimate_error_pct"] = estimate_error_pct(estimate, measured_components(mem))


def compare_with_estimates(runs: list[RunResult], spec: ProfileSpec, model_spec) -> None:
    """Attach each run's estimate (in place); a failed estimate becomes a note on every run."""
    as_run = {run.optimizer: estimate_name(run.optimizer, run.impl) for run in runs}
    found, note = estimates(spec, model_spec, list(dict.fromkeys(as_run.values())))
    for run in runs:
        name = as_run[run.optimizer]
        est = found.get(name)
        if est is not None and name != run.optimizer:
            est = {**est, "optimizer": name}
        attach_estimate(run, est)
        run.add_note(note)
