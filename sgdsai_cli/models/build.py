"""From a name to a trainable model: resolve a spec, build it, make a batch, compute the loss.

    spec  = resolve_model("llama2-7b")          # a preset, a config.json / folder / cached hub id, a factory
    model = build_model(spec, device="meta")    # meta: shapes only, allocates nothing
    batch = make_batch(spec, batch_size=1, seq_len=512, device="meta", model=model)
    loss  = training_loss(spec, model, batch)   # forward + the model's loss, a scalar

Families: gpt2, llama, vit (our builders), hf (transformers' own class: ``hf_model``), factory
(the user's callable: ``factory``). Each function dispatches on ``spec.family``.
"""

from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sgdsai_cli.errors import BadInput, did_you_mean
from sgdsai_cli.models import factory as _factory
from sgdsai_cli.models import hf_model as _hf
from sgdsai_cli.models.configs import FAMILIES, ModelSpec
from sgdsai_cli.models.gpt2 import GPT2
from sgdsai_cli.models.hf_config import load_config_spec
from sgdsai_cli.models.llama import Llama
from sgdsai_cli.models.names import model_source
from sgdsai_cli.models.presets import PRESETS
from sgdsai_cli.models.vit import ViT

_MODEL_CLASSES = {"gpt2": GPT2, "llama": Llama, "vit": ViT}


class _SkipInit(torch.overrides.TorchFunctionMode):
    """``torch.nn.init``'s functions leave the tensor as it is: a shapes-only build has no values to set.

    Torch's modules initialise themselves in ``__init__`` (``nn.Linear.reset_parameters``); on meta that
    runs torch's Python reference of each random op, whose first call imports ``torch._dynamo``
    (about 1.3 s), and under ``FakeTensorMode`` it dispatches an op per tensor for nothing.
    """

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if getattr(func, "__module__", None) == "torch.nn.init":
            return args[0] if args else kwargs["tensor"]  # init functions take the tensor first, or as tensor=
        return func(*args, **kwargs)


def _shapes_only(device: torch.device) -> bool:
    """A build whose tensors have no values: on meta, or inside a ``FakeTensorMode``."""
    return device.type == "meta" or torch._C._get_dispatch_mode(torch._C._TorchDispatchModeKey.FAKE) is not None


def resolve_model(name_or_path, attn_implementation: str | None = None) -> ModelSpec:
    """A preset by name (case-insensitive), a factory, else a Hugging Face style config.json.

    A callable, or ``module:name`` / ``file.py:name``, is the user's factory. Anything ending in
    .json, containing a path separator, or existing on disk is read as a config file (a directory
    means its config.json; ``org/name`` not on disk, the hub's config in the local cache).
    ``attn_implementation`` (sdpa, eager, flash_attention_2) is transformers' switch: another value
    than sdpa builds a config through transformers. Raises BadInput with a one-line message.
    """
    if isinstance(name_or_path, ModelSpec):
        return name_or_path
    if callable(name_or_path):
        return _native_attn(_factory.factory_spec(name_or_path), attn_implementation)
    text = str(name_or_path).strip()
    source = model_source(text)
    if source == "preset":
        return _native_attn(PRESETS[text.lower()], attn_implementation)
    if source == "factory":
        return _native_attn(_factory.factory_spec(text), attn_implementation)
    return load_config_spec(text, attn_implementation)


def _native_attn(spec: ModelSpec, attn_implementation: str | None) -> ModelSpec:
    """Presets and factories run their own attention: only sdpa (the default) is theirs."""
    if attn_implementation not in (None, "sdpa"):
        raise BadInput(f"attn_implementation '{attn_implementation}' needs a transformers model (a config.json); "
                       f"'{spec.name}' runs its own attention", field="attn_implementation",
                       value=attn_implementation)
    return spec


