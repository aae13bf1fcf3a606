"""Our native builders and transformers agree on the same config: activations and step peak within 1 %.

Every preset and every test config that maps to a native family is traced twice by the fake-tensor
estimate at batch 2 x 512 (the model's context when shorter): once as our model, once as
transformers' class built from the same config.json (``models.as_transformers``). Parameter counts
are equal exactly; activation peak and the step's estimated peak within 1 %. The deep models are
traced at the estimate's own reduced depth (three blocks, extended exactly).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from sgdsai_cli import models
from sgdsai_cli.measure import estimate as est
from sgdsai_cli.precision import resolve_precision

pytest.importorskip("transformers")

CONFIGS = Path(__file__).parent / "data" / "configs"
NATIVE_CONFIGS = [str(CONFIGS / n) for n in ("gpt2", "llama-3-8b", "vit-base-patch16-224")]
# fp32 for every model; the low-precision paths on a representative few (each pair costs 1-4 s)
CASES = (
    [(name, "fp32") for name in [*models.PRESETS, *NATIVE_CONFIGS]]
    + [(name, "amp-bf16") for name in ("tiny-gpt2", "gpt2", "tiny-llama", "llama2-7b", "vit-b16")]
    + [(name, "bf16") for name in ("gpt2-medium", "llama2-13b", "vit-s16", NATIVE_CONFIGS[1])]
)


@pytest.mark.parametrize("name,precision", CASES, ids=[f"{Path(n).name}-{p}" for n, p in CASES])
def test_native_and_transformers_agree(name, precision):
    native = models.resolve_model(name)
    assert native.family in ("gpt2", "llama", "vit")
    hf = models.as_transformers(native)
    seq = min(512, models.max_positions(native) or 512)
    p = resolve_precision(precision)
    a = est.estimate_step(native, p, "adamw", 2, seq)
    b = est.estimate_step(hf, p, "adamw", 2, seq)
    assert a.param_bytes == b.param_bytes
    assert a.activation_peak_bytes == pytest.approx(b.activation_peak_bytes, rel=0.01)
    assert a.peak_bytes == pytest.approx(b.peak_bytes, rel=0.01)


LLAMA = {"model_type": "llama", "vocab_size": 256, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 4,
         "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 256}
GPT2 = {"model_type": "gpt2", "vocab_size": 256, "n_positions": 128, "n_embd": 64, "n_layer": 4, "n_head": 4}
VIT = {"model_type": "vit", "image_size": 32, "patch_size": 8, "hidden_size": 64, "num_hidden_layers": 4,
       "num_attention_heads": 4, "intermediate_size": 128, "num_labels": 10}
FIELDS = [
    {**LLAMA, "head_dim": 32}, {**LLAMA, "attention_bias": True, "mlp_bias": True},
    {**LLAMA, "tie_word_embeddings": True, "num_key_value_heads": 1},
    {**GPT2, "activation_function": "gelu_pytorch_tanh", "attn_pdrop": 0.0}, {**GPT2, "activation_function": "relu",
                                                                             "n_inner": 96, "embd_pdrop": 0.2},
    {**GPT2, "tie_word_embeddings": False}, {**VIT, "qkv_bias": False},
]


@pytest.mark.parametrize("config", FIELDS, ids=[f"{c['model_type']}-{i}" for i, c in enumerate(FIELDS)])
@pytest.mark.parametrize("precision", ["fp32", "amp-bf16"])
def test_every_modelled_field_agrees(tmp_path, config, precision):
    """Each config field the native builders model changes memory as transformers' model of it does."""
    import json

    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    native = models.resolve_model(str(path))
    assert native.family == config["model_type"]
    hf = models.as_transformers(native)
    p = resolve_precision(precision)
    a = est.estimate_step(native, p, "adamw", 2, 64)
    b = est.estimate_step(hf, p, "adamw", 2, 64)
    assert a.param_bytes == b.param_bytes
    assert a.activation_peak_bytes == pytest.approx(b.activation_peak_bytes, rel=0.01)
    assert a.peak_bytes == pytest.approx(b.peak_bytes, rel=0.01)
