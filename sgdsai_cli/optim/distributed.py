"""SGD-SaI on sharded parameters: g-SNR of a DTensor gradient from per-shard statistics.

Under FSDP2 (``fully_shard``) every parameter and gradient is a DTensor sharded along dim 0 over one
mesh dimension (HSDP: ``(Replicate(), Shard(0))`` on a 2-D mesh). The g-SNR of the full tensor,
``||g|| / (std(g) + eps)``, needs only six numbers per shard: the element count, the mean and M2 (sum
of squared deviations, Chan et al.'s parallel variance), the sum of squares, the minimum and the
maximum, all in fp64. ``tensor_gsnrs`` computes them on each rank's local shard, exchanges them for
all the tensors of a call in **one** ``all_gather_into_tensor`` per mesh dimension that shards them
(the replicate dimension of HSDP holds identical shards and takes no part), and merges them in rank
order, so every rank gets the same bits. The gradients themselves never travel.

Why a gather of statistics and not an all-reduce of (count, sum, sum of squares): the constant-gradient
rule (g-SNR 1 where max == min, as on one device) needs the exact extremes, and a fixed-order merge of
mean and M2 is numerically safe where ``sum_sq/n - mean^2`` cancels. The message is 48 bytes per tensor
per rank: for llama2-70b (723 tensors) at 8 ranks, 278 KB received once, at each tensor's first step.

Plain tensors (one device, DDP, whose gradients are already averaged over ranks) and DTensors with no
``Shard`` placement keep the one-device statistics (``optim.gsnr``), bit for bit.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from sgdsai_cli.optim.gsnr import gsnr_stats, reference_gsnr
from sgdsai_cli.optim.host import is_symbolic

__all__ = ["is_dtensor", "local", "shard_dims", "tensor_gsnrs"]

_NSTATS = 6  # count, mean, M2, sum of squares, min, max


def is_dtensor(t: Tensor | None) -> bool:
    """True for a DTensor (FSDP2, tensor parallel); False for plain tensors and None."""
    if t is None:
        return False
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # a torch built without distributed
        return False
    return isinstance(t, DTensor)


def local(t: Tensor) -> Tensor:
    """This rank's shard of a DTensor (a view sharing its storage), or the tensor itself."""
    return t.to_local() if is_dtensor(t) else t


def shard_dims(t: Tensor) -> tuple[int, ...]:
    """The mesh dimensions along which the DTensor ``t`` is split (none for a plain tensor).

    A ``Partial`` placement (a gradient not yet reduced) is refused: its shards are not pieces of the
    gradient but addends of it.
    """
    if not is_dtensor(t):
        return ()
    from torch.distributed.tensor import Partial, Shard

    dims = []
    for dim, placement in enumerate(t.placements):
        if isinstance(placement, Partial):
            raise RuntimeError(f"SGDSaI needs reduced gradients; got a Partial placement on mesh dim {dim}")
        if isinstance(placement, Shard):
            dims.append(dim)
    return tuple(dims)


def _local_stats(g: Tensor) -> Tensor:
    """(count, mean, M2, sum of squares, min, max) of one local shard, fp64, on its device."""
    out = torch.zeros(_NSTATS, dtype=torch.float64, device=g.device)
    if g.numel() == 0:
        out[4], out[5] = math.inf, -math.inf
        return out
    g64 = g.detach().reshape(-1).double()
    mean = g64.mean()
    out[0] = g64.numel()
    out[1] = mean
    out[2] = (g64 - mean).square().sum()
    out[3] = g64.square().sum()
    out[4], out[5] = torch.aminmax(g64)
    return out


def _merge(rows: Tensor) -> Tensor:
    """Merge per-rank statistics ``rows`` ([ranks, tensors, 6]) in rank order: [tensors, 6]."""
    acc = rows[0].clone()
    for r in range(1, rows.shape[0]):
        b = rows[r]
        na, nb = acc[:, 0], b[:, 0]
        n = na + nb
        safe = torch.where(n > 0, n, torch.ones_like(n))
        delta = b[:, 1] - acc[:, 1]
        acc[:, 1] = torch.where(n > 0, acc[:, 1] + delta * nb / safe, acc[:, 1])
        acc[:, 2] = acc[:, 2] + b[:, 2] + delta.square() * na * nb / safe
        acc[:, 0] = n
        acc[:, 3] = acc[:, 3] + b[:, 3]
        acc[:, 4] = torch.minimum(acc[:, 4], b[:, 4])
        acc[:, 5] = torch.maximum(acc[:, 5], b[:, 5])
    return acc


