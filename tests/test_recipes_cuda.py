"""Each training recipe run for real on CUDA against the no-GPU estimate (skipped without CUDA).

The CPU twins (tests/test_lora.py, test_qlora.py, test_master_weights.py, test_checkpointing.py,
test_adamw8bit.py) agree to the byte; on CUDA the caching allocator rounds every block up to 512 bytes,
so the measured allocated peak may sit above the estimate by that rounding, never below it by more
than the CPU's known gaps.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from sgdsai_cli.measure import realrun
from sgdsai_cli.models import resolve_model
from sgdsai_cli.models.lora import parse_lora
from sgdsai_cli.results import ProfileSpec

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")

RECIPES = [  # (precision, checkpointing, lora, optimizer)
    ("fp32", "full", None, "sgdsai"),
    ("bf16-master", "none", None, "sgdsai"),
    ("bf16-master", "none", None, "adamw"),
    ("bf16", "none", "r=4,targets=q_proj,v_proj", "sgdsai"),
    ("bf16", "full", "r=4,targets=q_proj,v_proj", "adamw"),
    ("bf16", "none", "r=4,targets=q_proj,v_proj,quant=nf4", "sgdsai"),
    ("fp32", "none", None, "adamw8bit"),
]


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize(("precision", "checkpointing", "lora", "optimizer"), RECIPES)
def test_cuda_recipe_agrees_with_the_estimate(in_process, precision, checkpointing, lora, optimizer):
    if lora and "quant" in lora or optimizer == "adamw8bit":
        pytest.importorskip("bitsandbytes")
    if lora:
        pytest.importorskip("peft")
    spec = ProfileSpec(model="tiny-llama", precision=precision, device="cuda", batch_size=2, seq_len=64, steps=3)
    model_spec = dataclasses.replace(resolve_model("tiny-llama"), checkpointing=checkpointing, lora=parse_lora(lora))
    [run] = realrun.run_real(spec, model_spec, [optimizer], sampler=False).result.runs
    assert run.status == "ok", run.error
    errors = run.memory.details["estimate_error_pct"]
    assert errors["param_bytes"] == errors["grad_bytes"] == errors["state_bytes"] == 0.0
    assert abs(errors["peak_bytes"]) < 2.0, errors
