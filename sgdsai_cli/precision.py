"""Training precisions: what dtype parameters, gradients and state live in, and what autocast runs.

fp32, bf16, fp16        params, grads and optimizer state all in that dtype
amp-bf16, amp-fp16      fp32 params, grads and state; forward/backward under autocast
bf16-master             bf16 params and grads; the optimizer keeps fp32 master weights and fp32 state
                        (the DeepSpeed / Megatron layout: optim.master_weights)

Names other tools use map onto these (``ALIASES``: Lightning's ``bf16-mixed`` is amp-bf16,
``bf16-true`` is bf16, ...); the result records the canonical name.
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
    master_dtype: torch.dtype | None = None  # the optimizer's master weights and state (None: the params')

    @property
    def bytes_per_param(self) -> int:
        return torch.empty((), dtype=self.param_dtype).element_size()


PRECISIONS: dict[str, Precision] = {
    "fp32": Precision("fp32", torch.float32, None),
    "bf16": Precision("bf16", torch.bfloat16, None),
    "fp16": Precision("fp16", torch.float16, None),
    "amp-bf16": Precision("amp-bf16", torch.float32, torch.bfloat16),
    "amp-fp16": Precision("amp-fp16", torch.float32, torch.float16),
    "bf16-master": Precision("bf16-master", torch.bfloat16, None, torch.float32),
}
# names users type from other tools -> ours (Lightning's precision flags, DeepSpeed/Accelerate words)
ALIASES = {
    "32": "fp32", "32-true": "fp32", "float32": "fp32", "full": "fp32",
    "bf16-true": "bf16", "bfloat16": "bf16", "16-true": "fp16", "float16": "fp16", "half": "fp16",
    "bf16-mixed": "amp-bf16", "16-mixed": "amp-fp16", "16": "amp-fp16", "fp16-mixed": "amp-fp16",
    "bf16-master-weights": "bf16-master", "bf16-fp32-master": "bf16-master", "master-weights": "bf16-master",
}


def resolve_precision(name: str) -> Precision:
    """The precision called ``name`` (ours, or an alias such as ``bf16-mixed``); BadInput naming it otherwise."""
    key = str(name).strip().lower()
    key = ALIASES.get(key, key)
    try:
        return PRECISIONS[key]
    except KeyError:
        raise BadInput(f"unknown precision '{name}'" + did_you_mean(str(name), [*PRECISIONS, *ALIASES]),
                       value=name) from None
