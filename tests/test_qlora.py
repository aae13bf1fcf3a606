"""QLoRA wired end to end: --qlora / quant= on profile and plan, the 4-bit base sized, estimated and run."""

from __future__ import annotations

import dataclasses

import pytest

pytest.importorskip("peft")
pytest.importorskip("bitsandbytes")

from sgdsai_cli.errors import BadInput  # noqa: E402
from sgdsai_cli.measure import realrun  # noqa: E402
from sgdsai_cli.models import resolve_model  # noqa: E402
from sgdsai_cli.models.lora import LoraSpec, parse_lora, parse_qlora  # noqa: E402
from sgdsai_cli.models.quantize import linear4bit_bytes  # noqa: E402
from sgdsai_cli.results import ProfileSpec  # noqa: E402


@pytest.mark.parametrize(("text", "want"), [
    ("r=16,targets=q_proj,v_proj", LoraSpec(16, targets=("q_proj", "v_proj"), quant="nf4")),
    ("r=4,quant=fp4,double_quant=false", LoraSpec(4, quant="fp4", double_quant=False)),
])
def test_parse_qlora(text, want):
    assert parse_qlora(text) == want
    assert parse_lora(want.text()) == want


@pytest.mark.parametrize("text", ["r=4,quant=int8", "r=4,double_quant=maybe"])
def test_bad_quant_options(text):
    with pytest.raises(BadInput):
        parse_lora(text)


def test_llama2_7b_qlora_base_bytes_follow_bitsandbytes_format():
    """Every decoder linear (7 per block) is nf4 with double quant; lm_head, embeddings and norms are kept."""
    from sgdsai_cli import profile

    result = profile(model="llama2-7b", precision="bf16", device="meta", optimizers=["sgdsai"],
                     lora=parse_qlora("r=16,alpha=32,targets=q_proj,v_proj"))
    info = result.model
    q = info.extra["qlora"]
    cfg = resolve_model("llama2-7b").config
    shapes = [(cfg.hidden_size, cfg.hidden_size)] * 4 + [(cfg.intermediate_size, cfg.hidden_size)] * 2 + [
        (cfg.hidden_size, cfg.intermediate_size)]
    per_block = [linear4bit_bytes(o, i, double_quant=True) for o, i in shapes]
    assert q["modules_replaced"] == 7 * cfg.n_layers and q["skipped"] == ["lm_head"]
    assert q["weight_bytes"] == cfg.n_layers * sum(b.weight_bytes for b in per_block)
    assert q["state_bytes"] == cfg.n_layers * sum(b.state_bytes for b in per_block)
    assert q["bytes_source"] == "format"
    assert (info.params, info.trainable_params) == (6_738_415_616 + 8_388_608, 8_388_608)
    kept = 2 * (2 * cfg.vocab_size * cfg.hidden_size + (2 * cfg.n_layers + 1) * cfg.hidden_size)  # bf16
    adapters = 4 * 8_388_608  # fp32
    assert info.param_bytes == q["weight_bytes"] + kept + adapters
    run = result.runs[0]
    assert run.memory.details["quant_state_bytes"] == q["state_bytes"]


@pytest.mark.parametrize("optimizer", ["sgdsai", "adamw"])
def test_real_cpu_run_agrees_with_the_estimate(in_process, optimizer):
    """To the byte but bitsandbytes' 16-entry codes: made from a Python list (torch.tensor), which the CPU
    live-tensor tracker cannot see; the estimate counts them, as CUDA's allocator would."""
    spec = ProfileSpec(model="tiny-llama", precision="bf16", device="cpu", batch_size=2, seq_len=16, steps=2)
    model_spec = dataclasses.replace(resolve_model("tiny-llama"), lora=parse_qlora("r=4,targets=q_proj,v_proj"))
    [run] = realrun.run_real(spec, model_spec, [optimizer], sampler=False).result.runs
    assert run.status == "ok", run.error
    errors = run.memory.details["estimate_error_pct"]
    assert errors["param_bytes"] == errors["grad_bytes"] == errors["state_bytes"] == 0.0
    assert errors["activation_peak_bytes"] == 0.0
    codes = 14 * 16 * 4  # 14 quantised linears, one float32 [16] code each
    gap = run.memory.details["estimate"]["peak_bytes"] - run.memory.peak_allocated_bytes
    # AdamW's CPU loop and the estimate's path keep their 'step' scalars apart: 4 bytes a tensor at most
    assert gap == codes if optimizer == "sgdsai" else 0 <= gap - codes <= 4 * 8


def test_cli_qlora(cli):
    res = cli("profile", "--model", "tiny-llama", "--device", "meta", "--seq-len", "16", "-p", "bf16", "--qlora",
              "r=4,targets=q_proj", "-q", "--format", "json")
    assert res.exit_code == 0, res.output
    assert '"quant_type": "nf4"' in res.stdout
    both = cli("profile", "--model", "tiny-llama", "--device", "meta", "--lora", "r=4", "--qlora", "r=4")
    assert both.exit_code == 2 and "exclude each other" in both.stderr