def build_model(spec: ModelSpec, device="meta", dtype: torch.dtype = torch.float32) -> nn.Module:
    """Build `spec` directly on `device` in `dtype`, in train mode.

    Construction runs under ``with torch.device(device)`` with `dtype` as the default dtype, so a
    meta build allocates nothing (llama2-70b: well under a second after torch's first-call
    warm-up) and a build inside a ``FakeTensorMode`` yields fake parameters with no ``_apply``
    or ``to_empty`` step. On a real device the model's own init then runs once per tensor
    (N(0, 0.02) weights, seeded by the caller's ``torch.manual_seed``); meta models stay uninitialised.
    (PyTorch's own default init also runs during construction: one extra uniform_ pass, cheap on a GPU,
    a few seconds per billion parameters on a CPU; a meta or fake build skips it, ``_SkipInit``.) The
    default dtype is restored after.
    """
    if not dtype.is_floating_point:
        raise BadInput(f"model dtype must be a floating point type, got {dtype}", value=dtype)
    if spec.family in ("hf", "factory"):
        build = _hf.build_hf if spec.family == "hf" else _factory.build_factory
        previous = torch.get_default_dtype()
        torch.set_default_dtype(dtype)
        try:
            return _checkpointed(spec, _adapted(spec, build(spec, device, dtype), dtype))
        finally:
            torch.set_default_dtype(previous)
    cls = _MODEL_CLASSES.get(spec.family)
    if cls is None:
        raise BadInput(f"unknown model family '{spec.family}'" + did_you_mean(spec.family, FAMILIES),
                       value=spec.family)
    if not dtype.is_floating_point:
        raise BadInput(f"model dtype must be a floating point type, got {dtype}", value=dtype)
    device = torch.device(device)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # parameters are created in `dtype`: no full-size fp32 copy first
    try:
        with torch.device(device), (_SkipInit() if _shapes_only(device) else contextlib.nullcontext()):
            model = cls(spec.config)
    except (RuntimeError, TypeError, OverflowError) as e:
        if "overflow" not in str(e).lower():
            raise
        raise BadInput(f"model '{spec.name}' is too large to build: a tensor's size overflows 64 bits",
                       value=spec.name) from None
    finally:
        torch.set_default_dtype(previous)
    if device.type != "meta":
        with torch.no_grad():
            model.init_weights()
    return _checkpointed(spec, _adapted(spec, model.train(), dtype))


def _adapted(spec: ModelSpec, model: nn.Module, dtype: torch.dtype) -> nn.Module:
    """``model`` with ``spec.lora``'s adapters injected by peft and its base frozen (models.lora); for QLoRA
    (``lora.quant``) the base's linear layers become bitsandbytes 4-bit first, computing in ``dtype``
    (models.quantize), and ``model.sgdsai_quantized`` keeps the QuantizedSummary."""
    if spec.lora is None:
        return model
    from sgdsai_cli.models.lora import apply_lora

    if spec.lora.quant is not None:
        from sgdsai_cli.models.quantize import quantize_linears

        summary = quantize_linears(model, quant_type=spec.lora.quant, double_quant=spec.lora.double_quant,
                                   compute_dtype=dtype)
        model.sgdsai_quantized = summary
    model_type = _hf.hf_model_type(spec) if spec.family == "hf" else spec.family
    return apply_lora(model, spec.lora, model_type)


def trainable_named_parameters(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """``(name, parameter)`` of the parameters training updates (see ``trainable_parameters``)."""
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]


def trainable_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The parameters training updates (``requires_grad``): all of them, or only the adapters of a LoRA model.

    Only these get gradients and optimizer state; a tied tensor appears once."""
    return [p for p in model.parameters() if p.requires_grad]


def _checkpointed(spec: ModelSpec, model: nn.Module) -> nn.Module:
    """``model`` with its blocks checkpointed as ``spec.checkpointing`` says (models.checkpointing)."""
    if spec.checkpointing != "none":
        from sgdsai_cli.models.checkpointing import apply_checkpointing

        apply_checkpointing(model, decoder_layers(model), spec.checkpointing)
    return model


def count_params(model: nn.Module) -> int:
    """Number of parameter elements, each shared (tied) tensor counted once."""
    return sum(p.numel() for p in model.parameters())  # parameters() de-duplicates by identity


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The list of repeated blocks: ``h`` (gpt2), ``layers`` (llama), ``blocks`` (vit); for any other
    model the ``nn.ModuleList`` holding the most parameters (transformers: ``model.layers``,
    ``transformer.h``, ``vit.encoder.layer``, ...). An empty list when the model has none."""
    for attr in ("h", "layers", "blocks"):
        layers = getattr(model, attr, None)
        if isinstance(layers, nn.ModuleList):
            return layers
    best, most = nn.ModuleList(), 0
    for module in model.modules():
        if isinstance(module, nn.ModuleList) and len(module) > 0:
            n = sum(p.numel() for p in module.parameters())
            if n > most:
                best, most = module, n
    return best


def layer_signature(layer: nn.Module) -> tuple:
    """What makes two blocks the same: module types, parameter and buffer names, shapes and dtypes,
    and the per-layer attributes transformers gives blocks (attention type, sliding window)."""
    parts = [type(m).__name__ for m in layer.modules()]
    tensors = [(n, tuple(t.shape), t.dtype) for n, t in (*layer.named_parameters(), *layer.named_buffers())]
    attrs = [(type(m).__name__, a, getattr(m, a)) for m in layer.modules()
             for a in ("attention_type", "sliding_window", "is_sliding", "use_rope", "is_moe")
             if isinstance(getattr(m, a, None), (bool, int, str))]
    return (tuple(parts), tuple(tensors), tuple(attrs))


def max_positions(spec: ModelSpec) -> int | None:
    """The longest sequence a text model takes (its position table or trained context); None for ViT."""
    if spec.family == "hf":
        return _hf.hf_max_positions(spec)
    if spec.family == "gpt2":
        return spec.config.n_positions
    if spec.family == "llama":
        return spec.config.max_position_embeddings
    return None


