"""QLoRA's frozen base: a built model's ``nn.Linear`` modules as bitsandbytes 4-bit ``Linear4bit``.

    summary = quantize_linears(model, quant_type="nf4", double_quant=True)   # in place
    summary.weight_bytes, summary.state_bytes, summary.bytes_source          # "measured" | "format"

What transformers does for ``BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=...,
bnb_4bit_use_double_quant=...)``, on a model we built: every module whose type is exactly
``nn.Linear`` (or transformers' ``Conv1D``, transposed) becomes ``bnb.nn.Linear4bit`` with a
``bnb.nn.Params4bit`` weight, frozen (``requires_grad_(False)``, bias included); the modules
transformers keeps out stay as they are (``skip``, below). Embeddings, norms, convolutions and
``nn.Linear`` subclasses are never converted (transformers converts ``type(m) is nn.Linear`` only).
The root model gets ``is_loaded_in_4bit = True``, the flag transformers sets and peft reads to wrap
a ``Linear4bit`` target in its own 4-bit LoRA layer (``peft.tuners.lora.bnb.Linear4bit``).

Three kinds of weights:

- real tensors (CPU, CUDA): bitsandbytes quantises them (``Params4bit.to(device)``, as
  transformers loads a checkpoint); the bytes are those of the resulting storages: "measured";
- meta tensors and fake tensors (``FakeTensorMode``): bitsandbytes' own quantisation function runs
  on them, its registered fake kernels (``torch.ops.bitsandbytes.quantize_4bit``,
  ``quantize_blockwise``) giving every tensor the shape and dtype of bnb's storage format:
  "format". The double-quant step is spelled out here with bnb's own functions (bnb would take
  its 8-bit code from a module-level cache on whatever device first asked: a meta or fake code
  there would break later real quantisations), giving the same tensors as ``quantize_4bit``.
  ``tests/test_quantize.py`` checks the format bytes against real quantisations, to the byte.

The storage format (``n = out_features * in_features``, ``b = blocksize``, ``B = ceil(n / b)``):
weight ``uint8 [(n + 1) // 2, 1]`` (two 4-bit codes a byte); quant state: the 16-entry code
``float32 [16]``; without double quant ``absmax float32 [B]``; with it ``absmax uint8 [B]`` plus
the offset ``float32 []``, the nested absmax ``float32 [ceil(B / 256)]`` and the nested 8-bit
code ``float32 [256]`` (``linear4bit_bytes``).

Under ``FakeTensorMode`` the forward and backward of a ``Linear4bit`` run on bnb's fake kernels
(``gemm_4bit``, ``dequantize_4bit``, ``dequantize_blockwise``): outputs only, as a dispatch-level
tracker sees the real kernels too (their internal temporaries, such as the dequantised weight of
CPU's ``gemm_4bit``, are made and freed inside one op).
"""

from __future__ import annotations

import contextlib
import difflib
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from sgdsai_cli.errors import BadInput

BNB_EXTRA = "pip install 'sgdsai[bnb]'"
QUANT_TYPES = ("nf4", "fp4")
BLOCKSIZES = (32, 64, 128, 256, 512, 1024, 2048, 4096)  # bnb's quantize_4bit
NESTED_BLOCKSIZE = 256  # double quant: the absmax, 8-bit blockwise in blocks of 256 (bnb's quantize_4bit)
CODE_ENTRIES = 16  # the 4-bit code (nf4 or fp4 values), float32, one per quantised weight
NESTED_CODE_ENTRIES = 256  # the 8-bit dynamic code of double quant, float32, one per quantised weight
_COMPUTE_DTYPES = {
    "float32": torch.float32, "fp32": torch.float32,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    "float16": torch.float16, "fp16": torch.float16,
}


@dataclass(frozen=True)
class Linear4bitBytes:
    """The storage of one quantised weight, by part (bytes), from bnb's format."""

    weight_bytes: int  # the packed 4-bit codes
    absmax_bytes: int  # per-block scales: float32, or uint8 with double quant
    code_bytes: int  # the 16-entry 4-bit code
    nested_bytes: int  # double quant: offset, nested absmax, the 256-entry 8-bit code (0 without)

    @property
    def state_bytes(self) -> int:
        return self.absmax_bytes + self.code_bytes + self.nested_bytes


