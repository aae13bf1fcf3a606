"""How deep a model is, the same model at another depth, and whether its blocks are all alike.

The estimate traces a deep model at a few blocks and extends the timeline (``measure.estimate``);
that is exact only when every block is the same module running the same ops. Native families
always are. A transformers model is when its blocks have one signature (``build.layer_signature``:
module types, tensor names, shapes and dtypes, attention type, sliding window) and every per-layer
list of its config (``layer_types``, ...) holds one value; otherwise (Gemma-2 sliding/global
alternation, MoE every other layer, ...) it is traced at full depth. A factory model cannot be
rebuilt at another depth: it is always traced whole.
"""

from __future__ import annotations

import dataclasses
import functools

from sgdsai_cli.models.configs import ModelSpec


def _layers_field(config) -> str:
    return "n_layer" if hasattr(config, "n_layer") else "n_layers"


@functools.lru_cache(maxsize=64)
def model_depth(spec: ModelSpec) -> int:
    """Repeated blocks of the model (a factory's: those of its largest ModuleList, built on meta)."""
    from sgdsai_cli.models import hf_model
    from sgdsai_cli.models.build import build_model, decoder_layers

    if spec.family == "hf" and hf_model.hf_depth(spec) is not None:
        return hf_model.hf_depth(spec)
    if spec.family in ("hf", "factory"):
        return len(decoder_layers(build_model(spec, device="meta")))
    return getattr(spec.config, _layers_field(spec.config))


@functools.lru_cache(maxsize=64)
def depth_reducible(spec: ModelSpec) -> bool:
    """True when the model may be traced at fewer blocks and extended exactly (see the module docstring)."""
    from sgdsai_cli.models import hf_model
    from sgdsai_cli.models.build import build_model, decoder_layers, layer_signature

    if spec.family == "factory" or spec.checkpointing.startswith("every="):  # blocks differ: some recompute
        return False
    if spec.family != "hf":
        return True
    if hf_model.hf_depth(spec) is None:  # no top-level layer count to rebuild it with
        return False
    if any(len(set(map(repr, v))) > 1 for v in hf_model.per_layer_lists(spec).values()):
        return False
    layers = decoder_layers(build_model(spec, device="meta"))
    if len(layers) != model_depth(spec):
        return False
    first = layer_signature(layers[0]) if len(layers) else None
    return all(layer_signature(layer) == first for layer in layers)


def with_depth(spec: ModelSpec, depth: int) -> ModelSpec:
    """The same model with ``depth`` repeated blocks (everything else unchanged)."""
    from sgdsai_cli.models import hf_model

    if spec.family == "hf":
        return hf_model.hf_with_depth(spec, depth)
    if spec.family == "factory":
        raise ValueError("a factory model cannot be rebuilt at another depth")
    cfg = dataclasses.replace(spec.config, **{_layers_field(spec.config): depth})
    return dataclasses.replace(spec, config=cfg, params=None)