def check_addressable(what: str, shape: tuple[int, ...], element_bytes: int = 8) -> None:
    """BadInput when a tensor of ``shape`` could not even be addressed (bytes beyond int64).

    `what` describes the tensor for the message (``"a batch of 4 x 128 tokens"``).
    """
    if math.prod(shape) * element_bytes >= 2**63:
        raise BadInput(f"{what} is too large (more than 2**63 bytes)", value=shape)


_addressable = check_addressable  # the former private name, still imported by callers


def make_batch(
    spec: ModelSpec,
    batch_size: int,
    seq_len: int,
    device,
    generator: torch.Generator | None = None,
    model: nn.Module | None = None,
) -> tuple[Tensor, Tensor]:
    """A random training batch for `spec` (`model`: the built model, which a factory's batch is given).

    LM (gpt2, llama): ``(tokens int64 [B, S], targets int64 [B, S])`` in ``[0, vocab)``, targets
    being the tokens shifted left by one. ViT: ``(images float32 [B, C, H, W], labels int64 [B])``
    at ``config.image_size``; `seq_len` is ignored. On meta the tensors are empty of that shape.
    Random draws happen on the generator's device (CPU when none is given: reproducible under
    ``torch.manual_seed``) and are then moved to `device`.
    """
    _positive("batch_size", batch_size)
    device = torch.device(device)
    gdev = generator.device if generator is not None else torch.device("cpu")
    if spec.family == "factory":
        _positive("seq_len", seq_len)
        if model is None:
            model = build_model(spec, device="meta")
        return _factory.factory_batch(spec, model, batch_size, seq_len, device, generator)
    if spec.family == "hf":
        _positive("seq_len", seq_len)
        return _hf.hf_batch(spec, batch_size, seq_len, device, generator)
    if spec.family == "vit":
        return _image_batch(spec, batch_size, device, generator, gdev)
    _positive("seq_len", seq_len)
    if spec.family == "gpt2" and seq_len > spec.config.n_positions:  # learned positions: a hard limit
        raise BadInput(f"seq_len {seq_len} is longer than {spec.name}'s {spec.config.n_positions} positions",
                       field="seq_len", value=seq_len)
    shape = (batch_size, seq_len + 1)  # one more token than the window: inputs and shifted targets
    check_addressable(f"a batch of {batch_size} x {seq_len} tokens", shape)
    if device.type == "meta":
        return (
            torch.empty(batch_size, seq_len, dtype=torch.long, device=device),
            torch.empty(batch_size, seq_len, dtype=torch.long, device=device),
        )
    seq = torch.randint(0, spec.config.vocab_size, shape, generator=generator, device=gdev)  # [B, S+1]
    return seq[:, :-1].to(device), seq[:, 1:].to(device)  # [B, S] inputs, [B, S] next-token targets


def _image_batch(spec: ModelSpec, batch_size: int, device: torch.device, generator, gdev) -> tuple[Tensor, Tensor]:
    """ViT's batch: random images [B, C, H, W] and class labels [B]."""
    cfg = spec.config
    img_shape = (batch_size, cfg.num_channels, cfg.image_size, cfg.image_size)
    check_addressable(
        f"a batch of {batch_size} images of {cfg.num_channels} x {cfg.image_size} x {cfg.image_size}", img_shape
    )
    if device.type == "meta":
        return (
            torch.empty(img_shape, device=device),
            torch.empty(batch_size, dtype=torch.long, device=device),
        )
    images = torch.randn(img_shape, generator=generator, device=gdev)
    labels = torch.randint(0, cfg.num_classes, (batch_size,), generator=generator, device=gdev)
    return images.to(device), labels.to(device)


def training_loss(spec: ModelSpec, model: nn.Module, batch: tuple[Tensor, Tensor]) -> Tensor:
    """Forward pass and mean cross-entropy (computed on fp32 logits, as HF does): a scalar.

    hf: transformers' own loss (``model(**batch).loss``); factory: the user's ``loss`` or the default."""
    if spec.family == "hf":
        return _hf.hf_loss(spec, model, batch)
    if spec.family == "factory":
        return _factory.factory_loss(spec, model, batch)
    inputs, targets = batch
    logits = model(inputs)  # [B, S, V] (text) or [B, num_classes] (ViT)
    return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1))


def batch_tensors(batch) -> list[Tensor]:
    """The tensors of a batch: a tensor, or any nesting of tuples, lists and dicts of them (a factory's batch)."""
    if isinstance(batch, Tensor):
        return [batch]
    if isinstance(batch, dict):
        batch = list(batch.values())
    if isinstance(batch, (tuple, list)):
        return [t for item in batch for t in batch_tensors(item)]
    return []


def _positive(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise BadInput(f"{name} must be a positive integer, got {value!r}", field=name, value=value)
