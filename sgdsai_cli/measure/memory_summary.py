"""A finished (or failed) training run summed up: its MemoryResult and its latencies.

From the phase records of ``phases.PhaseRecorder``, over the steady steps (those after the last step
whose optimizer step created state: step >= 1, or later where SGD-SaI deferred a tensor), with
``base`` = bytes allocated before forward less the batch (parameters and optimizer state):

- ``forward_backward_peak_bytes`` = max(forward peak, backward peak) - base (gradients included);
- ``activation_peak_bytes`` = the activation probe's figure when there was one, else
  max(forward peak - base, backward peak - base - all gradients), a lower bound where backward
  peaks before its last gradient;
- ``step_transient_bytes`` = the optimizer step's peak above what was allocated before it, less the
  state that step created.

Per phase, ``details.phases`` keeps the maxima over the steady steps. Latencies follow
``stats.latency_summary``; ``step`` is the sum of the four phases, the first step apart.
On the CPU ``timing`` records the torch threads the steps ran on and the step p90/p50, with a
warning when they vary widely (``stats.spread_warning``).
"""

from __future__ import annotations

import resource
from typing import Any

import torch

from sgdsai_cli.measure.phases import PHASES, cuda_stats
from sgdsai_cli.measure.stats import QUIET_HINT, STABLE_HINT, latency_summary, spread, spread_warning
from sgdsai_cli.measure.storage import state_bytes_by_key, unique_bytes
from sgdsai_cli.measure.training import TrainingRun
from sgdsai_cli.results import MemoryResult


def first_steady_step(state_grown: dict[int, int]) -> int:
    """The first step after every step that created optimizer state (1 when only the first step did)."""
    return 1 + max([step for step, grown in state_grown.items() if grown and grown > 0], default=0)


def phase_summary(mem: dict[str, list[dict[str, int]]], steady_from: int = 1) -> dict[str, dict[str, int]]:
    """Per phase, the maxima over the recorded steady steps (step >= ``steady_from``), else over all."""
    out = {}
    for p, recs in mem.items():
        steady = [r for r in recs if r["step"] >= steady_from] or [r for r in recs if r["step"] >= 1] or recs
        if not steady:
            continue
        summary = {k: max(r[k] for r in steady) for k in steady[0] if k != "step"}
        summary["steps"] = len(steady)
        out[p] = summary
    return out


def derived(mem: dict[str, list[dict[str, int]]], batch_bytes: int, grad_bytes: int | None,
            state_bytes: int | None, probe: int | None,
            state_grown: dict[int, int] | None = None) -> tuple[int | None, int | None, int | None]:
    """(activation peak, forward+backward peak, step transient) bytes (see the module docstring).

    ``state_grown``: step -> state bytes its optimizer step created (None: all of ``state_bytes`` at step 0)."""
    state_grown = {0: state_bytes} if state_grown is None else state_grown
    fwd = {r["step"]: r for r in mem["forward"]}
    bwd = {r["step"]: r for r in mem["backward"]}
    start = first_steady_step(state_grown)
    if not any(s >= start and s in bwd for s in fwd):
        start = 1
    act = fbp = None
    for step, f in fwd.items():
        if step < start or step not in bwd:
            continue
        base = f["before_bytes"] - batch_bytes
        peak = max(f["allocated_peak_bytes"], bwd[step]["allocated_peak_bytes"])
        fbp = max(fbp or 0, peak - base)
        a = max(f["allocated_peak_bytes"] - base, bwd[step]["allocated_peak_bytes"] - base - (grad_bytes or 0))
        act = max(act or 0, a)
    if probe is not None:
        act = probe
    transient = None
    for r in mem["optimizer_step"]:
        grown = r["allocated_peak_bytes"] - r["before_bytes"]
        if r["step"] in state_grown:
            if state_grown[r["step"]] is None:
                continue
            grown -= state_grown[r["step"]]
        transient = max(transient if transient is not None else grown, grown)
    return act, fbp, transient


