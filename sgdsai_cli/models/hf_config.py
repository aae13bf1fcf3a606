"""Reading a Hugging Face style config.json (gpt2, llama, vit) into a ModelSpec, with its input checks.

    spec = load_config_spec("path/to/config.json")   # or the folder that holds it

Every error is a one-line BadInput that starts with the file as given and names the config.json
field at fault (``field`` and ``value`` on the error carry them too). Fields this package does
not model (dropout, activation names, dtypes) are ignored; options that would change the
architecture we build (biases, MLP width, head width) are refused rather than silently dropped.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from sgdsai_cli.errors import BadInput
from sgdsai_cli.files import read_text_bounded
from sgdsai_cli.models.configs import FAMILIES, GPT2Config, LlamaConfig, ModelSpec, ViTConfig

# Layers of a config.json model: every layer is Python objects even on meta (about 65 KB each), so a
# depth of 10**5 would take gigabytes and hours to size; real models have at most a few hundred.
MAX_LAYERS = 1024
# A config.json is a few KB; one far larger is not one (and is not parsed).
MAX_CONFIG_BYTES = 16 * 1024 * 1024


def load_config_spec(where: str) -> ModelSpec:
    """The ModelSpec of the config.json at `where` (a directory means its config.json)."""
    path = Path(where)
    if os.path.isdir(path):
        path = path / "config.json"
        where = str(path)
    hf = _read_json_object(path, where)
    model_type = hf.get("model_type")
    if model_type is None:
        raise BadInput(f"{where}: field 'model_type' is missing", field="model_type")
    if model_type not in FAMILIES:
        raise BadInput(
            f"{where}: model_type {model_type!r} is not supported (choose from: {', '.join(FAMILIES)})",
            field="model_type", value=model_type,
        )
    cfg = _CONFIG_READERS[model_type](_Fields(hf, where))
    _validate(cfg, where)
    return ModelSpec(name=where, family=model_type, config=cfg, params=None)


def _read_json_object(path: Path, where: str) -> dict:
    """The JSON object in the file at ``path`` (shown as ``where``): a regular file of at most
    MAX_CONFIG_BYTES, checked before it is opened, so a FIFO or a device is refused, never read."""
    try:
        raw = read_text_bounded(where, MAX_CONFIG_BYTES)
    except BadInput as e:  # '<where>: no such file', ': not a regular file (it is a FIFO)', ...
        raise BadInput(str(e), value=where) from None
    try:
        hf = json.loads(raw)
    except json.JSONDecodeError as e:
        raise BadInput(f"{where}: invalid JSON ({e.msg} at line {e.lineno} column {e.colno})", value=where) from None
    except RecursionError:
        raise BadInput(f"{where}: invalid JSON (nested too deeply)", value=where) from None
    if not isinstance(hf, dict):
        raise BadInput(f"{where}: expected a JSON object, got {type(hf).__name__}", value=where)
    return hf


class _Fields:
    """Typed access to one config.json's fields; every error names the file and the field."""

    def __init__(self, hf: dict, where: str):
        self.hf, self.where = hf, where

    def bad(self, field: str, what: str) -> BadInput:
        return BadInput(f"{self.where}: field '{field}' {what}", field=field, value=self.hf.get(field))

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


def _vit_num_classes(f: _Fields) -> int:
    """num_labels, else the size of id2label, else ImageNet's 1000."""
    if f.hf.get("num_labels") is not None:
        return f.int("num_labels")
    id2label = f.hf.get("id2label")
    if id2label is None:
        return 1000
    if not isinstance(id2label, dict) or not id2label:
        raise f.bad("id2label", "must be a non-empty object")
    return len(id2label)


def _vit_from_hf(f: _Fields) -> ViTConfig:
    f.unsupported_if("qkv_bias", not f.bool("qkv_bias", True), "qkv_bias=false")
    return ViTConfig(
        image_size=f.int("image_size"),
        patch_size=f.int("patch_size"),
        hidden_size=f.int("hidden_size"),
        n_layers=f.int("num_hidden_layers", maximum=MAX_LAYERS),
        n_heads=f.int("num_attention_heads"),
        intermediate_size=f.int("intermediate_size"),
        num_classes=_vit_num_classes(f),
        num_channels=f.int("num_channels", 3),
        layer_norm_eps=f.float("layer_norm_eps", 1e-12),
    )


_CONFIG_READERS = {"gpt2": _gpt2_from_hf, "llama": _llama_from_hf, "vit": _vit_from_hf}


def _divisible(field: str, value: int, by_field: str, by: int) -> tuple[bool, str, int, str]:
    return value % by == 0, field, value, f"field '{field}' ({value}) must be divisible by '{by_field}' ({by})"


def _shape_rules(cfg) -> list[tuple[bool, str, int, str]]:
    """(holds, field, value, message) for each shape rule of `cfg`, in the HF field names of config.json."""
    if isinstance(cfg, GPT2Config):
        return [_divisible("n_embd", cfg.n_embd, "n_head", cfg.n_head)]
    if isinstance(cfg, LlamaConfig):
        return [
            _divisible("hidden_size", cfg.hidden_size, "num_attention_heads", cfg.n_heads),
            _divisible("num_attention_heads", cfg.n_heads, "num_key_value_heads", cfg.n_kv_heads),
            ((cfg.hidden_size // cfg.n_heads) % 2 == 0, "hidden_size", cfg.hidden_size,
             f"field 'hidden_size' ({cfg.hidden_size}) / 'num_attention_heads' must be even for RoPE"),
        ]
    return [
        _divisible("hidden_size", cfg.hidden_size, "num_attention_heads", cfg.n_heads),
        _divisible("image_size", cfg.image_size, "patch_size", cfg.patch_size),
    ]


def _validate(cfg: GPT2Config | LlamaConfig | ViTConfig, where: str) -> None:
    """BadInput for the first shape rule `cfg` breaks."""
    for holds, field, value, message in _shape_rules(cfg):
        if not holds:
            raise BadInput(f"{where}: {message}", field=field, value=value)
