"""Stepping an optimizer the core only sizes, traces or times: the path it takes, scalars, silence.

- ``use_cuda_default_path``: make an optimizer take the path it would take on CUDA (sizing and
  estimates describe a GPU run even where they run on meta or fake CPU tensors).
- ``SymbolicScalars``: answer ``Tensor.item()`` on meta and fake tensors (they have no values).
- ``symbolic_step``: a step with those scalar reads answered. (The official SGD-SaI's own prints are
  silenced where the registry builds it.)
"""

from __future__ import annotations

import torch
from torch.utils._python_dispatch import TorchDispatchMode


class SymbolicScalars(TorchDispatchMode):
    """Answer ``Tensor.item()`` on meta and fake tensors with 1 (they have no values), counting reads.

    Some optimizers read a scalar on the host (Adafactor's step count and norms, the official
    SGD-SaI's tensor ``alpha``). Their memory does not depend on the value, so sizing and tracing
    go on with 1 (``True`` for bool) and the row says how many values were invented.

    Reads of an ``optimizer``'s own ``step`` counters (fake tensors in a fake trace, where a GPU run keeps
    them as real host tensors) are answered the same way but not counted: their values are known, and
    memory does not depend on them.
    """

    def __init__(self, optimizer: torch.optim.Optimizer | None = None) -> None:
        super().__init__()
        self.reads = 0
        self.optimizer = optimizer
        self._counters: tuple[int, set[int]] = (-1, set())  # (len(state) when gathered, ids of its step counters)

    def _is_counter(self, t: torch.Tensor) -> bool:
        state = getattr(getattr(self.optimizer, "inner", self.optimizer), "state", None)
        if not state:
            return False
        if self._counters[0] != len(state):
            self._counters = (len(state), {id(s["step"]) for s in state.values()
                                           if isinstance(s, dict) and isinstance(s.get("step"), torch.Tensor)})
        return id(t) in self._counters[1]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten._local_scalar_dense.default and _symbolic(args[0]):
            t = args[0]
            self.reads += not self._is_counter(t)
            return True if t.dtype == torch.bool else 1.0 if (t.is_floating_point() or t.is_complex()) else 1
        return func(*args, **(kwargs or {}))


def _symbolic(t: torch.Tensor) -> bool:
    from torch._subclasses.fake_tensor import is_fake

    return t.device.type == "meta" or is_fake(t)


def symbolic_step(optimizer: torch.optim.Optimizer, scalars: SymbolicScalars) -> None:
    """``optimizer.step()`` with symbolic scalar reads answered."""
    with scalars:
        optimizer.step()


def use_cuda_default_path(optimizer: torch.optim.Optimizer) -> str:
    """Make ``optimizer`` take the path it would take with every tensor on CUDA; return that impl.

    On CUDA, torch optimizers left at ``foreach=None`` (not fused) run foreach, and SGDSaI's
    ``impl="auto"`` runs foreach; on CPU, meta or fake tensors both default to the per-tensor loop.
    Sizing and estimates describe a GPU run, so they set the CUDA choice explicitly. The Muon hybrid
    says "muon+foreach" (its AdamW part set the same way); bitsandbytes runs its own kernel ("bnb-8bit").
    """
    from sgdsai_cli.optim import SGDSaI
    from sgdsai_cli.optim.adamw8bit import is_bitsandbytes
    from sgdsai_cli.optim.master_weights import MasterWeights
    from sgdsai_cli.optim.muon import MuonAdamW
    from sgdsai_cli.optim.registry import ADAMW8BIT_IMPL

    if isinstance(optimizer, MasterWeights):
        return use_cuda_default_path(optimizer.inner)
    if isinstance(optimizer, SGDSaI):
        if optimizer.impl == "auto":
            optimizer.impl = "foreach"
        return optimizer.impl
    impls = set()
    for group in optimizer.param_groups:
        if group.get("fused"):
            impls.add("fused")
            continue
        if "foreach" in group and group["foreach"] is None and not group.get("differentiable", False):
            group["foreach"] = True
        impls.add("foreach" if group.get("foreach") else "loop")
    if isinstance(optimizer, MuonAdamW):
        return optimizer.impl_name()
    if is_bitsandbytes(optimizer):
        return ADAMW8BIT_IMPL
    return impls.pop() if len(impls) == 1 else "mixed" if impls else "loop"
