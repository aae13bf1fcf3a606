"""Llama 2 in plain PyTorch, in the Hugging Face layout (parameter names match its checkpoints).

RMSNorm, rotary position embeddings (computed on the fly on the input's device: no buffers),
SwiGLU MLP, grouped-query attention when ``n_kv_heads < n_heads`` (SDPA's ``enable_gqa``: k/v
stay at their own head count, as transformers' sdpa attention passes them when there is no
padding mask), a per-head width ``head_dim`` (hidden/heads unless the config says otherwise, as
Gemma), biases where the config asks (``attention_bias`` on q/k/v/o, ``mlp_bias``), and an
untied head unless the config ties it (then it is the embedding's own ``nn.Parameter``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sgdsai_cli.models.configs import LlamaConfig
from sgdsai_cli.models.layers import PreNormBlock, init_normal_


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
    inv_freq = 1.0 / theta ** (torch.arange(0, Dh, 2, device=q.device, dtype=torch.float32) / Dh)  # [Dh/2]
    freqs = torch.outer(torch.arange(S, device=q.device, dtype=torch.float32), inv_freq)  # [S, Dh/2]
    emb = torch.cat((freqs, freqs), dim=-1)  # [S, Dh]
    cos, sin = emb.cos().to(q.dtype), emb.sin().to(q.dtype)

    def rotate(x: Tensor) -> Tensor:
        x1, x2 = x.chunk(2, dim=-1)  # [B, H, S, Dh] -> 2 x [B, H, S, Dh/2]
        return x * cos + torch.cat((-x2, x1), dim=-1) * sin

    return rotate(q), rotate(k)


class LlamaAttention(nn.Module):
    def __init__(self, cfg: LlamaConfig):
        super().__init__()
        self.n_heads, self.n_kv_heads = cfg.n_heads, cfg.n_kv_heads
        self.head_dim = cfg.head_dim or cfg.hidden_size // cfg.n_heads
        self.rope_theta = cfg.rope_theta
        q_dim = cfg.n_heads * self.head_dim
        kv_dim = cfg.n_kv_heads * self.head_dim  # 8 kv heads * 128 = 1024 for 70B
        bias = cfg.attention_bias
        self.q_proj = nn.Linear(cfg.hidden_size, q_dim, bias=bias)
        self.k_proj = nn.Linear(cfg.hidden_size, kv_dim, bias=bias)
        self.v_proj = nn.Linear(cfg.hidden_size, kv_dim, bias=bias)
        self.o_proj = nn.Linear(q_dim, cfg.hidden_size, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        B, S, _ = x.shape
        # [B, S, D] -> [B, S, H, Dh] -> [B, H, S, Dh]; k and v have KV heads instead of H
        q = self.q_proj(x).view(B, S, self.n_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(B, S, self.n_kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(B, S, self.n_kv_heads, self.head_dim).transpose(1, 2)
        q, k = _rope(q, k, self.rope_theta)
        gqa = self.n_kv_heads != self.n_heads  # each kv head serves n_heads / n_kv_heads query heads
        # k/v stay [B, KV, S, Dh], as transformers' sdpa attention passes them (enable_gqa, no mask)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=gqa)  # [B, H, S, Dh]
        return self.o_proj(y.transpose(1, 2).reshape(B, S, -1))  # [B, H, S, Dh] -> [B, S, H*Dh] -> [B, S, D]


class LlamaMLP(nn.Module):
    def __init__(self, cfg: LlamaConfig):
        super().__init__()
        bias = cfg.mlp_bias
        self.gate_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=bias)
        self.up_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=bias)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=bias)

    def forward(self, x: Tensor) -> Tensor:  # SwiGLU: [B, S, h] -> 2 x [B, S, f] -> [B, S, h]
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class LlamaBlock(PreNormBlock):
    PARTS = ("input_layernorm", "self_attn", "post_attention_layernorm", "mlp")

    def __init__(self, cfg: LlamaConfig):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.self_attn = LlamaAttention(cfg)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.mlp = LlamaMLP(cfg)


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
        init_normal_(self, std=0.02, norms=(RMSNorm,))  # HF initializer_range

    def forward(self, tokens: Tensor) -> Tensor:  # [B, S] int64 -> logits [B, S, V]
        x = self.embed_tokens(tokens)  # [B, S, h]
        for layer in self.layers:
            x = layer(x)
        return self.lm_head(self.norm(x))
