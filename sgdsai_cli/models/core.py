"""Model presets and plain-PyTorch builders for GPT-2, Llama 2 and ViT.

Everything the profiler trains is built here, nanoGPT style: one small module per
piece, no `transformers`. The layouts follow the Hugging Face checkpoints (GPT-2,
Llama 2) and timm (ViT) closely enough that the parameter counts are *exactly* the
published ones; each preset carries that count as a golden number and the tests
check the built model against it.

    spec  = resolve_model("llama2-7b")          # a preset name, or a path to an HF config.json
    model = build_model(spec, device="meta")    # meta: shapes only, allocates nothing
    batch = make_batch(spec, batch_size=1, seq_len=512, device="meta")
    loss  = training_loss(spec, model, batch)   # forward + cross-entropy, a scalar

Layout promises other code relies on:

- the repeated blocks are one ``nn.ModuleList`` of identical modules, at
  ``model.h`` (gpt2), ``model.layers`` (llama), ``model.blocks`` (vit);
  ``decoder_layers(model)`` returns it whatever the family;
- no module registers a buffer (causal masking is SDPA's ``is_causal``, RoPE's
  cos/sin are computed on the fly on the input's device), so parameters are the
  whole of a model's memory;
- a tied head is the *same* ``nn.Parameter`` as the token embedding, so
  ``model.parameters()`` yields it once;
- ``block_type(name, family)`` names what each parameter is (embedding, q/k/v,
  MLP, norm, bias, head, ...) for per-block reports such as g-SNR.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sgdsai_cli.errors import BadInput, did_you_mean

__all__ = [
    "BLOCK_TYPES",
    "FAMILIES",
    "PRESETS",
    "GPT2Config",
    "LlamaConfig",
    "ModelSpec",
    "ViTConfig",
    "block_type",
    "build_model",
    "count_params",
    "decoder_layers",
    "make_batch",
    "resolve_model",
    "training_loss",
]

FAMILIES = ("gpt2", "llama", "vit")

# ----------------------------------------------------------------------------------------------
# Configs. Field names are ours (short); resolve_model() maps the Hugging Face names onto them.


@dataclass(frozen=True)
class GPT2Config:
    vocab_size: int
    n_positions: int  # learned position embedding rows = longest sequence
    n_embd: int
    n_layer: int
    n_head: int
    layer_norm_eps: float = 1e-5
    tie_word_embeddings: bool = True  # lm_head.weight is wte.weight (HF default for gpt2)


@dataclass(frozen=True)
class LlamaConfig:
    vocab_size: int
    hidden_size: int
    intermediate_size: int  # SwiGLU width (11008 for 7B: 2/3 * 4 * 4096 rounded up to 256)
    n_layers: int
    n_heads: int
    n_kv_heads: int  # == n_heads: plain multi-head attention; fewer: grouped-query attention
    max_position_embeddings: int = 4096
    rms_norm_eps: float = 1e-5
    tie_word_embeddings: bool = False
    rope_theta: float = 10000.0


@dataclass(frozen=True)
class ViTConfig:
    image_size: int
    patch_size: int
    hidden_size: int
    n_layers: int
    n_heads: int
    intermediate_size: int
    num_classes: int = 1000
    num_channels: int = 3
    layer_norm_eps: float = 1e-12


@dataclass(frozen=True)
class ModelSpec:
    name: str  # preset name, or the config.json path as the user gave it
    family: str  # "gpt2" | "llama" | "vit"
    config: GPT2Config | LlamaConfig | ViTConfig
    params: int | None  # documented parameter count for presets (golden); None for config files


# ----------------------------------------------------------------------------------------------
# Presets: a literal table, small -> large within each family. `params` is the published count
# (HF / timm), counting a tied embedding once; tests build each on meta and compare exactly.
#
# GPT-2 count, d = n_embd, L = n_layer, V = 50257, P = 1024:
#   wte V*d + wpe P*d + L*(12 d^2 + 13 d) + ln_f 2d     (head tied: free)
#   per block: ln_1 2d, c_attn 3d^2+3d, c_proj d^2+d, ln_2 2d, c_fc 4d^2+4d, mlp c_proj 4d^2+d
# Llama count, h = hidden, f = ffn, kv = h * n_kv_heads / n_heads:
#   embed V*h + L*(2 h^2 + 2 h*kv + 3 h*f + 2h) + norm h + lm_head V*h
# ViT count, N = (image/patch)^2 patches, f = mlp width, C = 1000 classes:
#   conv 3*p*p*h + h, cls h, pos (N+1)*h, L*(4 h^2 + 4h + 2 h*f + f + h + 4h), norm 2h, head h*C + C

# fmt: off
PRESETS: dict[str, ModelSpec] = {
    # tiny models for tests: the same code paths at well under 1M parameters
    "tiny-gpt2": ModelSpec("tiny-gpt2", "gpt2", GPT2Config(
        vocab_size=512, n_positions=128, n_embd=64, n_layer=2, n_head=4), 141_056),
    "gpt2": ModelSpec("gpt2", "gpt2", GPT2Config(
        vocab_size=50257, n_positions=1024, n_embd=768, n_layer=12, n_head=12), 124_439_808),
    "gpt2-medium": ModelSpec("gpt2-medium", "gpt2", GPT2Config(
        vocab_size=50257, n_positions=1024, n_embd=1024, n_layer=24, n_head=16), 354_823_168),
    "gpt2-large": ModelSpec("gpt2-large", "gpt2", GPT2Config(
        vocab_size=50257, n_positions=1024, n_embd=1280, n_layer=36, n_head=20), 774_030_080),
    "gpt2-xl": ModelSpec("gpt2-xl", "gpt2", GPT2Config(
        vocab_size=50257, n_positions=1024, n_embd=1600, n_layer=48, n_head=25), 1_557_611_200),
    # tiny-llama uses 2 kv heads for 4 query heads, so the grouped-query path is tested
    "tiny-llama": ModelSpec("tiny-llama", "llama", LlamaConfig(
        vocab_size=512, hidden_size=64, intermediate_size=176, n_layers=2, n_heads=4, n_kv_heads=2,
        max_position_embeddings=256), 158_016),
    "llama2-7b": ModelSpec("llama2-7b", "llama", LlamaConfig(
        vocab_size=32000, hidden_size=4096, intermediate_size=11008, n_layers=32, n_heads=32,
        n_kv_heads=32), 6_738_415_616),
    "llama2-13b": ModelSpec("llama2-13b", "llama", LlamaConfig(
        vocab_size=32000, hidden_size=5120, intermediate_size=13824, n_layers=40, n_heads=40,
        n_kv_heads=40), 13_015_864_320),
    "llama2-70b": ModelSpec("llama2-70b", "llama", LlamaConfig(
        vocab_size=32000, hidden_size=8192, intermediate_size=28672, n_layers=80, n_heads=64,
        n_kv_heads=8), 68_976_648_192),
    "tiny-vit": ModelSpec("tiny-vit", "vit", ViTConfig(
        image_size=32, patch_size=8, hidden_size=64, n_layers=2, n_heads=4, intermediate_size=256,
        num_classes=10), 114_250),
    "vit-s16": ModelSpec("vit-s16", "vit", ViTConfig(
        image_size=224, patch_size=16, hidden_size=384, n_layers=12, n_heads=6,
        intermediate_size=1536), 22_050_664),
    "vit-b16": ModelSpec("vit-b16", "vit", ViTConfig(
        image_size=224, patch_size=16, hidden_size=768, n_layers=12, n_heads=12,
        intermediate_size=3072), 86_567_656),
    "vit-l16": ModelSpec("vit-l16", "vit", ViTConfig(
        image_size=224, patch_size=16, hidden_size=1024, n_layers=24, n_heads=16,
        intermediate_size=4096), 304_326_632),
    "vit-h14": ModelSpec("vit-h14", "vit", ViTConfig(
        image_size=224, patch_size=14, hidden_size=1280, n_layers=32, n_heads=16,
        intermediate_size=5120), 632_045_800),
}
# fmt: on


# Builder-style accessors (torchtune style), one per preset.
def tiny_gpt2() -> ModelSpec:
    return PRESETS["tiny-gpt2"]


def gpt2_124m() -> ModelSpec:
    return PRESETS["gpt2"]


def gpt2_medium() -> ModelSpec:
    return PRESETS["gpt2-medium"]


def gpt2_large() -> ModelSpec:
    return PRESETS["gpt2-large"]


def gpt2_xl() -> ModelSpec:
    return PRESETS["gpt2-xl"]


def tiny_llama() -> ModelSpec:
    return PRESETS["tiny-llama"]


def llama2_7b() -> ModelSpec:
    return PRESETS["llama2-7b"]


def llama2_13b() -> ModelSpec:
    return PRESETS["llama2-13b"]


def llama2_70b() -> ModelSpec:
    return PRESETS["llama2-70b"]


def tiny_vit() -> ModelSpec:
    return PRESETS["tiny-vit"]


def vit_s16() -> ModelSpec:
    return PRESETS["vit-s16"]


def vit_b16() -> ModelSpec:
    return PRESETS["vit-b16"]


def vit_l16() -> ModelSpec:
    return PRESETS["vit-l16"]


def vit_h14() -> ModelSpec:
    return PRESETS["vit-h14"]


# ----------------------------------------------------------------------------------------------
# GPT-2 (Hugging Face layout, nn.Linear instead of HF's transposed Conv1D: same counts)


class GPT2Attention(nn.Module):
    def __init__(self, cfg: GPT2Config):
        super().__init__()
        self.n_head = cfg.n_head
        self.c_attn = nn.Linear(cfg.n_embd, 3 * cfg.n_embd)  # fused q,k,v: [d] -> [3d]
        self.c_proj = nn.Linear(cfg.n_embd, cfg.n_embd)

    def forward(self, x: Tensor) -> Tensor:
        B, S, D = x.shape
        q, k, v = self.c_attn(x).split(D, dim=-1)
        # [B, S, D] -> [B, H, S, D/H]
        q, k, v = (t.view(B, S, self.n_head, D // self.n_head).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.c_proj(y.transpose(1, 2).reshape(B, S, D))


class GPT2MLP(nn.Module):
    def __init__(self, cfg: GPT2Config):
        super().__init__()
        self.c_fc = nn.Linear(cfg.n_embd, 4 * cfg.n_embd)
        self.act = nn.GELU(approximate="tanh")  # HF "gelu_new"
        self.c_proj = nn.Linear(4 * cfg.n_embd, cfg.n_embd)

    def forward(self, x: Tensor) -> Tensor:
        return self.c_proj(self.act(self.c_fc(x)))


class GPT2Block(nn.Module):
    def __init__(self, cfg: GPT2Config):
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.n_embd, eps=cfg.layer_norm_eps)
        self.attn = GPT2Attention(cfg)
        self.ln_2 = nn.LayerNorm(cfg.n_embd, eps=cfg.layer_norm_eps)
        self.mlp = GPT2MLP(cfg)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT2(nn.Module):
    def __init__(self, cfg: GPT2Config):
        super().__init__()
        self.config = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.wpe = nn.Embedding(cfg.n_positions, cfg.n_embd)
        self.h = nn.ModuleList(GPT2Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.n_embd, eps=cfg.layer_norm_eps)
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        self.tie_weights()

    def tie_weights(self) -> None:
        if self.config.tie_word_embeddings:
            self.lm_head.weight = self.wte.weight

    def init_weights(self) -> None:
        # GPT-2 paper / HF: N(0, 0.02) everywhere, residual projections scaled by 1/sqrt(2L)
        _init_common(self, std=0.02)
        for block in self.h:
            for proj in (block.attn.c_proj, block.mlp.c_proj):
                nn.init.normal_(proj.weight, std=0.02 / math.sqrt(2 * self.config.n_layer))

    def forward(self, tokens: Tensor) -> Tensor:  # [B, S] int64 -> logits [B, S, V]
        pos = torch.arange(tokens.shape[1], device=tokens.device)
        x = self.wte(tokens) + self.wpe(pos)
        for block in self.h:
            x = block(x)
        return self.lm_head(self.ln_f(x))


# ----------------------------------------------------------------------------------------------
# Llama 2: RMSNorm, RoPE, SwiGLU, grouped-query attention, no biases


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        # normalise in fp32 (as HF LlamaRMSNorm), scale in the parameter dtype
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * h.to(x.dtype)


def _rope(q: Tensor, k: Tensor, theta: float) -> tuple[Tensor, Tensor]:
    """Rotary position embedding, HF "rotate_half" layout; q, k are [B, H, S, Dh]."""
    S, Dh = q.shape[-2], q.shape[-1]
    inv_freq = 1.0 / theta ** (torch.arange(0, Dh, 2, device=q.device, dtype=torch.float32) / Dh)
    freqs = torch.outer(torch.arange(S, device=q.device, dtype=torch.float32), inv_freq)  # [S, Dh/2]
    emb = torch.cat((freqs, freqs), dim=-1)  # [S, Dh]
    cos, sin = emb.cos().to(q.dtype), emb.sin().to(q.dtype)

    def rotate(x: Tensor) -> Tensor:
        x1, x2 = x.chunk(2, dim=-1)
        return x * cos + torch.cat((-x2, x1), dim=-1) * sin

    return rotate(q), rotate(k)


class LlamaAttention(nn.Module):
    def __init__(self, cfg: LlamaConfig):
        super().__init__()
        self.n_heads, self.n_kv_heads = cfg.n_heads, cfg.n_kv_heads
        self.head_dim = cfg.hidden_size // cfg.n_heads
        self.rope_theta = cfg.rope_theta
        kv_dim = cfg.n_kv_heads * self.head_dim  # 8 kv heads * 128 = 1024 for 70B
        self.q_proj = nn.Linear(cfg.hidden_size, cfg.hidden_size, bias=False)
        self.k_proj = nn.Linear(cfg.hidden_size, kv_dim, bias=False)
        self.v_proj = nn.Linear(cfg.hidden_size, kv_dim, bias=False)
        self.o_proj = nn.Linear(cfg.hidden_size, cfg.hidden_size, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        B, S, D = x.shape
        q = self.q_proj(x).view(B, S, self.n_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(B, S, self.n_kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(B, S, self.n_kv_heads, self.head_dim).transpose(1, 2)
        q, k = _rope(q, k, self.rope_theta)
        gqa = self.n_kv_heads != self.n_heads  # each kv head serves n_heads / n_kv_heads query heads
        if gqa and q.dtype not in (torch.float16, torch.bfloat16):
            # SDPA's enable_gqa runs only on the flash (half precision) and math kernels on CUDA; in
            # fp32 it would fall back to math and keep a [B, H, S, S] score matrix, so copy k/v up
            # to n_heads instead ([B, KV, S, Dh] -> [B, H, S, Dh]) and keep the memory-efficient kernel.
            k = k.repeat_interleave(self.n_heads // self.n_kv_heads, dim=1)
            v = v.repeat_interleave(self.n_heads // self.n_kv_heads, dim=1)
            gqa = False
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=gqa)
        return self.o_proj(y.transpose(1, 2).reshape(B, S, D))


class LlamaMLP(nn.Module):
    def __init__(self, cfg: LlamaConfig):
        super().__init__()
        self.gate_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.up_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=False)

    def forward(self, x: Tensor) -> Tensor:  # SwiGLU
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class LlamaBlock(nn.Module):
    def __init__(self, cfg: LlamaConfig):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.self_attn = LlamaAttention(cfg)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.mlp = LlamaMLP(cfg)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.self_attn(self.input_layernorm(x))
        return x + self.mlp(self.post_attention_layernorm(x))


class Llama(nn.Module):
    def __init__(self, cfg: LlamaConfig):
        super().__init__()
        self.config = cfg
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(LlamaBlock(cfg) for _ in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        self.tie_weights()

    def tie_weights(self) -> None:
        if self.config.tie_word_embeddings:
            self.lm_head.weight = self.embed_tokens.weight

    def init_weights(self) -> None:
        _init_common(self, std=0.02)  # HF initializer_range

    def forward(self, tokens: Tensor) -> Tensor:  # [B, S] int64 -> logits [B, S, V]
        x = self.embed_tokens(tokens)
        for layer in self.layers:
            x = layer(x)
        return self.lm_head(self.norm(x))


# ----------------------------------------------------------------------------------------------
# ViT (timm layout: fused qkv with bias, pre-norm blocks, class-token head, no pooler)


class ViTAttention(nn.Module):
    def __init__(self, cfg: ViTConfig):
        super().__init__()
        self.n_heads = cfg.n_heads
        self.qkv = nn.Linear(cfg.hidden_size, 3 * cfg.hidden_size)  # same count as HF's q, k, v
        self.proj = nn.Linear(cfg.hidden_size, cfg.hidden_size)

    def forward(self, x: Tensor) -> Tensor:
        B, N, D = x.shape
        q, k, v = self.qkv(x).view(B, N, 3, self.n_heads, D // self.n_heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v)  # [B, H, N, Dh], bidirectional
        return self.proj(y.transpose(1, 2).reshape(B, N, D))


class ViTMLP(nn.Module):
    def __init__(self, cfg: ViTConfig):
        super().__init__()
        self.fc1 = nn.Linear(cfg.hidden_size, cfg.intermediate_size)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(cfg.intermediate_size, cfg.hidden_size)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class ViTBlock(nn.Module):
    def __init__(self, cfg: ViTConfig):
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.attn = ViTAttention(cfg)
        self.norm2 = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.mlp = ViTMLP(cfg)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    def __init__(self, cfg: ViTConfig):
        super().__init__()
        p = cfg.patch_size
        self.proj = nn.Conv2d(cfg.num_channels, cfg.hidden_size, kernel_size=p, stride=p)

    def forward(self, images: Tensor) -> Tensor:  # [B, C, H, W] -> [B, (H/p)*(W/p), D]
        return self.proj(images).flatten(2).transpose(1, 2)


class ViT(nn.Module):
    def __init__(self, cfg: ViTConfig):
        super().__init__()
        self.config = cfg
        n_patches = (cfg.image_size // cfg.patch_size) ** 2  # 224/16 -> 14*14 = 196
        self.patch_embed = PatchEmbed(cfg)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.hidden_size))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + n_patches, cfg.hidden_size))
        self.blocks = nn.ModuleList(ViTBlock(cfg) for _ in range(cfg.n_layers))
        self.norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.head = nn.Linear(cfg.hidden_size, cfg.num_classes)

    def tie_weights(self) -> None:
        pass

    def init_weights(self) -> None:
        _init_common(self, std=0.02)
        nn.init.normal_(self.pos_embed, std=0.02)  # timm: trunc_normal_ at +-2 = +-100 std: the same
        nn.init.normal_(self.cls_token, std=1e-6)

    def forward(self, images: Tensor) -> Tensor:  # [B, C, H, W] -> logits [B, num_classes]
        x = self.patch_embed(images.to(self.patch_embed.proj.weight.dtype))
        x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x), dim=1) + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x)[:, 0])


def _init_common(model: nn.Module, std: float) -> None:
    """One vectorised init call per tensor: N(0, std) weights, zero biases, unit norms."""
    for m in model.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d, nn.Embedding)):
            nn.init.normal_(m.weight, std=std)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.LayerNorm, RMSNorm)):
            nn.init.ones_(m.weight)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)


_MODEL_CLASSES = {"gpt2": GPT2, "llama": Llama, "vit": ViT}


# ----------------------------------------------------------------------------------------------
# Public API


def build_model(spec: ModelSpec, device="meta", dtype: torch.dtype = torch.float32) -> nn.Module:
    """Build `spec` directly on `device` in `dtype`, in train mode.

    Construction runs under ``with torch.device(device)`` with `dtype` as the default dtype, so a
    meta build allocates nothing (llama2-70b: well under a second after torch's first-call
    warm-up) and a build inside a ``FakeTensorMode`` yields fake parameters with no ``_apply``
    or ``to_empty`` step. On a real device the model's own init then runs once per tensor
    (N(0, 0.02) weights, seeded by the caller's ``torch.manual_seed``); meta models stay uninitialised.
    (PyTorch's own default init also runs during construction: one extra uniform_ pass, cheap on a GPU,
    a few seconds per billion parameters on a CPU.) The very first call in a process also pays
    about 1 s of one-time torch import work for meta random ops.
    """
    cls = _MODEL_CLASSES.get(spec.family)
    if cls is None:
        raise BadInput(f"unknown model family '{spec.family}'" + did_you_mean(spec.family, FAMILIES))
    if not dtype.is_floating_point:
        raise BadInput(f"model dtype must be a floating point type, got {dtype}")
    device = torch.device(device)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # parameters are created in `dtype`: no full-size fp32 copy first
    try:
        with torch.device(device):
            model = cls(spec.config)
    except (RuntimeError, TypeError, OverflowError) as e:
        if "overflow" not in str(e).lower():
            raise
        raise BadInput(f"model '{spec.name}' is too large to build: a tensor's size overflows 64 bits") from None
    finally:
        torch.set_default_dtype(previous)
    if device.type != "meta":
        with torch.no_grad():
            model.init_weights()
    return model.train()


def count_params(model: nn.Module) -> int:
    """Number of parameter elements, each shared (tied) tensor counted once."""
    return sum(p.numel() for p in model.parameters())  # parameters() de-duplicates by identity


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The list of identical repeated blocks: ``h`` (gpt2), ``layers`` (llama), ``blocks`` (vit)."""
    for attr in ("h", "layers", "blocks"):
        layers = getattr(model, attr, None)
        if isinstance(layers, nn.ModuleList):
            return layers
    raise TypeError(f"{type(model).__name__} has no h/layers/blocks ModuleList")


def make_batch(
    spec: ModelSpec,
    batch_size: int,
    seq_len: int,
    device,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """A random training batch for `spec`.

    LM (gpt2, llama): ``(tokens int64 [B, S], targets int64 [B, S])`` in ``[0, vocab)``, targets
    being the tokens shifted left by one. ViT: ``(images float32 [B, C, H, W], labels int64 [B])``
    at ``config.image_size``; `seq_len` is ignored. On meta the tensors are empty of that shape.
    Random draws happen on the generator's device (CPU when none is given: reproducible under
    ``torch.manual_seed``) and are then moved to `device`.
    """
    _positive("batch_size", batch_size)
    device = torch.device(device)
    cfg = spec.config
    if spec.family == "vit":
        img_shape = (batch_size, cfg.num_channels, cfg.image_size, cfg.image_size)
        _addressable(f"a batch of {batch_size} images of {cfg.num_channels} x {cfg.image_size} x {cfg.image_size}",
                     img_shape)
        if device.type == "meta":
            return (
                torch.empty(img_shape, device=device),
                torch.empty(batch_size, dtype=torch.long, device=device),
            )
        gdev = generator.device if generator is not None else torch.device("cpu")
        images = torch.randn(img_shape, generator=generator, device=gdev)
        labels = torch.randint(0, cfg.num_classes, (batch_size,), generator=generator, device=gdev)
        return images.to(device), labels.to(device)
    _positive("seq_len", seq_len)
    if spec.family == "gpt2" and seq_len > cfg.n_positions:
        raise BadInput(f"seq_len {seq_len} is longer than {spec.name}'s {cfg.n_positions} positions")
    _addressable(f"a batch of {batch_size} x {seq_len} tokens", (batch_size, seq_len + 1))
    if device.type == "meta":
        return (
            torch.empty(batch_size, seq_len, dtype=torch.long, device=device),
            torch.empty(batch_size, seq_len, dtype=torch.long, device=device),
        )
    gdev = generator.device if generator is not None else torch.device("cpu")
    seq = torch.randint(0, cfg.vocab_size, (batch_size, seq_len + 1), generator=generator, device=gdev)
    return seq[:, :-1].to(device), seq[:, 1:].to(device)


def training_loss(spec: ModelSpec, model: nn.Module, batch: tuple[Tensor, Tensor]) -> Tensor:
    """Forward pass and mean cross-entropy (computed on fp32 logits, as HF does): a scalar."""
    inputs, targets = batch
    logits = model(inputs)
    return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1))


