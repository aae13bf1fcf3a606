"""SGD-SaI: SGD with momentum and learning-rate Scaling at Initialisation.

Xu, Xiang, Cai, Wen, "No More Adam: Learning Rate Scaling at Initialization is
All You Need" (arXiv 2412.11768). Per parameter tensor ("block") i:

    gsnr_i = ||g||_2 / (std(g) + eps)         once, from the first non-zero gradient
    m      = g                                first step (a copy)
    m      = mu * m + (1 - mu) * g            afterwards
    theta  = (1 - lr * wd) * theta - lr * gsnr_i * m

State per tensor: one momentum buffer in the parameter's dtype (4 bytes per
fp32 parameter, half of AdamW's two moments) and one fp32 scalar, ``gsnr``.

Numerically this is the official ``sgd_sai.SGD_sai`` 1.0.3 in the normal case,
without its defects (DESIGN.md section 1):

- ``momentum=0`` works (the update uses the gradient itself, no buffer);
- a tensor whose first gradient arrives after step 1 gets its g-SNR then;
- a 1-element tensor or a constant gradient (std 0) gets g-SNR 1 instead of
  ``||g|| / eps`` (a ~1e6x step): plain SGD with momentum for that tensor;
- an all-zero first gradient does not freeze the tensor at g-SNR 0: the tensor
  only decays until its first non-zero gradient, which then sets its g-SNR
  (LoRA's A matrix while B = 0 is exactly this case);
- no device-to-host sync in a steady-state step: g-SNR is constant, so its
  value is brought to the host once, at the tensor's first step, and kept;
- g-SNR lives in ``state_dict()``, so a resumed run continues identically;
- the closure runs once per step; nothing is printed.

``reference_compat=True`` reproduces the official numerics instead, degenerate
cases included (g-SNR computed in the gradient's dtype, ``||g||/eps`` for
1-element or constant gradients, g-SNR 0 for an all-zero first gradient).
It does not reproduce the official crashes, prints or double closure call.

``gsnr_norm="max"`` divides every g-SNR by the largest over all tensors, as in
Algorithm 1 of the paper; the default "none" is what the official code does.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor
from torch.optim.optimizer import Optimizer

__all__ = ["SGDSaI", "compute_gsnr", "gsnr_stats"]

IMPLS = ("auto", "foreach", "loop")
GSNR_NORMS = ("none", "max")


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


def _reference_gsnr(grad: Tensor, eps: float) -> Tensor:
    """The official formula, in the gradient's own dtype: ||g|| / (nan_to_num(std) + eps)."""
    g = grad.detach()
    sigma = g.std().nan_to_num() if g.numel() > 1 else torch.zeros((), dtype=g.dtype, device=g.device)
    return g.norm() / (sigma + eps)


def _is_symbolic(t: Tensor) -> bool:
    """True for meta and fake tensors, whose values cannot be read on the host."""
    if t.device.type == "meta":
        return True
    from torch._subclasses.fake_tensor import is_fake

    return is_fake(t)


