"""Any transformers architecture: build it from its config, give it its real batch, take its own loss.

    spec  = hf_spec(config_dict, name="mistral/config.json")    # family "hf"
    model = build_hf(spec, device="meta", dtype=torch.bfloat16)  # AutoConfig + the class of `architectures`
    batch = hf_batch(spec, 2, 512, "meta")                       # (input_ids, labels) or (pixel_values, labels)
    loss  = hf_loss(spec, model, batch)                          # model(**batch).loss

transformers is imported here only, lazily (the optional extra ``sgdsai[hf]``); without it every
entry point is an ``EnvironmentUnavailable`` naming the extra. The model is transformers' own
class built by ``_from_config`` under ``torch.device(device)`` in the requested dtype, so a meta
or fake-tensor build allocates nothing and a real one is initialised by transformers' own init.

Mixture-of-experts layers run through transformers' ``grouped_mm`` experts implementation (its
default for the models that have one): the tokens' (token, expert) rows are sorted by expert and
multiplied in one grouped GEMM, so every tensor's shape is ``tokens * top_k`` rows whatever the
router picks. The activation estimate is therefore exact for any routing (no even-split
assumption is needed); see ``moe_note``.
"""

from __future__ import annotations

import functools
import json

import torch
from torch import Tensor, nn

from sgdsai_cli.errors import BadInput, EnvironmentUnavailable, did_you_mean, first_line
from sgdsai_cli.models.configs import HFConfig, ModelSpec, canonical_json

HF_EXTRA = "pip install 'sgdsai[hf]'"
ATTN_IMPLEMENTATIONS = ("sdpa", "eager", "flash_attention_2")
# the class built when config.json names no `architectures`, by what the config looks like
_TEXT_DEFAULT, _VISION_DEFAULT = "AutoModelForCausalLM", "AutoModelForImageClassification"
_LM_SUFFIXES = ("ForCausalLM", "LMHeadModel", "ForMaskedLM", "ForConditionalGeneration")


def require_transformers(what: str):
    """The transformers module, or EnvironmentUnavailable naming the extra."""
    try:
        import transformers
    except ImportError:
        raise EnvironmentUnavailable(f"{what} needs transformers: {HF_EXTRA}") from None
    return transformers


def hf_spec(config: dict, name: str, attn_implementation: str | None = None) -> ModelSpec:
    """The spec of the transformers model of ``config`` (a config.json object) shown as ``name``."""
    require_transformers(f"model '{name}'")
    attn = attn_implementation or "sdpa"
    if attn not in ATTN_IMPLEMENTATIONS:
        raise BadInput(f"unknown attn_implementation '{attn}' (choose from: {', '.join(ATTN_IMPLEMENTATIONS)})",
                       field="attn_implementation", value=attn)
    archs = config.get("architectures")
    if archs is not None and (not isinstance(archs, list) or not archs or not isinstance(archs[0], str)):
        raise BadInput(f"{name}: field 'architectures' must be a non-empty list of class names",
                       field="architectures", value=archs)
    cls = archs[0] if archs else (_VISION_DEFAULT if "image_size" in config else _TEXT_DEFAULT)
    spec = ModelSpec(name=name, family="hf", config=HFConfig(canonical_json(config), cls, attn), params=None)
    try:  # an unknown model_type or class, a bad field: refused now, not at build time
        config = auto_config(spec.config)
        model_cls = _model_class(spec.config)
        wanted = getattr(model_cls, "config_class", None)
        if isinstance(wanted, type) and not isinstance(config, wanted):
            raise BadInput(f"field 'architectures' names {cls}, a {getattr(wanted, 'model_type', '?')} model, but "
                           f"model_type is {config.model_type!r}", field="architectures", value=cls)
    except BadInput as e:
        raise BadInput(f"{name}: {e}", field=e.field, value=e.value) from None
    return spec


@functools.lru_cache(maxsize=32)
def auto_config(cfg: HFConfig):
    """transformers' config object of ``cfg`` (AutoConfig.for_model); cached, treat as read-only."""
    transformers = require_transformers("a transformers model")
    d = cfg.config_dict
    model_type = d.pop("model_type", None)
    if not isinstance(model_type, str):
        raise BadInput("field 'model_type' is missing", field="model_type")
    from transformers import CONFIG_MAPPING

    if model_type not in CONFIG_MAPPING:
        raise BadInput(f"model_type {model_type!r} is not known to transformers {transformers.__version__}"
                       + did_you_mean(model_type, list(CONFIG_MAPPING.keys()))[:200], field="model_type",
                       value=model_type)
    try:
        return transformers.AutoConfig.for_model(model_type, **d)
    except Exception as e:  # transformers and huggingface_hub validation errors of every kind: the config is bad
        raise BadInput(f"transformers refuses this config ({model_type}): {_first_line(e)}", field="model_type",
                       value=model_type) from None


def _first_line(e: BaseException, limit: int = 300) -> str:
    text = first_line(e) or type(e).__name__
    return text if len(text) <= limit else text[:limit] + "..."


