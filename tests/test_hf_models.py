"""Any transformers architecture (family hf): exact counts against transformers, config.json routing,
hub ids from the local cache, attention implementations, depth handling, MoE, serialisation, a real run."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from sgdsai_cli import models
from sgdsai_cli.errors import BadInput, EnvironmentUnavailable
from sgdsai_cli.measure import estimate as est
from sgdsai_cli.measure.job import model_spec_from_dict, model_spec_to_dict
from sgdsai_cli.precision import resolve_precision

transformers = pytest.importorskip("transformers")

CONFIGS = Path(__file__).parent / "data" / "configs"
# published parameter counts (model cards / transformers' num_parameters() of the hub checkpoints)
PUBLISHED = {
    "mistral-7b-v0.1": 7_241_732_096,
    "qwen2-7b": 7_615_616_512,
    "gemma-2b": 2_506_172_416,
    "gemma-7b": 8_537_680_896,
    "phi-3-mini-4k": 3_821_079_552,
    "mixtral-8x7b-v0.1": 46_702_792_704,
    "llama-3-8b": 8_030_261_248,
    "vit-base-patch16-224": 86_567_656,
    "gpt2": 124_439_808,
}
NATIVE = {"llama-3-8b": "llama", "vit-base-patch16-224": "vit", "gpt2": "gpt2"}


def transformers_count(name: str) -> int:
    """transformers' own count of the model of a config.json, built here without our code."""
    d = json.loads((CONFIGS / name / "config.json").read_text())
    config = transformers.AutoConfig.for_model(**d)
    cls = getattr(transformers, d["architectures"][0])
    with torch.device("meta"):
        model = cls._from_config(config)
    return model.num_parameters()


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_counts_equal_transformers_and_published(name):
    spec = models.resolve_model(str(CONFIGS / name))
    assert spec.family == NATIVE.get(name, "hf")
    ours = models.count_params(models.build_model(spec, device="meta", dtype=torch.bfloat16))
    assert ours == transformers_count(name) == PUBLISHED[name]


def test_profile_mistral_meta_state_bytes(cli):
    r = cli("profile", "--model", str(CONFIGS / "mistral-7b-v0.1"), "--device", "meta", "--format", "json", "-q",
            "-o", "adamw", "-o", "sgdsai")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["model"]["family"] == "hf" and doc["model"]["params"] == 7_241_732_096
    adamw = next(run for run in doc["runs"] if run["optimizer"] == "adamw")
    by_key = adamw["memory"]["state_bytes_by_key"]
    assert by_key["exp_avg"] == by_key["exp_avg_sq"] == 4 * 7_241_732_096
    assert adamw["memory"]["activation_peak_bytes"] > 0


def write(tmp_path, d: dict, name="config.json") -> str:
    path = tmp_path / name
    path.write_text(json.dumps(d))
    return str(path)


def tiny(model_type: str, **extra) -> dict:
    """A tiny decoder config of `model_type` (every field transformers needs, small)."""
    base = {"model_type": model_type, "vocab_size": 256, "hidden_size": 64, "intermediate_size": 128,
            "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 2,
            "max_position_embeddings": 256}
    return {**base, **extra}


# config.json routing: native where the builder models every field, else transformers
@pytest.mark.parametrize("edit,family", [
    ({}, "llama"),
    ({"rope_scaling": {"rope_type": "linear", "factor": 2.0}}, "hf"),
    ({"hidden_act": "gelu"}, "hf"),
    ({"some_new_field": 3}, "hf"),
    ({"head_dim": 32, "attention_bias": True, "mlp_bias": True}, "llama"),
])
def test_llama_routing(tmp_path, edit, family):
    assert models.resolve_model(write(tmp_path, {**tiny("llama"), **edit})).family == family


@pytest.mark.parametrize("edit", [{}, {"head_dim": 32}, {"attention_bias": True}, {"mlp_bias": True},
                                  {"tie_word_embeddings": True}])
def test_native_llama_counts_equal_transformers(tmp_path, edit):
    spec = models.resolve_model(write(tmp_path, {**tiny("llama"), **edit}))
    assert spec.family == "llama"
    hf = models.as_transformers(spec)
    assert models.count_params(models.build_model(spec)) == models.count_params(models.build_model(hf))


