"""Child process of a real run: one optimizer, one fresh process, one clean allocator.

    python -m sgdsai_cli.measure.worker JOB.json RESULT.json

``JOB.json`` (written by ``realrun``) holds the profile spec, the model spec, the optimizer
name, the sampler interval and where to write the samples CSV and the memory snapshot.
``RESULT.json`` receives ``{"run": RunResult, "model": ModelInfo, "device": {...},
"samples_csv": path|None, "snapshot": path|None}``. Progress goes to stdout as lines
``@sgdsai {"event": ...}`` (see ``PROGRESS_PREFIX``); the parent turns them into a progress bar.

The training loop: the model in the requested precision on the device, one seeded synthetic
batch (random tokens or images, reused every step), then per step four timed phases,
``forward`` (loss), ``backward``, ``optimizer_step``, ``zero_grad`` (set_to_none). The first
step is the first optimizer step (state allocation, g-SNR) and is reported apart, as
``latency_ms.first_step``; it is the first warmup step (an extra step when ``--warmup 0``).
The other warmup steps are not timed; then ``--steps`` measured steps.

Timing: CUDA events around each phase on CUDA (read after one synchronize at the end),
``time.perf_counter`` on the CPU. Memory, per phase:

- CUDA: ``torch.cuda.memory_stats`` after each phase, the peaks reset before it: allocated,
  reserved, active, their peaks; ``num_alloc_retries``, ``num_ooms``, ``inactive_split_bytes``;
  the allocator backend. Optimizer state bytes per key from ``optimizer.state``.
- CPU: exact live-tensor bytes and their peak from a ``TorchDispatchMode`` that sees every
  tensor the run creates (model build included) and a weak reference on each storage, so a
  freed tensor is subtracted when its storage dies. The tracker costs Python time per op, so it
  runs over the first step and the warmup steps only; the measured steps run untracked and
  their latency carries no tracking overhead. Peak RSS from ``getrusage``.

Test hooks (environment variables, used by tests/test_realrun.py; harmless otherwise):
``SGDSAI_TEST_RAISE_OOM=[<optimizer>:]<phase>`` raises ``torch.cuda.OutOfMemoryError`` at the start of
that phase (``setup``, ``forward``, ``backward``, ``optimizer_step``, ``zero_grad``) of the second step
(only in that optimizer's run when one is named); ``SGDSAI_TEST_RAISE_ERROR=...`` raises a
``RuntimeError`` there instead.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import signal
import sys
import time
import traceback
import weakref
from dataclasses import asdict
from pathlib import Path
from typing import Any

PROGRESS_PREFIX = "@sgdsai "
PHASES = ("forward", "backward", "optimizer_step", "zero_grad")
SNAPSHOT_MAX_ENTRIES = 100_000


# ----------------------------------------------------------------------------------------------
# progress protocol


def emit(event: str, **fields) -> None:
    """One progress line on stdout for the parent (flushed at once)."""
    sys.stdout.write(PROGRESS_PREFIX + json.dumps({"event": event, **fields}) + "\n")
    sys.stdout.flush()


def parse_progress(line: str) -> dict | None:
    """The event of a progress line, or None for any other output."""
    if not line.startswith(PROGRESS_PREFIX):
        return None
    try:
        event = json.loads(line[len(PROGRESS_PREFIX):])
    except json.JSONDecodeError:
        return None
    return event if isinstance(event, dict) else None


# ----------------------------------------------------------------------------------------------
# model spec <-> JSON


def model_spec_to_dict(model_spec) -> dict:
    return {"name": model_spec.name, "family": model_spec.family, "config": asdict(model_spec.config),
            "params": model_spec.params}


def model_spec_from_dict(d: dict):
    from sgdsai_cli import models

    classes = {"gpt2": models.GPT2Config, "llama": models.LlamaConfig, "vit": models.ViTConfig}
    return models.ModelSpec(d["name"], d["family"], classes[d["family"]](**d["config"]), d.get("params"))


# ----------------------------------------------------------------------------------------------
# CPU live-tensor tracker


def _make_tracker():
    """A TorchDispatchMode counting the bytes of live tensor storages (CPU), with a resettable peak."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_leaves

    class LiveTensorTracker(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.live = 0
            self.peak = 0
            self.active = False
            self._sizes: dict[int, int] = {}  # storage data_ptr -> bytes

        def track(self, t) -> None:
            if not isinstance(t, torch.Tensor) or t.device.type != "cpu":
                return
            try:
                st = t.untyped_storage()
            except (RuntimeError, NotImplementedError):  # tensor subclasses without storage
                return
            ptr, n = st.data_ptr(), st.nbytes()
            if n == 0 or ptr in self._sizes:
                return
            self._sizes[ptr] = n
            self.live += n
            if self.live > self.peak:
                self.peak = self.live
            weakref.finalize(st, self._free, ptr)

        def _free(self, ptr: int) -> None:
            self.live -= self._sizes.pop(ptr, 0)

        def reset_peak(self) -> None:
            self.peak = self.live

        def __enter__(self):
            self.active = True
            return super().__enter__()

        def __exit__(self, *exc):
            self.active = False
            return super().__exit__(*exc)

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for t in tree_leaves(out):
                self.track(t)
            return out

    return LiveTensorTracker()


# ----------------------------------------------------------------------------------------------
# measuring helpers


def tensor_bytes(tensors) -> int:
    """Bytes of the distinct storages behind ``tensors`` (views of one storage count once)."""
    seen: set[int] = set()
    total = 0
    for t in tensors:
        st = t.untyped_storage()
        ptr = st.data_ptr()
        if ptr and ptr in seen:
            continue
        seen.add(ptr)
        total += st.nbytes()
    return total


def latency_stats(values_ms: list[float]) -> dict[str, Any] | None:
    """p50, p90, min, max, n (linear-interpolated percentiles) of a list of milliseconds."""
    if not values_ms:
        return None
    import numpy as np

    a = np.asarray(values_ms, dtype=float)
    return {"p50": float(np.percentile(a, 50)), "p90": float(np.percentile(a, 90)), "min": float(a.min()),
            "max": float(a.max()), "n": int(a.size)}


def cpu_device_record() -> dict[str, Any]:
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    total = None
    try:
        total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        pass
    return {"type": "cpu", "name": name, "total_memory_bytes": total, "uuid": None, "driver": None}


def _cuda_stats(idx: int) -> dict[str, int]:
    import torch

    s = torch.cuda.memory_stats(idx)
    g = lambda k: int(s.get(k, 0))
    return {
        "allocated_bytes": g("allocated_bytes.all.current"),
        "allocated_peak_bytes": g("allocated_bytes.all.peak"),
        "reserved_bytes": g("reserved_bytes.all.current"),
        "reserved_peak_bytes": g("reserved_bytes.all.peak"),
        "active_bytes": g("active_bytes.all.current"),
        "active_peak_bytes": g("active_bytes.all.peak"),
        "inactive_split_bytes": g("inactive_split_bytes.all.current"),
        "num_alloc_retries": g("num_alloc_retries"),
        "num_ooms": g("num_ooms"),
    }


class _Hooks:
    """Test-only failure injection (see module docstring): ``[optimizer:]phase``."""

    def __init__(self, optimizer: str):
        self.oom = self._mine(os.environ.get("SGDSAI_TEST_RAISE_OOM"), optimizer)
        self.error = self._mine(os.environ.get("SGDSAI_TEST_RAISE_ERROR"), optimizer)

    @staticmethod
    def _mine(value: str | None, optimizer: str) -> str | None:
        if not value:
            return None
        who, sep, phase = value.rpartition(":")
        return phase if not sep or who == optimizer else None

    def check(self, phase: str, step: int) -> None:
        if step not in (1, -1) and phase != "setup":
            return
        if self.oom == phase:
            import torch

            raise torch.cuda.OutOfMemoryError(
                f"CUDA out of memory. Tried to allocate 2.00 GiB (simulated by SGDSAI_TEST_RAISE_OOM={phase})")
        if self.error == phase:
            raise RuntimeError(f"simulated failure in {phase} (SGDSAI_TEST_RAISE_ERROR={phase})")


# ----------------------------------------------------------------------------------------------
# the run


class _Run:
    """State of one run while it goes: phase records, timings, memory by phase."""

    def __init__(self, job: dict, progress: bool):
        import torch

        from sgdsai_cli.precision import resolve_precision
        from sgdsai_cli.results import ProfileSpec

        self.torch = torch
        self.job = job
        self.progress = progress
        self.spec = ProfileSpec(**job["spec"])
        self.model_spec = model_spec_from_dict(job["model"])
        self.precision = resolve_precision(self.spec.precision)
        self.device = torch.device(self.spec.device)
        self.is_cuda = self.device.type == "cuda"
        self.idx = None
        self.notes: list[str] = []
        self.phase = "setup"
        self.step = -1
        self.hooks = _Hooks(job["optimizer"])
        self.tracker = None
        self.sampler = None
        self.nvml = None
        # per phase: list of per-step records {allocated_before, peak, after, ...}
        self.mem: dict[str, list[dict]] = {p: [] for p in PHASES}
        self.times: dict[str, list[float]] = {p: [] for p in PHASES}
        self.first_step_ms: dict[str, float] = {}
        self.peak_before_failure: int | None = None
        self.optimizer = None
        self.model = None
        self.impl = None
        self.energy = (None, None)
        self.grad_bytes: int | None = None  # measured after the first backward
        self.batch_bytes = 0
        self.activation_probe: int | None = None  # from activation_probe_step (warmup >= 2)

    # -- phase bracketing -------------------------------------------------------------------

    def _mem_now(self) -> int | None:
        if self.is_cuda:
            return self.torch.cuda.memory_allocated(self.idx)
        return self.tracker.live if self.tracker is not None and self.tracker.active else None

    def _enter(self, phase: str) -> None:
        """Label the phase (for the sampler and an OOM report) and run the test hooks."""
        self.phase = phase
        if self.sampler is not None:
            self.sampler.phase = phase
        self.hooks.check(phase, self.step)

    def run_phase(self, phase: str, fn, timed: bool, record_memory: bool):
        """Run ``fn()`` as ``phase``: hooks, sampler label, timing, memory before/after/peak."""
        torch = self.torch
        self._enter(phase)
        before = None
        if record_memory:
            if self.is_cuda:
                torch.cuda.reset_peak_memory_stats(self.idx)
                before = torch.cuda.memory_allocated(self.idx)
            elif self.tracker is not None and self.tracker.active:
                self.tracker.reset_peak()
                before = self.tracker.live
        if timed and self.is_cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            out = fn()
            end.record()
            self._pending_events.append((phase, start, end))
        elif timed:
            t0 = time.perf_counter()
            out = fn()
            self._cpu_times.append((phase, (time.perf_counter() - t0) * 1000.0))
        else:
            out = fn()
        if record_memory and before is not None:
            if self.is_cuda:
                rec = {"before_bytes": before, **_cuda_stats(self.idx)}
            else:
                rec = {"before_bytes": before, "allocated_bytes": self.tracker.live,
                       "allocated_peak_bytes": self.tracker.peak}
            rec["step"] = self.step
            self.mem[phase].append(rec)
        return out

    def _overall_peak(self) -> int | None:
        peaks = [r["allocated_peak_bytes"] for recs in self.mem.values() for r in recs]
        if self.peak_before_failure is not None:
            peaks.append(self.peak_before_failure)
        return max(peaks) if peaks else None

    # -- setup ------------------------------------------------------------------------------

    def setup(self) -> None:
        torch = self.torch
        from sgdsai_cli.models import build_model, make_batch
        from sgdsai_cli.optim.registry import build_optimizer

        if self.is_cuda:
            self.idx = self.device.index if self.device.index is not None else torch.cuda.current_device()
            torch.cuda.set_device(self.idx)
            self.device = torch.device("cuda", self.idx)
        else:
            self.tracker = _make_tracker()
            self.tracker.__enter__()
        self._start_sampler()
        self.hooks.check("setup", -1)
        torch.manual_seed(self.spec.seed)
        self.model = build_model(self.model_spec, device=self.device, dtype=self.precision.param_dtype)
        gen = torch.Generator(device="cpu").manual_seed(self.spec.seed)
        self.batch = make_batch(self.model_spec, self.spec.batch_size, self.spec.seq_len, self.device, generator=gen)
        self.batch_bytes = tensor_bytes(self.batch)
        self.optimizer, self.impl = build_optimizer(self.job["optimizer"], self.model.parameters())

    def _start_sampler(self) -> None:
        from sgdsai_cli.measure.sampler import Sampler, cuda_allocator_reader, open_nvml

        interval = self.job.get("sample_interval_ms") or 0
        if self.is_cuda:
            self.nvml, nv_notes = open_nvml(self.idx)
            self.notes.extend(nv_notes)
        if not interval or not self.job.get("sampler", True):
            return
        if self.is_cuda:
            allocator = cuda_allocator_reader(self.idx)
        else:
            tracker = self.tracker
            allocator = lambda: (tracker.live if tracker.active else None, None)
        self.sampler = Sampler(interval, allocator=allocator, nvml=self.nvml)
        self.sampler.start()

    # -- training loop ----------------------------------------------------------------------

    def _forward(self):
        from sgdsai_cli.models import training_loss

        ac = self.precision.autocast_dtype
        if ac is not None:
            with self.torch.autocast(device_type=self.device.type, dtype=ac):
                return training_loss(self.model_spec, self.model, self.batch)
        return training_loss(self.model_spec, self.model, self.batch)

    def train_step(self, timed: bool, record_memory: bool) -> None:
        loss = self.run_phase("forward", self._forward, timed, record_memory)
        self.run_phase("backward", loss.backward, timed, record_memory)
        del loss
        if self.grad_bytes is None:
            self.grad_bytes = tensor_bytes([p.grad for p in self.model.parameters() if p.grad is not None])
        self.run_phase("optimizer_step", self.optimizer.step, timed, record_memory)
        self.run_phase("zero_grad", lambda: self.optimizer.zero_grad(set_to_none=True), timed, record_memory)

    def _read_reset_peak(self) -> int:
        """Peak allocated bytes since the last reset, then reset (CUDA allocator or CPU tracker)."""
        if self.is_cuda:
            peak = self.torch.cuda.max_memory_allocated(self.idx)
            self.torch.cuda.reset_peak_memory_stats(self.idx)
            return peak
        peak = self.tracker.peak
        self.tracker.reset_peak()
        return peak

    def activation_probe_step(self) -> None:
        """An untimed step that measures the activation peak as the estimate defines it.

        Live bytes above parameters, optimizer state and the gradients accumulated so far: the
        peak is read and reset at every gradient's post-accumulate hook, and each interval's
        peak is taken less the gradients noted before it (a gradient counts as activation until
        its hook fires, as in ``estimate._Tracker``).
        """
        params = list(self.model.parameters())
        base = self._mem_now() - self.batch_bytes
        acc = {"grads": 0, "act": 0}

        def hook(p) -> None:
            peak = self._read_reset_peak()
            acc["act"] = max(acc["act"], peak - base - acc["grads"])
            acc["grads"] += p.grad.untyped_storage().nbytes()

        handles = [p.register_post_accumulate_grad_hook(hook) for p in params]
        try:
            self._read_reset_peak()
            self._enter("forward")
            loss = self._forward()
            self._enter("backward")
            loss.backward()
            del loss
            acc["act"] = max(acc["act"], self._read_reset_peak() - base - acc["grads"])
        finally:
            for h in handles:
                h.remove()
        self._enter("optimizer_step")
        self.optimizer.step()
        self._enter("zero_grad")
        self.optimizer.zero_grad(set_to_none=True)
        self.activation_probe = acc["act"]

    def _collect_times(self) -> dict[str, float]:
        """Phase -> ms of everything timed since the last call (one synchronize on CUDA)."""
        out: dict[str, list[float]] = {}
        if self.is_cuda:
            self.torch.cuda.synchronize(self.idx)
            pairs = [(p, s.elapsed_time(e)) for p, s, e in self._pending_events]
        else:
            pairs = self._cpu_times
        for p, ms in pairs:
            out.setdefault(p, []).append(ms)
        self._pending_events, self._cpu_times = [], []
        return out

    def train(self) -> None:
        torch = self.torch
        spec = self.spec
        n_warm = max(spec.warmup, 1)
        total = n_warm + spec.steps
        if self.progress:
            emit("start", total=total, warmup=n_warm, steps=spec.steps)
        self._pending_events, self._cpu_times = [], []
        snapshot_path = self.job.get("snapshot_path") if self.is_cuda else None
        if self.job.get("snapshot_path") and not self.is_cuda:
            self.notes.append("--snapshot needs CUDA: no memory snapshot on the CPU")
        for i in range(total):
            self.step = i
            if self.sampler is not None:
                self.sampler.step = i
            measured = i >= n_warm
            if i == n_warm:  # entering the measured steps
                if self.tracker is not None and self.tracker.active:
                    self.tracker.__exit__(None, None, None)
                if snapshot_path:
                    torch.cuda.memory._record_memory_history(max_entries=SNAPSHOT_MAX_ENTRIES)
                if self.is_cuda:
                    torch.cuda.synchronize(self.idx)
                self.energy = (self.nvml.energy_mj() if self.nvml else None, None)
            timed = i == 0 or measured
            record_memory = self.is_cuda or (self.tracker is not None and self.tracker.active)
            if i == n_warm - 1 and i >= 1:  # the last warmup step, when it is not the first step
                self.activation_probe_step()
            else:
                self.train_step(timed, record_memory)
            if i == 0:
                self.first_step_ms = {p: v[0] for p, v in self._collect_times().items()}
            if self.progress:
                emit("step", step=i + 1, total=total, measured=measured)
        for p, v in self._collect_times().items():  # synchronizes
            self.times[p].extend(v)
        self.energy = (self.energy[0], self.nvml.energy_mj() if self.nvml else None)
        if snapshot_path:
            torch.cuda.memory._dump_snapshot(snapshot_path)
            torch.cuda.memory._record_memory_history(enabled=None)
        self.phase = "done"
        if self.sampler is not None:
            self.sampler.phase = "idle"

    # -- results ----------------------------------------------------------------------------

    def _phase_summary(self) -> dict[str, dict[str, int]]:
        """Per phase, the maxima over the recorded steady steps (step >= 1), else over all."""
        out = {}
        for p, recs in self.mem.items():
            steady = [r for r in recs if r["step"] >= 1] or recs
            if not steady:
                continue
            keys = [k for k in steady[0] if k not in ("step",)]
            summary = {k: max(r[k] for r in steady) for k in keys}
            summary["steps"] = len(steady)
            out[p] = summary
        return out

    def _derived(self, grad_bytes: int | None, state_bytes: int | None) -> tuple:
        """(activation peak, forward+backward peak, step transient) bytes from the phase records.

        Over steady steps (step >= 1), ``base`` = allocated before forward less the batch
        (parameters and optimizer state):
        forward_backward_peak = max(forward peak, backward peak) - base (gradients included);
        activation_peak = the probe step's figure (``activation_probe_step``) when there was one,
        else max(forward peak - base, backward peak - base - all gradients), a lower bound where
        backward peaks before its last gradient; step_transient = the optimizer step's
        peak above what was allocated before it, the first step's less the state it created.
        """
        fwd = {r["step"]: r for r in self.mem["forward"]}
        bwd = {r["step"]: r for r in self.mem["backward"]}
        act = fbp = None
        for step, f in fwd.items():
            if step < 1 or step not in bwd:
                continue
            base = f["before_bytes"] - self.batch_bytes
            peak = max(f["allocated_peak_bytes"], bwd[step]["allocated_peak_bytes"])
            fbp = max(fbp or 0, peak - base)
            a = max(f["allocated_peak_bytes"] - base, bwd[step]["allocated_peak_bytes"] - base - (grad_bytes or 0))
            act = max(act or 0, a)
        if self.activation_probe is not None:
            act = self.activation_probe
        transient = None
        for r in self.mem["optimizer_step"]:
            grown = r["allocated_peak_bytes"] - r["before_bytes"]
            if r["step"] == 0:
                if state_bytes is None:
                    continue
                grown -= state_bytes
            transient = max(transient if transient is not None else grown, grown)
        return act, fbp, transient

    def memory_result(self, status: str):
        from sgdsai_cli.results import MemoryResult

        params = list(self.model.parameters()) if self.model is not None else []
        from sgdsai_cli.measure.sizing import (
            state_bytes_by_key,  # the meta sizing's reader: one definition of "state bytes"
        )

        by_key = state_bytes_by_key(self.optimizer) if self.optimizer is not None and status == "ok" else {}
        phases = self._phase_summary()

        details: dict[str, Any] = {"phases": phases}
        if self.is_cuda:
            import torch

            details["allocator_backend"] = torch.cuda.get_allocator_backend()
            s = _cuda_stats(self.idx)
            details.update({k: s[k] for k in ("num_alloc_retries", "num_ooms", "inactive_split_bytes")})
        else:
            details["rss_peak_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
            details["live_tensor_tracking"] = "first step and warmup steps (measured steps run untracked)"
        e0, e1 = self.energy
        if e0 is not None and e1 is not None and self.spec.steps:
            details["energy_j_per_step"] = (e1 - e0) / 1000.0 / self.spec.steps
        if self.sampler is not None:
            details["samples"] = len(self.sampler.rows)
            for col in ("gpu_util_pct", "power_w"):
                vals = [r[_col(col)] for r in self.sampler.rows if r[_col(col)] is not None and r[1] >= 0]
                if vals:
                    details[f"{col}_mean"] = sum(vals) / len(vals)
            if self.sampler.errors:
                self.notes.extend(self.sampler.errors)
        grads = [p.grad for p in params if p.grad is not None]
        grad_bytes = tensor_bytes(grads) if grads else self.grad_bytes
        state_total = sum(by_key.values()) if by_key else None
        act, fbp, transient = self._derived(grad_bytes, state_total)
        if fbp is not None:
            details["forward_backward_peak_bytes"] = fbp
        return MemoryResult(
            source="measured",
            state_bytes=state_total,
            state_bytes_by_key=by_key,
            param_bytes=tensor_bytes(params) if params else None,
            grad_bytes=grad_bytes,
            activation_peak_bytes=act,
            step_transient_bytes=transient,
            peak_allocated_bytes=self._overall_peak(),
            peak_reserved_bytes=max((r["reserved_peak_bytes"] for recs in self.mem.values() for r in recs),
                                    default=None) if self.is_cuda else None,
            nvml_used_peak_bytes=self.sampler.column_max("nvml_used_bytes") if self.sampler is not None else None,
            details=details,
        )

    def latency(self) -> dict[str, Any]:
        lat: dict[str, Any] = {p: latency_stats(self.times[p]) for p in PHASES}
        steps = [sum(v) for v in zip(*(self.times[p] for p in PHASES), strict=False)]
        lat["step"] = latency_stats(steps)
        lat["first_step"] = self.first_step_ms.get("optimizer_step")
        lat["first_step_phases"] = self.first_step_ms or None
        return lat

    def device_record(self) -> dict[str, Any]:
        if not self.is_cuda:
            return cpu_device_record()
        import torch

        from sgdsai_cli.measure.sampler import cuda_uuid

        props = torch.cuda.get_device_properties(self.idx)
        return {"type": "cuda", "name": props.name, "total_memory_bytes": int(props.total_memory),
                "uuid": cuda_uuid(self.idx), "driver": self.nvml.driver if self.nvml else None}

    def model_info(self) -> dict[str, Any] | None:
        if self.model is None:
            return None
        from sgdsai_cli.models import count_params

        params = list(self.model.parameters())
        pb = tensor_bytes(params)
        return {"name": self.model_spec.name, "family": self.model_spec.family, "params": count_params(self.model),
                "param_tensors": len(params), "param_bytes": pb, "grad_bytes": pb}

    def stop_sampler(self) -> None:
        if self.sampler is not None and self.sampler._thread is not None:
            self.sampler.stop()


def _col(name: str) -> int:
    from sgdsai_cli.measure.sampler import SAMPLE_COLUMNS

    return SAMPLE_COLUMNS.index(name)


def _is_oom(e: BaseException) -> bool:
    import torch

    if isinstance(e, torch.cuda.OutOfMemoryError):
        return True
    msg = str(e)
    return isinstance(e, RuntimeError) and ("out of memory" in msg.lower() or "can't allocate memory" in msg)


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{e.__class__.__name__}: {text[0] if text else ''}".rstrip(": ")


def run_job(job: dict, progress: bool = False) -> dict:
    """Run one optimizer's job in this process; return the result record (never raises on
    a run failure: OOM -> status "oom", anything else -> status "error")."""
    from sgdsai_cli.results import RunResult, to_plain

    run = _Run(job, progress)
    status, error = "ok", None
    try:
        run.setup()
        run.train()
    except Exception as e:  # a run that fails is a result
        status = "oom" if _is_oom(e) else "error"
        error = _first_line(e)
        if status == "oom":
            error = f"out of memory in {run.phase} (step {run.step}): {error}"
            try:
                if run.is_cuda:
                    run.peak_before_failure = int(run.torch.cuda.max_memory_allocated(run.idx))
                elif run.tracker is not None and run.tracker.active:
                    run.peak_before_failure = run.tracker.peak
            except Exception:
                pass
        else:
            run.notes.append("traceback: " + " | ".join(traceback.format_exc().strip().splitlines()[-3:]))
    finally:
        run.stop_sampler()
        if run.tracker is not None and run.tracker.active:
            run.tracker.__exit__(None, None, None)
    samples_csv = None
    if run.sampler is not None and job.get("samples_csv"):
        try:
            samples_csv = str(run.sampler.write_csv(job["samples_csv"]))
        except Exception as e:
            run.notes.append(f"samples CSV not written: {_first_line(e)}")
    memory = run.memory_result(status)
    if status == "oom":
        memory.details["oom_phase"] = run.phase
        memory.details["oom_step"] = run.step
    result = RunResult(
        optimizer=job["optimizer"],
        impl=getattr(run.optimizer, "impl_used", None) or run.impl,
        status=status,
        memory=memory,
        latency_ms=run.latency() if status == "ok" else None,
        error=error,
        note="; ".join(dict.fromkeys(run.notes)) or None,
    )
    snapshot = job.get("snapshot_path") if status == "ok" and run.is_cuda else None
    return {"run": to_plain(result), "model": run.model_info(), "device": _safe(run.device_record),
            "samples_csv": samples_csv, "snapshot": snapshot if snapshot and Path(snapshot).exists() else None}


def _safe(fn):
    try:
        return fn()
    except Exception:
        return None


def main(argv: list[str] | None = None) -> int:
    """Entry point of the child: read the job, run it, write the result atomically."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        sys.stderr.write("usage: python -m sgdsai_cli.measure.worker JOB.json RESULT.json\n")
        return 2
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides what Ctrl-C stops
    from sgdsai_cli.files import write_json_atomic

    job = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
    result = run_job(job, progress=bool(job.get("progress", True)))
    write_json_atomic(argv[1], result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