class SGDSaI(Optimizer):
    """SGD-SaI optimizer. See the module docstring for the update and its guarantees.

    Args:
        params: parameters or parameter groups.
        lr: learning rate (default 1e-2, as the official package).
        momentum: EMA coefficient mu in [0, 1) (default 0.9).
        eps: added to the std in the g-SNR denominator (default 1e-8).
        weight_decay: decoupled weight decay, not scaled by g-SNR (default 1e-2).
        gsnr_norm: "none" (official code) or "max" (paper's Algorithm 1).
        impl: "auto", "foreach" or "loop"; ``self.impl_used`` says which ran.
        reference_compat: reproduce the official numerics, degenerate cases included.
    """

    def __init__(
        self,
        params,
        lr: float = 1e-2,
        momentum: float = 0.9,
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        *,
        gsnr_norm: str = "none",
        impl: str = "auto",
        reference_compat: bool = False,
    ):
        if isinstance(lr, Tensor) or not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr >= 0.0):
            raise ValueError(f"Invalid learning rate: {lr!r} (must be a finite float >= 0)")
        if not (isinstance(momentum, (int, float)) and 0.0 <= momentum < 1.0):
            raise ValueError(f"Invalid momentum value: {momentum!r} (must be in [0, 1))")
        if not (isinstance(eps, (int, float)) and math.isfinite(eps) and eps >= 0.0):
            raise ValueError(f"Invalid epsilon value: {eps!r} (must be a finite float >= 0)")
        if not (isinstance(weight_decay, (int, float)) and math.isfinite(weight_decay) and weight_decay >= 0.0):
            raise ValueError(f"Invalid weight_decay value: {weight_decay!r} (must be a finite float >= 0)")
        if gsnr_norm not in GSNR_NORMS:
            raise ValueError(f"Invalid gsnr_norm: {gsnr_norm!r} (choose from {', '.join(GSNR_NORMS)})")
        if impl not in IMPLS:
            raise ValueError(f"Invalid impl: {impl!r} (choose from {', '.join(IMPLS)})")
        defaults = dict(lr=float(lr), momentum=float(momentum), eps=float(eps), weight_decay=float(weight_decay))
        super().__init__(params, defaults)
        self.gsnr_norm = gsnr_norm
        self.impl = impl
        self.reference_compat = bool(reference_compat)
        self.impl_used: str | None = None
        # Host copy of each tensor's g-SNR (a float), so that steady-state steps
        # never read a device tensor. Derived from state["gsnr"]; rebuilt lazily
        # after load_state_dict (one sync per device).
        self._gsnr_host: dict[Tensor, float] = {}

    def load_state_dict(self, state_dict) -> None:
        super().load_state_dict(state_dict)
        self._gsnr_host.clear()

    def resolve_impl(self, params: list[Tensor]) -> str:
        """The path ``step()`` takes for these parameters."""
        if self.impl != "auto":
            return self.impl
        # foreach pays off where kernel launches are expensive (CUDA); on the CPU
        # the per-tensor loop runs the same kernels with less bookkeeping.
        return "foreach" if params and all(p.device.type == "cuda" for p in params) else "loop"

    @torch.no_grad()
    def _init_group(self, group, params: list[Tensor], grads: list[Tensor], started: list[bool]) -> list[Tensor]:
        """Collect the group's tensors with gradients; compute g-SNR for the new ones.

        Returns the parameters whose g-SNR is still pending (all-zero first gradient):
        they get decoupled weight decay only this step.
        """
        fresh: list[Tensor] = []
        for p in group["params"]:
            if p.grad is None:
                continue
            if p.grad.is_sparse:
                raise RuntimeError("SGDSaI does not support sparse gradients")
            params.append(p)
            grads.append(p.grad)
            if "gsnr" not in self.state[p]:
                fresh.append(p)
        pending = self._start_tensors(fresh, group["eps"]) if fresh else []
        pending_ids = {id(p) for p in pending}
        started.extend(id(p) not in pending_ids for p in params)
        return pending

    def _start_tensors(self, fresh: list[Tensor], eps: float) -> list[Tensor]:
        """Compute and store g-SNR for tensors seen for the first time (one host sync per device)."""
        if self.reference_compat:
            values = [_reference_gsnr(p.grad, eps) for p in fresh]
            for p, v in zip(fresh, values, strict=False):
                self.state[p]["gsnr"] = v.float()
            self._pull_to_host(fresh)
            return []
        stats = [gsnr_stats(p.grad, eps) for p in fresh]
        if any(_is_symbolic(p) for p in fresh):
            # meta/fake tensors: shapes and dtypes only; nothing can be deferred.
            for p, (gsnr, _, _) in zip(fresh, stats, strict=False):
                self.state[p]["gsnr"] = gsnr
            return []
        norms = _to_host([norm for _, norm, _ in stats])
        pending = []
        for p, (gsnr, _, _), norm in zip(fresh, stats, norms, strict=False):
            if norm == 0.0:
                pending.append(p)  # all-zero first gradient: wait for a real one
            else:
                self.state[p]["gsnr"] = gsnr
        self._pull_to_host([p for p in fresh if "gsnr" in self.state[p]])
        return pending

    def _pull_to_host(self, params: list[Tensor]) -> None:
        if not params:
            return
        if any(_is_symbolic(p) for p in params):
            self._gsnr_host.update((p, 1.0) for p in params)
            return
        self._gsnr_host.update(zip(params, _to_host([self.state[p]["gsnr"] for p in params]), strict=False))

    def _scales(self, params: list[Tensor]) -> list[float]:
        """Per-tensor g-SNR as host floats (normalised by the max when gsnr_norm="max")."""
        missing = [p for p in params if p not in self._gsnr_host]
        if missing:  # after load_state_dict: one sync to rebuild the host copies
            self._pull_to_host(missing)
        scales = [self._gsnr_host[p] for p in params]
        if self.gsnr_norm == "max":
            top = max(self._gsnr_host.values())
            scales = [s / top if top > 0 else 0.0 for s in scales]
        return scales

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None):
        """Perform one optimisation step; ``closure`` (if given) is called once, first."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()

        for group in self.param_groups:
            params: list[Tensor] = []
            grads: list[Tensor] = []
            started: list[bool] = []
            pending = self._init_group(group, params, grads, started)
            if not params:
                continue
            lr, mu, wd = group["lr"], group["momentum"], group["weight_decay"]
            decay = 1.0 - lr * wd
            if pending and decay != 1.0:
                torch._foreach_mul_(pending, decay)
            live = [(p, g) for p, g, s in zip(params, grads, started, strict=False) if s]
            if not live:
                continue
            params = [p for p, _ in live]
            grads = [g for _, g in live]
            scales = self._scales(params)
            impl = self.resolve_impl(params)
            if impl == "foreach":
                self._step_foreach(params, grads, scales, lr, mu, decay)
            else:
                self._step_loop(params, grads, scales, lr, mu, decay)
            self.impl_used = impl
        return loss

    def _momentum_buffers(self, params: list[Tensor], grads: list[Tensor], mu: float) -> tuple[list, list, list]:
        """Split into (existing buffers, their grads, new buffers created as copies of the gradient)."""
        old_bufs, old_grads, new_bufs = [], [], []
        for p, g in zip(params, grads, strict=False):
            state = self.state[p]
            buf = state.get("momentum_buffer")
            if buf is None:
                state["momentum_buffer"] = buf = torch.clone(g).detach()
                new_bufs.append(buf)
            else:
                old_bufs.append(buf)
                old_grads.append(g)
        return old_bufs, old_grads, new_bufs

    def _step_loop(self, params, grads, scales, lr, mu, decay) -> None:
        for p, g, s in zip(params, grads, scales, strict=False):
            if mu != 0.0:
                state = self.state[p]
                buf = state.get("momentum_buffer")
                if buf is None:
                    buf = state["momentum_buffer"] = torch.clone(g).detach()
                else:
                    buf.mul_(mu).add_(g, alpha=1.0 - mu)
                g = buf
            if decay != 1.0:
                p.mul_(decay)
            p.add_(g, alpha=-lr * s)

    def _step_foreach(self, params, grads, scales, lr, mu, decay) -> None:
        if mu != 0.0:
            old_bufs, old_grads, _ = self._momentum_buffers(params, grads, mu)
            if old_bufs:
                torch._foreach_mul_(old_bufs, mu)
                torch._foreach_add_(old_bufs, old_grads, alpha=1.0 - mu)
            directions = [self.state[p]["momentum_buffer"] for p in params]
        else:
            directions = grads
        if decay != 1.0:
            torch._foreach_mul_(params, decay)
        # Each tensor has its own step size; foreach has no per-tensor alpha for
        # add_, so the scaled add is one in-place kernel per tensor (no temporary).
        for p, d, s in zip(params, directions, scales, strict=False):
            p.add_(d, alpha=-lr * s)


def _to_host(values: list[Tensor]) -> list[float]:
    """Bring 0-d tensors to the host with one synchronisation per device."""
    out: list[float | None] = [None] * len(values)
    by_device: dict[torch.device, list[int]] = {}
    for i, v in enumerate(values):
        by_device.setdefault(v.device, []).append(i)
    for idx in by_device.values():
        host = torch.stack([values[i].float() for i in idx]).tolist()
        for i, x in zip(idx, host, strict=False):
            out[i] = x
    return out  # type: ignore[return-value]