def _model_class(cfg: HFConfig):
    transformers = require_transformers("a transformers model")
    cls = getattr(transformers, cfg.model_class, None)
    if cls is None or not isinstance(cls, type):
        raise BadInput(f"transformers {transformers.__version__} has no model class '{cfg.model_class}'",
                       field="architectures", value=cfg.model_class)
    return cls


def build_hf(spec: ModelSpec, device, dtype: torch.dtype) -> nn.Module:
    """transformers' model of ``spec`` on ``device`` in ``dtype``, in train mode."""
    import contextlib
    import copy

    cfg = spec.config
    config = copy.deepcopy(auto_config(cfg))  # transformers writes dtype and attention choices into it
    cls = _model_class(cfg)

    from transformers.initialization import no_init_weights

    # meta and fake tensors have no values to initialise (and a truncated normal reads values)
    shapes_only = torch.device(device).type == "meta" or \
        torch._C._get_dispatch_mode(torch._C._TorchDispatchModeKey.FAKE) is not None
    try:
        with torch.device(device), (no_init_weights() if shapes_only else contextlib.nullcontext()):
            if cls.__name__.startswith("AutoModel"):
                model = cls.from_config(config, dtype=dtype, attn_implementation=cfg.attn_implementation)
            else:
                model = cls._from_config(config, dtype=dtype, attn_implementation=cfg.attn_implementation)
    except (ValueError, ImportError) as e:  # an attention implementation this model or machine cannot run
        raise BadInput(f"transformers refuses attn_implementation '{cfg.attn_implementation}' for "
                       f"{cls.__name__}: {_first_line(e)}", field="attn_implementation",
                       value=cfg.attn_implementation) from None
    if shapes_only:  # no_init_weights also skips the tying that init_weights does: tie as from_pretrained does
        model.tie_weights()
    return model.train()


def _kind(spec: ModelSpec) -> str:
    """'lm' (token labels), 'seq' (one label per sequence) or 'image' (pixel values, one label each)."""
    name = spec.config.model_class
    if name.endswith("ForImageClassification"):
        return "image"
    if name.endswith("ForSequenceClassification"):
        return "seq"
    if name.endswith(_LM_SUFFIXES):
        return "lm"
    raise BadInput(f"no training batch for {name} (causal/masked LM, sequence or image classification are built "
                   "in); profile it as your own module with a batch() function", field="model", value=name)


def is_image_model(spec: ModelSpec) -> bool:
    return _kind(spec) == "image"


def hf_max_positions(spec: ModelSpec) -> int | None:
    """The context of a text model (``max_position_embeddings``); None for image models."""
    if is_image_model(spec):
        return None
    return getattr(auto_config(spec.config), "max_position_embeddings", None)


def hf_batch(spec: ModelSpec, batch_size: int, seq_len: int, device, generator=None) -> tuple[Tensor, Tensor]:
    """The model's real batch: ``(input_ids [B, S], labels)`` or ``(pixel_values [B, C, H, W], labels [B])``.

    Causal LM labels are a copy of the input ids (transformers shifts them inside its loss, as a data
    collator's ``labels = input_ids.clone()``); classification labels are in ``[0, num_labels)``.
    """
    from sgdsai_cli.models.build import check_addressable

    config = auto_config(spec.config)
    device = torch.device(device)
    gdev = generator.device if generator is not None else torch.device("cpu")
    kind = _kind(spec)
    labels_shape = (batch_size,) if kind in ("seq", "image") else (batch_size, seq_len)
    if kind == "image":
        size, channels = _pair(config.image_size), config.num_channels
        shape = (batch_size, channels, *size)
        check_addressable(f"a batch of {batch_size} images of {channels} x {size[0]} x {size[1]}", shape)
        if device.type == "meta":
            return torch.empty(shape, device=device), torch.empty(labels_shape, dtype=torch.long, device=device)
        images = torch.randn(shape, generator=generator, device=gdev)
        labels = torch.randint(0, config.num_labels, labels_shape, generator=generator, device=gdev)
        return images.to(device), labels.to(device)
    shape = (batch_size, seq_len)
    positions = getattr(config, "n_positions", None)  # a learned position table (gpt2-style): a hard limit
    if isinstance(positions, int) and seq_len > positions:
        raise BadInput(f"seq_len {seq_len} is longer than {spec.name}'s {positions} positions", field="seq_len",
                       value=seq_len)
    check_addressable(f"a batch of {batch_size} x {seq_len} tokens", shape)
    if device.type == "meta":
        return (torch.empty(shape, dtype=torch.long, device=device),
                torch.empty(labels_shape, dtype=torch.long, device=device))
    ids = torch.randint(0, config.vocab_size, shape, generator=generator, device=gdev)
    if kind == "lm":
        return ids.to(device), ids.clone().to(device)
    labels = torch.randint(0, config.num_labels, labels_shape, generator=generator, device=gdev)
    return ids.to(device), labels.to(device)


def _pair(size) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def hf_loss(spec: ModelSpec, model: nn.Module, batch: tuple[Tensor, Tensor]) -> Tensor:
    """transformers' own training loss: ``model(**batch).loss`` (no KV cache: a training step)."""
    inputs, labels = batch
    if _kind(spec) == "image":
        return model(pixel_values=inputs, labels=labels).loss
    _check_fake_experts(spec, model, inputs)
    with _one_sequence_per_row(inputs):
        return model(input_ids=inputs, labels=labels, use_cache=False).loss


