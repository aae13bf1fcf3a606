"""The public Python API, as the README shows it: the functions the CLI calls, typed results, errors."""

from __future__ import annotations

import json

import pytest

import sgdsai_cli as sg


def test_profile_returns_a_typed_result_whose_dict_is_the_document(tmp_path):
    result = sg.profile(model="tiny-llama", precision="bf16", optimizers=["sgdsai", "adamw"], seq_len=32)
    assert isinstance(result, sg.ProfileResult)
    sgdsai, adamw = result.runs
    assert (sgdsai.optimizer, adamw.optimizer) == ("sgdsai", "adamw")
    assert sgdsai.memory.state_bytes_by_key["momentum_buffer"] * 2 == sum(
        v for k, v in adamw.memory.state_bytes_by_key.items() if k != "step")
    path = result.save(tmp_path / "r.json")
    doc = json.loads(path.read_text())
    assert doc == result.to_dict()
    assert sg.ProfileResult.from_dict(doc).to_dict() == doc  # a round trip loses nothing
    assert sg.load_result(path).to_dict() == doc


def test_check_against_itself_passes_and_against_a_smaller_baseline_fails(tiny_profile):
    assert sg.check(tiny_profile, tiny_profile, tolerance="0%").passed
    smaller = json.loads(json.dumps(tiny_profile))
    smaller["runs"][0]["memory"]["state_bytes"] -= 1000
    report = sg.check(tiny_profile, smaller, tolerance=0.0)
    assert not report.passed and [r.metric for r in report.failures] == ["state_bytes"]


def test_errors_carry_the_field_and_value_not_a_flag():
    with pytest.raises(sg.BadInput) as e:
        sg.profile(model="tiny-gpt2", batch_size=0)
    assert (e.value.field, e.value.value) == ("batch_size", 0)
    assert "--" not in str(e.value)
    with pytest.raises(sg.BadInput) as e:
        sg.profile(model="tiny-gpt2", optimizers=["adamx"])
    assert "adamx" in str(e.value)


def test_progress_reaches_the_callback():
    seen = []
    sg.plan("tiny-gpt2", precisions=["fp32"], gpus=["l4-24gb"], optimizers=["sgdsai"], seq_len=16,
            on_progress=seen.append)
    assert seen and all(isinstance(p, sg.Progress) for p in seen)
    assert seen[-1].completed == seen[-1].total


def test_sgdsai_is_the_optimizer():
    import torch

    p = torch.nn.Parameter(torch.ones(3))
    p.grad = torch.tensor([1.0, 2.0, 3.0])
    opt = sg.SGDSaI([p], lr=1e-2)
    opt.step()
    assert isinstance(opt, torch.optim.Optimizer) and "gsnr" in opt.state[p]


def test_unknown_attribute():
    with pytest.raises(AttributeError):
        _ = sg.no_such_thing


@pytest.mark.parametrize(("call", "field"), [
    (lambda: sg.profile(model="tiny-gpt2", stepz=3), "stepz"),
    (lambda: sg.profile(model="tiny-gpt2", steps=0, device="cpu"), "steps"),
    (lambda: sg.profile(model="tiny-gpt2", sample_interval_ms=0.0), "sample_interval_ms"),
    (lambda: sg.plan("tiny-gpt2", seq_len=0), "seq_len"),
    (lambda: sg.gsnr("tiny-gpt2", device="cpu", lr=-1.0), "lr"),
])
def test_bad_arguments_are_bad_input_naming_the_field(call, field):
    with pytest.raises(sg.BadInput) as e:
        call()
    assert e.value.field == field and "--" not in str(e.value)
