"""Summaries of a g-SNR run: pure functions of the per-tensor records.

Per block type: counts, g-SNR min/median/max, g-SNR/sqrt(n-1), and the largest relative change of
any tensor between the first and last measured step; the degenerate tensors with what SGDSaI does
for each; and the run's overall stability figure.
"""

from __future__ import annotations

import statistics
from typing import Any

# Degenerate first gradients and what SGDSaI does with them.
DEGENERATE_ACTIONS = {
    "single_element": "g-SNR set to 1: a plain SGD-momentum step",
    "constant": "g-SNR set to 1: a plain SGD-momentum step",
    "zero": "no g-SNR yet: weight decay only, until the first non-zero gradient sets g-SNR",
    "no_gradient": "no gradient: the optimizer skips the tensor",
}


def rel_change(first: float | None, last: float | None) -> float | None:
    """|last - first| / first, or None when either is unknown or first is 0."""
    if first is None or last is None or first == 0:
        return None
    return abs(last - first) / first


def _block_order(kind: str) -> tuple[int, str]:
    from sgdsai_cli.models import BLOCK_TYPES

    return (BLOCK_TYPES.index(kind) if kind in BLOCK_TYPES else len(BLOCK_TYPES), kind)


def summarise(tensors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per block type: counts, g-SNR min/median/max, g-SNR/sqrt(n-1) and the stability figure.

    g-SNR statistics cover the non-degenerate tensors; ``degenerate`` counts the others.
    ``max_rel_change`` is the largest |g_last - g_first| / g_first of any tensor of the type
    between the first and last measured step (None with a single step).
    """
    groups: dict[str, list[dict[str, Any]]] = {}
    for t in tensors:
        groups.setdefault(t["block_type"], []).append(t)
    rows = []
    for kind in sorted(groups, key=_block_order):
        ts = groups[kind]
        good = [t for t in ts if t["degenerate"] is None and t["gsnr_init"] is not None]
        values = [t["gsnr_init"] for t in good]
        ratios = [t["gsnr_over_sqrt_n_minus_1"] for t in good]
        changes = []
        for t in ts:
            keys = list(t["gsnr_by_step"])
            if len(keys) > 1 and t["degenerate"] is None:
                c = rel_change(t["gsnr_by_step"][keys[0]], t["gsnr_by_step"][keys[-1]])
                if c is not None:
                    changes.append((c, t["name"]))
        top = max(changes) if changes else None
        rows.append({
            "block_type": kind, "tensors": len(ts), "elements": sum(t["numel"] for t in ts),
            "degenerate": len(ts) - len(good),
            "gsnr_min": min(values) if values else None,
            "gsnr_median": statistics.median(values) if values else None,
            "gsnr_max": max(values) if values else None,
            "ratio_min": min(ratios) if ratios else None,
            "ratio_median": statistics.median(ratios) if ratios else None,
            "ratio_max": max(ratios) if ratios else None,
            "max_rel_change": top[0] if top else None,
            "max_rel_change_tensor": top[1] if top else None,
        })
    return rows


def degenerate_list(tensors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The tensors whose first gradient is degenerate, with what SGDSaI does for each."""
    return [{"name": t["name"], "block_type": t["block_type"], "numel": t["numel"], "reason": t["degenerate"],
             "gsnr_init": t["gsnr_init"], "sgdsai_action": DEGENERATE_ACTIONS[t["degenerate"]]}
            for t in tensors if t["degenerate"] is not None]


def stability(tensors: list[dict[str, Any]], steps: list[int]) -> dict[str, Any]:
    """How far the g-SNR of non-degenerate tensors moved between the first and last measured step."""
    first, last = str(steps[0]), str(steps[-1])
    changes = []
    for t in tensors:
        if t["degenerate"] is None:
            c = rel_change(t["gsnr_by_step"].get(first), t["gsnr_by_step"].get(last))
            if c is not None:
                changes.append((c, t["name"]))
    if len(steps) < 2 or not changes:
        return {"first_step": steps[0], "last_step": steps[-1], "tensors_compared": len(changes),
                "max_rel_change": None, "max_rel_change_tensor": None, "median_rel_change": None}
    top = max(changes)
    return {"first_step": steps[0], "last_step": steps[-1], "tensors_compared": len(changes),
            "max_rel_change": top[0], "max_rel_change_tensor": top[1],
            "median_rel_change": statistics.median(c for c, _ in changes)}
