"""muon: torch.optim.Muon on the hidden matrices with AdamW on the rest, as one optimizer, to the byte."""

from __future__ import annotations

import copy

import pytest
import torch

from sgdsai_cli.errors import BadInput
from sgdsai_cli.measure import realrun
from sgdsai_cli.measure.estimate import trace_step
from sgdsai_cli.measure.sizing import meta_model, size_optimizer
from sgdsai_cli.measure.storage import state_bytes_by_key
from sgdsai_cli.models import build_model, resolve_model
from sgdsai_cli.optim.muon import MuonAdamW, is_hidden_matrix, split_hidden
from sgdsai_cli.optim.registry import build_optimizer
from sgdsai_cli.precision import resolve_precision
from sgdsai_cli.results import ProfileSpec


@pytest.mark.parametrize("name, shape, hidden", [
    ("layers.0.self_attn.q_proj.weight", (8, 8), True),
    ("h.3.mlp.c_fc.weight", (32, 8), True),
    ("encoder.layer.0.attention.output.dense.weight", (8, 8), True),  # "output" inside a block: its owner is dense
    ("blocks.0.attn.query.bias", (8,), False),  # not 2-D
    ("norm.weight", (8,), False),
    ("patch_embed.proj.weight", (8, 3, 4, 4), False),
    ("embed_tokens.weight", (64, 8), False),
    ("model.embed_tokens.weight", (64, 8), False),
    ("transformer.wte.weight", (64, 8), False),
    ("wpe.weight", (16, 8), False),
    ("embeddings.word_embeddings.weight", (64, 8), False),
    ("lm_head.weight", (64, 8), False),
    ("head.weight", (10, 8), False),
    ("classifier.weight", (2, 8), False),
    ("score.weight", (2, 8), False),
    ("output.weight", (64, 8), False),  # Meta's llama checkpoints name the head "output"
])
def test_hidden_matrix_rule(name, shape, hidden):
    assert is_hidden_matrix(name, torch.empty(shape, device="meta")) is hidden


def test_tied_embedding_goes_to_adamw_once():
    model = build_model(resolve_model("tiny-gpt2"), device="meta", dtype=torch.float32)
    hidden, rest = split_hidden([*model.named_parameters(), ("lm_head.weight", model.wte.weight)])
    assert sum(p is model.wte.weight for p in rest) == 1 and all(p is not model.wte.weight for p in hidden)
    assert len(hidden) + len(rest) == len(list(model.parameters()))


def _expected(model, precision):
    """Muon: one momentum buffer per hidden matrix; AdamW: exp_avg, exp_avg_sq and a 4-byte step for the rest."""
    hidden, rest = split_hidden(model.named_parameters())
    size = precision.param_dtype.itemsize
    return {"momentum_buffer": size * sum(p.numel() for p in hidden), "step": 4 * len(rest),
            "exp_avg": size * sum(p.numel() for p in rest), "exp_avg_sq": size * sum(p.numel() for p in rest)}


@pytest.mark.parametrize("model, precision", [("tiny-gpt2", "fp32"), ("tiny-llama", "bf16"), ("tiny-vit", "fp32")])
def test_meta_sizing_fake_trace_and_cpu_step_agree(model, precision):
    spec, prec = resolve_model(model), resolve_precision(precision)
    meta = meta_model(spec, prec)
    by_key, impl, note = size_optimizer(meta, "muon")
    assert by_key == _expected(meta, prec) and impl == "muon+foreach"
    hidden, rest = split_hidden(meta.named_parameters())
    assert f"Muon on {len(hidden)} hidden matrices, AdamW on {len(rest)} other tensors" in note
    real = build_model(spec, device="cpu", dtype=prec.param_dtype)
    for p in real.parameters():
        p.grad = torch.randn_like(p)
    opt, cpu_impl = build_optimizer("muon", real.named_parameters())
    hidden, rest = split_hidden(real.named_parameters())
    before = [hidden[0].detach().clone(), rest[0].detach().clone()]  # a matrix; the embedding
    opt.step()
    assert cpu_impl == "muon+loop" and state_bytes_by_key(opt) == by_key
    assert not torch.equal(before[0], hidden[0]) and not torch.equal(before[1], rest[0])  # both parts stepped
    assert trace_step(spec, prec, "muon").state_bytes == sum(by_key.values())


