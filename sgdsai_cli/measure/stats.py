"""Percentiles and latency summaries: one rule for every timing the tool reports.

A percentile is the linear interpolation between the two closest ranks (numpy's default,
"linear"): for ``n`` sorted values the q-th percentile sits at rank ``(n - 1) * q / 100``; a
fractional rank is interpolated between its neighbours. So p50 is the median and p90 of
[1, 2, 3, 4, 10] is 4 + 0.6 * (10 - 4) = 7.6.

A latency summary is ``{"p50", "p90", "min", "max", "n"}`` in the values' unit (ms), the shape
every ``latency_ms`` and ``step_ms`` object of a result has.

Timing honesty: ``spread_warning`` decides when CPU timings vary too widely to be read as one
figure: step times whose p90 / p50 exceeds ``SPREAD_LIMIT``, or per-round ratios whose max / min
does (on a loaded machine the threads of one step wait for each other's cores). The warning is
data (a row's ``details["spread_warning"]``, a run's note), saying how to get a stable figure.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) of ``values`` by linear interpolation between closest ranks."""
    if not values:
        raise ValueError("percentile of no values")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile q {q!r} must be within 0..100")
    ordered = sorted(float(v) for v in values)
    rank = (len(ordered) - 1) * q / 100.0
    lo = math.floor(rank)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (rank - lo)


def median(values: Sequence[float]) -> float:
    return percentile(values, 50)


def latency_summary(values_ms: Sequence[float]) -> dict[str, Any] | None:
    """p50, p90, min, max and n of ``values_ms``; None when there are none."""
    if not values_ms:
        return None
    return {"p50": percentile(values_ms, 50), "p90": percentile(values_ms, 90), "min": float(min(values_ms)),
            "max": float(max(values_ms)), "n": len(values_ms)}


SPREAD_LIMIT = 1.5  # p90/p50 of step times, or max/min of per-round ratios, above this: a warning
STABLE_HINT = "for a stable figure run on a quiet machine with OMP_NUM_THREADS=1"
BENCH_HINT = "for a stable figure run on a quiet machine with --threads 1 (or OMP_NUM_THREADS=1)"
QUIET_HINT = "for a stable figure run on a quiet machine (the load average says how busy this one was)"


def spread(values: Sequence[float]) -> float | None:
    """p90 / p50 of ``values``; None for fewer than two values or a p50 that is not above zero."""
    if len(values) < 2:
        return None
    p50 = percentile(values, 50)
    return percentile(values, 90) / p50 if p50 > 0 else None


def range_spread(values: Sequence[float]) -> float | None:
    """max / min of ``values``; None for fewer than two values or a minimum that is not above zero."""
    if len(values) < 2:
        return None
    lo = min(values)
    return max(values) / lo if lo > 0 else None


def spread_warning(step_ms: Sequence[float], ratios: Sequence[float] = (), threads: int | None = None,
                   load: tuple[float | None, int | None] | None = None, hint: str = STABLE_HINT) -> str | None:
    """A one-line warning when the timings vary widely (see the module docstring), else None.

    ``step_ms``: the measured step times; ``ratios``: the per-round ratios to the reference
    (bench-step), if any; ``threads``: the torch threads the timings ran on, said in the text;
    ``load``: (1-minute load average, usable CPUs), said in the text when known; ``hint``: how to
    get a stable figure.
    """
    found = []
    s = spread(step_ms)
    if s is not None and s > SPREAD_LIMIT:
        found.append(f"step p90/p50 {s:.2f}")
    r = range_spread(ratios)
    if r is not None and r > SPREAD_LIMIT:
        found.append(f"ratio range {min(ratios):.2f}-{max(ratios):.2f} over {len(ratios)} rounds")
    if not found:
        return None
    on = f" on {threads} thread{'s' if threads != 1 else ''}" if threads is not None else ""
    busy = ""
    if load is not None and load[0] is not None:
        busy = f", load average {load[0]:.2f}" + (f" on {load[1]} CPUs" if load[1] else "")
    return (f"timings vary widely ({', '.join(found)}, above {SPREAD_LIMIT}){on}{busy}: the CPU is shared or "
            f"oversubscribed; {hint}")
