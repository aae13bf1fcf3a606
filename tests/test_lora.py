"""LoRA through peft: option parsing, exact trainable counts (peft's own), frozen base, state of the
adapters only, the estimate against real CPU runs to the byte, and SGD-SaI's zero-B first step."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

pytest.importorskip("peft")

from sgdsai_cli.errors import BadInput  # noqa: E402
from sgdsai_cli.measure import realrun  # noqa: E402
from sgdsai_cli.models import build_model, resolve_model, trainable_parameters  # noqa: E402
from sgdsai_cli.models.lora import LoraSpec, parse_lora  # noqa: E402
from sgdsai_cli.results import ProfileSpec  # noqa: E402

LLAMA2_7B_QV_R16 = 8_388_608  # 32 layers x (q: 16 x 4096 + 4096 x 16, v: the same)


@pytest.mark.parametrize(("text", "want"), [
    ("r=16,alpha=32,targets=q_proj,v_proj", LoraSpec(16, 32.0, ("q_proj", "v_proj"))),
    ("r=8", LoraSpec(8)),
    (" R = 4 , lora_alpha=16, target_modules=c_attn , dropout=0.05 ", LoraSpec(4, 16.0, ("c_attn",), 0.05)),
    ("targets=q_proj,k_proj,v_proj,o_proj,r=64,dtype=BF16", LoraSpec(64, 8.0, ("q_proj", "k_proj", "v_proj", "o_proj"),
                                                                      dtype="bf16")),
    ("targets=q_proj,q_proj", LoraSpec(targets=("q_proj",))),
])
def test_parse(text, want):
    assert parse_lora(text) == want
    assert parse_lora(want.text()) == want  # the recorded text reads back as the same spec


@pytest.mark.parametrize("empty", [None, "", "none", " NONE "])
def test_no_lora(empty):
    assert parse_lora(empty) is None


@pytest.mark.parametrize(("text", "needle"), [
    ("r=0", "r must be"), ("r=1.5", "r must be"), ("r=x", "r must be"), ("r=99999999", "r must be"),
    ("alpha=-1", "alpha"), ("alpha=nan", "alpha"), ("dropout=1", "dropout"), ("dropout=inf", "dropout"),
    ("rank16", "not key=value"), ("r=16,bias=all", "unknown key 'bias'"), ("r=4,r=8", "given twice"),
    ("targets=", "targets"), ("targets=q proj", "targets"), ("dtype=fp8", "dtype"), ("r=16,,alpha=2", "not key=value"),
])
def test_bad_specs_name_the_problem(text, needle):
    with pytest.raises(BadInput) as e:
        parse_lora(text)
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_peft_adapter_config_file(tmp_path):
    from peft import LoraConfig

    LoraConfig(r=12, lora_alpha=24, target_modules=["q_proj", "v_proj"], lora_dropout=0.1).save_pretrained(tmp_path)
    spec = parse_lora(str(tmp_path / "adapter_config.json"))
    assert (spec.r, spec.alpha, set(spec.targets), spec.dropout) == (12, 24.0, {"q_proj", "v_proj"}, 0.1)
    toml = tmp_path / "lora.toml"
    toml.write_text('r = 4\nlora_alpha = 8\ntarget_modules = ["c_attn"]\n')
    assert parse_lora(str(toml)) == LoraSpec(4, 8.0, ("c_attn",))
    (tmp_path / "bad.json").write_text('{"peft_type": "IA3", "r": 4}')
    with pytest.raises(BadInput, match="IA3"):
        parse_lora(str(tmp_path / "bad.json"))


def _lora(name: str, text: str):
    return dataclasses.replace(resolve_model(name), lora=parse_lora(text))


def test_llama2_7b_r16_qv_trains_peft_count_and_state_is_4_bytes_per_parameter():
    """8,388,608 trainable parameters, as peft counts them on transformers' own LlamaForCausalLM."""
    from peft import LoraConfig, get_peft_model

    from sgdsai_cli import profile
    from sgdsai_cli.models import as_transformers

    hf = build_model(as_transformers(resolve_model("llama2-7b")), device="meta")
    peft_model = get_peft_model(hf, LoraConfig(r=16, lora_alpha=32, target_modules=["q_proj", "v_proj"]))
    trainable, total = peft_model.get_nb_trainable_parameters()
    assert trainable == LLAMA2_7B_QV_R16

    result = profile(model="llama2-7b", device="meta", lora="r=16,alpha=32,targets=q_proj,v_proj",
                     optimizers=["sgdsai", "adamw"])
    info = result.model
    assert (info.params, info.trainable_params) == (total, LLAMA2_7B_QV_R16)
    assert info.extra["frozen_params"] == 6_738_415_616  # the whole base: Llama 2 7B's published count
    assert info.grad_bytes == 4 * LLAMA2_7B_QV_R16
    sgdsai, adamw = result.runs
    assert sgdsai.memory.state_bytes_by_key["momentum_buffer"] == 4 * LLAMA2_7B_QV_R16
    assert adamw.memory.state_bytes_by_key["exp_avg"] == adamw.memory.state_bytes_by_key["exp_avg_sq"] \
        == 4 * LLAMA2_7B_QV_R16
    assert result.spec.to_dict()["lora"] == "r=16,alpha=32,targets=q_proj,v_proj"


