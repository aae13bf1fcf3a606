"""The configuration records of the model families, and ModelSpec, what the rest of the package is handed.

Field names are ours and short; ``hf_config`` maps the Hugging Face config.json names onto them.
Every config is a frozen dataclass, so two specs of the same model compare equal (and hash: the
estimate's caches key on them). Defaults are those of the Hugging Face config classes, so a
config.json that leaves a field out means what it means to transformers.

Besides the three native families: ``hf`` (any transformers architecture, built by transformers
from its config.json: ``HFConfig``) and ``factory`` (the user's own ``nn.Module`` from a callable:
``FactoryConfig``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sgdsai_cli.models.lora import LoraSpec

FAMILIES = ("gpt2", "llama", "vit", "hf", "factory")
NATIVE_FAMILIES = ("gpt2", "llama", "vit")


@dataclass(frozen=True)
class GPT2Config:
    vocab_size: int  # token embedding rows (50257 for the OpenAI checkpoints)
    n_positions: int  # learned position embedding rows = the longest sequence
    n_embd: int  # model width d; the MLP is 4*d wide
    n_layer: int  # number of repeated blocks
    n_head: int  # attention heads; n_embd must be divisible by it
    layer_norm_eps: float = 1e-5  # LayerNorm epsilon (HF layer_norm_epsilon)
    tie_word_embeddings: bool = True  # lm_head.weight is wte.weight (HF default for gpt2)
    n_inner: int | None = None  # MLP width; None: 4 * n_embd
    activation_function: str = "gelu_new"  # HF GPT2Config default (the OpenAI checkpoints)
    embd_pdrop: float = 0.1  # dropout after the embeddings (training keeps its mask)
    attn_pdrop: float = 0.1  # dropout on the attention weights (SDPA's dropout_p)
    resid_pdrop: float = 0.1  # dropout after each attention and MLP output projection


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
    head_dim: int | None = None  # per-head width; None: hidden_size / n_heads (Gemma: 256)
    attention_bias: bool = False  # biases on q/k/v/o (HF LlamaConfig.attention_bias)
    mlp_bias: bool = False  # biases on gate/up/down


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
    qkv_bias: bool = True  # biases on q/k/v (HF ViT default)


@dataclass(frozen=True)
class HFConfig:
    """A transformers model: its config.json (canonical JSON text, so the record hashes) and how to build it."""

    config_json: str  # json.dumps(config, sort_keys=True): everything that defines the model
    model_class: str  # the transformers class built: config.json's `architectures[0]`, else a task default
    attn_implementation: str = "sdpa"  # sdpa | eager | flash_attention_2 (transformers' own switch)

    @property
    def config_dict(self) -> dict[str, Any]:
        return json.loads(self.config_json)

    def to_dict(self) -> dict[str, Any]:
        return {"config": self.config_dict, "model_class": self.model_class,
                "attn_implementation": self.attn_implementation}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> HFConfig:
        return cls(canonical_json(d["config"]), d["model_class"], d.get("attn_implementation", "sdpa"))


def canonical_json(config: dict[str, Any]) -> str:
    """The one text of a config dict: sorted keys, no whitespace variation."""
    return json.dumps(config, sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True)
class FactoryConfig:
    """The user's own model: a callable returning an ``nn.Module``, and where to import it from again."""

    target: str | None  # "package.module:factory" or "/abs/path/file.py:factory"; None: not importable again
    factory: Callable[[], Any] | None = None  # the callable itself when given from Python (else imported)

    def to_dict(self) -> dict[str, Any]:
        name = None if self.factory is None else getattr(self.factory, "__qualname__", repr(self.factory))
        return {"target": self.target, **({} if self.target is not None else {"callable": name})}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FactoryConfig:
        return cls(d["target"])


@dataclass(frozen=True)
class ModelSpec:
    """One model to build: its name, family, config and, for presets, the published parameter count."""

    name: str  # preset name, or the config.json path as the user gave it
    family: str  # "gpt2" | "llama" | "vit" | "hf" | "factory"
    config: GPT2Config | LlamaConfig | ViTConfig | HFConfig | FactoryConfig
    params: int | None  # documented parameter count for presets (golden); None for config files
    checkpointing: str = "none"  # activation checkpointing of the blocks: none, full, every=N (models.checkpointing)
    lora: LoraSpec | None = None  # LoRA adapters through peft, base frozen (models.lora); None: full training
