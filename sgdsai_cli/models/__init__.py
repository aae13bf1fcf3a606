"""Models: configs, one file per family, presets, config.json parsing, block types and the text corpus."""

from sgdsai_cli.models.core import (  # noqa: F401
    BLOCK_TYPES,
    FAMILIES,
    PRESETS,
    GPT2Config,
    LlamaConfig,
    ModelSpec,
    ViTConfig,
    _addressable,
    block_type,
    build_model,
    count_params,
    decoder_layers,
    make_batch,
    resolve_model,
    training_loss,
)
