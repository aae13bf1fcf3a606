"""Muon for the hidden matrices, AdamW for the rest: the usual hybrid, as one torch optimizer.

    opt = MuonAdamW(model.named_parameters())    # torch.optim.Muon + torch.optim.AdamW, one step()

torch's own ``torch.optim.Muon`` (one ``momentum_buffer`` per matrix, Newton-Schulz orthogonalised
updates) only takes 2-D parameters, and is meant for the hidden matrices alone: embeddings, the
output head, norms and biases train with AdamW (``exp_avg``, ``exp_avg_sq``, ``step``). Which
parameter is which is decided from its name and shape (``is_hidden_matrix``):

    hidden matrix  <=>  p.ndim == 2
                        and no dotted component of its name contains "embed"
                        and the module owning it is not a head (``HEAD_MODULES``: lm_head, head,
                        classifier, score, output, embed_out, wte, wpe, shared)

A tied embedding and head is one parameter: ``named_parameters()`` yields it once, under the
embedding's name, so it goes to AdamW once. Both inner optimizers share this object's ``state``
(their parameters are disjoint), so ``state`` holds every key of both and ``state_dict()`` /
``load_state_dict()`` are torch's own over the combined groups (Muon's groups first).

Muon runs with ``adjust_lr_fn="match_rms_adamw"`` (its update scaled to AdamW's RMS), so both
parts share AdamW's learning rate and weight decay; memory does not depend on either.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor

from sgdsai_cli.errors import BadInput
from sgdsai_cli.optim.closure import call_closure

HEAD_MODULES = frozenset({"lm_head", "head", "classifier", "score", "output", "embed_out", "wte", "wpe", "shared"})
LR = 1e-3
WEIGHT_DECAY = 1e-2


def is_hidden_matrix(name: str, p: Tensor) -> bool:
    """Whether parameter ``name`` trains with Muon (see the module docstring for the rule)."""
    if p.ndim != 2:
        return False
    parts = name.split(".")
    if any("embed" in part.lower() for part in parts):
        return False
    owner = parts[-2].lower() if len(parts) >= 2 else ""
    return owner not in HEAD_MODULES


def split_hidden(named_params: Iterable[tuple[str, Tensor]]) -> tuple[list[Tensor], list[Tensor]]:
    """(hidden matrices for Muon, the rest for AdamW), each parameter once, in the given order."""
    hidden, rest, seen = [], [], set()
    for name, p in named_params:
        if id(p) in seen:
            continue
        seen.add(id(p))
        (hidden if is_hidden_matrix(name, p) else rest).append(p)
    return hidden, rest


class MuonAdamW(torch.optim.Optimizer):
    """``torch.optim.Muon`` over the hidden matrices and ``torch.optim.AdamW`` over the rest; one step().

    ``muon`` and ``adamw`` are the inner optimizers (None when they have no parameters);
    ``param_groups`` is Muon's groups followed by AdamW's (the same dicts), ``state`` is shared.
    ``foreach``/``fused`` choose AdamW's path as in ``torch.optim.AdamW``.
    """

    def __init__(self, named_params: Iterable[tuple[str, Tensor]], lr: float = LR,
                 weight_decay: float = WEIGHT_DECAY, foreach: bool | None = None, fused: bool | None = None) -> None:
        named = list(named_params)
        if any(not (isinstance(x, tuple) and len(x) == 2 and isinstance(x[0], str)) for x in named):
            raise BadInput("optimizer 'muon' needs named parameters (model.named_parameters()) to tell the "
                           "hidden matrices from embeddings and heads", value="muon")
        hidden, rest = split_hidden(named)
        if not hidden and not rest:
            raise BadInput("optimizer 'muon' got no parameters", value="muon")
        self.muon = torch.optim.Muon(hidden, lr=lr, weight_decay=weight_decay,
                                     adjust_lr_fn="match_rms_adamw") if hidden else None
        self.adamw = torch.optim.AdamW(rest, lr=lr, weight_decay=weight_decay, foreach=foreach,
                                       fused=fused) if rest else None
        self._muon_groups = len(self.muon.param_groups) if self.muon else 0
        groups = [g for opt in self._parts() for g in opt.param_groups]
        super().__init__(groups, {})
        self._link()

    def _parts(self) -> list[torch.optim.Optimizer]:
        return [opt for opt in (self.muon, self.adamw) if opt is not None]

    def _link(self) -> None:
        """Point the inner optimizers at this object's groups and state (after init and every load)."""
        if self.muon is not None:
            self.muon.param_groups = self.param_groups[:self._muon_groups]
        if self.adamw is not None:
            self.adamw.param_groups = self.param_groups[self._muon_groups:]
        for opt in self._parts():
            opt.state = self.state

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        if "muon" in self.__dict__:  # load_state_dict replaces groups and state: relink the parts
            self._link()

    def adamw_impl(self) -> str | None:
        """The AdamW part's path as set on its groups: fused, foreach, loop (None: left to torch)."""
        if self.adamw is None:
            return None
        group = self.adamw.param_groups[0]
        return "fused" if group.get("fused") else {True: "foreach", False: "loop"}.get(group.get("foreach"))

    def impl_name(self, default: str = "loop") -> str:
        """'muon+foreach' and the like: Muon's per-matrix loop with AdamW's path (``default`` if unset)."""
        adamw = self.adamw_impl() or default
        return "+".join(filter(None, ["muon" if self.muon else None, adamw if self.adamw else None]))

    def state_note(self) -> str:
        """What a row of this optimizer should say: how the parameters were split."""
        n_muon = sum(len(g["params"]) for g in self.muon.param_groups) if self.muon else 0
        n_adamw = sum(len(g["params"]) for g in self.adamw.param_groups) if self.adamw else 0
        return (f"torch.optim.Muon on {n_muon} hidden matrices, AdamW on {n_adamw} other tensors "
                "(embeddings, head, norms, biases)")

    @torch.no_grad()
    def step(self, closure=None):
        loss = call_closure(closure)
        for opt in self._parts():
            opt.step()
        return loss
