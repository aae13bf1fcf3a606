"""Activation checkpointing: the policy parser, the exact trace with recomputation, real CPU runs to the byte."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from sgdsai_cli.analysis.profile import profile
from sgdsai_cli.errors import BadInput
from sgdsai_cli.measure import estimate as est
from sgdsai_cli.measure import realrun
from sgdsai_cli.measure.identity import model_fingerprint
from sgdsai_cli.measure.job import model_spec_from_dict, model_spec_to_dict
from sgdsai_cli.models import build_model, decoder_layers, resolve_model
from sgdsai_cli.models.checkpointing import checkpointed_blocks, parse_policy
from sgdsai_cli.precision import resolve_precision
from sgdsai_cli.results import ProfileSpec


def _with(model: str, policy: str, depth: int | None = None):
    spec = resolve_model(model)
    if depth is not None:
        spec = est.with_depth(spec, depth)
    return dataclasses.replace(spec, checkpointing=policy)


@pytest.mark.parametrize("text, policy", [
    (None, "none"), ("none", "none"), ("full", "full"), (" FULL ", "full"), ("every=1", "full"),
    ("every=2", "every=2"), ("every=10", "every=10"),
])
def test_policies(text, policy):
    assert parse_policy(text) == policy


@pytest.mark.parametrize("text", ["", "some", "every=0", "every=-1", "every=x", "every=", "every=2.5", "full,none"])
def test_bad_policies_are_refused(text):
    with pytest.raises(BadInput, match="bad activation_checkpointing") as info:
        parse_policy(text)
    assert info.value.field == "activation_checkpointing"


def test_checkpointed_blocks():
    assert checkpointed_blocks("none", 4) == []
    assert checkpointed_blocks("full", 4) == [0, 1, 2, 3]
    assert checkpointed_blocks("every=3", 7) == [0, 3, 6]


def test_the_model_keeps_its_names_and_fingerprint():
    plain, wrapped = resolve_model("tiny-llama"), _with("tiny-llama", "full")
    a, b = build_model(plain, device="meta"), build_model(wrapped, device="meta")
    assert [n for n, _ in a.named_parameters()] == [n for n, _ in b.named_parameters()]
    assert model_fingerprint(plain, a) == model_fingerprint(wrapped, b)
    assert model_spec_from_dict(model_spec_to_dict(wrapped)) == wrapped


@pytest.mark.parametrize("model", ["tiny-gpt2", "tiny-llama", "tiny-vit"])
@pytest.mark.parametrize("precision", ["fp32", "amp-bf16"])
def test_full_checkpointing_extends_exactly_and_lowers_activations(model, precision):
    prec = resolve_precision(precision)
    spec = _with(model, "full", depth=6)
    short = est.trace_forward_backward(spec, prec, 2, 16, extrapolate=True)
    full = est.trace_forward_backward(spec, prec, 2, 16, extrapolate=False)
    assert short.traced_layers == 3 and full.traced_layers == 6
    assert short.activation_peak_bytes == full.activation_peak_bytes
    assert short.forward_backward_peak_bytes == full.forward_backward_peak_bytes
    plain = est.trace_forward_backward(est.with_depth(resolve_model(model), 6), prec, 2, 16)
    assert full.activation_peak_bytes < plain.activation_peak_bytes
    assert full.ops > plain.ops  # the recomputed forwards are in the trace


def test_every_n_is_traced_at_full_depth():
    prec = resolve_precision("fp32")
    spec = _with("tiny-llama", "every=2", depth=6)
    trace = est.trace_forward_backward(spec, prec, 2, 16)
    assert trace.traced_layers == trace.layers == 6
    full = est.trace_forward_backward(_with("tiny-llama", "full", depth=6), prec, 2, 16)
    plain = est.trace_forward_backward(est.with_depth(resolve_model("tiny-llama"), 6), prec, 2, 16)
    assert full.activation_peak_bytes <= trace.activation_peak_bytes < plain.activation_peak_bytes


def test_profile_records_the_policy_and_refuses_bad_ones(cli):
    result = profile(model="tiny-llama", device="meta", seq_len=32, optimizers=("sgdsai",),
                     activation_checkpointing="full")
    assert result.spec.to_dict()["activation_checkpointing"] == "full"
    assert "activation_checkpointing" not in profile(model="tiny-llama", device="meta", seq_len=32,
                                                     optimizers=("sgdsai",)).spec.to_dict()
    got = cli("profile", "--model", "tiny-llama", "--device", "meta", "--activation-checkpointing", "every=0")
    assert got.exit_code == 2 and "--activation-checkpointing" in got.output


@pytest.mark.parametrize("policy", ["full", "every=2"])
def test_real_cpu_runs_agree_with_the_estimate_to_the_byte(in_process, policy):
    torch.manual_seed(0)
    spec = ProfileSpec(model="tiny-llama", precision="fp32", device="cpu", batch_size=2, seq_len=16, steps=2)
    [run] = realrun.run_real(spec, _with("tiny-llama", policy), ["sgdsai"], sampler=False).result.runs
    assert run.status == "ok", run.error
    errors = run.memory.details["estimate_error_pct"]
    assert errors["activation_peak_bytes"] == 0.0 and errors["peak_bytes"] == 0.0
    assert decoder_layers(build_model(_with("tiny-llama", policy), device="meta"))  # blocks found


def test_plan_with_checkpointing_needs_fewer_activation_bytes():
    from sgdsai_cli.analysis.plan import plan

    kwargs = dict(precisions=["fp32"], gpus=["h200-141gb"], optimizers=["sgdsai"], seq_len=64)
    [plain] = plan("tiny-llama", **kwargs).rows
    checkpointed = plan("tiny-llama", activation_checkpointing="full", **kwargs)
    assert checkpointed.spec["activation_checkpointing"] == "full"
    [row] = checkpointed.rows
    assert row.activation_bytes < plain.activation_bytes and row.state_bytes == plain.state_bytes
