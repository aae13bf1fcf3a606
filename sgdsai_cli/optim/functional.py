"""SGD-SaI's functional API: the in-place update of lists of tensors along each path.

``sgdsai(params, grads, momentum_buffers, scales, lr=, momentum=, decay=, impl=)`` updates each
tensor i by

    steady  (``momentum_buffers[i]`` is a tensor):  m = mu*m + (1-mu)*g;  theta = decay*theta - lr*s*m
    direct  (``momentum_buffers[i]`` is None):      theta = decay*theta - lr*s*g

with ``s = scales[i]`` (the tensor's g-SNR, a host float) and ``decay = 1 - lr*weight_decay``, and
returns how many tensors each path updated. No path allocates anything. Paths:

    compiled  one pass per tensor (read theta, g, m; write theta, m: 20 bytes per fp32 parameter).
              CPU: the C kernel, every tensor of a dtype in one call. CUDA: the multi-tensor
              Triton kernel, every tensor of a dtype in one launch over a packed device table of
              pointers, sizes and steps (``triton_kernel.run_triton_multi``; the table is made at
              the first step and rewritten in place, so a step allocates nothing). Where that
              kernel cannot run: the per-tensor Triton kernel for tensors of ``TRITON_MIN_NUMEL``
              elements or more, the foreach ops for the smaller ones (counted as compiled).
    fused     decay by one foreach mul, then torch's fused SGD per tensor with dampening = momentum,
              which is exactly the EMA form: 28 bytes per parameter.
    foreach   multi-tensor lerp for the momentum, then mul and lerp with one scalar per tensor:
              32 bytes per parameter.
    loop      per-tensor in-place eager ops (mul_, add_): 40 bytes per parameter.

Fallback: a path refuses, untouched, each tensor it cannot take (the kernels need dense contiguous
tensors of one dtype and device; a broken Triton refuses at launch), and the refused tensors run
the loop path. The returned counts say so, which is what ``SGDSaI.impl_used`` reports.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import torch
from torch import Tensor

from sgdsai_cli.optim.c_kernel import cpu_kernel
from sgdsai_cli.optim.triton_kernel import DTYPES as TRITON_DTYPES
from sgdsai_cli.optim.triton_kernel import multi_accepts, multi_ready, run_triton, run_triton_multi

# On CUDA a kernel launch per tensor costs more than a small tensor's update: tensors below this
# many elements go through the foreach ops (three multi-tensor launches for all of them).
TRITON_MIN_NUMEL = 1 << 20

Lists = tuple[list[Tensor], list[Tensor], list[Tensor] | None, list[float]]  # params, grads, bufs, scales


def sgdsai(params: list[Tensor], grads: list[Tensor], momentum_buffers: list[Tensor | None], scales: list[float],
           *, lr: float, momentum: float, decay: float, impl: str) -> Counter[str]:
    """Update every tensor in place along ``impl``; return the number of tensors each path updated."""
    steady: Lists = ([], [], [], [])
    direct: Lists = ([], [], None, [])
    for p, g, buf, s in zip(params, grads, momentum_buffers, scales, strict=True):
        lists = direct if buf is None else steady
        lists[0].append(p)
        lists[1].append(g)
        lists[3].append(s)
        if buf is not None:
            steady[2].append(buf)
    ran: Counter[str] = Counter()
    for lists in (steady, direct):
        if lists[0]:
            ran += _run_with_fallback(impl, lists, lr, momentum, decay)
    return ran


def _run_with_fallback(impl: str, lists: Lists, lr: float, mu: float, decay: float) -> Counter[str]:
    refused = _PATHS[impl](*lists, lr, mu, decay)
    ran = Counter({impl: len(lists[0]) - len(refused)})
    if refused:
        params, grads, bufs, scales = lists
        _loop([params[i] for i in refused], [grads[i] for i in refused],
              None if bufs is None else [bufs[i] for i in refused], [scales[i] for i in refused], lr, mu, decay)
        ran["loop"] += len(refused)
    return +ran


def kernel_accepts(p: Tensor, g: Tensor, buf: Tensor | None) -> bool:
    """The fused and compiled kernels take dense contiguous tensors of one dtype and one device."""
    for t in (g, p) if buf is None else (g, buf, p):  # a plain loop: this runs for every tensor of every step
        if not (t.is_contiguous() and t.dtype == p.dtype and t.device == p.device):
            return False
    return True


def _loop(params, grads, bufs, scales, lr, mu, decay) -> list[int]:
    for i, (p, g, s) in enumerate(zip(params, grads, scales, strict=True)):
        d = g
        if bufs is not None:
            d = bufs[i].mul_(mu).add_(g, alpha=1.0 - mu)
        if decay != 1.0:
            p.mul_(decay)
        p.add_(d, alpha=-lr * s)
    return []


def _foreach(params, grads, bufs, scales, lr, mu, decay) -> list[int]:
    if bufs is not None:
        torch._foreach_lerp_(bufs, grads, 1.0 - mu)  # m + (1-mu)(g - m): one pass
        grads = bufs
    _foreach_step(params, grads, scales, lr, decay)
    return []


def _foreach_step(params, dirs, scales, lr, decay) -> None:
    """theta = decay*theta - a*d with a per-tensor a = lr*s, in two multi-tensor ops and no temporary.

    foreach add_ takes one alpha for all tensors, but mul_ and lerp_ take one scalar per tensor:
    theta' = theta * decay/(1+a), then lerp(theta', d, -a) = theta'(1+a) - a*d. theta' is theta
    scaled down by (1+a), so the lerp's rounding stays within an ulp or two of theta. In bf16/fp16
    the rounding of theta' costs several ulps, so there: one foreach mul_ and an add_ per tensor.
    """
    if not params:
        return
    if not all(p.dtype in (torch.float32, torch.float64) for p in params):
        if decay != 1.0:
            torch._foreach_mul_(params, decay)
        for p, d, s in zip(params, dirs, scales, strict=True):
            p.add_(d, alpha=-lr * s)
        return
    steps = [lr * s for s in scales]
    factors = [decay / (1.0 + a) for a in steps]
    if any(f != 1.0 for f in factors):
        torch._foreach_mul_(params, factors)
    torch._foreach_lerp_(params, dirs, [-a for a in steps])


def _accepted(params, grads, bufs, ok: Callable[[Tensor, Tensor, Tensor | None], bool]) -> tuple[list, list]:
    """(accepted, refused) indices."""
    taken: list[int] = []
    refused: list[int] = []
    for i, (p, g) in enumerate(zip(params, grads, strict=True)):
        (taken if ok(p, g, None if bufs is None else bufs[i]) else refused).append(i)
    return taken, refused


def _fused(params, grads, bufs, scales, lr, mu, decay) -> list[int]:
    taken, refused = _accepted(params, grads, bufs, kernel_accepts)
    if decay != 1.0 and taken:  # torch's fused SGD couples weight decay into the momentum: decay apart
        torch._foreach_mul_([params[i] for i in taken], decay)
    for i in taken:
        torch._fused_sgd_(
            [params[i]], [grads[i]], [] if bufs is None else [bufs[i]],
            weight_decay=0.0, momentum=0.0 if bufs is None else mu, lr=lr * scales[i],
            dampening=0.0 if bufs is None else mu,  # dampening = momentum: the EMA form
            nesterov=False, maximize=False, is_first_step=False,
        )
    return refused


def _compiled(params, grads, bufs, scales, lr, mu, decay) -> list[int]:
    if params[0].device.type == "cpu":
        return _compiled_cpu(params, grads, bufs, scales, lr, mu, decay)
    if params[0].device.type == "cuda":
        return _compiled_multi(params, grads, bufs, scales, lr, mu, decay)
    return list(range(len(params)))


def _compiled_multi(params, grads, bufs, scales, lr, mu, decay) -> list[int]:
    """Every tensor of a dtype in one Triton launch; what it cannot take goes the per-tensor way."""
    device = params[0].device

    def ok(p, g, buf):
        return (p.device == device and p.dtype in TRITON_DTYPES and kernel_accepts(p, g, buf)
                and multi_accepts(p, g, buf))

    taken, other = _accepted(params, grads, bufs, ok)
    by_dtype: dict[torch.dtype, list[int]] = {}
    for i in taken:
        if params[i].numel():
            by_dtype.setdefault(params[i].dtype, []).append(i)
    for dtype, idx in by_dtype.items():
        ps, gs, ms, ss = _pick((params, grads, bufs, scales), idx)
        if not (multi_ready(device, (dtype,)) and run_triton_multi(ps, gs, ms, [lr * s for s in ss],
                                                                   mu if ms is not None else 0.0, decay)):
            other += idx
    if not other:
        return []
    other.sort()
    refused = _compiled_per_tensor(*_pick((params, grads, bufs, scales), other), lr, mu, decay)
    return [other[i] for i in refused]


def _compiled_per_tensor(params, grads, bufs, scales, lr, mu, decay) -> list[int]:
    small = [i for i, p in enumerate(params) if p.device.type == "cuda" and p.numel() < TRITON_MIN_NUMEL]
    if small:
        _foreach(*_pick((params, grads, bufs, scales), small), lr, mu, decay)
    skip = set(small)
    refused = []
    for i, (p, g, s) in enumerate(zip(params, grads, scales, strict=True)):
        if i in skip:
            continue
        buf = None if bufs is None else bufs[i]
        launched = p.device.type == "cuda" and kernel_accepts(p, g, buf) and (
            p.numel() == 0 or run_triton(p, g, buf, mu if buf is not None else 0.0, decay, lr * s))
        if not launched:
            refused.append(i)
    return refused


def _compiled_cpu(params, grads, bufs, scales, lr, mu, decay) -> list[int]:
    """Every tensor of a dtype in one C call; the tensors the kernel cannot take are refused."""
    kernel = cpu_kernel()
    if kernel is None:
        return list(range(len(params)))

    def ok(p, g, buf):
        return p.device.type == "cpu" and kernel.supports(p.dtype) and kernel_accepts(p, g, buf)

    taken, refused = _accepted(params, grads, bufs, ok)
    by_dtype: dict[torch.dtype, list[int]] = {}
    for i in taken:
        if params[i].numel():
            by_dtype.setdefault(params[i].dtype, []).append(i)
    for idx in by_dtype.values():
        ps, gs, ms, ss = _pick((params, grads, bufs, scales), idx)
        kernel.run_many(ps, gs, [None] * len(ps) if ms is None else ms, [lr * s for s in ss],
                        mu if ms is not None else 0.0, decay)
    return refused


def _pick(lists, idx: list[int]):
    """The entries ``idx`` of each list (None stays None)."""
    return tuple(None if lst is None else [lst[i] for i in idx] for lst in lists)


_PATHS = {"loop": _loop, "foreach": _foreach, "fused": _fused, "compiled": _compiled}
