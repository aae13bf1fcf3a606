"""Training precisions: what dtype parameters, gradients and state live in, and what autocast runs.

fp32, bf16, fp16        params, grads and optimizer state all in that dtype
amp-bf16, amp-fp16      fp32 params, grads and state; forward/backward under autocast
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sgdsai_cli.errors import BadInput, did_you_mean


@dataclass(frozen=True)
class Precision:
    name: str
    param_dtype: torch.dtype
    autocast_dtype: torch.dtype | None  # None: no autocast

    @property
    def bytes_per_param(self) -> int:
        return torch.empty((), dtype=self.param_dtype).element_size()


PRECISIONS: dict[str, Precision] = {
    "fp32": Precision("fp32", torch.float32, None),
    "bf16": Precision("bf16", torch.bfloat16, None),
    "fp16": Precision("fp16", torch.float16, None),
    "amp-bf16": Precision("amp-bf16", torch.float32, torch.bfloat16),
    "amp-fp16": Precision("amp-fp16", torch.float32, torch.float16),
}


def resolve_precision(name: str) -> Precision:
    try:
        return PRECISIONS[name]
    except KeyError:
        raise BadInput(f"unknown precision '{name}'" + did_you_mean(name, PRECISIONS)) from None
