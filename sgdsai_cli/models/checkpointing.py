"""Activation checkpointing of a model's repeated blocks: torch.utils.checkpoint, non-reentrant.

    policy = parse_policy("every=2")      # "none" | "full" | "every=N" (BadInput otherwise)
    apply_checkpointing(model, policy)     # blocks 0, N, 2N, ... recompute their forward in backward

Each chosen block's ``forward`` is replaced, on that instance only, by one that runs the original
under ``torch.utils.checkpoint.checkpoint(..., use_reentrant=False)``: the block keeps only its
inputs during forward and recomputes its activations when backward reaches it. Parameter names,
module hooks and the model's structure are unchanged (no wrapper module), so sizing, fingerprints
and the estimate's per-block markers see the same model; the hooks run around the first forward
only, never during the recomputation. The same function is applied in the fake-tensor estimate and
in real runs (``build.build_model``), so the recomputation is in the trace and in the measurement.
"""

from __future__ import annotations

import functools
import re

from torch import nn

from sgdsai_cli.errors import BadInput

POLICIES = ("none", "full", "every=N")
_EVERY = re.compile(r"every=(\d+)")


def parse_policy(text: str | None) -> str:
    """The canonical policy text; BadInput naming the value for anything else."""
    value = "none" if text is None else str(text).strip().lower()
    if value in ("none", "full"):
        return value
    match = _EVERY.fullmatch(value)
    if match and 1 <= int(match.group(1)) <= 10_000:
        n = int(match.group(1))
        return "full" if n == 1 else f"every={n}"
    raise BadInput(f"bad activation_checkpointing {text!r} (none, full, or every=N with N a whole number from 1)",
                   field="activation_checkpointing", value=text)


def checkpointed_blocks(policy: str, n_blocks: int) -> list[int]:
    """The block indices ``policy`` checkpoints among ``n_blocks``."""
    if policy == "none":
        return []
    step = 1 if policy == "full" else int(policy.split("=", 1)[1])
    return list(range(0, n_blocks, step))


def apply_checkpointing(model: nn.Module, blocks: nn.ModuleList, policy: str) -> None:
    """Checkpoint the ``blocks`` of ``model`` that ``policy`` names (in place)."""
    from torch.utils.checkpoint import checkpoint

    for k in checkpointed_blocks(policy, len(blocks)):
        block = blocks[k]
        forward = block.forward

        @functools.wraps(forward)
        def checkpointed(*args, _forward=forward, **kwargs):
            return checkpoint(_forward, *args, use_reentrant=False, **kwargs)

        block.forward = checkpointed
