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
(user factories), ``depth`` (model depth and the same model at another depth), ``checkpointing`` (activation
checkpointing of the blocks), ``lora`` (LoRA adapters through peft, the base frozen).
"""

from sgdsai_cli.models.blocks import BLOCK_TYPES, block_type
from sgdsai_cli.models.build import (
    _addressable,
    batch_tensors,
    build_model,
    check_addressable,
    count_params,
    decoder_layers,
    make_batch,
    max_positions,
    resolve_model,
    trainable_parameters,
    training_loss,
)
from sgdsai_cli.models.configs import (
    FAMILIES,
    FactoryConfig,
    GPT2Config,
    HFConfig,
    LlamaConfig,
    ModelSpec,
    ViTConfig,
)
from sgdsai_cli.models.depth import depth_reducible, model_depth, with_depth
from sgdsai_cli.models.factory import check_reimportable
from sgdsai_cli.models.hf_config import MAX_LAYERS, load_config_spec
from sgdsai_cli.models.hf_model import moe_note, routing_details
from sgdsai_cli.models.native_hf import as_transformers
from sgdsai_cli.models.presets import PRESETS

__all__ = [
    "BLOCK_TYPES",
    "as_transformers",
    "batch_tensors",
    "FAMILIES",
    "MAX_LAYERS",
    "FactoryConfig",
    "HFConfig",
    "PRESETS",
    "GPT2Config",
    "LlamaConfig",
    "ModelSpec",
    "ViTConfig",
    "_addressable",
    "block_type",
    "build_model",
    "check_addressable",
    "check_reimportable",
    "depth_reducible",
    "count_params",
    "decoder_layers",
    "load_config_spec",
    "make_batch",
    "max_positions",
    "model_depth",
    "moe_note",
    "resolve_model",
    "routing_details",
    "trainable_parameters",
    "training_loss",
    "with_depth",
]
