"""GPT-2 in plain PyTorch, in the Hugging Face layout (parameter names match its checkpoints).

nn.Linear stands in for HF's transposed Conv1D: the same parameter counts. Learned position
embeddings (``n_positions`` rows), pre-norm blocks, fused q/k/v, an MLP of width ``n_inner``
(4*d by default), causal attention through SDPA's ``is_causal`` (no mask buffer), and a head
tied to the token embedding by default (the same ``nn.Parameter``, so ``parameters()`` yields it once).

It runs the ops transformers' GPT2LMHeadModel runs, so memory agrees: the activation is the one
config.json names, with ``gelu_new`` written as transformers writes it (five elementwise ops, each
output kept for backward: far more memory than the fused ``gelu_pytorch_tanh``), and dropout
where transformers has it (after the embeddings, SDPA's ``dropout_p`` on the attention weights,
after each output projection). In training a dropout keeps its mask (one byte per element) for
backward; SDPA's dropout is inside the attention kernel.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sgdsai_cli.models.configs import GPT2Config
from sgdsai_cli.models.layers import PreNormBlock, init_normal_


class NewGELU(nn.Module):
    """transformers' ``gelu_new`` (the OpenAI GPT-2 GELU), the same elementwise ops in the same order."""

    def forward(self, x: Tensor) -> Tensor:
        return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))


def activation(name: str) -> nn.Module:
    """The module of a config.json ``activation_function`` (the names hf_config accepts for gpt2)."""
    return {"gelu_new": NewGELU, "gelu_pytorch_tanh": lambda: nn.GELU(approximate="tanh"), "gelu": nn.GELU,
            "relu": nn.ReLU, "silu": nn.SiLU, "swish": nn.SiLU}[name]()


class GPT2Attention(nn.Module):
    def __init__(self, cfg: GPT2Config):
        super().__init__()
        self.n_head = cfg.n_head
        self.attn_pdrop = cfg.attn_pdrop
        self.c_attn = nn.Linear(cfg.n_embd, 3 * cfg.n_embd)  # fused q,k,v: [d] -> [3d]
        self.c_proj = nn.Linear(cfg.n_embd, cfg.n_embd)
        self.resid_dropout = nn.Dropout(cfg.resid_pdrop)

    def forward(self, x: Tensor) -> Tensor:
        B, S, D = x.shape
        q, k, v = self.c_attn(x).split(D, dim=-1)  # [B, S, 3D] -> 3 x [B, S, D]
        # [B, S, D] -> [B, S, H, D/H] -> [B, H, S, D/H]
        q, k, v = (t.view(B, S, self.n_head, D // self.n_head).transpose(1, 2) for t in (q, k, v))
        drop = self.attn_pdrop if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=drop, is_causal=True)  # [B, H, S, D/H]
        return self.resid_dropout(self.c_proj(y.transpose(1, 2).reshape(B, S, D)))  # -> [B, S, D]


class GPT2MLP(nn.Module):
    def __init__(self, cfg: GPT2Config):
        super().__init__()
        inner = cfg.n_inner or 4 * cfg.n_embd
        self.c_fc = nn.Linear(cfg.n_embd, inner)
        self.act = activation(cfg.activation_function)
        self.c_proj = nn.Linear(inner, cfg.n_embd)
        self.dropout = nn.Dropout(cfg.resid_pdrop)

    def forward(self, x: Tensor) -> Tensor:  # [B, S, d] -> [B, S, inner] -> [B, S, d]
        return self.dropout(self.c_proj(self.act(self.c_fc(x))))


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
        self.drop = nn.Dropout(cfg.embd_pdrop)
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
        x = self.drop(self.wte(tokens) + self.wpe(pos))  # [B, S, d] + [S, d] -> [B, S, d]
        for block in self.h:
            x = block(x)
        return self.lm_head(self.ln_f(x))