# ----------------------------------------------------------------------------------------------
# block_type: what a parameter is, from its name

BLOCK_TYPES = (
    "token_embedding",
    "position_embedding",
    "attn_qkv",
    "attn_q",
    "attn_k",
    "attn_v",
    "attn_out",
    "mlp_up",
    "mlp_gate",
    "mlp_down",
    "norm",
    "bias",
    "head",
    "patch_embedding",
    "class_token",
)

# module-name component -> type, by family. Also knows the Hugging Face names
# (transformer.h.N..., model.layers.N..., vit.encoder.layer.N...) so real checkpoints classify.
_NAME_TYPES = {
    "gpt2": {
        "wte": "token_embedding",
        "wpe": "position_embedding",
        "ln_1": "norm",
        "ln_2": "norm",
        "ln_f": "norm",
        "c_attn": "attn_qkv",
        "c_fc": "mlp_up",
        "lm_head": "head",
        # "c_proj" depends on its parent (attn or mlp): handled below
    },
    "llama": {
        "embed_tokens": "token_embedding",
        "q_proj": "attn_q",
        "k_proj": "attn_k",
        "v_proj": "attn_v",
        "o_proj": "attn_out",
        "gate_proj": "mlp_gate",
        "up_proj": "mlp_up",
        "down_proj": "mlp_down",
        "input_layernorm": "norm",
        "post_attention_layernorm": "norm",
        "norm": "norm",
        "lm_head": "head",
    },
    "vit": {
        "patch_embed": "patch_embedding",
        "patch_embeddings": "patch_embedding",
        "cls_token": "class_token",
        "pos_embed": "position_embedding",
        "position_embeddings": "position_embedding",
        "norm1": "norm",
        "norm2": "norm",
        "norm": "norm",
        "layernorm_before": "norm",
        "layernorm_after": "norm",
        "layernorm": "norm",
        "qkv": "attn_qkv",
        "query": "attn_q",
        "key": "attn_k",
        "value": "attn_v",
        "q_proj": "attn_q",
        "k_proj": "attn_k",
        "v_proj": "attn_v",
        "o_proj": "attn_out",
        "fc1": "mlp_up",
        "fc2": "mlp_down",
        "intermediate": "mlp_up",
        "head": "head",
        "classifier": "head",
        # "proj" is attn_out inside attn, the patch conv inside patch_embed: handled below
    },
}


