"""The closure an optimizer's ``step(closure)`` may take: called once, first, with autograd on (torch's rule)."""

from __future__ import annotations

from collections.abc import Callable

import torch


def call_closure(closure: Callable[[], float] | None):
    """The loss ``closure`` returns, computed with gradients enabled (``step`` runs under no_grad); None without one."""
    if closure is None:
        return None
    with torch.enable_grad():
        return closure()
