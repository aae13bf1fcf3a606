"""Optimizers: SGD-SaI, its update paths and kernels, and the registry of optimizers we compare."""

from sgdsai_cli.optim.sgdsai import (  # noqa: F401
    FALLBACK,
    GSNR_NORMS,
    IMPLS,
    SGDSaI,
    compute_gsnr,
    cpu_kernel,
    cpu_kernel_error,
    gsnr_stats,
)
