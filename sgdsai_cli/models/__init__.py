"""Models: configs, one file per family, presets, config.json parsing, block types and the text corpus.

Everything the profiler trains is built here. The native families (gpt2, llama, vit) are nanoGPT
style: one small module per piece, no `transformers`. Any other architecture is transformers' own
class built from its config.json (family ``hf``: ``hf_model``, located by ``hf_source``), and a
user's own ``nn.Module`` comes from a factory (family ``factory``: ``factory``). The native
layouts follow the Hugging Face checkpoints (GPT-2, Llama 2) and timm (ViT) closely enough
that the parameter counts are *exactly* the published ones; each preset carries that count as a
golden number and the tests check the built model against it.

    spec  = resolve_model("llama2-7b")          # a preset name, or a path to an HF config.json
    model = build_model(spec, device="meta")    # meta: shapes only, allocates nothing
    batch = make_batch(spec, batch_size=1, seq_len=512, device="meta")
    loss  = training_loss(spec, model, batch)   # forward + cross-entropy, a scalar

Layout promises other code relies on:

- the repeated blocks are one ``nn.ModuleList`` of identical modules, at
  ``model.h`` (gpt2), ``model.layers`` (llama), ``model.blocks`` (vit);
  ``decoder_layers(model)`` returns it whatever the family;
- no module registers a buffer (causal masking is SDPA's ``is_causal``, RoPE's
  cos/sin are computed on the fly on the input's device), so parameters are the
  whole of a model's memory;
- a tied head is the *same* ``nn.Parameter`` as the token embedding, so
  ``model.parameters()`` yields it once;
- ``block_type(name, family)`` names what each parameter is (embedding, q/k/v,
  MLP, norm, bias, head, ...) for per-block reports such as g-SNR.

Files: ``configs`` (the config records, ModelSpec), ``presets`` (the catalogue), ``gpt2``,
``llama``, ``vit`` (one family each), ``layers`` (what the families share), ``hf_config``
(config.json reading), ``blocks`` (parameter classification), ``build`` (resolve, build, batch,
loss), ``corpus`` (the byte-level text corpus), ``hf_model`` / ``hf_source`` (transformers models and
where their config is), ``native_hf`` (a native model's config.json for transformers), ``factory``
(user factories), ``names`` (what a model name names, torch-free), ``depth`` (model depth and the
same model at another depth), ``checkpointing`` (activation checkpointing of the blocks), ``lora`` (LoRA
adapters through peft, the base frozen).

Importing this package imports none of its modules (so ``models.names`` and ``models.presets`` load without
torch); each name below is imported from its module on first use.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "BLOCK_TYPES": "blocks", "block_type": "blocks",
    "_addressable": "build", "batch_tensors": "build", "build_model": "build", "check_addressable": "build",
    "count_params": "build", "decoder_layers": "build", "make_batch": "build", "max_positions": "build",
    "resolve_model": "build", "trainable_named_parameters": "build", "trainable_parameters": "build",
    "training_loss": "build",
    "FAMILIES": "configs", "FactoryConfig": "configs", "GPT2Config": "configs", "HFConfig": "configs",
    "LlamaConfig": "configs", "ModelSpec": "configs", "ViTConfig": "configs",
    "depth_reducible": "depth", "model_depth": "depth", "with_depth": "depth",
    "check_reimportable": "factory",
    "MAX_LAYERS": "hf_config", "load_config_spec": "hf_config",
    "moe_note": "hf_model", "routing_details": "hf_model",
    "as_transformers": "native_hf",
    "PRESETS": "presets",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'sgdsai_cli.models' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"sgdsai_cli.models.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
