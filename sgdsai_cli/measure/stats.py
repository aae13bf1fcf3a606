"""Percentiles and latency summaries: one rule for every timing the tool reports.

A percentile is the linear interpolation between the two closest ranks (numpy's default,
"linear"): for ``n`` sorted values the q-th percentile sits at rank ``(n - 1) * q / 100``; a
fractional rank is interpolated between its neighbours. So p50 is the median and p90 of
[1, 2, 3, 4, 10] is 4 + 0.6 * (10 - 4) = 7.6.

A latency summary is ``{"p50", "p90", "min", "max", "n"}`` in the values' unit (ms), the shape
every ``latency_ms`` and ``step_ms`` object of a result has.
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
