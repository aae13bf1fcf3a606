"""SGDSaI: parity with the official sgd_sai 1.0.3, each of its defects fixed, options and state.

Only the tests that compare with the official package take the ``sgd_sai`` fixture, which skips
them where it is not installed.
"""

from __future__ import annotations

import contextlib
import copy
import io
import math

import pytest
import torch
from torch import nn

from sgdsai_cli.optim import SGDSaI, compute_gsnr


class Mixed(nn.Module):
    """Embedding, conv, norm and linear parameters: the kinds of tensor a real model has."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(32, 16)
        self.conv = nn.Conv1d(16, 16, kernel_size=3, padding=1)
        self.norm = nn.LayerNorm(16)
        self.head = nn.Linear(16, 7)

    def forward(self, tokens):
        x = self.emb(tokens).transpose(1, 2)  # (B, 16, S)
        x = self.conv(x).transpose(1, 2)  # (B, S, 16)
        return self.head(self.norm(x)).mean(dim=1)  # (B, 7)


def _train(model, opt, steps, seed=1, quiet=True):
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        tokens = torch.randint(0, 32, (4, 10), generator=gen)
        target = torch.randint(0, 7, (4,), generator=gen)
        opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(tokens), target).backward()
        with contextlib.redirect_stdout(io.StringIO()):  # the official optimizer prints
            opt.step()


def _max_rel_diff(a: nn.Module, b: nn.Module) -> float:
    worst = 0.0
    for pa, pb in zip(a.parameters(), b.parameters()):
        worst = max(worst, ((pa - pb).abs().max() / pa.abs().max().clamp_min(1e-12)).item())
    return worst


@pytest.mark.parametrize("impl", ["loop", "foreach", "fused", "compiled", "auto"])
@pytest.mark.parametrize("hp", [{}, {"lr": 3e-2, "momentum": 0.5, "weight_decay": 0.1}])
def test_parity_with_official_over_20_steps(impl, hp, sgd_sai):
    torch.manual_seed(0)
    ref_model = Mixed()
    our_model = copy.deepcopy(ref_model)
    _train(ref_model, sgd_sai.SGD_sai(ref_model.parameters(), **hp), 20)
    _train(our_model, SGDSaI(our_model.parameters(), impl=impl, **hp), 20)
    assert _max_rel_diff(ref_model, our_model) < 1e-5


def test_parity_state_gsnr_and_momentum_match_official(sgd_sai):
    torch.manual_seed(0)
    ref_model = Mixed()
    our_model = copy.deepcopy(ref_model)
    ref, ours = sgd_sai.SGD_sai(ref_model.parameters()), SGDSaI(our_model.parameters())
    _train(ref_model, ref, 3)
    _train(our_model, ours, 3)
    for pr, po in zip(ref_model.parameters(), our_model.parameters()):
        assert ours.state[po]["gsnr"].dtype == torch.float32
        assert ours.state[po]["gsnr"].item() == pytest.approx(ref.state[pr]["gsnr"].item(), rel=1e-6)
        torch.testing.assert_close(ours.state[po]["momentum_buffer"], ref.state[pr]["momentum_buffer"])


def test_defaults_equal_official(sgd_sai):
    p = [nn.Parameter(torch.zeros(2))]
    official = sgd_sai.SGD_sai(p).defaults
    ours = SGDSaI(p).defaults
    assert {k: ours[k] for k in official} == official
    assert {k: v for k, v in ours.items() if k not in official} == {
        "gsnr_norm": "none", "impl": "auto", "reference_compat": False}


def _one_param_step(value: torch.Tensor, grad: torch.Tensor, **kw):
    p = nn.Parameter(value.clone())
    opt = SGDSaI([p], **kw)
    p.grad = grad.clone()
    opt.step()
    return p, opt


def test_momentum_zero_works_and_is_gsnr_scaled_sgd():
    torch.manual_seed(0)
    w, g = torch.randn(5, 4), torch.randn(5, 4)
    p, opt = _one_param_step(w, g, momentum=0.0, lr=0.1, weight_decay=0.01)
    expected = (1 - 0.1 * 0.01) * w - 0.1 * compute_gsnr(g) * g
    torch.testing.assert_close(p.detach(), expected)
    assert "momentum_buffer" not in opt.state[p]


def test_late_tensor_gets_its_gsnr_at_its_first_gradient():
    torch.manual_seed(0)
    a, b = nn.Parameter(torch.randn(6)), nn.Parameter(torch.randn(3, 3))
    opt = SGDSaI([a, b])
    a.grad = torch.randn(6)
    opt.step()  # b has no gradient yet (the official code raises KeyError on it later)
    assert "gsnr" not in opt.state[b]
    a.grad, b.grad = torch.randn(6), torch.randn(3, 3)
    late = b.grad.clone()
    opt.step()
    assert opt.state[b]["gsnr"].item() == pytest.approx(compute_gsnr(late).item())


@pytest.mark.parametrize(
    "shape, grad",
    [((1,), torch.tensor([0.7])), ((4, 4), torch.full((4, 4), 0.3)), ((1, 1), torch.tensor([[2.0]]))],
    ids=["one-element", "constant", "one-element-2d"],
)
def test_degenerate_tensor_gets_gsnr_one(shape, grad):
    w = torch.ones(shape)
    p, opt = _one_param_step(w, grad, lr=0.1, weight_decay=0.0)
    assert opt.state[p]["gsnr"].item() == 1.0
    torch.testing.assert_close(p.detach(), w - 0.1 * grad)  # plain SGD step, not ||g||/eps


def test_reference_compat_reproduces_official_degenerate_step(sgd_sai):
    w, g = torch.ones(4, 4), torch.full((4, 4), 0.3)
    ours, opt = _one_param_step(w, g, reference_compat=True)
    ref = nn.Parameter(w.clone())
    official = sgd_sai.SGD_sai([ref])
    ref.grad = g.clone()
    with contextlib.redirect_stdout(io.StringIO()):
        official.step()
    assert opt.state[ours]["gsnr"].item() == pytest.approx(official.state[ref]["gsnr"].item(), rel=1e-6)
    torch.testing.assert_close(ours.detach(), ref.detach())
    assert opt.state[ours]["gsnr"].item() > 1e6  # the ||g||/eps blow-up, kept for comparison


def test_all_zero_first_gradient_does_not_freeze_the_tensor():
    torch.manual_seed(0)
    w = torch.randn(8, 2)  # LoRA's A while B = 0 gets exactly zero gradients
    p = nn.Parameter(w.clone())
    opt = SGDSaI([p], lr=0.1, weight_decay=0.01)
    p.grad = torch.zeros(8, 2)
    opt.step()
    assert "gsnr" not in opt.state[p]
    torch.testing.assert_close(p.detach(), (1 - 0.1 * 0.01) * w)  # decoupled decay only
    g = torch.randn(8, 2)
    p.grad = g.clone()
    opt.step()
    assert opt.state[p]["gsnr"].item() == pytest.approx(compute_gsnr(g).item())
    assert opt.state[p]["gsnr"].item() > 1.0


def test_official_freezes_all_zero_first_gradient(sgd_sai):
    """Documents the defect we fix: the official g-SNR is 0 and the tensor never moves again."""
    p = nn.Parameter(torch.ones(4))
    opt = sgd_sai.SGD_sai([p], weight_decay=0.0)
    p.grad = torch.zeros(4)
    with contextlib.redirect_stdout(io.StringIO()):
        opt.step()
        p.grad = torch.randn(4)
        opt.step()
    assert opt.state[p]["gsnr"].item() == 0.0
    torch.testing.assert_close(p.detach(), torch.ones(4))


def test_state_dict_round_trip_continues_identically():
    torch.manual_seed(0)
    model = Mixed()
    opt = SGDSaI(model.parameters())
    _train(model, opt, 5, seed=3)
    saved = copy.deepcopy(opt.state_dict())
    assert all("gsnr" in s for s in saved["state"].values())
    resumed_model = copy.deepcopy(model)
    resumed = SGDSaI(resumed_model.parameters())
    resumed.load_state_dict(saved)
    _train(model, opt, 5, seed=4)
    _train(resumed_model, resumed, 5, seed=4)
    for a, b in zip(model.parameters(), resumed_model.parameters()):
        assert torch.equal(a, b)


def test_closure_runs_once_per_step():
    torch.manual_seed(0)
    p = nn.Parameter(torch.randn(5))
    opt = SGDSaI([p])
    calls = []

    def closure():
        calls.append(1)
        opt.zero_grad()
        loss = (p**2).sum()
        loss.backward()
        return loss

    loss = opt.step(closure)
    assert len(calls) == 1 and loss is not None
    opt.step(closure)
    assert len(calls) == 2


def test_prints_nothing(capsys):
    torch.manual_seed(0)
    model = Mixed()
    _train(model, SGDSaI(model.parameters()), 2)
    out = capsys.readouterr()
    assert out.out == "" and out.err == ""


def test_sparse_gradients_refused():
    emb = nn.Embedding(10, 4, sparse=True)
    opt = SGDSaI(emb.parameters())
    emb(torch.tensor([1, 2])).sum().backward()
    with pytest.raises(RuntimeError, match="sparse gradients"):
        opt.step()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"lr": -1.0}, "learning rate: -1.0"),
        ({"lr": float("nan")}, "learning rate: nan"),
        ({"momentum": 1.0}, "momentum value: 1.0"),
        ({"momentum": -0.1}, "momentum value: -0.1"),
        ({"eps": -1e-8}, "epsilon value: -1e-08"),
        ({"weight_decay": -0.5}, "weight_decay value: -0.5"),
        ({"gsnr_norm": "mean"}, "gsnr_norm: 'mean'"),
        ({"impl": "cuda"}, "impl: 'cuda'"),
    ],
)
def test_bad_hyperparameters_name_the_value(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SGDSaI([nn.Parameter(torch.zeros(2))], **kwargs)


def test_steady_state_step_never_reads_device_values(monkeypatch):
    torch.manual_seed(0)
    model = Mixed()
    opt = SGDSaI(model.parameters())
    _train(model, opt, 1)  # first step may synchronise once

    def forbidden(*_a, **_k):
        raise AssertionError("device-to-host read in a steady-state step")

    for name in ("item", "tolist", "__float__", "__bool__", "cpu"):
        monkeypatch.setattr(torch.Tensor, name, forbidden)
    _train(model, opt, 3)


def test_gsnr_norm_max_divides_by_largest():
    torch.manual_seed(0)
    a, b = nn.Parameter(torch.randn(100)), nn.Parameter(torch.randn(4))
    opt = SGDSaI([a, b], gsnr_norm="max")
    a.grad, b.grad = torch.randn(100), torch.randn(4)
    opt.step()
    raw = [opt.state[a]["gsnr"].item(), opt.state[b]["gsnr"].item()]
    assert opt._scales([a, b], "max") == pytest.approx([r / max(raw) for r in raw])
    assert max(opt._scales([a, b], "max")) == 1.0


def test_meta_step_allocates_four_bytes_per_fp32_param():
    with torch.device("meta"):
        model = nn.Sequential(nn.Linear(64, 128), nn.LayerNorm(128), nn.Linear(128, 10))
    for p in model.parameters():
        p.grad = torch.empty_like(p)
    opt = SGDSaI(model.parameters())
    opt.step()
    n = sum(p.numel() for p in model.parameters())
    buf_bytes = sum(s["momentum_buffer"].nbytes for s in opt.state.values())
    gsnr_bytes = sum(s["gsnr"].nbytes for s in opt.state.values())
    assert buf_bytes == 4 * n
    assert gsnr_bytes == 4 * len(list(model.parameters()))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_params_keep_their_dtype_and_track_fp32(dtype):
    torch.manual_seed(0)
    model32 = Mixed()
    model_lp = copy.deepcopy(model32).to(dtype)
    opt = SGDSaI(model_lp.parameters())
    ref = SGDSaI(model32.parameters())
    gen = torch.Generator().manual_seed(5)
    for _ in range(3):
        grads = [torch.randn(p.shape, generator=gen) * 1e-2 for p in model32.parameters()]
        for p, g in zip(model32.parameters(), grads):
            p.grad = g
        for p, g in zip(model_lp.parameters(), grads):
            p.grad = g.to(dtype)
        opt.step()
        ref.step()
    for p32, plp in zip(model32.parameters(), model_lp.parameters()):
        assert opt.state[plp]["momentum_buffer"].dtype == dtype
        assert opt.state[plp]["gsnr"].dtype == torch.float32
        assert opt.state[plp]["gsnr"].item() == pytest.approx(ref.state[p32]["gsnr"].item(), rel=1e-2)
        torch.testing.assert_close(plp.float(), p32, atol=5e-2, rtol=2e-2)


@pytest.mark.parametrize("numel", [2, 3, 17, 1000])
def test_gsnr_at_least_sqrt_numel_minus_one(numel):
    gen = torch.Generator().manual_seed(numel)
    for shift in (0.0, 0.5, 5.0):
        g = torch.randn(numel, generator=gen) + shift
        n = g.numel()
        assert compute_gsnr(g, eps=0.0).item() >= math.sqrt(n - 1) * (1 - 1e-5)
        mean, var_b = g.double().mean(), g.double().var(correction=0)
        identity = math.sqrt(n - 1) * math.sqrt(1 + (mean**2 / var_b).item())
        assert compute_gsnr(g, eps=0.0).item() == pytest.approx(identity, rel=1e-4)


# --- options live in defaults: state_dict, per-group values, old state dicts ------------------------

OPTIONS = {"gsnr_norm": "max", "impl": "loop", "reference_compat": True}


def _stepped(opt, params, steps=2):
    gen = torch.Generator().manual_seed(7)
    for _ in range(steps):
        for p in params:
            p.grad = torch.randn(p.shape, generator=gen)
        opt.step()
    return opt


def test_state_dict_round_trip_carries_every_option():
    params = [nn.Parameter(torch.randn(4, 3)), nn.Parameter(torch.randn(5))]
    saved = copy.deepcopy(_stepped(SGDSaI(params, **OPTIONS), params).state_dict())
    assert {k: saved["param_groups"][0][k] for k in OPTIONS} == OPTIONS
    resumed = SGDSaI(params)  # constructed with the defaults
    resumed.load_state_dict(saved)
    assert {k: resumed.param_groups[0][k] for k in OPTIONS} == OPTIONS
    _stepped(resumed, params)
    assert resumed.impl_used == "loop"


def test_each_group_runs_its_own_options():
    a, b = nn.Parameter(torch.ones(4, 4)), nn.Parameter(torch.ones(4, 4))
    opt = SGDSaI([{"params": [a], "impl": "loop", "reference_compat": True}, {"params": [b]}], impl="foreach")
    assert [g["impl"] for g in opt.param_groups] == ["loop", "foreach"]
    a.grad, b.grad = torch.full((4, 4), 0.3), torch.full((4, 4), 0.3)  # constant: degenerate
    opt.step()
    assert opt.state[a]["gsnr"].item() > 1e6  # the official ||g||/eps
    assert opt.state[b]["gsnr"].item() == 1.0
    assert opt.impl_tensors == {"loop": 1, "foreach": 1}


def test_a_group_option_is_validated_like_the_constructors():
    with pytest.raises(ValueError, match="impl: 'cuda'"):
        SGDSaI([{"params": [nn.Parameter(torch.zeros(2))], "impl": "cuda"}])


def test_assigning_an_option_sets_defaults_and_every_group():
    opt = SGDSaI([{"params": [nn.Parameter(torch.zeros(2))], "impl": "loop"},
                  {"params": [nn.Parameter(torch.zeros(3))]}])
    opt.impl = "foreach"
    assert opt.defaults["impl"] == "foreach" and [g["impl"] for g in opt.param_groups] == ["foreach"] * 2
    with pytest.raises(ValueError, match="gsnr_norm: 'mean'"):
        opt.gsnr_norm = "mean"


def _strip_options(state: dict) -> dict:
    for group in state["param_groups"]:
        for k in OPTIONS:
            group.pop(k, None)
    return state


def test_loading_an_old_state_dict_without_the_options_backfills_them():
    params = [nn.Parameter(torch.randn(4, 3))]
    old = _strip_options(copy.deepcopy(_stepped(SGDSaI(params), params).state_dict()))
    resumed = SGDSaI(params, impl="foreach")
    resumed.load_state_dict(old)
    # this optimizer's own options fill the gaps, as when they were attributes
    assert {k: resumed.param_groups[0][k] for k in OPTIONS} == {
        "gsnr_norm": "none", "impl": "foreach", "reference_compat": False}
    _stepped(resumed, params)
    assert resumed.impl_used == "foreach"


def test_unpickling_an_old_optimizer_backfills_the_constructor_defaults():
    params = [nn.Parameter(torch.randn(4, 3))]
    state = _strip_options(copy.deepcopy(_stepped(SGDSaI(params, impl="loop"), params).__getstate__()))
    for k in OPTIONS:
        del state["defaults"][k]
    old = SGDSaI.__new__(SGDSaI)
    old.__setstate__(state)
    assert old.impl == "auto" and old.gsnr_norm == "none" and old.reference_compat is False
    assert old.param_groups[0]["impl"] == "auto" and old.impl_used is None
    _stepped(old, old.param_groups[0]["params"])
