"""The phases of a training step, timed and measured one by one.

A step is four phases, ``forward`` (the loss), ``backward``, ``optimizer_step`` and ``zero_grad``
(set_to_none). ``PhaseRecorder.run`` runs one phase and keeps:

- its time: CUDA events around it on CUDA (read after one synchronize, in ``collect_times``),
  ``time.perf_counter`` on the CPU;
- its memory, the peak reset before it: allocated before, after and at the peak, plus on CUDA the
  allocator's reserved and active bytes, ``num_alloc_retries``, ``num_ooms`` and
  ``inactive_split_bytes`` (``torch.cuda.memory_stats``); on the CPU the live-tensor tracker's
  bytes (while it is active).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch

from sgdsai_cli.measure.tracker import LiveTracker

PHASES = ("forward", "backward", "optimizer_step", "zero_grad")


def cuda_stats(index: int) -> dict[str, int]:
    """The caching allocator's figures a phase record keeps (bytes and counts)."""
    s = torch.cuda.memory_stats(index)

    def g(key: str) -> int:
        return int(s.get(key, 0))

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


class PhaseRecorder:
    """Times and memory of every phase run through it; ``mem[phase]`` is a list of per-step records."""

    def __init__(self, device: torch.device, tracker: LiveTracker | None = None):
        self.is_cuda = device.type == "cuda"
        self.index = device.index if self.is_cuda else None
        self.tracker = tracker
        self.mem: dict[str, list[dict[str, int]]] = {p: [] for p in PHASES}
        self._events: list[tuple[str, Any, Any]] = []
        self._cpu_times: list[tuple[str, float]] = []

    # -- memory now
    def measuring(self) -> bool:
        """Whether memory can be read now (always on CUDA; on the CPU while the tracker is active)."""
        return self.is_cuda or (self.tracker is not None and self.tracker.active)

    def allocated_now(self) -> int | None:
        if self.is_cuda:
            return torch.cuda.memory_allocated(self.index)
        return self.tracker.live if self.measuring() else None

    def read_reset_peak(self) -> int:
        """Peak allocated bytes since the last reset, then reset (CUDA allocator or CPU tracker)."""
        if self.is_cuda:
            peak = torch.cuda.max_memory_allocated(self.index)
            torch.cuda.reset_peak_memory_stats(self.index)
            return peak
        peak = self.tracker.peak
        self.tracker.reset_peak()
        return peak

    def peak_so_far(self) -> int | None:
        """The peak since the last reset, without resetting (None where memory is not read)."""
        if self.is_cuda:
            return int(torch.cuda.max_memory_allocated(self.index))
        return self.tracker.peak if self.measuring() else None

    def overall_peak(self, extra: int | None = None) -> int | None:
        """The highest allocated peak of every record (and ``extra``: the peak before a failure)."""
        peaks = [r["allocated_peak_bytes"] for recs in self.mem.values() for r in recs]
        if extra is not None:
            peaks.append(extra)
        return max(peaks) if peaks else None

    # -- one phase
    def run(self, phase: str, fn: Callable[[], Any], step: int, *, timed: bool, record_memory: bool):
        """Run ``fn()`` as ``phase`` of ``step``: its time when ``timed``, its memory when ``record_memory``."""
        before = None
        if record_memory and self.measuring():
            if self.is_cuda:
                torch.cuda.reset_peak_memory_stats(self.index)
            else:
                self.tracker.reset_peak()
            before = self.allocated_now()
        out = self._timed(phase, fn) if timed else fn()
        if before is not None:
            if self.is_cuda:
                rec = {"before_bytes": before, **cuda_stats(self.index)}
            else:
                rec = {"before_bytes": before, "allocated_bytes": self.tracker.live,
                       "allocated_peak_bytes": self.tracker.peak}
            rec["step"] = step
            self.mem[phase].append(rec)
        return out

    def _timed(self, phase: str, fn: Callable[[], Any]):
        if self.is_cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            out = fn()
            end.record()
            self._events.append((phase, start, end))
            return out
        t0 = time.perf_counter()
        out = fn()
        self._cpu_times.append((phase, (time.perf_counter() - t0) * 1000.0))
        return out

    def collect_times(self) -> dict[str, list[float]]:
        """Phase -> ms of everything timed since the last call (one synchronize on CUDA)."""
        if self.is_cuda:
            torch.cuda.synchronize(self.index)
            pairs = [(p, s.elapsed_time(e)) for p, s, e in self._events]
        else:
            pairs = self._cpu_times
        out: dict[str, list[float]] = {}
        for p, ms in pairs:
            out.setdefault(p, []).append(ms)
        self._events, self._cpu_times = [], []
        return out