@dataclass(frozen=True)
class QuantizedSummary:
    """What ``quantize_linears`` did: modules replaced and kept, and the bytes of the quantised weights.

    ``state_bytes`` = ``absmax_bytes + code_bytes + nested_bytes`` (every quant-state tensor of every
    replaced module, each storage once). Biases of replaced modules are kept, frozen, and not counted
    in these: ``bias_bytes`` is what they hold now; bnb's ``Linear4bit.forward`` casts a bias to the
    compute dtype in place on its first call, so from then on they hold ``bias_elements`` elements of
    ``compute_dtype``. ``bytes_source``: "measured" (storages of real bnb tensors) or "format" (meta
    or fake tensors shaped by bnb's storage format).
    """

    quant_type: str
    double_quant: bool
    blocksize: int
    compute_dtype: torch.dtype
    replaced: tuple[str, ...]  # module names now Linear4bit, in model order
    skipped: tuple[str, ...]  # nn.Linear modules kept in full precision
    quantized_elements: int  # weight elements quantised (sum of out * in)
    largest_weight_elements: int  # out * in of the largest replaced weight (what one dequantisation makes)
    weight_bytes: int
    absmax_bytes: int
    code_bytes: int
    nested_bytes: int
    bias_bytes: int  # biases of the replaced modules (kept, frozen), as they are now
    bias_elements: int  # their elements (in compute_dtype after the first forward)
    bytes_source: str  # "measured" | "format"

    @property
    def modules_replaced(self) -> int:
        return len(self.replaced)

    @property
    def state_bytes(self) -> int:
        return self.absmax_bytes + self.code_bytes + self.nested_bytes

    @property
    def total_bytes(self) -> int:
        """Weight plus quant state: what the quantised base weights hold (biases apart)."""
        return self.weight_bytes + self.state_bytes

    def to_dict(self) -> dict:
        """Plain values for a result document (module names of the replaced ones left out: a count)."""
        return {
            "quant_type": self.quant_type, "double_quant": self.double_quant, "blocksize": self.blocksize,
            "compute_dtype": str(self.compute_dtype).removeprefix("torch."),
            "modules_replaced": self.modules_replaced, "skipped": list(self.skipped),
            "quantized_elements": self.quantized_elements, "weight_bytes": self.weight_bytes,
            "state_bytes": self.state_bytes, "absmax_bytes": self.absmax_bytes, "code_bytes": self.code_bytes,
            "nested_bytes": self.nested_bytes, "bias_bytes": self.bias_bytes, "bias_elements": self.bias_elements,
            "largest_weight_elements": self.largest_weight_elements, "bytes_source": self.bytes_source,
        }


# ----------------------------------------------------------------------------------------------
# bitsandbytes, quietly


def require_bitsandbytes(what: str = "QLoRA"):
    """The bitsandbytes module, or EnvironmentUnavailable naming the extra (``extras.import_bitsandbytes``:
    quiet, and outside any dispatch mode, so bnb's module-level tables are real tensors)."""
    from sgdsai_cli.extras import import_bitsandbytes

    return import_bitsandbytes(what)


# ----------------------------------------------------------------------------------------------
# options


def _check_options(quant_type, double_quant, compute_dtype, blocksize) -> tuple[str, bool, torch.dtype, int]:
    qt = quant_type.strip().lower() if isinstance(quant_type, str) else quant_type
    if qt not in QUANT_TYPES:
        raise BadInput(f"bad quant_type {quant_type!r} (choose from: {', '.join(QUANT_TYPES)})",
                       field="quant_type", value=quant_type)
    if not isinstance(double_quant, bool):
        raise BadInput(f"double_quant must be true or false, got {double_quant!r}", field="double_quant",
                       value=double_quant)
    dtype = _COMPUTE_DTYPES.get(compute_dtype.strip().lower()) if isinstance(compute_dtype, str) else compute_dtype
    if dtype not in (torch.float32, torch.bfloat16, torch.float16):
        raise BadInput(f"bad compute_dtype {compute_dtype!r} (float32, bfloat16 or float16)",
                       field="compute_dtype", value=compute_dtype)
    if isinstance(blocksize, bool) or blocksize not in BLOCKSIZES:
        raise BadInput(f"bad blocksize {blocksize!r} (choose from: {', '.join(map(str, BLOCKSIZES))})",
                       field="blocksize", value=blocksize)
    return qt, double_quant, dtype, int(blocksize)