@pytest.mark.parametrize("edit", [{}, {"activation_function": "gelu_pytorch_tanh", "attn_pdrop": 0.0},
                                  {"n_inner": 96}, {"tie_word_embeddings": False}])
def test_native_gpt2_counts_equal_transformers(tmp_path, edit):
    d = {"model_type": "gpt2", "vocab_size": 256, "n_positions": 64, "n_embd": 32, "n_layer": 2, "n_head": 4, **edit}
    spec = models.resolve_model(write(tmp_path, d))
    assert spec.family == "gpt2"
    hf = models.as_transformers(spec)
    assert models.count_params(models.build_model(spec)) == models.count_params(models.build_model(hf))


def test_gpt2_unmodelled_flag_goes_to_transformers(tmp_path):
    d = {"model_type": "gpt2", "vocab_size": 256, "n_positions": 64, "n_embd": 32, "n_layer": 2, "n_head": 4,
         "scale_attn_by_inverse_layer_idx": True}
    assert models.resolve_model(write(tmp_path, d)).family == "hf"


def test_without_transformers_a_field_is_never_dropped(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # import transformers -> ImportError
    path = write(tmp_path, {**tiny("llama"), "rope_scaling": {"rope_type": "linear", "factor": 2.0}})
    with pytest.raises(EnvironmentUnavailable) as e:
        models.resolve_model(path)
    msg = str(e.value)
    assert "'rope_scaling'" in msg and "pip install 'sgdsai[hf]'" in msg and "\n" not in msg
    assert e.value.field == "rope_scaling"
    with pytest.raises(EnvironmentUnavailable) as e:
        models.resolve_model(str(CONFIGS / "mistral-7b-v0.1"))
    assert "'mistral'" in str(e.value) and "sgdsai[hf]" in str(e.value)
    assert models.resolve_model(write(tmp_path, tiny("llama"), "plain.json")).family == "llama"


def test_relabelled_architecture_is_refused(tmp_path):
    d = json.loads((CONFIGS / "qwen2-7b" / "config.json").read_text())
    with pytest.raises(BadInput) as e:
        models.resolve_model(write(tmp_path, {**d, "model_type": "llama"}))
    assert "Qwen2ForCausalLM" in str(e.value) and "'llama'" in str(e.value)


def test_hub_id_from_the_local_cache(tmp_path, monkeypatch):
    repo = tmp_path / "hub" / "models--acme--tiny-mistral"
    snap = repo / "snapshots" / "0123abcd"
    snap.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abcd")
    (snap / "config.json").write_text(json.dumps(tiny("mistral", architectures=["MistralForCausalLM"])))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.chdir(tmp_path)
    spec = models.resolve_model("acme/tiny-mistral")
    assert spec.family == "hf" and spec.config.model_class == "MistralForCausalLM"
    assert spec.name == "acme/tiny-mistral"  # the id, not this machine's cache path
    with pytest.raises(BadInput) as e:
        models.resolve_model("acme/not-cached")
    assert "not a model in the local Hugging Face cache" in str(e.value) and "\n" not in str(e.value)


def test_attn_implementation(tmp_path):
    path = write(tmp_path, tiny("mistral"))
    p = resolve_precision("fp32")
    sdpa = est.trace_forward_backward(models.resolve_model(path), p, 2, 64)
    eager = est.trace_forward_backward(models.resolve_model(path, attn_implementation="eager"), p, 2, 64)
    assert eager.activation_peak_bytes > sdpa.activation_peak_bytes  # eager keeps the [B, H, S, S] weights
    with pytest.raises(BadInput) as e:  # flash-attn is not installed here: transformers refuses, one line
        models.build_model(models.resolve_model(path, attn_implementation="flash_attention_2"))
    assert "flash_attention_2" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(BadInput) as e:
        models.resolve_model("tiny-llama", attn_implementation="eager")
    assert e.value.field == "attn_implementation"


def test_cli_attn_implementation(cli, tmp_path):
    path = write(tmp_path, tiny("mistral"))
    r = cli("profile", "--model", path, "--attn-implementation", "bogus", "--device", "meta")
    assert r.exit_code == 2 and "bogus" in r.output


@pytest.mark.parametrize("config,precision", [
    (tiny("mistral", num_hidden_layers=5), "fp32"),
    (tiny("qwen2", num_hidden_layers=5), "amp-bf16"),
    # torch's grouped_mm (transformers' MoE path) has a bf16-only fake kernel: MoE estimates need bf16/fp16
    (tiny("mixtral", num_hidden_layers=5, num_local_experts=4, num_experts_per_tok=2), "bf16"),
])
def test_uniform_blocks_extend_exactly(tmp_path, config, precision):
    """A depth-3 trace extended to 5 blocks equals the full 5-block trace, to the byte."""
    spec = models.resolve_model(write(tmp_path, config))
    assert models.depth_reducible(spec)
    p = resolve_precision(precision)
    short = est.trace_forward_backward(spec, p, 2, 32)
    full = est.trace_forward_backward(spec, p, 2, 32, extrapolate=False)
    assert short.traced_layers == 3 and full.traced_layers == 5
    assert (short.activation_peak_bytes, short.forward_backward_peak_bytes) == \
        (full.activation_peak_bytes, full.forward_backward_peak_bytes)


def test_layers_that_differ_are_traced_whole(tmp_path):
    config = tiny("gemma2", num_hidden_layers=4, head_dim=16, sliding_window=16,
                  layer_types=["sliding_attention", "full_attention"] * 2)
    spec = models.resolve_model(write(tmp_path, config))
    assert not models.depth_reducible(spec)
    fb = est.trace_forward_backward(spec, resolve_precision("fp32"), 1, 32)
    assert fb.traced_layers == fb.layers == 4


def test_moe_routing_is_stated(tmp_path):
    spec = models.resolve_model(write(tmp_path, tiny("mixtral", num_local_experts=4, num_experts_per_tok=2)))
    note = models.moe_note(spec)
    assert "4 experts" in note and "top-2" in note and "any routing" in note
    e = est.estimate_step(spec, resolve_precision("bf16"), "sgdsai", 1, 32)
    assert e.details["moe_routing"] == note
    assert models.moe_note(models.resolve_model(write(tmp_path, tiny("mistral"), "dense.json"))) is None


@pytest.mark.parametrize("name", ["tiny-gpt2", str(CONFIGS / "mixtral-8x7b-v0.1"), str(CONFIGS / "gpt2")])
def test_spec_serialisation_round_trip(name):
    spec = models.resolve_model(name)
    d = model_spec_to_dict(spec)
    assert json.loads(json.dumps(d)) == d
    back = model_spec_from_dict(d)
    assert back == spec and hash(back) == hash(spec)


def test_image_model_batch(tmp_path):
    spec = models.resolve_model(str(CONFIGS / "vit-base-patch16-224"))
    hf = models.as_transformers(spec)
    images, labels = models.make_batch(hf, 2, 512, device="meta")
    assert tuple(images.shape) == (2, 3, 224, 224) and tuple(labels.shape) == (2,)


def test_real_cpu_run_of_a_transformers_model(tmp_path):
    from sgdsai_cli import profile

    path = write(tmp_path, tiny("mistral", num_hidden_layers=2))
    result = profile(path, device="cpu", optimizers=["sgdsai"], steps=1, warmup=0, seq_len=16, batch_size=1,
                     sample_interval_ms=50)
    run = result.runs[0]
    assert run.status == "ok", run.error
    assert result.model.family == "hf"
    assert run.memory.state_bytes > 0


@pytest.mark.parametrize("precision", ["fp32", "amp-bf16"])
def test_real_cpu_run_equals_the_estimate(tmp_path, precision):
    """The live-tensor tracker of a real CPU step and the fake-tensor estimate see the same bytes
    (so the estimate's no-packing answer for transformers' mask builder is what the real batch gives)."""
    from sgdsai_cli.measure import worker
    from sgdsai_cli.measure.job import Job
    from sgdsai_cli.results import ProfileSpec

    path = write(tmp_path, tiny("mistral", num_hidden_layers=2))
    spec = ProfileSpec(model=path, precision=precision, device="cpu", batch_size=2, seq_len=16, warmup=3, steps=1)
    model_spec = models.resolve_model(path)
    run = worker.run_job(Job(spec, model_spec, "sgdsai", sample_interval_ms=5)).run
    assert run.status == "ok", run.error
    e = est.estimate_step(model_spec, resolve_precision(precision), "sgdsai", 2, 16)
    assert run.memory.activation_peak_bytes == e.activation_peak_bytes
    assert run.memory.peak_allocated_bytes == e.peak_bytes
    assert e.details["buffer_bytes"] > 0  # the rotary inv_freq buffers count in the peak
