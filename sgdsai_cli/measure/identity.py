"""A model's identity by content: a fingerprint of what it is, and the name it is shown under.

    fingerprint = model_fingerprint(model_spec, model)   # 'a3f1...' (16 hex digits)
    name = display_name(model_spec)                       # 'llama2-7b', 'ci/my-model.json'

The fingerprint is a SHA-256 over a canonical JSON text of

- every parameter's name, shape and dtype, in ``named_parameters()`` order (tied tensors once), and
- the model's config (``job.model_spec_to_dict(spec)["config"]``) less the fields that change no byte
  of memory (``IGNORED_CONFIG_FIELDS``: epsilons, RoPE bases, initialiser scales, token ids, the
  name or path the config was loaded from, the library version that wrote it),

shortened to its first 16 hex digits (64 bits: a collision between two real models is not a
practical concern). Parameter dtypes follow the precision, so the same model in fp32 and bf16 has
two fingerprints; ``check`` compares runs of one precision with each other only.

The display name does not depend on how a path was spelled: ``./ci/x.json``, ``ci//x.json`` and
``ci/x.json`` all show as ``ci/x.json`` (``os.path.normpath``); a preset shows as its name.
"""

from __future__ import annotations

import hashlib
import json
import os

from torch import nn

FINGERPRINT_HEX_DIGITS = 16

# Config fields that change no byte of memory: numerical constants, token ids, provenance.
IGNORED_CONFIG_FIELDS = frozenset({
    "layer_norm_eps", "layer_norm_epsilon", "rms_norm_eps", "norm_eps",
    "rope_theta", "rope_scaling_factor", "initializer_range", "init_std",
    "bos_token_id", "eos_token_id", "pad_token_id", "sep_token_id", "decoder_start_token_id",
    "_name_or_path", "name_or_path", "transformers_version", "_commit_hash",
    "torch_dtype", "dtype", "use_cache", "return_dict", "output_attentions", "output_hidden_states",
})


def config_fields(model_spec) -> dict:
    """The config fields of ``model_spec`` that count for the fingerprint (a JSON-able dict)."""
    from sgdsai_cli.measure.job import model_spec_to_dict

    config = model_spec_to_dict(model_spec).get("config") or {}
    if not isinstance(config, dict):
        config = {"config": config}
    return {k: v for k, v in config.items() if k not in IGNORED_CONFIG_FIELDS}


def model_fingerprint(model_spec, model: nn.Module) -> str:
    """The fingerprint of ``model`` (built from ``model_spec``): see the module docstring."""
    params = [[name, list(p.shape), str(p.dtype).removeprefix("torch.")] for name, p in model.named_parameters()]
    text = json.dumps({"params": params, "config": config_fields(model_spec)}, sort_keys=True,
                      separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:FINGERPRINT_HEX_DIGITS]


def display_name(model_spec, name: str | None = None) -> str:
    """``name`` when given, else the spec's name with its path spelling normalised."""
    if name:
        return name
    return normalise_name(model_spec.name)


def normalise_name(text: str) -> str:
    """``./ci//x.json`` -> ``ci/x.json``; names that are not paths come back unchanged."""
    text = str(text).strip()
    return os.path.normpath(text) if text else text
