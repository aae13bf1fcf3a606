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

At the world size found, ``max_batch_per_rank`` is the largest micro-batch per rank that still fits
(``largest_batch``: doubling from 1, shared by every pair, then regula falsi inside the bracket).
Only forward and backward depend on the batch, so each probe re-traces just those, on one sharded
depth-3 model per world size (``parallel.prepare_trace``; the simulation's trace, extended); the
rank's parameters, gradients, state and step transient come from the simulation at that world size:
peak(B) = params + state + max(FB(B), grads + transient), the simulation's own composition.
"""

from __future__ import annotations

from typing import Any

from sgdsai_cli.analysis.gpus import fits
from sgdsai_cli.progress import Progress, ProgressCallback, report_to

MAX_WORLD_SIZE = 64  # powers of two up to this; past it a row says "none fits"
MAX_BATCH_PER_RANK = 1 << 16  # the batch search stops here (as plan's max batch)


def fsdp2_rows(model_spec, precisions, gpus, optimizers, *, batch_size: int, seq_len: int,
               context_bytes: int | None = None, max_world_size: int = MAX_WORLD_SIZE,
               max_batch: int = MAX_BATCH_PER_RANK,
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
        batches = _max_batches(model_spec, prec, found, {g.name: g for g in gpus}, seq_len, context_bytes,
                               max_batch)
        for optimizer in optimizers:
            for gpu in gpus:
                row = _row(optimizer, precision, gpu, found.get((optimizer, gpu.name)), last.get(optimizer),
                           context_bytes, max_world_size)
                row["max_batch_per_rank"] = batches.get((optimizer, gpu.name))
                rows.append(row)
    return rows


def _max_batches(model_spec, precision, found: dict, gpus: dict, seq_len: int, context_bytes: int | None,
                 limit: int) -> dict:
    """(optimizer, gpu name) -> the largest micro-batch per rank that fits at the world size found."""
    from sgdsai_cli.measure import estimate as est
    from sgdsai_cli.measure import parallel as par

    layers = est.model_depth(model_spec)
    depth = min(layers, est.TRACE_DEPTH)
    out: dict = {}
    for world in sorted({w for w, _ in found.values()}):
        cfg = par.check_parallel("fsdp2", world, None, True)
        cache: dict[int, int] = {}
        with par.fake_process_group(world):
            prepared = par.prepare_trace(model_spec, precision, cfg, depth, seq_len)  # one model per world size

            def fb_peak(b: int, cfg=cfg, cache=cache, prepared=prepared) -> int:
                if b not in cache:
                    fb, _, _ = par.trace_prepared(prepared, precision, cfg, b, seq_len)
                    cache[b] = est._extend(fb.segments, depth, layers)[0]
                return cache[b]

            for (optimizer, gpu_name), (w, rank) in found.items():
                if w != world:
                    continue
                gpu = gpus[gpu_name]
                context = gpu.context_bytes if context_bytes is None else context_bytes

                # peak(B) = params + state + max(FB(B), grads + transient) fits the card exactly when FB(B) fits
                # what params and state leave (the second term fits: the pair fits at the planned batch).
                # FB rises with B at every batch (activations), so the secant search runs on FB alone.
                room = gpu.memory_bytes - context - rank.param_bytes - rank.state_bytes
                out[(optimizer, gpu_name)] = largest_batch(fb_peak, room, limit)
    return out


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


def largest_batch(fn, room: int, limit: int = MAX_BATCH_PER_RANK) -> int:
    """Largest B in [0, limit] with ``fn(B) <= room``, for ``fn`` increasing in B (cached by the caller).

    Doubling (1, 2, 4, ...) until ``fn`` passes ``room``: those probes are the same for every room, so
    callers that search several rooms over one cached ``fn`` share them. Then regula falsi inside the
    bracket, with a bisection step whenever an interpolation fails to halve it: at large batches the
    forward/backward peak is close to affine in B (activations), at small ones the gradients set it.
    """
    if fn(1) > room:
        return 0
    good = 1
    while True:
        nxt = min(good * 2, limit)
        if nxt == good:
            return good
        if fn(nxt) > room:
            bad = nxt
            break
        good = nxt
    while bad - good > 1:
        width = bad - good
        probe = good + (room - fn(good)) * width // max(fn(bad) - fn(good), 1)
        probe = min(max(probe, good + 1), bad - 1)
        if fn(probe) <= room:
            good = probe
            if good + 1 < bad:  # nearly affine: the interpolation lands on the answer or just below it
                if fn(good + 1) > room:
                    return good
                good += 1
        else:
            bad = probe
        if bad - good > width // 2 and bad - good > 1:  # the interpolation stalled: bisect once
            middle = (good + bad) // 2
            if fn(middle) <= room:
                good = middle
            else:
                bad = middle
    return good