def _gather_merge(stats: Tensor, mesh, dim: int) -> Tensor:
    """All ranks' statistics along mesh dimension ``dim``, merged: one collective."""
    import torch.distributed as dist

    group = mesh.get_group(dim)
    size = dist.get_world_size(group)
    if size == 1:
        return stats
    out = torch.empty((size * stats.shape[0], _NSTATS), dtype=stats.dtype, device=stats.device)
    gather = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor  # renamed in torch 2.13
    gather(out, stats.contiguous(), group=group)  # rank-major: [ranks * tensors, 6]
    return _merge(out.view(size, *stats.shape))


def _gsnr_from(merged: Tensor, eps: float, reference_compat: bool) -> tuple[Tensor, Tensor]:
    """(gsnr fp32, norm fp32) vectors from merged statistics [tensors, 6]."""
    n, m2, sumsq, lo, hi = merged[:, 0], merged[:, 2], merged[:, 3], merged[:, 4], merged[:, 5]
    norm = sumsq.clamp_min(0.0).sqrt()
    std = (m2.clamp_min(0.0) / (n - 1).clamp_min(1.0)).sqrt()
    if reference_compat:  # the official formula: a 1-element tensor has std 0, nothing is special-cased
        std = torch.where(n > 1, std, torch.zeros_like(std))
        return (norm / (std + eps)).float(), norm.float()
    degenerate = (n <= 1) | (lo == hi)
    gsnr = torch.where(degenerate, torch.ones_like(norm), norm / (std + eps))
    return gsnr.float(), norm.float()


def tensor_gsnrs(grads: list[Tensor], eps: float, reference_compat: bool = False) -> list[tuple[Tensor, Tensor]]:
    """(gsnr, norm) of each gradient as 0-d fp32 tensors on its (local) device.

    Sharded DTensor gradients take their statistics from every shard (one collective per mesh and
    sharding dimension for all of them; the caller's ranks must all call this with the same tensors,
    as they do in a data-parallel step); everything else is computed locally as on one device.
    ``norm`` lets the caller defer a tensor whose first gradient is all zero.
    """
    out: list[tuple[Tensor, Tensor] | None] = [None] * len(grads)
    buckets: dict[tuple, list[int]] = {}
    for i, g in enumerate(grads):
        dims = shard_dims(g)
        if not dims:
            g0 = local(g)
            if reference_compat:
                out[i] = (reference_gsnr(g0, eps).float(), torch.linalg.vector_norm(g0.detach().float()))
            else:
                gsnr, norm, _ = gsnr_stats(g0, eps)
                out[i] = (gsnr, norm)
            continue
        buckets.setdefault((id(g.device_mesh), dims), []).append(i)
    for idx in buckets.values():
        mesh = grads[idx[0]].device_mesh
        stats = torch.stack([_local_stats(local(grads[i])) for i in idx])
        for dim in shard_dims(grads[idx[0]]):
            stats = _gather_merge(stats, mesh, dim)
        gsnr, norm = _gsnr_from(stats, eps, reference_compat)
        for k, i in enumerate(idx):
            out[i] = (gsnr[k], norm[k])
    return out  # type: ignore[return-value]


def placeholder_state(p: Tensor, momentum: float) -> dict[str, Tensor]:
    """The state entry a parameter not yet started holds in ``state_dict()``: g-SNR NaN (unknown) and,
    with momentum, a zero buffer laid out like the parameter (a DTensor for a DTensor).

    torch.distributed.checkpoint loads only into tensors the destination state dict already has, so
    a fresh optimizer must offer every key a saved one may carry; ``load_state_dict`` drops these
    entries again (they mean "no state yet").
    """
    device = local(p).device
    entry = {"gsnr": torch.full((), math.nan, dtype=torch.float32, device=device)}
    if momentum > 0.0:
        entry["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
    return entry


def is_placeholder(entry: dict) -> bool:
    """True for an entry ``placeholder_state`` made (g-SNR NaN), on the host without a device sync
    for real values only where the tensor is on the CPU; symbolic (meta/fake) values are never one."""
    gsnr = entry.get("gsnr")
    if not isinstance(gsnr, Tensor) or is_symbolic(gsnr):
        return False
    if is_dtensor(gsnr):
        gsnr = gsnr.to_local()
    return bool(torch.isnan(gsnr).item())
