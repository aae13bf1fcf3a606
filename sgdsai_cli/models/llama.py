"""Llama 2 in plain PyTorch, in the Hugging Face layout (parameter names match its checkpoints).

RMSNorm, rotary position embeddings (cos/sin computed once per forward on the input's device and
shared by the blocks, as transformers does: no buffers),
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


def rope_tables(batch: int, seq: int, head_dim: int, theta: float, device, dtype) -> tuple[Tensor, Tensor]:
    """RoPE's cos and sin, [B, S, Dh] in ``dtype``, computed once per forward in fp32 without autograd
    and shared by every block (as transformers' rotary embedding)."""
    with torch.no_grad():
        inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim)
        pos = torch.arange(seq, device=device, dtype=torch.float32)
        freqs = (inv_freq[None, :, None].expand(batch, -1, 1) @ pos[None, None, :].expand(batch, 1, -1))
        emb = torch.cat((freqs.transpose(1, 2),) * 2, dim=-1)  # [B, S, Dh/2] twice -> [B, S, Dh]
        return emb.cos().to(dtype), emb.sin().to(dtype)


def _rope(q: Tensor, k: Tensor, cos: Tensor, sin: Tensor) -> tuple[Tensor, Tensor]:
    """Rotary position embedding, HF "rotate_half" layout; q, k are [B, H, S, Dh], cos/sin [B, S, Dh]."""
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)  # [B, 1, S, Dh]: broadcast over the heads

    def rotate(x: Tensor) -> Tensor:
        x1, x2 = x.chunk(2, dim=-1)  # [B, H, S, Dh] -> 2 x [B, H, S, Dh/2]
        return x * cos + torch.cat((-x2, x1), dim=-1) * sin

    return rotate(q), rotate(k)


class LlamaAttention(nn.Module):
    def __init__(self, cfg: LlamaConfig):
        super().__init__()
        self.n_heads, self.n_kv_heads = cfg.n_heads, cfg.n_kv_heads
        self.head_dim = cfg.head_dim or cfg.hidden_size // cfg.n_heads
        q_dim = cfg.n_heads * self.head_dim
        kv_dim = cfg.n_kv_heads * self.head_dim  # 8 kv heads * 128 = 1024 for 70B
        bias = cfg.attention_bias
        self.q_proj = nn.Linear(cfg.hidden_size, q_dim, bias=bias)
        self.k_proj = nn.Linear(cfg.hidden_size, kv_dim, bias=bias)
        self.v_proj = nn.Linear(cfg.hidden_size, kv_dim, bias=bias)
        self.o_proj = nn.Linear(q_dim, cfg.hidden_size, bias=bias)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        B, S, _ = x.shape
        # [B, S, D] -> [B, S, H, Dh] -> [B, H, S, Dh]; k and v have KV heads instead of H
        q = self.q_proj(x).view(B, S, self.n_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(B, S, self.n_kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(B, S, self.n_kv_heads, self.head_dim).transpose(1, 2)
        q, k = _rope(q, k, cos, sin)
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

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:  # [B, S, D] -> [B, S, D]
        x = x + self.self_attn(self.input_layernorm(x), cos, sin)
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
        init_normal_(self, std=0.02, norms=(RMSNorm,))  # HF initializer_range

    def forward(self, tokens: Tensor) -> Tensor:  # [B, S] int64 -> logits [B, S, V]
        x = self.embed_tokens(tokens)  # [B, S, h]
        cfg = self.config
        cos, sin = rope_tables(tokens.shape[0], tokens.shape[1], cfg.head_dim or cfg.hidden_size // cfg.n_heads,
                               cfg.rope_theta, x.device, x.dtype)
        for layer in self.layers:
            x = layer(x, cos, sin)
        return self.lm_head(self.norm(x))
