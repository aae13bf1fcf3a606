"""Optimizers: SGD-SaI (class, functional update paths, CPU and Triton kernels) and the registry.

    sgdsai          the ``SGDSaI`` class: validates, gathers tensors and state, dispatches
    functional      the update along each path (compiled, fused, foreach, loop) and the fallback
    selection       which path runs for a list of tensors
    gsnr            the g-SNR statistic
    c_kernel        the CPU kernel: C source, build, on-disk cache
    triton_kernel   the CUDA kernel
    kernel_cache    the one mutable object: what the kernels built
    registry        optimizer names -> optimizers, and what each keeps and moves
    adamw8bit       bitsandbytes' AdamW8bit, built so that it also steps on fake tensors
    muon            torch's Muon on the hidden matrices + AdamW on the rest, one optimizer
    master_weights  fp32 master weights around any optimizer (bf16-master)
    closure         a step's closure, called once with autograd on (every optimizer here)
"""

from sgdsai_cli.optim.c_kernel import cpu_kernel, cpu_kernel_error
from sgdsai_cli.optim.gsnr import compute_gsnr, gsnr_stats
from sgdsai_cli.optim.selection import FALLBACK, IMPLS
from sgdsai_cli.optim.sgdsai import GSNR_NORMS, SGDSaI

__all__ = ["FALLBACK", "GSNR_NORMS", "IMPLS", "SGDSaI", "compute_gsnr", "cpu_kernel", "cpu_kernel_error",
           "gsnr_stats"]
