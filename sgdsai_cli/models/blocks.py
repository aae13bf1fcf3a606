"""What each parameter is, from its name: the block-type classifier behind per-block reports.

``block_type("h.3.attn.c_attn.weight", "gpt2") == ("attn_qkv", 3)``. Knows the names our builders
give and the Hugging Face checkpoint names (``transformer.h.N...``, ``model.layers.N...``,
``vit.encoder.layer.N...``), so real checkpoints classify too.
"""

from __future__ import annotations

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

# module-name component -> type, by family; the names whose type depends on their parent
# module are decided in _by_parent
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
    },
}


def _by_parent(family: str, parts: list[str], i: int) -> str | None:
    """The type of ``parts[i]`` where it depends on the enclosing modules; None: not such a name."""
    p = parts[i]
    parent = parts[i - 1] if i > 0 else ""
    if family == "gpt2" and p == "c_proj":  # attn.c_proj or mlp.c_proj
        return "mlp_down" if parent == "mlp" else "attn_out"
    if family == "vit" and p in ("proj", "projection"):  # the patch conv, or the attention output
        return "patch_embedding" if parent in ("patch_embed", "patch_embeddings") else "attn_out"
    if family == "vit" and p == "dense":  # HF ViT: attention.output.dense, intermediate.dense, output.dense
        if parent == "intermediate":
            return "mlp_up"
        return "attn_out" if "attention" in parts[:i] else "mlp_down"
    return None


def block_type(param_name: str, spec_family: str) -> tuple[str, int | None]:
    """Classify a parameter name from ``model.named_parameters()``.

    Returns ``(type, layer_index)``: type is one of BLOCK_TYPES (``"unknown"`` for a name this
    function does not know), layer_index the block number or None outside the repeated blocks.
    Biases of linear and conv layers are ``"bias"``; LayerNorm weights and biases are ``"norm"``.
    """
    parts = param_name.split(".")
    layer = next((int(p) for p in parts if p.isdigit()), None)
    # a transformers or factory model: the names of whichever family's layout it follows (most decoders: llama's)
    families = [spec_family] if spec_family in _NAME_TYPES else ["llama", "gpt2", "vit"]
    kind = "unknown"
    for family in families:
        table = _NAME_TYPES[family]
        for i in range(len(parts) - 1, -1, -1):  # innermost known module name wins
            found = table.get(parts[i]) or _by_parent(family, parts, i)
            if found is not None:
                kind = found
                break
        if kind != "unknown":
            break
    if parts[-1] == "bias" and kind not in ("norm", "unknown"):
        kind = "bias"
    return kind, layer