def block_type(param_name: str, spec_family: str) -> tuple[str, int | None]:
    """Classify a parameter name from ``model.named_parameters()``.

    Returns ``(type, layer_index)``: type is one of BLOCK_TYPES (``"unknown"`` for a name this
    function does not know), layer_index the block number or None outside the repeated blocks.
    Biases of linear and conv layers are ``"bias"``; LayerNorm weights and biases are ``"norm"``.
    """
    parts = param_name.split(".")
    layer = next((int(p) for p in parts if p.isdigit()), None)
    table = _NAME_TYPES.get(spec_family, {})
    kind = "unknown"
    for i in range(len(parts) - 1, -1, -1):  # innermost known module name wins
        p = parts[i]
        parent = parts[i - 1] if i > 0 else ""
        if p in table:
            kind = table[p]
        elif spec_family == "gpt2" and p == "c_proj":
            kind = "mlp_down" if parent == "mlp" else "attn_out"
        elif spec_family == "vit" and p in ("proj", "projection"):
            kind = "patch_embedding" if parent in ("patch_embed", "patch_embeddings") else "attn_out"
        elif spec_family == "vit" and p == "dense":  # HF ViT: attention.output.dense / output.dense
            kind = "attn_out" if "attention" in parts[:i] else "mlp_down"
            if parent == "intermediate":
                kind = "mlp_up"
        else:
            continue
        break
    if parts[-1] == "bias" and kind not in ("norm", "unknown"):
        kind = "bias"
    return kind, layer