def _device_details(run: TrainingRun) -> dict[str, Any]:
    if run.is_cuda:
        s = cuda_stats(run.device.index)
        return {"allocator_backend": torch.cuda.get_allocator_backend(),
                **{k: s[k] for k in ("num_alloc_retries", "num_ooms", "inactive_split_bytes")}}
    return {"rss_peak_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            "live_tensor_tracking": "first step and warmup steps (measured steps run untracked)"}


def _sampler_details(run: TrainingRun) -> dict[str, Any]:
    from sgdsai_cli.measure.sampler import SAMPLE_COLUMNS

    sampler = run.sampler
    if sampler is None:
        return {}
    out: dict[str, Any] = {"samples": len(sampler.rows)}
    step_col = SAMPLE_COLUMNS.index("step")
    for col in ("gpu_util_pct", "power_w"):
        i = SAMPLE_COLUMNS.index(col)
        vals = [r[i] for r in sampler.rows if r[i] is not None and r[step_col] >= 0]
        if vals:
            out[f"{col}_mean"] = sum(vals) / len(vals)
    run.notes.extend(sampler.errors)
    return out


def memory_result(run: TrainingRun, status: str, peak_before_failure: int | None = None) -> MemoryResult:
    """The run's MemoryResult (``source`` "measured"); state bytes only for a run that finished."""
    params = list(run.model.parameters()) if run.model is not None else []
    by_key = state_bytes_by_key(run.optimizer) if run.optimizer is not None and status == "ok" else {}
    mem = run.recorder.mem if run.recorder is not None else {p: [] for p in PHASES}
    steady_from = first_steady_step(run.state_grown)
    details: dict[str, Any] = {"phases": phase_summary(mem, steady_from), **_device_details(run)}
    e0, e1 = run.energy_mj
    if e0 is not None and e1 is not None and run.spec.steps:
        details["energy_j_per_step"] = (e1 - e0) / 1000.0 / run.spec.steps
    details.update(_sampler_details(run))
    grads = [p.grad for p in params if p.grad is not None]
    grad_bytes = unique_bytes(grads) if grads else run.grad_bytes
    state_total = sum(by_key.values()) if by_key else None
    act, fbp, transient = derived(mem, run.batch_bytes, grad_bytes, state_total, run.activation_probe,
                                  run.state_grown or None)
    if fbp is not None:
        details["forward_backward_peak_bytes"] = fbp
    reserved = [r["reserved_peak_bytes"] for recs in mem.values() for r in recs] if run.is_cuda else []
    return MemoryResult(
        source="measured",
        state_bytes=state_total,
        state_bytes_by_key=by_key,
        param_bytes=unique_bytes(params) if params else None,
        grad_bytes=grad_bytes,
        activation_peak_bytes=act,
        step_transient_bytes=transient,
        peak_allocated_bytes=run.recorder.overall_peak(peak_before_failure) if run.recorder else peak_before_failure,
        peak_reserved_bytes=max(reserved) if reserved else None,
        nvml_used_peak_bytes=run.sampler.column_max("nvml_used_bytes") if run.sampler is not None else None,
        details=details,
    )


def step_times(run: TrainingRun) -> list[float]:
    """ms of each measured step: the sum of its four phases."""
    return [sum(v) for v in zip(*(run.times[p] for p in PHASES), strict=False)]


def timing(run: TrainingRun) -> tuple[dict[str, Any] | None, str | None]:
    """On the CPU, ({"threads", "step_p90_over_p50"}, a spread warning or None); (None, None) on CUDA."""
    if run.is_cuda:
        return None, None
    steps = step_times(run)
    threads = torch.get_num_threads()
    s = spread(steps)
    from sgdsai_cli.measure.devices import cpu_load

    load = cpu_load()
    return ({"threads": threads, "step_p90_over_p50": round(s, 3) if s is not None else None, **load},
            spread_warning(steps, threads=threads, load=((load["load_avg"] or [None])[0], load["cpus"]),
                           hint=STABLE_HINT if threads != 1 else QUIET_HINT))


def latency(run: TrainingRun) -> dict[str, Any]:
    """``latency_ms``: a summary per phase and per step over the measured steps, the first step apart."""
    lat: dict[str, Any] = {p: latency_summary(run.times[p]) for p in PHASES}
    lat["step"] = latency_summary(step_times(run))
    lat["first_step"] = run.first_step_ms.get("optimizer_step")
    lat["first_step_phases"] = run.first_step_ms or None
    return lat
