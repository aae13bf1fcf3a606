"""GPT-2 in plain PyTorch, in the Hugging Face layout (parameter names match its checkpoints).

nn.Linear stands in for HF's transposed Conv1D: the same parameter counts. Learned position
embeddings (``n_positions`` rows), pre-norm blocks, fused q/k/v, GELU (tanh) MLP of width 4*d,
causal attention through SDPA's ``is_causal`` (no mask buffer), and a head tied to the token
embedding by default (the same ``nn.Parameter``, so ``parameters()`` yields it once).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sgdsai_cli.models.configs import GPT2Config
from sgdsai_cli.models.layers import PreNormBlock, init_normal_


class GPT2Attention(nn.Module):
    def __init__(self, cfg: GPT2Config):
        super().__init__()
        self.n_head = cfg.n_head
        self.c_attn = nn.Linear(cfg.n_embd, 3 * cfg.n_embd)  # fused q,k,v: [d] -> [3d]
        self.c_proj = nn.Linear(cfg.n_embd, cfg.n_embd)

    def forward(self, x: Tensor) -> Tensor:
        B, S, D = x.shape
        q, k, v = self.c_attn(x).split(D, dim=-1)  # [B, S, 3D] -> 3 x [B, S, D]
        # [B, S, D] -> [B, S, H, D/H] -> [B, H, S, D/H]
        q, k, v = (t.view(B, S, self.n_head, D // self.n_head).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # [B, H, S, D/H]
        return self.c_proj(y.transpose(1, 2).reshape(B, S, D))  # [B, H, S, D/H] -> [B, S, D]


class GPT2MLP(nn.Module):
    def __init__(self, cfg: GPT2Config):
        super().__init__()
        self.c_fc = nn.Linear(cfg.n_embd, 4 * cfg.n_embd)
        self.act = nn.GELU(approximate="tanh")  # HF "gelu_new"
        self.c_proj = nn.Linear(4 * cfg.n_embd, cfg.n_embd)

    def forward(self, x: Tensor) -> Tensor:  # [B, S, d] -> [B, S, 4d] -> [B, S, d]
        return self.c_proj(self.act(self.c_fc(x)))


class GPT2Block(PreNormBlock):
    PARTS = ("ln_1", "attn", "ln_2", "mlp")

    def __init__(self, cfg: GPT2Config):
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.n_embd, eps=cfg.layer_norm_eps)
        self.attn = GPT2Attention(cfg)
        self.ln_2 = nn.LayerNorm(cfg.n_embd, eps=cfg.layer_norm_eps)
        self.mlp = GPT2MLP(cfg)


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
        init_normal_(self, std=0.02)
        for block in self.h:
            for proj in (block.attn.c_proj, block.mlp.c_proj):
                nn.init.normal_(proj.weight, std=0.02 / math.sqrt(2 * self.config.n_layer))

    def forward(self, tokens: Tensor) -> Tensor:  # [B, S] int64 -> logits [B, S, V]
        pos = torch.arange(tokens.shape[1], device=tokens.device)  # [S]
        x = self.wte(tokens) + self.wpe(pos)  # [B, S, d] + [S, d] -> [B, S, d]
        for block in self.h:
            x = block(x)
        return self.lm_head(self.ln_f(x))
