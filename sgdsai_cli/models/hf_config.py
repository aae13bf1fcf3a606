"""Reading a config.json into a ModelSpec: our builders where they model all of it, else transformers.

    spec = load_config_spec("path/to/config.json")   # or the folder that holds it, or a cached hub id

Routing: ``model_type`` gpt2, llama or vit goes to our own builder only when that builder models
every field of the file that changes memory (activation, dropout, biases, head width, MLP width,
tied head, labels); anything else (another ``model_type``, a field the native builder does not
model, such as ``rope_scaling``, ``sliding_window`` or ``scale_attn_by_inverse_layer_idx``) is
built by transformers itself (family ``hf``, ``models.hf_model``). Without transformers installed
such a config is an EnvironmentUnavailable naming the field and ``pip install 'sgdsai[hf]'``:
a field is never dropped silently.

Every error is a one-line BadInput that starts with the file as given and names the config.json
field at fault (``field`` and ``value`` on the error carry them too).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from sgdsai_cli.errors import BadInput, EnvironmentUnavailable
from sgdsai_cli.files import parse_json, read_text_bounded
from sgdsai_cli.models.configs import NATIVE_FAMILIES, GPT2Config, LlamaConfig, ModelSpec, ViTConfig
from sgdsai_cli.models.hf_source import locate_config

# Layers of a config.json model: every layer is Python objects even on meta (about 65 KB each), so a
# depth of 10**5 would take gigabytes and hours to size; real models have at most a few hundred.
MAX_LAYERS = 1024
# A config.json is a few KB; one far larger is not one (and is not parsed).
MAX_CONFIG_BYTES = 16 * 1024 * 1024
# fields that change nothing a training step holds in memory (token ids, init, bookkeeping)
_NO_MEMORY_EFFECT = frozenset({
    "architectures", "model_type", "torch_dtype", "dtype", "transformers_version", "bos_token_id",
    "eos_token_id", "pad_token_id", "sep_token_id", "decoder_start_token_id", "initializer_range", "use_cache",
    "_name_or_path", "tokenizer_class", "task_specific_params", "id2label", "label2id", "num_labels",
    "output_attentions", "output_hidden_states", "return_dict", "torchscript", "finetuning_task", "prefix",
    "problem_type", "is_encoder_decoder", "chunk_size_feed_forward", "tie_encoder_decoder", "is_decoder",
    "add_cross_attention", "cross_attention_hidden_size", "max_length", "min_length", "do_sample",
    "num_beams", "temperature", "top_k", "top_p", "repetition_penalty", "length_penalty", "early_stopping",
    "no_repeat_ngram_size", "bad_words_ids", "num_return_sequences", "pruned_heads",
})
_GPT2_ACTIVATIONS = ("gelu_new", "gelu_pytorch_tanh", "gelu", "relu", "silu", "swish")


class NeedsTransformers(Exception):
    """A config field the native builder does not model: the model is built by transformers."""

    def __init__(self, field: str, what: str):
        super().__init__(f"field '{field}' {what}")
        self.field = field


def read_config(where: str) -> tuple[str, dict]:
    """(the name to show, its JSON object) for a file, a folder (``folder/config.json``) or a cached hub id
    (the id itself: the cache path differs between machines)."""
    path = locate_config(str(where))
    shown = str(where) if path != str(where) and not os.path.isdir(str(where)) else path
    return shown, _read_json_object(Path(path), shown)


def load_config_spec(where: str, attn_implementation: str | None = None) -> ModelSpec:
    """The ModelSpec of the config.json at `where` (a directory means its config.json; a hub id its cached file)."""
    where, hf = read_config(where)
    model_type = hf.get("model_type")
    if model_type is None:
        raise BadInput(f"{where}: field 'model_type' is missing", field="model_type")
    if not isinstance(model_type, str):
        raise BadInput(f"{where}: field 'model_type' must be a string", field="model_type", value=model_type)
    reason = None
    if model_type in NATIVE_FAMILIES and attn_implementation in (None, "sdpa"):
        try:
            cfg = _CONFIG_READERS[model_type](_Fields(hf, where))
        except NeedsTransformers as e:
            reason = e
        else:
            _validate(cfg, where)
            return ModelSpec(name=where, family=model_type, config=cfg, params=None)
    from sgdsai_cli.models.hf_model import hf_spec

    try:
        return hf_spec(hf, where, attn_implementation)
    except EnvironmentUnavailable:
        if reason is not None:
            raise EnvironmentUnavailable(
                f"{where}: {reason}: the native {model_type} builder does not model it; transformers builds it: "
                "pip install 'sgdsai[hf]'", field=reason.field, value=hf.get(reason.field)) from None
        raise EnvironmentUnavailable(
            f"{where}: model_type {model_type!r} is built by transformers: pip install 'sgdsai[hf]'",
            field="model_type", value=model_type) from None


def _read_json_object(path: Path, where: str) -> dict:
    """The JSON object in the file at ``path`` (shown as ``where``): a regular file of at most
    MAX_CONFIG_BYTES, checked before it is opened, so a FIFO or a device is refused, never read."""
    try:
        raw = read_text_bounded(str(path), MAX_CONFIG_BYTES)
    except BadInput as e:  # '<where>: no such file', ': not a regular file (it is a FIFO)', ...
        raise BadInput(str(e).replace(str(path), where, 1), value=where) from None
    hf = parse_json(raw, where)
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


def _known_fields(f: _Fields, modelled: set[str]) -> None:
    """NeedsTransformers for the first field that is neither modelled nor without memory effect."""
    for key in f.hf:
        if key not in modelled and key not in _NO_MEMORY_EFFECT:
            raise NeedsTransformers(key, "is not modelled by the native builder")


def _architecture(f: _Fields, native: str) -> None:
    archs = f.hf.get("architectures")
    if archs is not None and archs != [native]:
        raise NeedsTransformers("architectures", f"names {json.dumps(archs)}, not {native}")


def _needs_if(f: _Fields, field: str, bad: bool, what: str) -> None:
    if bad:
        raise NeedsTransformers(field, f"{what} ({json.dumps(f.hf.get(field))})")


def _probability(f: _Fields, field: str, default: float) -> float:
    v = f.hf.get(field)
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v < 1:
        raise f.bad(field, f"must be a probability in [0, 1), got {json.dumps(v)}")
    return float(v)


def _gpt2_from_hf(f: _Fields) -> GPT2Config:
    _known_fields(f, {
        "vocab_size", "n_positions", "n_ctx", "n_embd", "n_layer", "n_head", "n_inner", "activation_function",
        "resid_pdrop", "embd_pdrop", "attn_pdrop", "layer_norm_epsilon", "tie_word_embeddings",
        "summary_type", "summary_use_proj", "summary_activation", "summary_proj_to_labels", "summary_first_dropout",
        "scale_attn_weights", "scale_attn_by_inverse_layer_idx", "reorder_and_upcast_attn"})
    _architecture(f, "GPT2LMHeadModel")
    act = f.hf.get("activation_function", "gelu_new")
    _needs_if(f, "activation_function", act not in _GPT2_ACTIVATIONS, "an activation other than "
              + "/".join(_GPT2_ACTIVATIONS))
    for flag, default in (("scale_attn_by_inverse_layer_idx", False), ("reorder_and_upcast_attn", False),
                          ("scale_attn_weights", True)):
        _needs_if(f, flag, f.bool(flag, default) != default, f"{flag}={str(not default).lower()}")
    return GPT2Config(
        vocab_size=f.int("vocab_size"),
        n_positions=f.int("n_positions"),
        n_embd=f.int("n_embd"),
        n_layer=f.int("n_layer", maximum=MAX_LAYERS),
        n_head=f.int("n_head"),
        layer_norm_eps=f.float("layer_norm_epsilon", 1e-5),
        tie_word_embeddings=f.bool("tie_word_embeddings", True),
        n_inner=f.int("n_inner") if f.hf.get("n_inner") is not None else None,
        activation_function=act,
        embd_pdrop=_probability(f, "embd_pdrop", 0.1),
        attn_pdrop=_probability(f, "attn_pdrop", 0.1),
        resid_pdrop=_probability(f, "resid_pdrop", 0.1),
    )


def _llama_from_hf(f: _Fields) -> LlamaConfig:
    _known_fields(f, {
        "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
        "num_key_value_heads", "head_dim", "max_position_embeddings", "rms_norm_eps", "tie_word_embeddings",
        "rope_theta", "rope_scaling", "rope_parameters", "attention_bias", "mlp_bias", "hidden_act",
        "attention_dropout", "pretraining_tp"})
    _architecture(f, "LlamaForCausalLM")
    _needs_if(f, "hidden_act", f.hf.get("hidden_act", "silu") != "silu", "an activation other than silu")
    _needs_if(f, "attention_dropout", _probability(f, "attention_dropout", 0.0) != 0, "attention dropout")
    _needs_if(f, "pretraining_tp", f.hf.get("pretraining_tp", 1) != 1, "pretraining_tp other than 1")
    _needs_if(f, "rope_scaling", f.hf.get("rope_scaling") is not None, "RoPE scaling")
    rope = f.hf.get("rope_parameters")
    _needs_if(f, "rope_parameters", rope is not None and (not isinstance(rope, dict)
              or rope.get("rope_type", "default") != "default" or set(rope) - {"rope_type", "rope_theta"}),
              "RoPE parameters other than the default")
    theta = rope.get("rope_theta") if isinstance(rope, dict) and rope.get("rope_theta") is not None else None
    hidden, heads = f.int("hidden_size"), f.int("num_attention_heads")
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
        rope_theta=float(theta) if theta is not None else f.float("rope_theta", 10000.0),
        head_dim=f.int("head_dim") if f.hf.get("head_dim") is not None else None,
        attention_bias=f.bool("attention_bias", False),
        mlp_bias=f.bool("mlp_bias", False),
    )


def _vit_num_classes(f: _Fields) -> int:
    """num_labels, else the size of id2label, else 2 (transformers' default)."""
    if f.hf.get("num_labels") is not None:
        return f.int("num_labels")
    id2label = f.hf.get("id2label")
    if id2label is None:
        return 2
    if not isinstance(id2label, dict) or not id2label:
        raise f.bad("id2label", "must be a non-empty object")
    return len(id2label)


def _vit_from_hf(f: _Fields) -> ViTConfig:
    _known_fields(f, {
        "image_size", "patch_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
        "num_channels", "layer_norm_eps", "qkv_bias", "hidden_act", "hidden_dropout_prob",
        "attention_probs_dropout_prob", "encoder_stride", "pooler_output_size", "pooler_act"})
    _architecture(f, "ViTForImageClassification")
    _needs_if(f, "hidden_act", f.hf.get("hidden_act", "gelu") != "gelu", "an activation other than gelu")
    for field in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
        _needs_if(f, field, _probability(f, field, 0.0) != 0, "dropout")
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
        qkv_bias=f.bool("qkv_bias", True),
    )


