"""The configuration records of the three model families, and ModelSpec, what the rest of the package is handed.

Field names are ours and short; ``hf_config`` maps the Hugging Face config.json names onto them.
Every config is a frozen dataclass, so two specs of the same model compare equal.
"""

from __future__ import annotations

from dataclasses import dataclass

FAMILIES = ("gpt2", "llama", "vit")


@dataclass(frozen=True)
class GPT2Config:
    vocab_size: int  # token embedding rows (50257 for the OpenAI checkpoints)
    n_positions: int  # learned position embedding rows = the longest sequence
    n_embd: int  # model width d; the MLP is 4*d wide
    n_layer: int  # number of repeated blocks
    n_head: int  # attention heads; n_embd must be divisible by it
    layer_norm_eps: float = 1e-5  # LayerNorm epsilon (HF layer_norm_epsilon)
    tie_word_embeddings: bool = True  # lm_head.weight is wte.weight (HF default for gpt2)


@dataclass(frozen=True)
class LlamaConfig:
    vocab_size: int  # token embedding rows (32000 for Llama 2)
    hidden_size: int  # model width h
    intermediate_size: int  # SwiGLU width (11008 for 7B: 2/3 * 4 * 4096 rounded up to 256)
    n_layers: int  # number of repeated blocks
    n_heads: int  # query heads; hidden_size / n_heads is the head width, even for RoPE
    n_kv_heads: int  # == n_heads: plain multi-head attention; fewer: grouped-query attention
    max_position_embeddings: int = 4096  # context the model was trained for (RoPE has no table)
    rms_norm_eps: float = 1e-5  # RMSNorm epsilon
    tie_word_embeddings: bool = False  # Llama 2 has a separate lm_head
    rope_theta: float = 10000.0  # RoPE base frequency


@dataclass(frozen=True)
class ViTConfig:
    image_size: int  # square input images of image_size x image_size pixels
    patch_size: int  # square patches; image_size must be divisible by it
    hidden_size: int  # model width
    n_layers: int  # number of repeated blocks
    n_heads: int  # attention heads; hidden_size must be divisible by it
    intermediate_size: int  # MLP width (4 * hidden_size for the standard sizes)
    num_classes: int = 1000  # classifier outputs (ImageNet-1k)
    num_channels: int = 3  # input channels (RGB)
    layer_norm_eps: float = 1e-12  # LayerNorm epsilon (HF ViT default)


@dataclass(frozen=True)
class ModelSpec:
    """One model to build: its name, family, config and, for presets, the published parameter count."""

    name: str  # preset name, or the config.json path as the user gave it
    family: str  # "gpt2" | "llama" | "vit"
    config: GPT2Config | LlamaConfig | ViTConfig
    params: int | None  # documented parameter count for presets (golden); None for config files
