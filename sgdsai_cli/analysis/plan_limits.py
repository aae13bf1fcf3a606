"""plan's formula GPU counts (DDP, ZeRO-1/2/3: ``gpus_needed``), which of them are impractical, and why.

    impractical_counts(param_bytes=P, grad_bytes=G, activation_bytes=A, usable_bytes=U,
                       needed={"ddp": None, "zero1": None, "zero2": 67, "zero3": 3})
    # {"zero2": {"reason": "...", "room_bytes": ..., "usable_bytes": ..., "gpus": 67}}

Under ZeRO-1 and ZeRO-2 every GPU still holds a full replica of part of the model (ZeRO-1: P + G,
ZeRO-2: P) and its own activations A; only the rest is divided by N. When the replicated part leaves
a sliver of the card, N grows without bound as the sliver shrinks (llama-3-8b fp32 on a 40 GB card:
ZeRO-2 needs 67 GPUs to share the 0.89 GiB that P and A leave): such a count is a formula's artefact,
not a deployment. A count is flagged when either holds:

- the room for the shards, ``usable - A - replicated``, is under ``MIN_ROOM_FRACTION`` (10%) of the
  usable memory (the replicated part fills over 90% of the card), or
- the count exceeds ``MAX_PRACTICAL_GPUS`` (1024), a chosen bound: beyond it a data-parallel
  group of that size is a cluster-scale job whose per-GPU batch the formula ignores.

Counts of 1 (one GPU fits) and ``None`` (no count fits) are never flagged.
"""

from __future__ import annotations

import math

MAX_PRACTICAL_GPUS = 1024
MIN_ROOM_FRACTION = 0.10
REPLICATED = {"zero1": ("param", "grad"), "zero2": ("param",), "zero3": ()}
REASON_ROOM = ("the replicated part (the parameters, gradients under ZeRO-1, and the activations, which every GPU "
               "holds in full) leaves under 10% of the card for the shards")
REASON_COUNT = f"more than {MAX_PRACTICAL_GPUS} GPUs"


def impractical_counts(*, param_bytes: int, grad_bytes: int, activation_bytes: int, usable_bytes: int,
                       needed: dict[str, int | None]) -> dict[str, dict]:
    """Per ZeRO strategy whose count is impractical: the reason, the room left for the shards, the count."""
    sizes = {"param": param_bytes, "grad": grad_bytes}
    out: dict[str, dict] = {}
    for strategy, replicated in REPLICATED.items():
        n = needed.get(strategy)
        if n is None or n <= 1:
            continue
        room = usable_bytes - activation_bytes - sum(sizes[k] for k in replicated)
        reasons = []
        if room < MIN_ROOM_FRACTION * usable_bytes:
            reasons.append(REASON_ROOM)
        if n > MAX_PRACTICAL_GPUS:
            reasons.append(REASON_COUNT)
        if reasons:
            out[strategy] = {"reason": "; ".join(reasons), "room_bytes": room, "usable_bytes": usable_bytes,
                             "gpus": n}
    return out


STRATEGIES = ("ddp", "zero1", "zero2", "zero3")


def gpus_needed(param_bytes: int, grad_bytes: int, state_bytes: int, activation_bytes: int,
                usable_bytes: int, transient_bytes: int = 0, fits: bool | None = None) -> dict[str, int | None]:
    """Smallest GPU count per strategy (the formulas: ``analysis.plan``'s docstring); None when no count fits.

    ``fits`` (the single-GPU verdict from the exact timeline) decides DDP when given; without it DDP
    uses the conservative ``P + G + S + max(A, T) <= usable``."""

    def shards(sharded: int, replicated: int) -> int | None:
        room = usable_bytes - activation_bytes - replicated
        if room <= 0:
            return None
        return max(1, math.ceil(sharded / room))

    t = transient_bytes
    whole = param_bytes + grad_bytes + state_bytes + max(activation_bytes, t)
    if fits if fits is not None else whole <= usable_bytes:
        return {k: 1 for k in STRATEGIES}  # one GPU holds it all: no strategy needs more
    return {
        "ddp": None,
        "zero1": shards(state_bytes + t, param_bytes + grad_bytes),
        "zero2": shards(grad_bytes + state_bytes + t, param_bytes),
        "zero3": shards(param_bytes + grad_bytes + state_bytes + t, 0),
    }
