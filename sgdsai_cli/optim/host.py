"""Reading device values on the host: which tensors have none, and one synchronisation per device."""

from __future__ import annotations

import torch
from torch import Tensor
from torch._subclasses.fake_tensor import is_fake


def is_symbolic(t: Tensor) -> bool:
    """True for meta and fake tensors, whose values cannot be read on the host."""
    return t.device.type == "meta" or is_fake(t)


def to_host(values: list[Tensor]) -> list[float]:
    """Bring 0-d tensors to the host with one synchronisation per device."""
    out: list[float] = [0.0] * len(values)
    by_device: dict[torch.device, list[int]] = {}
    for i, v in enumerate(values):
        by_device.setdefault(v.device, []).append(i)
    for idx in by_device.values():
        host = torch.stack([values[i].float() for i in idx]).tolist()
        for i, x in zip(idx, host, strict=True):
            out[i] = x
    return out
