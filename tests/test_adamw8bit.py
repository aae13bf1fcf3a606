"""adamw8bit: bitsandbytes' AdamW8bit sized on meta, traced on fake tensors and run on the CPU, to the byte.

The golden per-key bytes below follow bitsandbytes' storage format (uint8 moments, one fp32 absmax
per 256 elements, two shared 256-entry fp32 code books; fewer than 4096 elements: fp32 moments);
each is checked against the tensors bitsandbytes itself allocates on the CPU.
"""

from __future__ import annotations

import sys

import pytest
import torch

from sgdsai_cli.errors import EnvironmentUnavailable
from sgdsai_cli.measure import realrun
from sgdsai_cli.measure.estimate import trace_step
from sgdsai_cli.measure.sizing import meta_model, size_optimizer
from sgdsai_cli.measure.storage import state_bytes_by_key
from sgdsai_cli.models import resolve_model
from sgdsai_cli.optim.adamw8bit import MIN_8BIT_SIZE
from sgdsai_cli.optim.registry import build_optimizer
from sgdsai_cli.precision import resolve_precision
from sgdsai_cli.results import ProfileSpec

pytest.importorskip("bitsandbytes")


def _blocks(n: int) -> int:
    return -(-n // 256)


# shape -> bytes per state key (one parameter alone: its code books are the only pair)
CASES = [
    ((100,), {"state1": 400, "state2": 400}),  # under 4096 elements: fp32 moments, no code books
    ((4095,), {"state1": 4 * 4095, "state2": 4 * 4095}),
    ((4096,), {"state1": 4096, "state2": 4096, "qmap1": 1024, "qmap2": 1024, "absmax1": 4 * 16, "absmax2": 4 * 16}),
    ((64, 129), {"state1": 8256, "state2": 8256, "qmap1": 1024, "qmap2": 1024,
                 "absmax1": 4 * _blocks(8256), "absmax2": 4 * _blocks(8256)}),
]


@pytest.mark.parametrize("device", ["cpu", "meta"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape, expect", CASES)
def test_state_bytes_per_key_are_bitsandbytes_own(shape, expect, dtype, device):
    p = torch.nn.Parameter(torch.zeros(shape, dtype=dtype, device=device))
    p.grad = torch.ones_like(p)
    opt, impl = build_optimizer("adamw8bit", [p])
    opt.step()
    assert impl == "bnb-8bit"
    assert state_bytes_by_key(opt) == expect
    state = opt.state[p]
    assert state["step"] == 1  # a Python int: no bytes
    want = torch.uint8 if p.numel() >= MIN_8BIT_SIZE else torch.float32
    assert state["state1"].dtype == state["state2"].dtype == want


def test_min_8bit_size_is_bitsandbytes_default():
    import bitsandbytes as bnb

    opt = bnb.optim.AdamW8bit([torch.nn.Parameter(torch.zeros(4))])
    assert opt.args.min_8bit_size == MIN_8BIT_SIZE


@pytest.mark.parametrize("model, precision", [("tiny-gpt2", "fp32"), ("tiny-llama", "bf16")])
def test_meta_sizing_and_fake_trace_equal_a_real_cpu_step(model, precision):
    spec, prec = resolve_model(model), resolve_precision(precision)
    by_key, impl, note = size_optimizer(meta_model(spec, prec), "adamw8bit")
    real = __import__("sgdsai_cli.models", fromlist=["build_model"]).build_model(spec, device="cpu",
                                                                                 dtype=prec.param_dtype)
    for p in real.parameters():
        p.grad = torch.randn_like(p)
    opt, _ = build_optimizer("adamw8bit", real.named_parameters())
    opt.step()
    assert by_key == state_bytes_by_key(opt)
    assert impl == "bnb-8bit"
    small = sum(1 for p in real.parameters() if p.numel() < MIN_8BIT_SIZE)
    assert f"{len(list(real.parameters())) - small} tensors 8-bit, {small} under 4096 elements 32-bit" in note
    assert set(by_key) == {"state1", "state2", "qmap1", "qmap2", "absmax1", "absmax2"}
    assert by_key["qmap1"] == by_key["qmap2"] == 1024  # one pair of code books for all parameters
    trace = trace_step(spec, prec, "adamw8bit")
    assert trace.state_bytes == sum(by_key.values())
    assert trace.step_transient_bytes == 0  # one in-place bitsandbytes op per parameter


def test_llama2_7b_every_tensor_is_8bit():
    """Every llama2-7b tensor has at least 4096 elements (the norms exactly 4096): all 8-bit."""
    by_key, _, _ = size_optimizer(meta_model(resolve_model("llama2-7b"), resolve_precision("fp32")), "adamw8bit")
    n = 6_738_415_616
    assert by_key["state1"] == by_key["state2"] == n
    assert by_key["absmax1"] == 105_287_744  # 4 bytes per block of 256, per tensor rounded up
    assert sum(by_key.values()) == 2 * n + 2 * 1024 + 2 * 105_287_744


def test_real_cpu_run_matches_the_estimate_to_the_byte(in_process):
    spec = ProfileSpec(model="tiny-gpt2", precision="fp32", device="cpu", batch_size=2, seq_len=16, warmup=3,
                       steps=1)
    (run,) = realrun.run_real(spec, resolve_model("tiny-gpt2"), ["adamw8bit"], sampler=False).result.runs
    assert (run.status, run.impl) == ("ok", "bnb-8bit"), run.error
    mem = run.memory
    errors = mem.details["estimate_error_pct"]
    for key in ("param_bytes", "grad_bytes", "state_bytes", "activation_peak_bytes", "forward_backward_peak_bytes"):
        assert errors[key] == 0.0, key
    assert mem.step_transient_bytes == 0
    # the two code books are made by torch.tensor(list) in bitsandbytes' constructor, an allocation no
    # dispatched op makes, so the CPU live tracker's peak misses exactly their 2 x 1 KiB (the state,
    # read from optimizer.state, has them)
    assert mem.estimated_peak_bytes - mem.peak_allocated_bytes == 2 * 1024


def test_missing_bitsandbytes_is_environment_unavailable(monkeypatch, cli):
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # import raises ImportError
    with pytest.raises(EnvironmentUnavailable, match=r"pip install 'sgdsai\[bnb\]'") as info:
        build_optimizer("adamw8bit", [torch.nn.Parameter(torch.zeros(4))])
    assert info.value.value == "adamw8bit"
    from sgdsai_cli.measure import estimate

    estimate.trace_step.cache_clear()  # a step traced earlier in this process, with bitsandbytes there
    res = cli("profile", "--model", "tiny-gpt2", "--seq-len", "16", "-o", "sgdsai", "-o", "adamw8bit",
              "--format", "json")
    assert res.exit_code == 0, res.output
    import json

    runs = {r["optimizer"]: r for r in json.loads(res.stdout)["runs"]}
    assert runs["adamw8bit"]["status"] == "skipped" and "sgdsai[bnb]" in runs["adamw8bit"]["error"]
    assert runs["sgdsai"]["status"] == "ok"
