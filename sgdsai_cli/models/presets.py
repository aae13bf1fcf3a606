"""The preset catalogue: one literal table of the models the profiler knows by name.

Small to large within each family. ``params`` is the published count (Hugging Face / timm),
counting a tied embedding once; the tests build each preset on meta and compare exactly.

GPT-2 count, d = n_embd, L = n_layer, V = 50257, P = 1024:
  wte V*d + wpe P*d + L*(12 d^2 + 13 d) + ln_f 2d     (head tied: free)
  per block: ln_1 2d, c_attn 3d^2+3d, c_proj d^2+d, ln_2 2d, c_fc 4d^2+4d, mlp c_proj 4d^2+d
Llama count, h = hidden, f = ffn, kv = h * n_kv_heads / n_heads:
  embed V*h + L*(2 h^2 + 2 h*kv + 3 h*f + 2h) + norm h + lm_head V*h
ViT count, N = (image/patch)^2 patches, f = mlp width, C = 1000 classes:
  conv 3*p*p*h + h, cls h, pos (N+1)*h, L*(4 h^2 + 4h + 2 h*f + f + h + 4h), norm 2h, head h*C + C
"""

from __future__ import annotations

from sgdsai_cli.models.configs import GPT2Config, LlamaConfig, ModelSpec, ViTConfig

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
