"""The config.json of a native model: what transformers builds for the same architecture.

    hf = as_transformers(PRESETS["llama2-7b"])    # family "hf": LlamaForCausalLM of the same config

Used to check that our builders and transformers agree (parameters exactly, activations and peak
within 1 %: tests/test_hf_agreement.py) and to profile a preset through transformers.
"""

from __future__ import annotations

from sgdsai_cli.models.configs import GPT2Config, LlamaConfig, ModelSpec, ViTConfig


def config_json_of(spec: ModelSpec) -> dict:
    """The Hugging Face config.json object of a native spec (every field our builder models)."""
    c = spec.config
    if isinstance(c, GPT2Config):
        return {"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "vocab_size": c.vocab_size,
                "n_positions": c.n_positions, "n_embd": c.n_embd, "n_layer": c.n_layer, "n_head": c.n_head,
                "n_inner": c.n_inner, "activation_function": c.activation_function,
                "layer_norm_epsilon": c.layer_norm_eps, "tie_word_embeddings": c.tie_word_embeddings,
                "embd_pdrop": c.embd_pdrop, "attn_pdrop": c.attn_pdrop, "resid_pdrop": c.resid_pdrop}
    if isinstance(c, LlamaConfig):
        return {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "vocab_size": c.vocab_size,
                "hidden_size": c.hidden_size, "intermediate_size": c.intermediate_size,
                "num_hidden_layers": c.n_layers, "num_attention_heads": c.n_heads,
                "num_key_value_heads": c.n_kv_heads, "max_position_embeddings": c.max_position_embeddings,
                "rms_norm_eps": c.rms_norm_eps, "tie_word_embeddings": c.tie_word_embeddings,
                "rope_theta": c.rope_theta, "head_dim": c.head_dim or c.hidden_size // c.n_heads,
                "attention_bias": c.attention_bias, "mlp_bias": c.mlp_bias, "hidden_act": "silu"}
    if isinstance(c, ViTConfig):
        return {"model_type": "vit", "architectures": ["ViTForImageClassification"], "image_size": c.image_size,
                "patch_size": c.patch_size, "hidden_size": c.hidden_size, "num_hidden_layers": c.n_layers,
                "num_attention_heads": c.n_heads, "intermediate_size": c.intermediate_size,
                "num_labels": c.num_classes, "num_channels": c.num_channels, "layer_norm_eps": c.layer_norm_eps,
                "qkv_bias": c.qkv_bias, "hidden_act": "gelu", "hidden_dropout_prob": 0.0,
                "attention_probs_dropout_prob": 0.0}
    raise ValueError(f"{spec.name} is not a native model")


def as_transformers(spec: ModelSpec) -> ModelSpec:
    """The same model built by transformers (family ``hf``), named ``<name> (transformers)``."""
    from sgdsai_cli.models.hf_model import hf_spec

    return hf_spec(config_json_of(spec), f"{spec.name} (transformers)")