def _check_fake_experts(spec: ModelSpec, model: nn.Module, inputs: Tensor) -> None:
    """Over fake tensors, MoE experts need bf16 weights: torch's fake grouped_mm kernel takes bf16 only."""
    from torch._subclasses.fake_tensor import is_fake

    if not is_fake(inputs) or moe_note(spec) is None:
        return
    if (getattr(auto_config(spec.config), "_experts_implementation", None) or "grouped_mm") != "grouped_mm":
        return
    dtype = next((p.dtype for p in model.parameters() if p.ndim == 3), torch.bfloat16)  # the stacked experts
    if dtype != torch.bfloat16:
        raise RuntimeError(f"the MoE estimate needs bf16 expert weights (torch's fake grouped_mm kernel takes bf16 "
                           f"only, these are {str(dtype).removeprefix('torch.')}): use --precision bf16")


class _one_sequence_per_row:
    """Over fake tensors, tell transformers' mask builder what a real run of this batch finds.

    With no attention mask, transformers looks for packed sequences in the position ids and, on real
    tensors, finds none here (positions 0..S-1 in every row) and lets SDPA run ``is_causal`` with no
    mask. A fake tensor has no values, so it assumes packing and builds a [B, 1, S, S] mask (and,
    for grouped-query attention, copies k/v to every head): memory the real step never holds. For
    the duration of a fake forward, the lookup answers as on the real batch (no packing).
    """

    def __init__(self, inputs: Tensor):
        from torch._subclasses.fake_tensor import is_fake

        self.fake = is_fake(inputs)
        self.saved = None

    def __enter__(self):
        if self.fake:
            from transformers import masking_utils

            self.saved = masking_utils.find_packed_sequence_indices
            masking_utils.find_packed_sequence_indices = lambda position_ids: None
        return self

    def __exit__(self, *exc):
        if self.saved is not None:
            from transformers import masking_utils

            masking_utils.find_packed_sequence_indices = self.saved
        return False


def hf_model_type(spec: ModelSpec) -> str:
    """config.json's ``model_type`` (``llama``, ``mistral``, ...): what peft keys its default LoRA targets on."""
    return str(spec.config.config_dict.get("model_type", ""))


def hf_depth(spec: ModelSpec) -> int | None:
    """``num_hidden_layers`` of the config; None when it has none at the top (a composite model's sub-configs)."""
    layers = getattr(auto_config(spec.config), "num_hidden_layers", None)
    return layers if isinstance(layers, int) else None


def hf_with_depth(spec: ModelSpec, depth: int) -> ModelSpec:
    """The same model with ``depth`` blocks: the layer count set, per-layer lists cut to ``depth``."""
    config = auto_config(spec.config)
    layers = int(config.num_hidden_layers)
    d = spec.config.config_dict
    key = next((k for k in ("num_hidden_layers", config.attribute_map.get("num_hidden_layers")) if k in d),
               "num_hidden_layers")
    d[key] = depth
    for k, v in list(d.items()):
        if isinstance(v, list) and len(v) == layers and k != "architectures":
            d[k] = v[:depth]
    cfg = HFConfig(canonical_json(d), spec.config.model_class, spec.config.attn_implementation)
    return ModelSpec(spec.name, spec.family, cfg, None)


def per_layer_lists(spec: ModelSpec) -> dict[str, list]:
    """The config's attributes that are one entry per layer (``layer_types``, ...), as transformers resolved them."""
    config = auto_config(spec.config)
    layers = hf_depth(spec)
    out = {}
    for k, v in vars(config).items():
        if isinstance(v, (list, tuple)) and len(v) == layers and k != "architectures":
            out[k] = list(v)
    return out


def moe_note(spec: ModelSpec) -> str | None:
    """What a result says about expert routing (None for a dense model)."""
    config = auto_config(spec.config)
    experts = next((getattr(config, k) for k in ("num_local_experts", "num_experts", "n_routed_experts")
                    if isinstance(getattr(config, k, None), int)), None)
    top_k = getattr(config, "num_experts_per_tok", None)
    if not experts or not top_k:
        return None
    impl = getattr(config, "_experts_implementation", None) or "grouped_mm"
    return (f"mixture of experts ({experts} experts, top-{top_k}): every expert's parameters are sized; experts run "
            f"through transformers' '{impl}' implementation, whose tensors are tokens x {top_k} rows for any routing, "
            "so activations do not depend on how the router splits tokens (a per-expert loop would vary with it)")


def routing_details(spec: ModelSpec) -> dict:
    """``{"moe_routing": moe_note}`` for a mixture-of-experts transformers model, else {} (estimate details)."""
    note = moe_note(spec) if spec.family == "hf" else None
    return {"moe_routing": note} if note else {}


def describe(spec: ModelSpec) -> str:
    d = json.loads(spec.config.config_json)
    return f"{spec.config.model_class} ({d.get('model_type')}, {spec.config.attn_implementation})"
