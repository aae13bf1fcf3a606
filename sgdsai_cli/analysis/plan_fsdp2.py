"""``plan --parallel fsdp2``: the fewest GPUs for FSDP2 from the one-process simulation, not a formula.

    rows = fsdp2_rows(model_spec, ["bf16"], [gpus.GPUS["h100-80gb"]], ["sgdsai", "adamw"], batch_size=1,
                      seq_len=512)
    rows[0]   # {"optimizer": "sgdsai", "gpu": "h100-80gb", "gpus_needed": 2, "rank_peak_bytes": ..., ...}

Per precision, rank 0 of an FSDP2 job (``measure.parallel``: torch's fake process group, the real
``fully_shard`` per block and at the root, fake tensors) is simulated at world sizes 1, 2, 4, ...
``MAX_WORLD_SIZE``, every optimizer at once, until every (optimizer, GPU) pair fits; a pair fits at
the first world size whose simulated step peak of one rank fits the card by ``gpus.fits`` (the
allocated peak plus the card's context allowance: the allocator model is not run on the
simulation, and the communication library's own buffers are not counted; see measuring.md). Each
rank runs one micro-batch of ``batch_size``. Where no world size up to the limit fits, the row says
how far the last one missed.
"""

from __future__ import annotations

from typing import Any

from sgdsai_cli.analysis.gpus import fits
from sgdsai_cli.progress import Progress, ProgressCallback, report_to

MAX_WORLD_SIZE = 64  # powers of two up to this; past it a row says "none fits"


def fsdp2_rows(model_spec, precisions, gpus, optimizers, *, batch_size: int, seq_len: int,
               context_bytes: int | None = None, max_world_size: int = MAX_WORLD_SIZE,
               on_progress: ProgressCallback | None = None) -> list[dict[str, Any]]:
    """One row per (optimizer, precision, GPU): the fewest FSDP2 ranks and what one rank holds there."""
    from sgdsai_cli.measure.parallel import check_parallel, fake_process_group, simulate_fsdp2
    from sgdsai_cli.precision import resolve_precision

    say = report_to(on_progress)
    rows: list[dict[str, Any]] = []
    for precision in precisions:
        prec = resolve_precision(precision)
        found: dict[tuple[str, str], tuple[int, Any]] = {}
        last: dict[str, Any] = {}
        world = 1
        while world <= max_world_size and len(found) < len(optimizers) * len(gpus):
            say(Progress(f"fsdp2 {precision}", None, None, f"{world} ranks"))
            cfg = check_parallel("fsdp2", world, None, True)
            with fake_process_group(world):
                sim = simulate_fsdp2(model_spec, prec, list(optimizers), cfg, batch_size, seq_len)
            for optimizer, rank in zip(optimizers, sim.ranks, strict=True):
                last[optimizer] = (world, rank)
                if isinstance(rank, str):
                    continue
                for gpu in gpus:
                    key = (optimizer, gpu.name)
                    if key not in found and fits(gpu, rank.peak_bytes, context_bytes):
                        found[key] = (world, rank)
            world *= 2
        for optimizer in optimizers:
            for gpu in gpus:
                rows.append(_row(optimizer, precision, gpu, found.get((optimizer, gpu.name)), last.get(optimizer),
                                 context_bytes, max_world_size))
    return rows


def _row(optimizer: str, precision: str, gpu, hit, last, context_bytes: int | None, limit: int) -> dict[str, Any]:
    context = gpu.context_bytes if context_bytes is None else context_bytes
    world, rank = hit if hit is not None else (last or (None, None))
    row: dict[str, Any] = {"optimizer": optimizer, "precision": precision, "gpu": gpu.name,
                           "gpu_memory_bytes": gpu.memory_bytes, "context_bytes": context,
                           "gpus_needed": world if hit is not None else None, "world_size_simulated": world,
                           "reason": None}
    if isinstance(rank, str) or rank is None:
        row.update({"impl": None, "rank_param_bytes": None, "rank_grad_bytes": None, "rank_state_bytes": None,
                    "rank_peak_bytes": None, "reason": rank or "not simulated"})
        return row
    row.update({"impl": rank.impl, "rank_param_bytes": rank.param_bytes, "rank_grad_bytes": rank.grad_bytes,
                "rank_state_bytes": rank.state_bytes, "rank_peak_bytes": rank.peak_bytes})
    if hit is None:
        missing = rank.peak_bytes + context - gpu.memory_bytes
        row["reason"] = (f"impractical: at {world} ranks one rank still needs {missing} bytes more than the card "
                         f"(activations and the gathered blocks do not shrink with more ranks); none up to {limit}")
    return row