@pytest.mark.parametrize(("name", "targets", "trainable"), [
    ("tiny-llama", "q_proj,v_proj", 2 * (4 * 64 + 64 * 4) + 2 * (4 * 64 + 32 * 4)),  # 2 layers; v is GQA: 32 out
    ("tiny-gpt2", "", None),  # peft's default target for gpt2: c_attn
    ("tiny-vit", "query,value", None),
])
def test_only_adapters_train(name, targets, trainable):
    spec = _lora(name, f"r=4,targets={targets}" if targets else "r=4")
    model = build_model(spec, device="meta")
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert names and all(".lora_A." in n or ".lora_B." in n for n in names)
    if trainable is not None:
        assert sum(p.numel() for p in trainable_parameters(model)) == trainable


def test_no_default_targets_is_bad_input():
    with pytest.raises(BadInput, match="no default LoRA targets for model type 'vit'"):
        build_model(_lora("tiny-vit", "r=4"), device="meta")


@pytest.mark.parametrize(("precision", "dtype", "adapter_dtype"), [
    ("bf16", "fp32", torch.float32),  # what peft's get_peft_model makes of bf16 adapters
    ("bf16", "bf16", torch.bfloat16),
    ("fp32", "fp32", torch.float32),
])
def test_adapter_dtype(precision, dtype, adapter_dtype):
    from sgdsai_cli.precision import resolve_precision

    spec = _lora("tiny-llama", f"r=4,targets=q_proj,dtype={dtype}")
    model = build_model(spec, device="meta", dtype=resolve_precision(precision).param_dtype)
    assert {p.dtype for p in trainable_parameters(model)} == {adapter_dtype}
    assert model.layers[0].self_attn.q_proj.base_layer.weight.dtype == resolve_precision(precision).param_dtype


@pytest.mark.parametrize("optimizer", ["sgdsai", "adamw"])
@pytest.mark.parametrize(("precision", "policy"), [("fp32", "none"), ("amp-bf16", "none"), ("fp32", "full")])
def test_real_cpu_runs_agree_with_the_estimate_to_the_byte(in_process, optimizer, precision, policy):
    spec = ProfileSpec(model="tiny-llama", precision=precision, device="cpu", batch_size=2, seq_len=16, steps=2)
    model_spec = dataclasses.replace(_lora("tiny-llama", "r=4,targets=q_proj,v_proj,dropout=0.1"),
                                     checkpointing=policy)
    [run] = realrun.run_real(spec, model_spec, [optimizer], sampler=False).result.runs
    assert run.status == "ok", run.error
    errors = run.memory.details["estimate_error_pct"]
    assert errors["activation_peak_bytes"] == 0.0 and errors["grad_bytes"] == 0.0
    assert errors["state_bytes"] == 0.0
    # AdamW's CPU loop keeps its 'step' scalars where the estimate's foreach path keeps its own: 32 bytes apart
    assert abs(run.memory.peak_allocated_bytes - run.memory.details["estimate"]["peak_bytes"]) <= (
        0 if optimizer == "sgdsai" else 64)


