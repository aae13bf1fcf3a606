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
without its defects:

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
- the closure runs once per step; nothing is printed;
- sharded parameters (FSDP2's DTensors, HSDP included) get the g-SNR of the full tensor from one
  exchange of per-shard statistics (``optim.distributed``), never of the gradient; every update runs
  on the local shards, the momentum buffer is a DTensor laid out like its parameter, and
  ``state_dict()`` carries placeholders for tensors not yet started so that
  torch.distributed.checkpoint can load into a fresh optimizer (resharding included).

``reference_compat=True`` reproduces the official numerics instead, degenerate
cases included (g-SNR computed in the gradient's dtype, ``||g||/eps`` for
1-element or constant gradients, g-SNR 0 for an all-zero first gradient).
It does not reproduce the official crashes, prints or double closure call.

``gsnr_norm="max"`` divides every g-SNR by the largest over all the optimizer's
tensors, as in Algorithm 1 of the paper; the default "none" is what the official
code does.

As in ``torch.optim``, the class gathers each group's tensors, gradients and state
and hands them to the functional API (``optim.functional.sgdsai``), which runs one
of the update paths ``impl=`` names (compiled, fused, foreach, loop; "auto" picks,
see ``optim.selection``). Every option is in ``defaults``, so it is saved by
``state_dict()`` and may differ per parameter group.

``impl_used`` is the path that really ran in the last step, after per-tensor
fallbacks: when tensors took different paths it is the slowest of them in the
order compiled, fused, foreach, loop (so "compiled" means every tensor went through
the compiled path); ``impl_tensors`` counts the tensors each path updated.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable

import torch
from torch import Tensor
from torch.optim.optimizer import Optimizer

from sgdsai_cli.optim.closure import call_closure
from sgdsai_cli.optim.distributed import is_placeholder, local, placeholder_state, tensor_gsnrs
from sgdsai_cli.optim.functional import sgdsai
from sgdsai_cli.optim.host import is_symbolic, to_host
from sgdsai_cli.optim.selection import FALLBACK, IMPLS, choose_impl

__all__ = ["GSNR_NORMS", "SGDSaI"]

GSNR_NORMS = ("none", "max")
# The keyword options and their defaults: filled into state dicts and groups that predate them.
OPTION_DEFAULTS = {"gsnr_norm": "none", "impl": "auto", "reference_compat": False}


def _finite_at_least_zero(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x >= 0.0


def validated(options: dict) -> dict:
    """The hyperparameters of ``options`` checked and normalised; ValueError naming the bad value."""
    lr, momentum, eps, wd = options["lr"], options["momentum"], options["eps"], options["weight_decay"]
    if isinstance(lr, Tensor) or not _finite_at_least_zero(lr):
        raise ValueError(f"Invalid learning rate: {lr!r} (must be a finite float >= 0)")
    if not (isinstance(momentum, (int, float)) and 0.0 <= momentum < 1.0):
        raise ValueError(f"Invalid momentum value: {momentum!r} (must be in [0, 1))")
    if not _finite_at_least_zero(eps):
        raise ValueError(f"Invalid epsilon value: {eps!r} (must be a finite float >= 0)")
    if not _finite_at_least_zero(wd):
        raise ValueError(f"Invalid weight_decay value: {wd!r} (must be a finite float >= 0)")
    if options["gsnr_norm"] not in GSNR_NORMS:
        raise ValueError(f"Invalid gsnr_norm: {options['gsnr_norm']!r} (choose from {', '.join(GSNR_NORMS)})")
    if options["impl"] not in IMPLS:
        raise ValueError(f"Invalid impl: {options['impl']!r} (choose from {', '.join(IMPLS)})")
    return dict(lr=float(lr), momentum=float(momentum), eps=float(eps), weight_decay=float(wd),
                gsnr_norm=options["gsnr_norm"], impl=options["impl"],
                reference_compat=bool(options["reference_compat"]))


def _option(name: str) -> property:
    """The optimizer-wide value of option ``name``; setting it sets it in defaults and every group."""

    def get(self):
        return self.defaults[name]

    def set_(self, value):
        checked = validated({**self.defaults, name: value})[name]
        self.defaults[name] = checked
        for group in self.param_groups:
            group[name] = checked

    return property(get, set_, doc=f"The ``{name}`` of ``defaults``; assigning it sets every group's too.")


class SGDSaI(Optimizer):
    """SGD-SaI optimizer. See the module docstring for the update and its guarantees.

    Args:
        params: parameters or parameter groups (a group may override any option below).
        lr: learning rate (default 1e-2, as the official package).
        momentum: EMA coefficient mu in [0, 1) (default 0.9).
        eps: added to the std in the g-SNR denominator (default 1e-8).
        weight_decay: decoupled weight decay, not scaled by g-SNR (default 1e-2).
        gsnr_norm: "none" (official code) or "max" (paper's Algorithm 1).
        impl: "auto", "compiled", "fused", "foreach" or "loop"; ``self.impl_used`` says
            which ran (see the module docstring).
        reference_compat: reproduce the official numerics, degenerate cases included.
    """

    impl = _option("impl")
    gsnr_norm = _option("gsnr_norm")
    reference_compat = _option("reference_compat")

    def __init__(self, params, lr: float = 1e-2, momentum: float = 0.9, eps: float = 1e-8,
                 weight_decay: float = 1e-2, *, gsnr_norm: str = OPTION_DEFAULTS["gsnr_norm"],
                 impl: str = OPTION_DEFAULTS["impl"], reference_compat: bool = OPTION_DEFAULTS["reference_compat"]):
        defaults = validated(dict(lr=lr, momentum=momentum, eps=eps, weight_decay=weight_decay,
                                  gsnr_norm=gsnr_norm, impl=impl, reference_compat=reference_compat))
        super().__init__(params, defaults)
        self._reset_host_state()

    def _reset_host_state(self) -> None:
        self.impl_used: str | None = None
        self.impl_tensors: dict[str, int] = {}
        # Host copy of each tensor's g-SNR (a float), so that steady-state steps never read a
        # device tensor. Derived from state["gsnr"]; rebuilt lazily after loading (one sync per device).
        self._gsnr_host: dict[Tensor, float] = {}
        # Tensors that had a gradient, all zero so far, and hence no state: state_dict() gives them
        # placeholders (see optim.distributed.placeholder_state).
        self._waiting: set[Tensor] = set()

    def add_param_group(self, param_group: dict) -> None:
        """Add a group (missing options taken from ``defaults``), its options validated like the constructor's."""
        super().add_param_group(param_group)
        self.param_groups[-1].update(validated(self.param_groups[-1]))

    def __setstate__(self, state: dict) -> None:
        """Unpickling and ``load_state_dict``: back-fill options that older state dicts lack.

        A missing option takes this optimizer's own default (its constructor argument), and where
        ``defaults`` lacks it too (an unpickled old optimizer), the constructor's default.
        """
        super().__setstate__(state)
        for name, value in OPTION_DEFAULTS.items():
            self.defaults.setdefault(name, value)
            for group in self.param_groups:
                group.setdefault(name, self.defaults[name])
        if "_waiting" not in self.__dict__:
            self._reset_host_state()
        self._gsnr_host.clear()

    def state_dict(self) -> dict:
        """torch's state dict, plus a placeholder entry (g-SNR NaN, zero momentum) for each tensor that
        has had only all-zero gradients, so that a fresh optimizer stepped once with zero gradients (as
        torch.distributed.checkpoint's ``get_optimizer_state_dict`` does) offers every key to load into."""
        sd = super().state_dict()
        if self._waiting:
            index = 0
            for group in self.param_groups:
                for p in group["params"]:
                    if p in self._waiting and "gsnr" not in self.state.get(p, {}):
                        sd["state"][index] = placeholder_state(p, group["momentum"])
                    index += 1
        return sd

    def load_state_dict(self, state_dict: dict) -> None:
        """torch's ``load_state_dict``; placeholder entries (tensors not yet started) load as no state."""
        state = state_dict.get("state", {})
        empty = {k for k, v in state.items() if isinstance(v, dict) and is_placeholder(v)}
        super().load_state_dict({**state_dict, "state": {k: v for k, v in state.items() if k not in empty}})
        self._waiting = {p for p in self._waiting if "gsnr" not in self.state.get(p, {})}
        if empty:
            saved = [i for g in state_dict["param_groups"] for i in g["params"]]
            mine = [p for g in self.param_groups for p in g["params"]]
            self._waiting.update(p for i, p in zip(saved, mine, strict=True) if i in empty)

    def resolve_impl(self, params: list[Tensor], *, build: bool = False, impl: str | None = None) -> str:
        """The path ``step()`` takes for these parameters when ``impl`` (default ``self.impl``) is asked for.

        With ``build=False`` the compiled path is predicted from what is installed (a C compiler on
        the CPU, Triton on CUDA) without building anything; ``step()`` builds it and falls back if
        that fails.
        """
        return choose_impl(impl or self.impl, params, build=build)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None):
        """Perform one optimisation step; ``closure`` (if given) is called once, first."""
        loss = call_closure(closure)
        ran: Counter[str] = Counter()
        for group in self.param_groups:
            ran += self._step_group(group)
        if ran:
            self.impl_tensors = dict(ran)
            self.impl_used = max(ran, key=FALLBACK.index)  # the slowest path any tensor took
        return loss

    def _step_group(self, group: dict) -> Counter[str]:
        """Update one group's tensors; the number of tensors each path updated."""
        params, grads, pending = self._init_group(group)
        lr, mu = group["lr"], group["momentum"]
        decay = 1.0 - lr * group["weight_decay"]
        if pending and decay != 1.0:
            torch._foreach_mul_([local(p) for p in pending], decay)  # decoupled decay only, until a non-zero gradient
        if not params:
            return Counter()
        scales = self._scales(params, group["gsnr_norm"])
        bufs = self._momentum_buffers(params, grads, mu)
        # Sharded (DTensor) parameters are updated through their local shards: no collective.
        params, grads = [local(p) for p in params], [local(g) for g in grads]
        bufs = [None if b is None else local(b) for b in bufs]
        return sgdsai(params, grads, bufs, scales, lr=lr, momentum=mu, decay=decay,
                      impl=choose_impl(group["impl"], params, build=True))

    def _init_group(self, group: dict) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
        """(params, grads, pending): the group's tensors with gradients and a g-SNR, and those still
        waiting for one (all-zero first gradient; they get decoupled weight decay only).

        Computes the g-SNR of tensors seen for the first time.
        """
        params: list[Tensor] = []
        fresh: list[Tensor] = []
        for p in group["params"]:
            if p.grad is None:
                continue
            if p.grad.is_sparse:
                raise RuntimeError("SGDSaI does not support sparse gradients")
            params.append(p)
            if "gsnr" not in self.state[p]:
                fresh.append(p)
        pending = self._start_tensors(fresh, group["eps"], group["reference_compat"]) if fresh else []
        waiting = {id(p) for p in pending}
        live = [p for p in params if id(p) not in waiting]
        return live, [p.grad for p in live], pending

    def _start_tensors(self, fresh: list[Tensor], eps: float, reference_compat: bool) -> list[Tensor]:
        """Compute and store g-SNR for tensors seen for the first time (one host sync per device;
        sharded tensors: one collective of statistics per mesh, see ``optim.distributed``).

        Returns the tensors whose first gradient is all zero (their g-SNR waits for a real one).
        """
        stats = tensor_gsnrs([p.grad for p in fresh], eps, reference_compat)
        if reference_compat or any(is_symbolic(p) for p in fresh):
            # official numerics never defer; meta/fake tensors have shapes only: nothing can be deferred.
            for p, (gsnr, _) in zip(fresh, stats, strict=True):
                self.state[p]["gsnr"] = gsnr
            self._waiting.difference_update(fresh)
            self._pull_to_host(fresh)
            return []
        norms = to_host([norm for _, norm in stats])
        pending = []
        for p, (gsnr, _), norm in zip(fresh, stats, norms, strict=True):
            if norm == 0.0:
                pending.append(p)  # all-zero first gradient: wait for a real one
            else:
                self.state[p]["gsnr"] = gsnr
                self._waiting.discard(p)
        self._waiting.update(pending)
        self._pull_to_host([p for p in fresh if "gsnr" in self.state[p]])
        return pending

    def _pull_to_host(self, params: list[Tensor]) -> None:
        if not params:
            return
        if any(is_symbolic(p) for p in params):
            self._gsnr_host.update((p, 1.0) for p in params)
            return
        self._gsnr_host.update(zip(params, to_host([self.state[p]["gsnr"] for p in params]), strict=True))

    def _scales(self, params: list[Tensor], gsnr_norm: str) -> list[float]:
        """Per-tensor g-SNR as host floats (divided by the largest when ``gsnr_norm`` is "max")."""
        missing = [p for p in params if p not in self._gsnr_host]
        if missing:  # after load_state_dict: one sync to rebuild the host copies
            self._pull_to_host(missing)
        scales = [self._gsnr_host[p] for p in params]
        if gsnr_norm == "max":
            top = max(self._gsnr_host.values())
            scales = [s / top if top > 0 else 0.0 for s in scales]
        return scales

    def _momentum_buffers(self, params: list[Tensor], grads: list[Tensor], mu: float) -> list[Tensor | None]:
        """Each tensor's buffer for the momentum update, or None for a direct step along its gradient.

        Direct: ``momentum == 0`` (d = g), or the tensor's first step, which creates the buffer as a
        copy of g (so d = m = g).
        """
        if mu == 0.0:
            return [None] * len(params)
        bufs: list[Tensor | None] = []
        for p, g in zip(params, grads, strict=True):
            state = self.state[p]
            buf = state.get("momentum_buffer")
            if buf is None:
                state["momentum_buffer"] = torch.clone(g).detach()
            bufs.append(buf)
        return bufs
