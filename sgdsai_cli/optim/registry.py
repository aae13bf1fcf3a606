"""Optimizer registry: each optimizer name the commands accept, how to build it, and what it keeps and moves.

    sgdsai          our SGDSaI (impl "auto")
    sgdsai-ref      the official sgd_sai.SGD_sai 1.0.3, if installed
    adamw           torch AdamW, torch's default path (foreach on CUDA, loop on CPU)
    adamw-foreach   AdamW(foreach=True)
    adamw-fused     AdamW(fused=True)
    adamw-loop      AdamW(foreach=False)
    sgd             torch SGD, momentum 0.9
    adafactor       torch Adafactor
    adamw8bit       bitsandbytes.optim.AdamW8bit (extra sgdsai[bnb]; tensors under 4096 elements keep 32-bit state)
    muon            torch.optim.Muon on the hidden matrices + AdamW on the rest (``muon.MuonAdamW``; needs
                    named parameters: ``build_optimizer(name, model.named_parameters())``)
    muon-foreach    the same with AdamW(foreach=True); muon-fused: AdamW(fused=True); muon-loop: foreach=False
    torch:Name      any torch.optim class with its defaults

It holds the one table of each optimizer's footprint (``Footprint``): the full-size state buffers
it keeps per parameter (``state_buffers``, used by every memory check) and the full-size tensors a
step reads and writes (``tensors_moved``, the bench's bandwidth formula). Errors say
"optimizer 'NAME'" and carry the name as ``value``; they never name a command-line flag.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass

import torch

from sgdsai_cli.errors import BadInput, EnvironmentUnavailable, did_you_mean
from sgdsai_cli.optim.sgdsai import SGDSaI

# Learning rates only matter for real runs; memory does not depend on them.
ADAMW_LR = 1e-3
SGD_LR = 1e-2
ADAMW8BIT_IMPL = "bnb-8bit"  # bitsandbytes' block-wise 8-bit kernel (CUDA), its torch ops on the CPU


@dataclass(frozen=True)
class Footprint:
    """What an optimizer keeps and moves, per parameter, in units of the parameter's own bytes.

    state_buffers  full-size state tensors kept per parameter (AdamW's exp_avg and exp_avg_sq: 2).
                   Scalars (a step count, SGD-SaI's g-SNR) and Adafactor's factored row and column
                   statistics of a matrix are not full-size and count 0.
    tensors_moved  full-size tensors one step reads plus writes, at the minimum (SGD-SaI reads
                   theta, g, m and writes theta, m: 5); None where no formula is kept.
    """

    state_buffers: int
    tensors_moved: int | None


SGDSAI_FOOTPRINT = Footprint(state_buffers=1, tensors_moved=5)  # one momentum buffer
ADAMW_FOOTPRINT = Footprint(state_buffers=2, tensors_moved=7)  # exp_avg, exp_avg_sq
SGD_FOOTPRINT = Footprint(state_buffers=1, tensors_moved=5)  # one momentum buffer (momentum 0.9)
# Adafactor keeps a row and a column vector per matrix (~0 full-size buffers; a 1-D parameter keeps
# one full-size variance, negligible beside the matrices); no bandwidth formula is kept for it.
ADAFACTOR_FOOTPRINT = Footprint(state_buffers=0, tensors_moved=None)
# Any other torch.optim class: assume AdamW's two buffers, the most a standard torch optimizer keeps,
# so a memory check errs towards refusing; no bandwidth formula.
UNKNOWN_FOOTPRINT = Footprint(state_buffers=2, tensors_moved=None)
# 8-bit AdamW: two one-byte moments per element (+ one fp32 absmax per 256), i.e. one buffer the size
# of a 2-byte parameter (bf16/fp16: exact; fp32: twice the truth, erring towards refusing); tensors of
# fewer than 4096 elements keep fp32 moments, negligible beside the large ones. No bandwidth formula.
ADAMW8BIT_FOOTPRINT = Footprint(state_buffers=1, tensors_moved=None)
# Muon + AdamW: one momentum buffer per hidden matrix, AdamW's two for the rest: counted at the upper
# bound (2) so that a memory check errs towards refusing. No bandwidth formula.
MUON_FOOTPRINT = Footprint(state_buffers=2, tensors_moved=None)


@dataclass(frozen=True)
class OptimizerChoice:
    name: str
    build: Callable[[list], torch.optim.Optimizer]
    impl: Callable[[torch.optim.Optimizer, list], str]  # the implementation that runs for these params
    footprint: Footprint = UNKNOWN_FOOTPRINT
    named: bool = False  # build() takes (name, parameter) pairs: the split depends on names (muon)


def _on_cuda(params) -> bool:
    return bool(params) and all(p.device.type == "cuda" for p in params)


def _default_impl(optimizer, params) -> str:
    # torch picks foreach when every tensor is on CUDA, else the per-tensor loop.
    return "foreach" if _on_cuda(params) else "loop"


def _silent_print(*_args, **_kwargs) -> None:
    """The official package prints a banner on its first step; its module gets this print instead."""


def _sgdsai_ref(params):
    try:
        import sgd_sai.sgd_sai as official
    except ImportError:
        raise EnvironmentUnavailable(
            "optimizer 'sgdsai-ref' needs the official package: pip install sgd-sai==1.0.3",
            value="sgdsai-ref") from None
    official.print = _silent_print  # a module global shadows the builtin for that module alone
    return official.SGD_sai(params)


def _sgdsai_impl(optimizer, params) -> str:
    return optimizer.resolve_impl(params)


def _adamw8bit(params):
    from sgdsai_cli.optim.adamw8bit import build_adamw8bit

    return build_adamw8bit(params, lr=ADAMW_LR)


def _muon(**adamw_path):
    def build(named_params):
        from sgdsai_cli.optim.muon import MuonAdamW

        return MuonAdamW(named_params, lr=ADAMW_LR, **adamw_path)

    return build


def _muon_impl(optimizer, params) -> str:
    return optimizer.impl_name(default=_default_impl(optimizer, params))


_CHOICES: dict[str, OptimizerChoice] = {
    c.name: c
    for c in [
        OptimizerChoice("sgdsai", lambda ps: SGDSaI(ps), _sgdsai_impl, SGDSAI_FOOTPRINT),
        OptimizerChoice("sgdsai-ref", _sgdsai_ref, lambda opt, ps: "loop", SGDSAI_FOOTPRINT),
        OptimizerChoice("adamw", lambda ps: torch.optim.AdamW(ps, lr=ADAMW_LR), _default_impl, ADAMW_FOOTPRINT),
        OptimizerChoice("adamw-foreach", lambda ps: torch.optim.AdamW(ps, lr=ADAMW_LR, foreach=True),
                        lambda opt, ps: "foreach", ADAMW_FOOTPRINT),
        OptimizerChoice("adamw-fused", lambda ps: torch.optim.AdamW(ps, lr=ADAMW_LR, fused=True),
                        lambda opt, ps: "fused", ADAMW_FOOTPRINT),
        OptimizerChoice("adamw-loop", lambda ps: torch.optim.AdamW(ps, lr=ADAMW_LR, foreach=False),
                        lambda opt, ps: "loop", ADAMW_FOOTPRINT),
        OptimizerChoice("sgd", lambda ps: torch.optim.SGD(ps, lr=SGD_LR, momentum=0.9), _default_impl,
                        SGD_FOOTPRINT),
        OptimizerChoice("adafactor", lambda ps: torch.optim.Adafactor(ps), _default_impl, ADAFACTOR_FOOTPRINT),
        OptimizerChoice("adamw8bit", _adamw8bit, lambda opt, ps: ADAMW8BIT_IMPL, ADAMW8BIT_FOOTPRINT),
        OptimizerChoice("muon", _muon(), _muon_impl, MUON_FOOTPRINT, named=True),
        OptimizerChoice("muon-foreach", _muon(foreach=True), _muon_impl, MUON_FOOTPRINT, named=True),
        OptimizerChoice("muon-fused", _muon(fused=True), _muon_impl, MUON_FOOTPRINT, named=True),
        OptimizerChoice("muon-loop", _muon(foreach=False), _muon_impl, MUON_FOOTPRINT, named=True),
    ]
}
OPTIMIZER_NAMES = tuple(_CHOICES) + ("torch:ClassName",)
# adamw (torch's default path) and adamw-fused (no parameter-sized step temporary: what a memory-short
# user runs), so that profile's saving is shown against both
DEFAULT_OPTIMIZERS = ("sgdsai", "adamw", "adamw-fused")


def _torch_class(name: str) -> OptimizerChoice:
    cls_name = name.split(":", 1)[1]
    classes = {
        n: c
        for n, c in vars(torch.optim).items()
        if inspect.isclass(c) and issubclass(c, torch.optim.Optimizer) and c is not torch.optim.Optimizer
    }
    cls = classes.get(cls_name)
    if cls is None:
        raise BadInput(f"unknown optimizer '{name}': torch.optim has no class '{cls_name}'"
                       + did_you_mean(cls_name, classes), value=name)

    def build(params):
        try:
            return cls(params)
        except TypeError:  # a class with a required learning rate
            return cls(params, lr=SGD_LR)

    return OptimizerChoice(name, build, _default_impl)


def resolve_optimizer(name: str) -> OptimizerChoice:
    """Look up an optimizer by its CLI name; BadInput with close matches when unknown."""
    if name.startswith("torch:"):
        return _torch_class(name)
    try:
        return _CHOICES[name]
    except KeyError:
        raise BadInput(f"unknown optimizer '{name}'" + did_you_mean(name, OPTIMIZER_NAMES),
                       value=name) from None


def build_optimizer(name: str, params, master_dtype: torch.dtype | None = None) -> tuple[torch.optim.Optimizer, str]:
    """Construct optimizer ``name`` over ``params``; return it with the implementation that will run.

    ``params``: tensors, or ``(name, tensor)`` pairs (``model.named_parameters()``). Names are
    dropped for every optimizer but those that split by name (``muon``), which need them.
    ``master_dtype`` (the ``bf16-master`` precision: float32): the optimizer steps master copies of the
    parameters in that dtype (``master_weights.MasterWeights``), its state in that dtype too.
    """
    choice = resolve_optimizer(name)
    items = list(params)
    named = bool(items) and all(isinstance(x, tuple) and len(x) == 2 and isinstance(x[0], str) for x in items)
    tensors = [x[1] for x in items] if named else items
    if choice.named and not named:
        raise BadInput(f"optimizer '{name}' needs named parameters (model.named_parameters()): it tells the "
                       "hidden matrices from embeddings and heads by name", value=name)
    names = [x[0] for x in items] if named else None

    def build(ts):
        return choice.build(list(zip(names, ts)) if choice.named else ts)

    if master_dtype is not None:
        from sgdsai_cli.optim.master_weights import MasterWeights

        optimizer = MasterWeights(tensors, build, master_dtype)
        return optimizer, choice.impl(optimizer.inner, optimizer.masters)
    optimizer = build(tensors)
    return optimizer, choice.impl(optimizer, tensors)


def state_note(optimizer: torch.optim.Optimizer) -> str | None:
    """A line for the row of an optimizer stepped once, where its state needs saying (adamw8bit, muon)."""
    from sgdsai_cli.optim.adamw8bit import is_bitsandbytes
    from sgdsai_cli.optim.adamw8bit import state_note as bnb_note
    from sgdsai_cli.optim.master_weights import MasterWeights
    from sgdsai_cli.optim.muon import MuonAdamW

    if isinstance(optimizer, MasterWeights):
        optimizer = optimizer.inner
    if isinstance(optimizer, MuonAdamW):
        return optimizer.state_note()
    return bnb_note(optimizer) if is_bitsandbytes(optimizer) else None


def footprint(name: str) -> Footprint:
    """The footprint of optimizer ``name`` (``sgdsai:IMPL`` counts as ``sgdsai``); BadInput when unknown."""
    if name.startswith("sgdsai:"):
        name = "sgdsai"
    return resolve_optimizer(name).footprint


def state_buffers(name: str) -> int:
    """Full-size state buffers per parameter that ``name`` keeps (state bytes / parameter bytes)."""
    return footprint(name).state_buffers


def tensors_moved(name: str) -> int | None:
    """Full-size tensors one step of ``name`` reads plus writes; None where no formula is kept."""
    return footprint(name).tensors_moved
