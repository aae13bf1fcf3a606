"""ViT in plain PyTorch, in the timm layout but for separate query/key/value projections (as transformers' ViT).

Patch embedding as a strided convolution, a class token and learned position embeddings
(parameters, not buffers), pre-norm blocks with separate q, k, v projections (with bias, as
Hugging Face's ViT: its activation memory under autocast, where a fused qkv keeps fewer input
copies), bidirectional attention, GELU MLP, and a linear head on the class token (no pooler).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sgdsai_cli.models.configs import ViTConfig
from sgdsai_cli.models.layers import PreNormBlock, init_normal_


class ViTAttention(nn.Module):
    """Separate q, k, v projections, as transformers' ViT (under autocast each casts its input: a fused
    qkv would keep one low-precision copy of the input where transformers keeps three)."""

    def __init__(self, cfg: ViTConfig):
        super().__init__()
        self.n_heads = cfg.n_heads
        self.query = nn.Linear(cfg.hidden_size, cfg.hidden_size, bias=cfg.qkv_bias)
        self.key = nn.Linear(cfg.hidden_size, cfg.hidden_size, bias=cfg.qkv_bias)
        self.value = nn.Linear(cfg.hidden_size, cfg.hidden_size, bias=cfg.qkv_bias)
        self.proj = nn.Linear(cfg.hidden_size, cfg.hidden_size)

    def forward(self, x: Tensor) -> Tensor:
        B, N, D = x.shape
        # [B, N, D] -> [B, N, H, Dh] -> [B, H, N, Dh]
        q, k, v = (lin(x).view(B, N, self.n_heads, D // self.n_heads).transpose(1, 2)
                   for lin in (self.query, self.key, self.value))
        y = F.scaled_dot_product_attention(q, k, v)  # [B, H, N, Dh], bidirectional
        return self.proj(y.transpose(1, 2).reshape(B, N, D))  # [B, H, N, Dh] -> [B, N, D]


class ViTMLP(nn.Module):
    def __init__(self, cfg: ViTConfig):
        super().__init__()
        self.fc1 = nn.Linear(cfg.hidden_size, cfg.intermediate_size)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(cfg.intermediate_size, cfg.hidden_size)

    def forward(self, x: Tensor) -> Tensor:  # [B, N, D] -> [B, N, f] -> [B, N, D]
        return self.fc2(self.act(self.fc1(x)))


class ViTBlock(PreNormBlock):
    PARTS = ("norm1", "attn", "norm2", "mlp")

    def __init__(self, cfg: ViTConfig):
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.attn = ViTAttention(cfg)
        self.norm2 = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.mlp = ViTMLP(cfg)


class PatchEmbed(nn.Module):
    def __init__(self, cfg: ViTConfig):
        super().__init__()
        p = cfg.patch_size
        self.proj = nn.Conv2d(cfg.num_channels, cfg.hidden_size, kernel_size=p, stride=p)

    def forward(self, images: Tensor) -> Tensor:
        # [B, C, H, W] -> [B, D, H/p, W/p] -> [B, D, N] -> [B, N, D], N = (H/p)*(W/p)
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

    def init_weights(self) -> None:
        init_normal_(self, std=0.02)
        nn.init.normal_(self.pos_embed, std=0.02)  # timm: trunc_normal_ at +-2 = +-100 std: the same
        nn.init.normal_(self.cls_token, std=1e-6)

    def forward(self, images: Tensor) -> Tensor:  # [B, C, H, W] -> logits [B, num_classes]
        x = self.patch_embed(images.to(self.patch_embed.proj.weight.dtype))  # [B, N, D]
        # prepend the class token: [B, 1, D] + [B, N, D] -> [B, 1 + N, D]
        x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x), dim=1) + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x)[:, 0])  # class token: [B, D] -> [B, num_classes]
