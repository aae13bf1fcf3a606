"""SGD-SaI's one-pass CUDA kernel, written in Triton and imported only when a CUDA tensor asks for it.

One program per ``BLOCK`` elements reads theta, g and m and writes theta and m (20 bytes per fp32
parameter), computing in fp32 whatever the storage dtype. Triton specialises on ``n % 16 == 0``
(most tensor sizes), which proves the mask uniform across a vector and allows 16-byte loads:
without it the bf16 kernel ran at ~53 % of the copy bandwidth on an H100
(``benchmarks/triton_variants.py`` measures both). Where Triton is missing or broken every
function here answers False and the caller runs eager ops. State lives in ``kernel_cache.KERNELS``.
"""

from __future__ import annotations

import importlib.util

import torch
from torch import Tensor

from sgdsai_cli.optim.kernel_cache import KERNELS

BLOCK = 4096  # elements per Triton program
DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def has_triton() -> bool:
    """Triton is installed (without importing it)."""
    return importlib.util.find_spec("triton") is not None


def _jit():
    """Import Triton and jit the kernel; (triton, kernel)."""
    import triton
    import triton.language as tl

    @triton.jit
    def sgdsai_kernel(p_ptr, g_ptr, m_ptr, n, mu, omm, decay, step, HAS_M: tl.constexpr, BLOCK: tl.constexpr):
        offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        mask = offs < n
        g = tl.load(g_ptr + offs, mask=mask).to(tl.float32)
        p = tl.load(p_ptr + offs, mask=mask).to(tl.float32)
        if HAS_M:
            m = tl.load(m_ptr + offs, mask=mask).to(tl.float32)
            ms = (mu * m + omm * g).to(m_ptr.dtype.element_ty)
            tl.store(m_ptr + offs, ms, mask=mask)
            d = ms.to(tl.float32)
        else:
            d = g
        tl.store(p_ptr + offs, (decay * p - step * d).to(p_ptr.dtype.element_ty), mask=mask)

    return triton, sgdsai_kernel


def triton_kernel():
    """The (triton, jitted kernel) pair, or None where Triton is missing or broken; tried once."""
    cache = KERNELS
    if not cache.triton_tried:
        cache.triton_tried = True
        try:
            cache.triton = _jit()
        except Exception:
            cache.triton = None
    return cache.triton


def triton_ready(device: torch.device, dtypes) -> bool:
    """Triton imports, and both variants (with and without momentum) compile and compute right.

    Checked once per (device, dtype), so the JIT compilation happens in the first step, where
    bench-step reports it, not in a later one.
    """
    ready = KERNELS.triton_ready
    for dtype in dtypes:
        key = (str(device), dtype)
        if key not in ready:
            ok = triton_kernel() is not None
            if ok:
                p = torch.ones(17, device=device, dtype=dtype)
                ok = run_triton(p, torch.ones_like(p), torch.zeros_like(p), 0.5, 1.0, 1.0)  # m = 0.5, p = 0.5
                ok = ok and run_triton(p, torch.ones_like(p), None, 0.0, 1.0, 0.25)  # p = 0.25
                ok = ok and bool((p == 0.25).all().item())
            ready[key] = ok
        if not ready[key]:
            return False
    return True


def run_triton(p: Tensor, g: Tensor, buf: Tensor | None, mu: float, decay: float, step: float) -> bool:
    """One pass over one contiguous tensor; False (nothing written) where Triton cannot run."""
    kernel = triton_kernel()
    if kernel is None:
        return False
    triton, fn = kernel
    n = p.numel()
    grid = (triton.cdiv(n, BLOCK),)
    args = (p, g, p if buf is None else buf, n, mu, 1.0 - mu, decay, step)
    try:
        if p.device.type == "cuda" and p.device.index not in (None, torch.cuda.current_device()):
            with torch.cuda.device(p.device):  # Triton launches on the current device
                fn[grid](*args, HAS_M=buf is not None, BLOCK=BLOCK, num_warps=8)
        else:
            fn[grid](*args, HAS_M=buf is not None, BLOCK=BLOCK, num_warps=8)
    except Exception:  # a broken Triton install: eager from now on
        KERNELS.triton = None
        return False
    return True


# ----------------------------------------------------------------------------------------------
# one launch for many tensors

MULTI_BLOCK = 4096  # elements per chunk of the multi-tensor kernel
MULTI_PROGRAMS_PER_SM = 4