_CONFIG_READERS = {"gpt2": _gpt2_from_hf, "llama": _llama_from_hf, "vit": _vit_from_hf}


def _divisible(field: str, value: int, by_field: str, by: int) -> tuple[bool, str, int, str]:
    return value % by == 0, field, value, f"field '{field}' ({value}) must be divisible by '{by_field}' ({by})"


def _shape_rules(cfg) -> list[tuple[bool, str, int, str]]:
    """(holds, field, value, message) for each shape rule of `cfg`, in the HF field names of config.json."""
    if isinstance(cfg, GPT2Config):
        return [_divisible("n_embd", cfg.n_embd, "n_head", cfg.n_head)]
    if isinstance(cfg, LlamaConfig):
        rules = []
        if cfg.head_dim is None:
            rules.append(_divisible("hidden_size", cfg.hidden_size, "num_attention_heads", cfg.n_heads))
        rules.append(_divisible("num_attention_heads", cfg.n_heads, "num_key_value_heads", cfg.n_kv_heads))
        if cfg.head_dim is None:
            rules.append(((cfg.hidden_size // cfg.n_heads) % 2 == 0, "hidden_size", cfg.hidden_size,
                          f"field 'hidden_size' ({cfg.hidden_size}) / 'num_attention_heads' must be even for RoPE"))
        else:
            rules.append((cfg.head_dim % 2 == 0, "head_dim", cfg.head_dim,
                          f"field 'head_dim' ({cfg.head_dim}) must be even for RoPE"))
        return rules
    return [
        _divisible("hidden_size", cfg.hidden_size, "num_attention_heads", cfg.n_heads),
        _divisible("image_size", cfg.image_size, "patch_size", cfg.patch_size),
    ]


def _validate(cfg: GPT2Config | LlamaConfig | ViTConfig, where: str) -> None:
    """BadInput for the first shape rule `cfg` breaks."""
    for holds, field, value, message in _shape_rules(cfg):
        if not holds:
            raise BadInput(f"{where}: {message}", field=field, value=value)