def _train(opt_factory, steps: int = 4):
    """A LoRA tiny-llama trained a few CPU steps; (lora_A weights before, after) of the first q_proj."""
    from sgdsai_cli.models import make_batch, training_loss

    torch.manual_seed(0)
    spec = _lora("tiny-llama", "r=4,alpha=8,targets=q_proj,v_proj")
    model = build_model(spec, device="cpu")
    batch = make_batch(spec, 2, 16, "cpu", generator=torch.Generator().manual_seed(0))
    a = model.layers[0].self_attn.q_proj.lora_A["default"].weight
    before = a.detach().clone()
    opt = opt_factory(trainable_parameters(model))
    for _ in range(steps):
        loss = training_loss(spec, model, batch)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    assert torch.isfinite(loss)
    return before, a.detach().clone()


def test_sgdsai_trains_lora_a_after_its_zero_first_gradient(sgd_sai):
    """B starts at zero, so A's first gradient is all zero. Ours waits for A's first real gradient and then
    trains it; the official optimizer takes g-SNR 0 from that zero gradient and never moves A (weight decay off,
    so only a gradient update could move it)."""
    from sgdsai_cli.optim.sgdsai import SGDSaI

    before, after = _train(lambda ps: SGDSaI(ps, lr=1e-2, weight_decay=0.0))
    assert not torch.equal(before, after)
    before_ref, after_ref = _train(lambda ps: sgd_sai.SGD_sai(ps, lr=1e-2, weight_decay=0.0))
    assert torch.equal(before_ref, after_ref)


@pytest.mark.parametrize(("args", "needle"), [
    (["--lora", "r=0"], "--lora"),
    (["--lora", "r=4,targets=q_prj"], "q_proj"),  # matches no module: did you mean
    (["--lora", "r=4,targets=layers"], "not a linear"),
    (["--lora", "r=4,targets=q_proj", "--parallel", "fsdp2", "--world-size", "2"], "not simulated yet"),
    (["-p", "bf16-master", "--parallel", "fsdp2", "--world-size", "2"], "not simulated yet"),
])
def test_cli_bad_lora_is_exit_2(cli, args, needle):
    res = cli("profile", "--model", "tiny-llama", "--device", "meta", "--seq-len", "16", *args)
    assert res.exit_code == 2, res.output
    assert needle in res.stderr and "Traceback" not in res.output


def test_cli_profile_and_plan_with_lora(cli, tmp_path):
    out = tmp_path / "r.json"
    res = cli("profile", "--model", "tiny-llama", "--device", "meta", "--seq-len", "16", "--lora",
              "r=4,targets=q_proj,v_proj", "--json", out)
    assert res.exit_code == 0, res.output
    assert "159,808 parameters in 29 tensors, 1,792 trainable (LoRA r=4 on q_proj, v_proj; base frozen)" in res.stdout
    doc = json.loads(out.read_text())
    assert doc["model"]["trainable_params"] == 1792 and doc["spec"]["lora"] == "r=4,alpha=8,targets=q_proj,v_proj"
    plan_out = tmp_path / "p.json"
    res = cli("plan", "--model", "tiny-llama", "--seq-len", "16", "-p", "fp32", "-g", "l4-24gb", "--lora",
              "r=4,targets=q_proj,v_proj", "-q", "--json", plan_out)
    assert res.exit_code == 0, res.output
    rows = json.loads(plan_out.read_text())["rows"]
    assert {r["grad_bytes"] for r in rows} == {4 * 1792}
