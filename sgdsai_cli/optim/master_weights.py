"""fp32 master weights for low-precision parameters: the DeepSpeed / Megatron bf16 layout.

    opt = MasterWeights(model.parameters(), lambda masters: torch.optim.AdamW(masters, lr=1e-3))
    loss.backward(); opt.step(); opt.zero_grad(set_to_none=True)

The model's parameters and gradients stay in their low precision (bf16). The wrapper keeps an fp32
copy of every parameter (the master weights, state key ``master``) and the inner optimizer steps those
masters, so its state (momentum, Adam moments) is fp32 as well. Each ``step()``:

1. every gradient is cast to fp32 onto its master (``master.grad``: 4 bytes per parameter, alive
   during the step only, so a step transient, not state);
2. the inner optimizer steps the masters (any torch optimizer, SGD-SaI included: its g-SNR is taken
   from the fp32 copy of the gradient);
3. each master is copied back into its low-precision parameter, and the fp32 gradients are freed.

``state`` maps each model parameter to ``{"master": fp32 copy, **the inner optimizer's state for it}``
(refreshed after every step), so the usual per-key byte counts see where every byte lives.
``state_dict()`` / ``load_state_dict()`` carry the masters and the inner optimizer's state.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import Tensor

from sgdsai_cli.optim.closure import call_closure


class MasterWeights(torch.optim.Optimizer):
    def __init__(self, params: Iterable[Tensor], make_inner: Callable[[list[Tensor]], torch.optim.Optimizer],
                 master_dtype: torch.dtype = torch.float32):
        params = list(params)
        if not master_dtype.is_floating_point:
            raise ValueError(f"Invalid master_dtype: {master_dtype}")
        super().__init__(params, {"master_dtype": master_dtype})
        with torch.no_grad():
            self.masters = [p.detach().to(master_dtype, copy=True) for p in params]
        self.inner = make_inner(self.masters)
        self._sync_state()

    def _pairs(self):
        params = [p for group in self.param_groups for p in group["params"]]
        return zip(params, self.masters, strict=True)

    def _sync_state(self) -> None:
        for p, m in self._pairs():
            self.state[p] = {"master": m, **self.inner.state.get(m, {})}

    @torch.no_grad()
    def step(self, closure=None):
        loss = call_closure(closure)
        for p, m in self._pairs():
            m.grad = None if p.grad is None else p.grad.to(m.dtype)
        self.inner.step()
        for p, m in self._pairs():
            if m.grad is not None:
                p.copy_(m)
                m.grad = None
        self._sync_state()
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        super().zero_grad(set_to_none=set_to_none)
        self.inner.zero_grad(set_to_none=True)

    def state_dict(self) -> dict:
        return {"masters": [m.detach().clone() for m in self.masters], "inner": self.inner.state_dict(),
                "master_dtype": str(self.defaults["master_dtype"])}

    def load_state_dict(self, state_dict: dict) -> None:
        masters = state_dict["masters"]
        if len(masters) != len(self.masters):
            raise ValueError(f"state_dict has {len(masters)} master weights, the optimizer {len(self.masters)}")
        with torch.no_grad():
            for m, saved in zip(self.masters, masters, strict=True):
                m.copy_(saved)
        self.inner.load_state_dict(state_dict["inner"])
        self._sync_state()
