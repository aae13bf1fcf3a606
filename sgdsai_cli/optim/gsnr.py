"""The g-SNR of one gradient tensor: the statistic SGD-SaI scales each tensor's step by.

``gsnr = ||g||_2 / (std(g) + eps)``, taken once from a tensor's first non-zero gradient. Two
variants: ``gsnr_stats`` (reductions in fp32, degenerate tensors get 1) is what ``SGDSaI`` uses and
what ``analysis.gsnr`` measures; ``reference_gsnr`` is the official package's formula in the
gradient's own dtype, for ``reference_compat=True``.
"""

from __future__ import annotations

import torch
from torch import Tensor


def gsnr_stats(grad: Tensor, eps: float = 1e-8) -> tuple[Tensor, Tensor, Tensor]:
    """Return (gsnr, norm, degenerate) for one gradient, as 0-d device tensors.

    ``gsnr = ||g||_2 / (std(g) + eps)`` with the unbiased std (correction 1), both
    reductions in fp32 whatever the gradient's dtype. ``degenerate`` is True for a
    1-element tensor or a constant gradient (max == min, std exactly 0 in exact
    arithmetic); their g-SNR is defined as 1. An all-zero gradient is also
    constant, so its g-SNR is 1 here; callers that must defer such a tensor
    look at ``norm == 0``.
    """
    g = grad.detach()
    g32 = g if g.dtype == torch.float32 else g.float()
    norm = torch.linalg.vector_norm(g32)
    if g.numel() <= 1:
        one = torch.ones((), dtype=torch.float32, device=g.device)
        return one, norm, torch.ones((), dtype=torch.bool, device=g.device)
    std = g32.std(correction=1)
    lo, hi = torch.aminmax(g32)
    degenerate = lo == hi
    gsnr = torch.where(degenerate, torch.ones_like(norm), norm / (std + eps))
    return gsnr, norm, degenerate


def compute_gsnr(grad: Tensor, eps: float = 1e-8) -> Tensor:
    """g-SNR of one gradient tensor as SGDSaI uses it (fp32 0-d tensor)."""
    return gsnr_stats(grad, eps)[0]


def reference_gsnr(grad: Tensor, eps: float) -> Tensor:
    """The official formula, in the gradient's own dtype: ||g|| / (nan_to_num(std) + eps)."""
    g = grad.detach()
    sigma = g.std().nan_to_num() if g.numel() > 1 else torch.zeros((), dtype=g.dtype, device=g.device)
    return g.norm() / (sigma + eps)