def test_llama2_7b_fp32_state_bytes():
    by_key, _, _ = size_optimizer(meta_model(resolve_model("llama2-7b"), resolve_precision("fp32")), "muon")
    hidden = 32 * (4 * 4096 * 4096 + 3 * 4096 * 11008)
    rest = 2 * 32000 * 4096 + 65 * 4096  # embedding, head, 65 norms
    assert by_key == {"momentum_buffer": 4 * hidden, "step": 4 * 67, "exp_avg": 4 * rest, "exp_avg_sq": 4 * rest}


@pytest.mark.parametrize("name, adamw_impl", [("muon-loop", "loop"), ("muon-foreach", "foreach"),
                                              ("muon-fused", "fused")])
def test_adamw_path_variants(name, adamw_impl):
    model = build_model(resolve_model("tiny-gpt2"), device="cpu", dtype=torch.float32)
    opt, impl = build_optimizer(name, model.named_parameters())
    assert impl == f"muon+{adamw_impl}" and opt.adamw_impl() == adamw_impl


def test_state_dict_round_trip():
    torch.manual_seed(0)
    model = build_model(resolve_model("tiny-llama"), device="cpu", dtype=torch.float32)
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    opt, _ = build_optimizer("muon", model.named_parameters())
    opt.step()
    saved = opt.state_dict()
    assert len(saved["param_groups"]) == 2 and len(saved["state"]) == len(list(model.parameters()))
    twin = build_model(resolve_model("tiny-llama"), device="cpu", dtype=torch.float32)
    twin.load_state_dict(model.state_dict())
    for p, q in zip(model.parameters(), twin.parameters()):
        q.grad = p.grad.clone()
    other, _ = build_optimizer("muon", twin.named_parameters())
    other.load_state_dict(copy.deepcopy(saved))  # state_dict() hands out the live tensors
    assert other.muon.state is other.state and other.adamw.state is other.state  # relinked after the load
    assert other.muon.param_groups[0] is other.param_groups[0]
    opt.step()
    other.step()
    for p, q in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=0)


@pytest.mark.parametrize("params, message", [
    ([torch.nn.Parameter(torch.zeros(2, 2))], "needs named parameters"),
])
def test_unnamed_parameters_are_refused(params, message):
    with pytest.raises(BadInput, match=message):
        build_optimizer("muon", params)


def test_only_one_part_when_the_other_is_empty():
    opt = MuonAdamW([("fc.weight", torch.nn.Parameter(torch.zeros(4, 4)))])
    assert opt.adamw is None and opt.impl_name() == "muon"


def test_real_cpu_run_matches_the_estimate_to_the_byte(in_process):
    spec = ProfileSpec(model="tiny-gpt2", precision="fp32", device="cpu", batch_size=2, seq_len=16, warmup=3,
                       steps=1)
    (run,) = realrun.run_real(spec, resolve_model("tiny-gpt2"), ["muon"], sampler=False).result.runs
    assert (run.status, run.impl) == ("ok", "muon+loop"), run.error
    errors = run.memory.details["estimate_error_pct"]
    for key in ("param_bytes", "grad_bytes", "state_bytes", "activation_peak_bytes", "forward_backward_peak_bytes",
                "step_transient_bytes"):
        assert errors[key] == 0.0, key
    # the AdamW part's per-parameter step counters (torch.tensor(0.0), no dispatched op) are the only
    # bytes the CPU live tracker misses: 4 bytes per AdamW parameter
    est = run.memory.details["estimate"]
    assert est["peak_bytes"] - run.memory.peak_allocated_bytes in (0, run.memory.state_bytes_by_key["step"])


@pytest.mark.parametrize("config, hidden_count, rest_names", [
    # transformers builds it (its own names): model.embed_tokens, lm_head and the norms train with AdamW
    ("tests/data/configs/mistral-7b-v0.1", 7 * 32, {"model.embed_tokens.weight", "lm_head.weight"}),
    # a ViT config.json (built natively): the patch projection is 4-D, cls_token and pos_embed 3-D, head a head
    ("tests/data/configs/vit-base-patch16-224", 6 * 12, {"head.weight"}),
])
def test_transformers_names_split_as_documented(config, hidden_count, rest_names):
    pytest.importorskip("transformers")
    model = build_model(resolve_model(config), device="meta", dtype=torch.float32)
    names = {id(p): n for n, p in model.named_parameters()}
    hidden, rest = split_hidden(model.named_parameters())
    assert len(hidden) == hidden_count
    assert rest_names <= {names[id(p)] for p in rest}
    assert {names[id(p)] for p in rest if p.ndim == 2} == rest_names