def _jit_multi():
    """The multi-tensor kernel: a packed device table of pointers, sizes and steps, one launch.

    Table rows per tensor t: ``ptrs[3t:3t+3]`` = addresses of theta, g, m; ``meta[2t]`` = numel,
    ``meta[2t+1]`` = chunks before t (of ``BLOCK`` elements); ``steps[t]`` = lr * g-SNR. Program
    ``pid`` of ``nprog`` updates the chunks whose running index is ``pid`` modulo ``nprog`` (even
    work for every program whatever the sizes); full chunks without a mask, the last one masked.
    The addresses are 16-byte aligned (checked by the caller), which allows 16-byte accesses.
    """
    import triton
    import triton.language as tl

    @triton.jit
    def sgdsai_multi_kernel(ptrs, meta, steps, n_tensors, mu, omm, decay, DT: tl.constexpr,
                            HAS_M: tl.constexpr, BLOCK: tl.constexpr):
        pid = tl.program_id(0)
        nprog = tl.num_programs(0)
        for t in range(n_tensors):
            n = tl.load(meta + 2 * t)
            base = tl.load(meta + 2 * t + 1)
            step = tl.load(steps + t)
            p_ptr = tl.multiple_of(tl.load(ptrs + 3 * t).to(tl.pointer_type(DT)), 16)
            g_ptr = tl.multiple_of(tl.load(ptrs + 3 * t + 1).to(tl.pointer_type(DT)), 16)
            m_ptr = tl.multiple_of(tl.load(ptrs + 3 * t + 2).to(tl.pointer_type(DT)), 16)
            full = n // BLOCK
            first = ((pid + nprog - base % nprog) % nprog).to(tl.int64)  # int64: c * BLOCK may pass 2**31
            for c in range(first, full, nprog):  # full chunks: no mask
                offs = c * BLOCK + tl.arange(0, BLOCK)
                g = tl.load(g_ptr + offs).to(tl.float32)
                p = tl.load(p_ptr + offs).to(tl.float32)
                if HAS_M:
                    ms = (mu * tl.load(m_ptr + offs).to(tl.float32) + omm * g).to(DT)
                    tl.store(m_ptr + offs, ms)
                    g = ms.to(tl.float32)
                tl.store(p_ptr + offs, (decay * p - step * g).to(DT))
            if (n % BLOCK != 0) and ((base + full) % nprog == pid):  # the tail chunk, masked
                offs = full * BLOCK + tl.arange(0, BLOCK)
                mask = offs < n
                g = tl.load(g_ptr + offs, mask=mask).to(tl.float32)
                p = tl.load(p_ptr + offs, mask=mask).to(tl.float32)
                if HAS_M:
                    ms = (mu * tl.load(m_ptr + offs, mask=mask).to(tl.float32) + omm * g).to(DT)
                    tl.store(m_ptr + offs, ms, mask=mask)
                    g = ms.to(tl.float32)
                tl.store(p_ptr + offs, (decay * p - step * g).to(DT), mask=mask)

    return triton, sgdsai_multi_kernel


def triton_multi_kernel():
    """The (triton, jitted multi-tensor kernel) pair, or None where Triton is missing or broken."""
    cache = KERNELS
    if not cache.multi_tried:
        cache.multi_tried = True
        try:
            cache.multi = _jit_multi()
        except Exception:
            cache.multi = None
    return cache.multi


def multi_accepts(p: Tensor, g: Tensor, buf: Tensor | None) -> bool:
    """16-byte aligned addresses (torch's allocations are; a view at an offset may not be)."""
    return p.data_ptr() % 16 == 0 and g.data_ptr() % 16 == 0 and (buf is None or buf.data_ptr() % 16 == 0)


