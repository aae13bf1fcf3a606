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
