"""Pieces the model families share: the pre-norm residual block and the weight init.

Each family names its modules as its reference checkpoint does (so parameter names match the
Hugging Face / timm state_dict keys); what they share is the logic, written once here.
"""

from __future__ import annotations

from torch import Tensor, nn


class PreNormBlock(nn.Module):
    """A pre-norm transformer block: ``x + attn(norm_1(x))``, then ``x + mlp(norm_2(x))``.

    A subclass builds its four parts under its checkpoint's attribute names and lists those
    names, in that order, in ``PARTS``.
    """

    PARTS: tuple[str, str, str, str]  # (norm before attention, attention, norm before MLP, MLP)

    def forward(self, x: Tensor) -> Tensor:  # [B, S, D] -> [B, S, D]
        norm_1, attn, norm_2, mlp = (getattr(self, name) for name in self.PARTS)
        x = x + attn(norm_1(x))
        return x + mlp(norm_2(x))


def init_normal_(model: nn.Module, std: float, norms: tuple[type[nn.Module], ...] = (nn.LayerNorm,)) -> None:
    """One vectorised init call per tensor: N(0, std) weights, zero biases, unit norm scales.

    ``norms`` are the normalisation module types of the model (their weight is a scale: ones).
    """
    for m in model.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d, nn.Embedding)):
            nn.init.normal_(m.weight, std=std)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, norms):
            nn.init.ones_(m.weight)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)