# ----------------------------------------------------------------------------------------------
# the storage format


def linear4bit_bytes(out_features: int, in_features: int, *, double_quant: bool = True,
                     blocksize: int = 64) -> Linear4bitBytes:
    """Bytes of one weight ``[out_features, in_features]`` in bnb's 4-bit format (nf4 and fp4 alike)."""
    n = out_features * in_features
    blocks = -(-n // blocksize)
    if double_quant:
        nested = 4 + 4 * -(-blocks // NESTED_BLOCKSIZE) + 4 * NESTED_CODE_ENTRIES  # offset, absmax, code
        return Linear4bitBytes((n + 1) // 2, blocks, 4 * CODE_ENTRIES, nested)
    return Linear4bitBytes((n + 1) // 2, 4 * blocks, 4 * CODE_ENTRIES, 0)


# ----------------------------------------------------------------------------------------------
# which modules (transformers' rule)


def _matches(name: str, pattern: str) -> bool:
    """transformers' ``should_convert_module`` test: ``pattern`` names ``name`` or a module above it."""
    return bool(re.match(f"{pattern}\\.", name) or re.match(pattern, name) or name.endswith(pattern))


def default_skips(model: nn.Module) -> list[str]:
    """What transformers keeps out of 4-bit by default (``get_keys_to_not_convert``).

    The modules of tied parameters (a tied head and its embedding), the module of the model's
    last parameter, the output embeddings (``get_output_embeddings()``). Names lose a ``.weight``
    suffix only, as in transformers: a last parameter ``head.bias`` names no module, so such a head
    is quantised (transformers does the same to a ViT classifier).
    """
    keys: set[str] = set()
    names_by_param: dict[int, list[str]] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        names_by_param.setdefault(id(p), []).append(name)
    for names in names_by_param.values():
        if len(names) > 1:
            keys.update(names)
    params = list(model.named_parameters())
    if params:
        keys.add(params[-1][0])
    get_output = getattr(model, "get_output_embeddings", None)
    try:
        head = get_output() if callable(get_output) else None
    except (AttributeError, NotImplementedError):  # a model that has no output embeddings to give
        head = None
    if head is not None:
        keys.update(name for name, m in model.named_modules() if m is head)
    return sorted({k.removesuffix(".weight") for k in keys})


def _convertible(module: nn.Module) -> bool:
    conv1d = getattr(sys.modules.get("transformers.pytorch_utils"), "Conv1D", None)
    return type(module) is nn.Linear or (conv1d is not None and isinstance(module, conv1d))


def _skip_patterns(model: nn.Module, skip) -> list[str]:
    if skip is None:
        patterns = default_skips(model)
    else:
        if not isinstance(skip, (list, tuple, set, frozenset)) or not all(isinstance(s, str) for s in skip):
            raise BadInput(f"skip must be a list of module names, got {skip!r}", field="skip", value=skip)
        names = [n for n, _ in model.named_modules() if n]
        for pattern in skip:
            try:
                found = any(_matches(n, pattern) for n in names)
            except re.error:
                found = False
            if not found:
                close = difflib.get_close_matches(pattern, sorted({*names, *(n.rsplit(".", 1)[-1] for n in names)}),
                                                  n=3, cutoff=0.6)
                hint = f" (did you mean {' or '.join(close)}?)" if close else ""
                raise BadInput(f"skip: no module named {pattern!r} in the model{hint}", field="skip", value=pattern)
        patterns = list(skip)
    keep_fp32 = getattr(model, "_keep_in_fp32_modules", None)  # transformers keeps these out too
    if isinstance(keep_fp32, (list, tuple, set)):
        patterns += [k for k in keep_fp32 if isinstance(k, str)]
    return patterns


# ----------------------------------------------------------------------------------------------
# quantising one weight


def _fake_mode_of(t: torch.Tensor):
    from torch._subclasses.fake_tensor import FakeTensor

    return t.fake_mode if isinstance(t, FakeTensor) else None


def _quantize_without_data(bnb, w: torch.Tensor, quant_type: str, double_quant: bool, blocksize: int):
    """bnb's ``quantize_4bit`` on a meta or fake tensor: (packed weight, QuantState), shaped by bnb's kernels."""
    F = bnb.functional
    data, state = F.quantize_4bit(w, blocksize=blocksize, compress_statistics=False, quant_type=quant_type,
                                  quant_storage=torch.uint8)
    if not double_quant:
        return data, state
    # quantize_4bit(compress_statistics=True), its nested step with the 8-bit code passed in
    # (quantize_blockwise keeps a copy of it in the nested state, as it does of bnb's cached one)
    from torch._subclasses.fake_tensor import unset_fake_temporarily

    with unset_fake_temporarily():
        code8 = F.create_dynamic_map()  # computed through .tolist(): real tensors only
    mode = _fake_mode_of(w)
    code8 = mode.from_tensor(code8) if mode is not None else code8.to(w.device)
    offset = state.absmax.mean()
    qabsmax, state2 = F.quantize_blockwise(state.absmax - offset, code=code8, blocksize=NESTED_BLOCKSIZE)
    return data, F.QuantState(absmax=qabsmax, shape=state.shape, dtype=state.dtype, blocksize=blocksize,
                              code=state.code, quant_type=quant_type, offset=offset, state2=state2)


def _replacement(bnb, module: nn.Module, quant_type: str, double_quant: bool, compute_dtype: torch.dtype,
                 blocksize: int) -> tuple[nn.Module, bool]:
    """A frozen Linear4bit holding ``module``'s weight in 4 bits (and its bias); whether it was real."""
    from torch._subclasses.fake_tensor import unset_fake_temporarily

    w = module.weight.detach()
    if not isinstance(module, nn.Linear):  # transformers' Conv1D: weight [in, out], transposed to [out, in]
        w = w.t()
    out_features, in_features = w.shape
    with unset_fake_temporarily(), torch.device("meta"):  # a real meta shell: weight and bias are set below
        new = bnb.nn.Linear4bit(in_features, out_features, bias=False, compute_dtype=compute_dtype,
                                compress_statistics=double_quant, quant_type=quant_type,
                                quant_storage=torch.uint8)
    params = dict(blocksize=blocksize, compress_statistics=double_quant, quant_type=quant_type,
                  quant_storage=torch.uint8)
    mode = _fake_mode_of(w)
    real = w.device.type != "meta" and mode is None
    if real:  # bnb quantises: Params4bit.to(device), as transformers loads a checkpoint
        weight = bnb.nn.Params4bit(w, requires_grad=False, module=new, **params).to(w.device)
    elif mode is None:  # meta
        data, state = _quantize_without_data(bnb, w, quant_type, double_quant, blocksize)
        weight = bnb.nn.Params4bit(data, requires_grad=False, quant_state=state, module=new, bnb_quantized=True,
                                   **params)
        new.quant_state = state
    else:
        with mode if not _active(mode) else contextlib.nullcontext():
            data, state = _quantize_without_data(bnb, w, quant_type, double_quant, blocksize)
        # Params4bit (a plain tensor subclass) cannot wrap a FakeTensor: the fake weight is the FakeTensor
        # itself as a frozen parameter, carrying Params4bit's attributes (what Linear4bit and peft read)
        weight = nn.Parameter(data, requires_grad=False)
        for key, value in dict(params, quant_state=state, bnb_quantized=True, module=new).items():
            setattr(weight, key, value)
        new.quant_state = state
    new.weight = weight
    new.bias = module.bias
    new.requires_grad_(False)
    new.train(module.training)
    return new, real


def _active(mode) -> bool:
    """Whether ``mode`` is the FakeTensorMode in force now (entering it again would be an error)."""
    return torch._C._get_dispatch_mode(torch._C._TorchDispatchModeKey.FAKE) is mode


def _state_tensors(state) -> dict[str, list[torch.Tensor]]:
    parts = {"absmax": [state.absmax], "code": [state.code], "nested": []}
    if state.nested:
        parts["nested"] = [state.offset, state.state2.absmax, state.state2.code]
    return parts


def quant_state_tensors(model: nn.Module) -> list[torch.Tensor]:
    """Every quant-state tensor of the model's 4-bit weights (absmax, code, nested): memory that is neither a
    parameter nor a buffer."""
    out = []
    for module in model.modules():
        state = getattr(getattr(module, "weight", None), "quant_state", None)
        if state is not None:
            out += [t for tensors in _state_tensors(state).values() for t in tensors if t is not None]
    return out


# ----------------------------------------------------------------------------------------------
# the model


def quantize_linears(model: nn.Module, *, quant_type: str = "nf4", double_quant: bool = True,
                     compute_dtype: torch.dtype | str = torch.bfloat16, blocksize: int = 64,
                     skip: Sequence[str] | None = None) -> QuantizedSummary:
    """Replace ``model``'s ``nn.Linear`` modules, in place, by frozen bnb 4-bit ``Linear4bit`` modules.

    ``quant_type`` nf4 | fp4 (``bnb_4bit_quant_type``), ``double_quant`` quantises the per-block
    scales too (``bnb_4bit_use_double_quant``), ``compute_dtype`` is the dtype the layer computes
    in (``bnb_4bit_compute_dtype``), ``blocksize`` the elements per scale (bnb's 64 by default).
    ``skip``: module names (or transformers-style patterns) kept in full precision, as
    ``llm_int8_skip_modules``; None keeps what transformers keeps by default (``default_skips``:
    the output head, tied modules). The model's weights may be real, meta or fake tensors; call
    this before adding LoRA adapters. Raises BadInput for a bad option or a model with nothing to
    quantise, EnvironmentUnavailable without bitsandbytes.
    """
    quant_type, double_quant, compute_dtype, blocksize = _check_options(quant_type, double_quant, compute_dtype,
                                                                        blocksize)
    patterns = _skip_patterns(model, skip)
    targets, skipped = [], []
    for name, module in model.named_modules():
        if name and _convertible(module):
            (skipped if any(_matches(name, p) for p in patterns) else targets).append(name)
    if not targets:
        raise BadInput(f"nothing to quantise: no nn.Linear module outside {skipped or 'the model'}",
                       field="qlora", value=skipped)
    bnb = require_bitsandbytes()
    sources, seen = set(), set()
    totals = {"weight": 0, "absmax": 0, "code": 0, "nested": 0, "bias": 0}
    elements = largest = bias_elements = 0

    def count(part: str, t: torch.Tensor | None) -> None:
        if t is not None and t.untyped_storage()._cdata not in seen:
            seen.add(t.untyped_storage()._cdata)
            totals[part] += t.untyped_storage().nbytes()

    for name in targets:
        new, real = _replacement(bnb, model.get_submodule(name), quant_type, double_quant, compute_dtype,
                                 blocksize)
        model.set_submodule(name, new)
        sources.add("measured" if real else "format")
        out_features, in_features = new.weight.quant_state.shape
        elements += out_features * in_features
        largest = max(largest, out_features * in_features)
        count("weight", new.weight)
        for part, tensors in _state_tensors(new.weight.quant_state).items():
            for t in tensors:
                count(part, t)
        count("bias", new.bias)
        bias_elements += new.bias.numel() if new.bias is not None else 0
    model.is_loaded_in_4bit = True  # transformers' flag: peft wraps Linear4bit in its 4-bit LoRA layer
    return QuantizedSummary(
        quant_type=quant_type, double_quant=double_quant, blocksize=blocksize, compute_dtype=compute_dtype,
        replaced=tuple(targets), skipped=tuple(skipped), quantized_elements=elements,
        largest_weight_elements=largest, weight_bytes=totals["weight"], absmax_bytes=totals["absmax"],
        code_bytes=totals["code"], nested_bytes=totals["nested"], bias_bytes=totals["bias"],
        bias_elements=bias_elements,
        bytes_source="measured" if sources == {"measured"} else "format",
    )


__all__ = ["BNB_EXTRA", "Linear4bitBytes", "QuantizedSummary", "default_skips", "linear4bit_bytes",
           "quant_state_tensors", "quantize_linears", "require_bitsandbytes"]