# ----------------------------------------------------------------------------------------------
# resolve_model: a preset name or a Hugging Face config.json


def resolve_model(name_or_path: str) -> ModelSpec:
    """A preset by name (case-insensitive), else a Hugging Face style config.json.

    Anything ending in .json, containing a path separator, or existing on disk is read as a
    config file (a directory means its config.json). Raises BadInput with a one-line message.
    """
    text = str(name_or_path).strip()
    if text.lower() in PRESETS:
        return PRESETS[text.lower()]
    looks_like_path = (
        text.endswith(".json")
        or "/" in text
        or os.sep in text
        or (os.altsep is not None and os.altsep in text)
        or os.path.exists(text)
    )
    if not looks_like_path:
        raise BadInput(f"unknown model '{text}'" + did_you_mean(text, PRESETS))
    return _spec_from_config_file(text)


def _spec_from_config_file(where: str) -> ModelSpec:
    path = Path(where)
    if path.is_dir():
        path = path / "config.json"
        where = str(path)
    try:
        raw = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BadInput(f"{where}: no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise BadInput(f"{where}: cannot read ({getattr(e, 'strerror', None) or e})") from None
    try:
        hf = json.loads(raw)
    except json.JSONDecodeError as e:
        raise BadInput(f"{where}: invalid JSON ({e.msg} at line {e.lineno} column {e.colno})") from None
    except RecursionError:
        raise BadInput(f"{where}: invalid JSON (nested too deeply)") from None
    if not isinstance(hf, dict):
        raise BadInput(f"{where}: expected a JSON object, got {type(hf).__name__}")
    model_type = hf.get("model_type")
    if model_type is None:
        raise BadInput(f"{where}: field 'model_type' is missing")
    if model_type not in FAMILIES:
        raise BadInput(
            f"{where}: model_type {model_type!r} is not supported (choose from: {', '.join(FAMILIES)})"
        )
    cfg = _CONFIG_READERS[model_type](_Fields(hf, where))
    _validate(cfg, where)
    return ModelSpec(name=where, family=model_type, config=cfg, params=None)


# Layers of a config.json model: every layer is Python objects even on meta (about 65 KB each), so a
# depth of 10**5 would take gigabytes and hours to size; real models have at most a few hundred.
MAX_LAYERS = 1024


class _Fields:
    """Typed access to one config.json's fields; every error names the file and the field."""

    def __init__(self, hf: dict, where: str):
        self.hf, self.where = hf, where

    def bad(self, field: str, what: str) -> BadInput:
        return BadInput(f"{self.where}: field '{field}' {what}")

    def int(self, field: str, default: int | None = None, maximum: int | None = None) -> int:
        v = self.hf.get(field)
        if v is None:
            if default is None:
                raise self.bad(field, "is missing")
            return default
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            raise self.bad(field, f"must be a positive integer, got {json.dumps(v)}")
        if maximum is not None and v > maximum:
            raise self.bad(field, f"must be at most {maximum:,}, got {v:,}")
        return v

    def float(self, field: str, default: float) -> float:
        v = self.hf.get(field)
        if v is None:
            return default
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0 or math.isinf(v):
            raise self.bad(field, f"must be a positive number, got {json.dumps(v)}")
        return float(v)

    def bool(self, field: str, default: bool) -> bool:
        v = self.hf.get(field)
        if v is None:
            return default
        if not isinstance(v, bool):
            raise self.bad(field, f"must be true or false, got {json.dumps(v)}")
        return v

    def unsupported_if(self, field: str, bad: bool, what: str) -> None:
        if bad:
            raise self.bad(field, f"{what} is not supported, got {json.dumps(self.hf.get(field))}")


def _gpt2_from_hf(f: _Fields) -> GPT2Config:
    n_embd = f.int("n_embd")
    f.unsupported_if(
        "n_inner", f.hf.get("n_inner") not in (None, 4 * n_embd), "an MLP width other than 4*n_embd"
    )
    return GPT2Config(
        vocab_size=f.int("vocab_size"),
        n_positions=f.int("n_positions"),
        n_embd=n_embd,
        n_layer=f.int("n_layer", maximum=MAX_LAYERS),
        n_head=f.int("n_head"),
        layer_norm_eps=f.float("layer_norm_epsilon", 1e-5),
        tie_word_embeddings=f.bool("tie_word_embeddings", True),
    )


def _llama_from_hf(f: _Fields) -> LlamaConfig:
    hidden, heads = f.int("hidden_size"), f.int("num_attention_heads")
    f.unsupported_if("attention_bias", f.bool("attention_bias", False), "attention_bias=true")
    f.unsupported_if("mlp_bias", f.bool("mlp_bias", False), "mlp_bias=true")
    head_dim = f.hf.get("head_dim")
    f.unsupported_if(
        "head_dim",
        head_dim is not None
        and (isinstance(head_dim, bool) or not isinstance(head_dim, (int, float)) or head_dim * heads != hidden),
        "a head_dim other than hidden_size/num_attention_heads",
    )
    return LlamaConfig(
        vocab_size=f.int("vocab_size"),
        hidden_size=hidden,
        intermediate_size=f.int("intermediate_size"),
        n_layers=f.int("num_hidden_layers", maximum=MAX_LAYERS),
        n_heads=heads,
        n_kv_heads=f.int("num_key_value_heads", heads),
        max_position_embeddings=f.int("max_position_embeddings", 4096),
        rms_norm_eps=f.float("rms_norm_eps", 1e-5),
        tie_word_embeddings=f.bool("tie_word_embeddings", False),
        rope_theta=f.float("rope_theta", 10000.0),
    )


def _vit_from_hf(f: _Fields) -> ViTConfig:
    f.unsupported_if("qkv_bias", not f.bool("qkv_bias", True), "qkv_bias=false")
    if f.hf.get("num_labels") is not None:
        num_classes = f.int("num_labels")
    elif f.hf.get("id2label") is not None:
        id2label = f.hf["id2label"]
        if not isinstance(id2label, dict) or not id2label:
            raise f.bad("id2label", "must be a non-empty object")
        num_classes = len(id2label)
    else:
        num_classes = 1000
    return ViTConfig(
        image_size=f.int("image_size"),
        patch_size=f.int("patch_size"),
        hidden_size=f.int("hidden_size"),
        n_layers=f.int("num_hidden_layers", maximum=MAX_LAYERS),
        n_heads=f.int("num_attention_heads"),
        intermediate_size=f.int("intermediate_size"),
        num_classes=num_classes,
        num_channels=f.int("num_channels", 3),
        layer_norm_eps=f.float("layer_norm_eps", 1e-12),
    )


_CONFIG_READERS = {"gpt2": _gpt2_from_hf, "llama": _llama_from_hf, "vit": _vit_from_hf}


def _validate(cfg, where: str) -> None:
    """Shape rules a model must satisfy; messages use the HF field names of config.json."""

    def need(ok: bool, msg: str) -> None:
        if not ok:
            raise BadInput(f"{where}: {msg}")

    if isinstance(cfg, GPT2Config):
        need(
            cfg.n_embd % cfg.n_head == 0,
            f"field 'n_embd' ({cfg.n_embd}) must be divisible by 'n_head' ({cfg.n_head})",
        )
    elif isinstance(cfg, LlamaConfig):
        need(
            cfg.hidden_size % cfg.n_heads == 0,
            f"field 'hidden_size' ({cfg.hidden_size}) must be "
            f"divisible by 'num_attention_heads' ({cfg.n_heads})",
        )
        need(
            cfg.n_heads % cfg.n_kv_heads == 0,
            f"field 'num_attention_heads' ({cfg.n_heads}) must be "
            f"divisible by 'num_key_value_heads' ({cfg.n_kv_heads})",
        )
        need(
            (cfg.hidden_size // cfg.n_heads) % 2 == 0,
            f"field 'hidden_size' ({cfg.hidden_size}) / 'num_attention_heads' must be even for RoPE",
        )
    elif isinstance(cfg, ViTConfig):
        need(
            cfg.hidden_size % cfg.n_heads == 0,
            f"field 'hidden_size' ({cfg.hidden_size}) must be "
            f"divisible by 'num_attention_heads' ({cfg.n_heads})",
        )
        need(
            cfg.image_size % cfg.patch_size == 0,
            f"field 'image_size' ({cfg.image_size}) must be divisible by 'patch_size' ({cfg.patch_size})",
        )


def _addressable(what: str, shape: tuple[int, ...], element_bytes: int = 8) -> None:
    """BadInput when a tensor of ``shape`` could not even be addressed (bytes beyond int64)."""
    if math.prod(shape) * element_bytes >= 2**63:
        raise BadInput(f"{what} is too large (more than 2**63 bytes)")


def _positive(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise BadInput(f"{name} must be a positive integer, got {value!r}")