class _Table:
    """A group's device tables, made at its first step and rewritten in place when pointers or steps change."""

    def __init__(self, params: list[Tensor], programs: int) -> None:
        dev = params[0].device
        numels = [p.numel() for p in params]
        bases, total = [], 0
        for n in numels:
            bases.append(total)
            total += -(-n // MULTI_BLOCK)
        meta = [v for pair in zip(numels, bases, strict=True) for v in pair]
        self.meta = torch.tensor(meta, dtype=torch.int64).to(dev)
        self.ptrs = torch.zeros(3 * len(params), dtype=torch.int64, device=dev)
        self.steps = torch.zeros(len(params), dtype=torch.float32, device=dev)
        self.grid = (max(1, min(total, programs)),)
        self.key_ptrs: tuple | None = None
        self.key_steps: tuple | None = None

    def update(self, ptrs: tuple, steps: tuple) -> None:
        pin = self.ptrs.device.type == "cuda"  # pinned host memory: an asynchronous copy, no sync
        if ptrs != self.key_ptrs:
            self.ptrs.copy_(torch.tensor(ptrs, dtype=torch.int64, pin_memory=pin), non_blocking=pin)
            self.key_ptrs = ptrs
        if steps != self.key_steps:
            self.steps.copy_(torch.tensor(steps, dtype=torch.float32, pin_memory=pin), non_blocking=pin)
            self.key_steps = steps


def _programs(device: torch.device) -> int:
    if device.type != "cuda":
        return 4  # the interpreter (TRITON_INTERPRET=1) on CPU tensors: a few programs
    return torch.cuda.get_device_properties(device).multi_processor_count * MULTI_PROGRAMS_PER_SM


MAX_TABLES = 16  # groups of tensors kept (an optimizer has a few: per dtype, with and without momentum)


def run_triton_multi(params: list[Tensor], grads: list[Tensor], bufs: list[Tensor] | None, steps: list[float],
                     mu: float, decay: float) -> bool:
    """One launch updating every tensor of the lists (one dtype, one device, dense, aligned).

    False (nothing written) where Triton cannot run. The tables are cached per group of parameters
    (their addresses and sizes) and allocated once: a steady step allocates nothing on the device.
    """
    kernel = triton_multi_kernel()
    if kernel is None or not params:
        return False
    triton, fn = kernel
    import triton.language as tl

    dt = {torch.float32: tl.float32, torch.float16: tl.float16, torch.bfloat16: tl.bfloat16}[params[0].dtype]
    key = (params[0].device, params[0].dtype, bufs is not None, tuple(p.data_ptr() for p in params),
           tuple(p.numel() for p in params))
    tables = KERNELS.multi_tables
    table = tables.get(key)
    if table is None:
        if len(tables) >= MAX_TABLES:
            tables.pop(next(iter(tables)))
        table = tables[key] = _Table(params, _programs(params[0].device))
    ms = grads if bufs is None else bufs  # an unused address when there is no momentum
    ptrs = tuple(x for trio in zip(key[3], [g.data_ptr() for g in grads], [m.data_ptr() for m in ms],
                                   strict=True) for x in trio)
    table.update(ptrs, tuple(steps))
    args = (table.ptrs, table.meta, table.steps, len(params), mu, 1.0 - mu, decay)
    try:
        if params[0].device.type == "cuda" and params[0].device.index not in (None, torch.cuda.current_device()):
            with torch.cuda.device(params[0].device):
                fn[table.grid](*args, DT=dt, HAS_M=bufs is not None, BLOCK=MULTI_BLOCK, num_warps=8)
        else:
            fn[table.grid](*args, DT=dt, HAS_M=bufs is not None, BLOCK=MULTI_BLOCK, num_warps=8)
    except Exception:  # a broken Triton install: the per-tensor paths from now on
        KERNELS.multi = None
        return False
    return True


def multi_ready(device: torch.device, dtypes) -> bool:
    """The multi-tensor kernel compiles and computes right for these dtypes (checked once each)."""
    ready = KERNELS.multi_ready
    for dtype in dtypes:
        key = (str(device), dtype)
        if key not in ready:
            ok = triton_multi_kernel() is not None
            if ok:
                # two tensors, one of them with a masked tail: m = 0.5, p = 0.5 then p = 0.25
                ps = [torch.ones(n, device=device, dtype=dtype) for n in (MULTI_BLOCK + 3, 17)]
                ok = run_triton_multi(ps, [torch.ones_like(p) for p in ps], [torch.zeros_like(p) for p in ps],
                                      [1.0, 1.0], 0.5, 1.0)
                ok = ok and run_triton_multi(ps, [torch.ones_like(p) for p in ps], None, [0.25, 0.25], 0.0, 1.0)
                ok = ok and all(bool((p == 0.25).all().item()) for p in ps)
                KERNELS.multi_tables.clear()
            ready[key] = ok
        if not ready[key]:
            return False
    return True
