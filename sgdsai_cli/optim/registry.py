"""Optimizer registry: the names of DESIGN.md section 3 -> constructed optimizers.

    sgdsai          our SGDSaI (impl "auto")
    sgdsai-ref      the official sgd_sai.SGD_sai 1.0.3, if installed
    adamw           torch AdamW, torch's default path (foreach on CUDA, loop on CPU)
    adamw-foreach   AdamW(foreach=True)
    adamw-fused     AdamW(fused=True)
    adamw-loop      AdamW(foreach=False)
    sgd             torch SGD, momentum 0.9
    adafactor       torch Adafactor
    torch:Name      any torch.optim class with its defaults
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass

import torch

from sgdsai_cli.errors import BadInput, EnvironmentUnavailable, did_you_mean
from sgdsai_cli.optim import SGDSaI

# Learning rates only matter for real runs; memory does not depend on them.
ADAMW_LR = 1e-3
SGD_LR = 1e-2


@dataclass(frozen=True)
class OptimizerChoice:
    name: str
    build: Callable[[list], torch.optim.Optimizer]
    impl: Callable[[torch.optim.Optimizer, list], str]  # the implementation that runs for these params


def _on_cuda(params) -> bool:
    return bool(params) and all(p.device.type == "cuda" for p in params)


def _default_impl(optimizer, params) -> str:
    # torch picks foreach when every tensor is on CUDA, else the per-tensor loop.
    return "foreach" if _on_cuda(params) else "loop"


def _sgdsai_ref(params):
    try:
        from sgd_sai import SGD_sai
    except ImportError:
        raise EnvironmentUnavailable(
            "optimizer 'sgdsai-ref' needs the official package: pip install sgd-sai==1.0.3"
        ) from None
    return SGD_sai(params)


def _sgdsai_impl(optimizer, params) -> str:
    return optimizer.resolve_impl(params)


_CHOICES: dict[str, OptimizerChoice] = {
    c.name: c
    for c in [
        OptimizerChoice("sgdsai", lambda ps: SGDSaI(ps), _sgdsai_impl),
        OptimizerChoice("sgdsai-ref", _sgdsai_ref, lambda opt, ps: "loop"),
        OptimizerChoice("adamw", lambda ps: torch.optim.AdamW(ps, lr=ADAMW_LR), _default_impl),
        OptimizerChoice(
            "adamw-foreach", lambda ps: torch.optim.AdamW(ps, lr=ADAMW_LR, foreach=True), lambda opt, ps: "foreach"
        ),
        OptimizerChoice(
            "adamw-fused", lambda ps: torch.optim.AdamW(ps, lr=ADAMW_LR, fused=True), lambda opt, ps: "fused"
        ),
        OptimizerChoice(
            "adamw-loop", lambda ps: torch.optim.AdamW(ps, lr=ADAMW_LR, foreach=False), lambda opt, ps: "loop"
        ),
        OptimizerChoice("sgd", lambda ps: torch.optim.SGD(ps, lr=SGD_LR, momentum=0.9), _default_impl),
        OptimizerChoice("adafactor", lambda ps: torch.optim.Adafactor(ps), _default_impl),
    ]
}
OPTIMIZER_NAMES = tuple(_CHOICES) + ("torch:ClassName",)
DEFAULT_OPTIMIZERS = ("sgdsai", "adamw")


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
                       + did_you_mean(cls_name, classes))

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
        raise BadInput(f"unknown optimizer '{name}'" + did_you_mean(name, OPTIMIZER_NAMES)) from None


def build_optimizer(name: str, params) -> tuple[torch.optim.Optimizer, str]:
    """Construct optimizer ``name`` over ``params``; return it with the implementation that will run."""
    choice = resolve_optimizer(name)
    params = list(params)
    optimizer = choice.build(params)
    return optimizer, choice.impl(optimizer, params)
