"""bf16-master: bf16 params and grads, fp32 master weights and fp32 state; precision names from other tools."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from sgdsai_cli.errors import BadInput
from sgdsai_cli.measure import realrun
from sgdsai_cli.optim.master_weights import MasterWeights
from sgdsai_cli.optim.sgdsai import SGDSaI
from sgdsai_cli.precision import resolve_precision
from sgdsai_cli.results import ProfileSpec


@pytest.mark.parametrize(("typed", "ours"), [
    ("bf16-mixed", "amp-bf16"), ("16-mixed", "amp-fp16"), ("bf16-true", "bf16"), ("32-true", "fp32"),
    ("BF16", "bf16"), (" fp32 ", "fp32"), ("bfloat16", "bf16"), ("master-weights", "bf16-master"),
    ("bf16-master", "bf16-master"),
])
def test_names_users_type_map_to_ours(typed, ours):
    assert resolve_precision(typed).name == ours


def test_unknown_precision_suggests():
    with pytest.raises(BadInput, match="did you mean"):
        resolve_precision("bf16-mix")


def _pair(make_inner, steps=3):
    """The same tiny regression trained in fp32 and as bf16 params with fp32 masters: (fp32 params, wrapper)."""
    torch.manual_seed(0)
    w32 = [torch.randn(8, 4, requires_grad=True), torch.randn(4, requires_grad=True)]
    w16 = [p.detach().to(torch.bfloat16).requires_grad_() for p in w32]
    with torch.no_grad():
        for a, b in zip(w32, w16):
            a.copy_(b.float())  # the same start: bf16-representable values
    x = torch.randn(16, 8)
    opt32, opt16 = make_inner(w32), MasterWeights(w16, make_inner)
    for _ in range(steps):
        for params, opt in ((w32, opt32), (w16, opt16)):
            w, b = params
            loss = ((x.to(w.dtype) @ w + b).float() ** 2).mean()
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
    return w32, w16, opt16


@pytest.mark.parametrize("make_inner", [lambda ps: torch.optim.AdamW(ps, lr=1e-2),
                                        lambda ps: SGDSaI(ps, lr=1e-2)], ids=["adamw", "sgdsai"])
def test_masters_carry_the_update_and_params_are_their_bf16_copies(make_inner):
    w32, w16, opt = _pair(make_inner)
    for p, m in zip(w16, opt.masters):
        assert p.dtype == torch.bfloat16 and m.dtype == torch.float32
        assert torch.equal(p, m.to(torch.bfloat16))  # the parameter is the master, rounded
        assert opt.state[p]["master"] is m
    for full, m in zip(w32, opt.masters):  # fp32 masters track an fp32 run closely (bf16 gradients only differ)
        torch.testing.assert_close(m, full, rtol=0.05, atol=0.02)


def test_state_dict_round_trip():
    _, w16, opt = _pair(lambda ps: torch.optim.AdamW(ps, lr=1e-2))
    saved = opt.state_dict()
    other = MasterWeights([p.detach().clone().requires_grad_() for p in w16], lambda ps: torch.optim.AdamW(ps, lr=1e-2))
    other.load_state_dict(saved)
    for a, b in zip(other.masters, opt.masters):
        assert torch.equal(a, b)
    assert torch.equal(other.inner.state[other.masters[0]]["exp_avg"], opt.inner.state[opt.masters[0]]["exp_avg"])


def test_profile_says_where_each_byte_lives():
    from sgdsai_cli import profile

    result = profile(model="gpt2", precision="bf16-master", device="meta", optimizers=["sgdsai", "adamw"])
    n = result.model.params
    assert result.spec.precision == "bf16-master"
    assert result.model.param_bytes == result.model.grad_bytes == 2 * n
    sgdsai, adamw = result.runs
    assert sgdsai.memory.state_bytes_by_key["master"] == sgdsai.memory.state_bytes_by_key["momentum_buffer"] == 4 * n
    assert adamw.memory.state_bytes_by_key["exp_avg"] == adamw.memory.state_bytes_by_key["exp_avg_sq"] == 4 * n
    # the step casts every gradient to fp32 onto its master: a 4-bytes-per-parameter transient
    assert sgdsai.memory.step_transient_bytes == 4 * n


@pytest.mark.parametrize("optimizer", ["sgdsai", "adamw"])
def test_real_cpu_runs_agree_with_the_estimate(in_process, optimizer):
    from sgdsai_cli.models import resolve_model

    spec = ProfileSpec(model="tiny-llama", precision="bf16-master", device="cpu", batch_size=2, seq_len=16, steps=2)
    [run] = realrun.run_real(spec, dataclasses.replace(resolve_model("tiny-llama")), [optimizer],
                             sampler=False).result.runs
    assert run.status == "ok", run.error
    errors = run.memory.details["estimate_error_pct"]
    assert errors["state_bytes"] == errors["grad_bytes"] == errors["activation_peak_bytes"] == 0.0
    # AdamW's CPU loop and the estimate's path keep their 'step' scalars apart: 4 bytes a tensor at most
    gap = abs(run.memory.peak_allocated_bytes - run.memory.details["estimate"]["peak_bytes"])
    assert gap == 0 if optimizer == "sgdsai" else gap <= 4 * 32


def test_plan_takes_the_recipe_and_its_aliases():
    from sgdsai_cli.analysis.plan import plan

    result = plan("tiny-llama", precisions=["bf16-master", "bf16-mixed"], gpus=["h100-80gb"], seq_len=16,
                  optimizers=["sgdsai"])
    assert [r.precision for r in result.rows] == ["bf16-master", "amp-bf16"]
    master = result.rows[0]
    assert master.state_bytes == 2 * 4 * 158_016 + 4 * 21  # master + momentum, fp32; a g-SNR scalar per tensor (21)
