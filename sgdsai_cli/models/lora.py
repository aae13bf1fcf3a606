"""LoRA adapters through peft: parse what the user asks for, inject peft's own layers, freeze the base.

    spec  = parse_lora("r=16,alpha=32,targets=q_proj,v_proj,dropout=0.05")   # or a peft adapter_config.json
    model = build_model(replace(model_spec, lora=spec), device="meta")        # models.build calls apply_lora

``apply_lora`` hands a ``peft.LoraConfig`` to ``peft.inject_adapter_in_model``: peft replaces each
targeted ``nn.Linear`` by its ``lora.Linear`` (the base layer plus ``lora_A`` [r, in] and ``lora_B``
[out, r], B zero at init) and marks only the adapters trainable, exactly as a peft fine-tune does. The
base keeps its dtype and gets no gradient; adapters are fp32 by default, which is what peft's
``get_peft_model`` makes of bf16/fp16 adapters (``autocast_adapter_dtype=True``), or the dtype asked.
Target names are module-name suffixes, as peft matches them; our native models use the Hugging Face
module names (``q_proj``, ``c_attn``, ``query``), so a target list works for both builds. With no
targets, peft's own default for the model type is used (llama: q_proj, v_proj; gpt2: c_attn).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
from dataclasses import dataclass

import torch
from torch import nn

from sgdsai_cli.errors import BadInput, did_you_mean, first_line

ADAPTER_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
_KEYS = ("r", "alpha", "targets", "dropout", "dtype", "quant", "double_quant")
QUANT_TYPES = ("nf4", "fp4")  # QLoRA: the frozen base in bitsandbytes 4-bit (models.quantize)
_ALIASES = {"lora_alpha": "alpha", "target_modules": "targets", "lora_dropout": "dropout", "rank": "r"}
MAX_RANK = 65_536
_ADAPTABLE = (nn.Linear, nn.Embedding, nn.Conv1d, nn.Conv2d, nn.Conv3d)  # what peft's LoRA wraps (and Conv1D)


@dataclass(frozen=True)
class LoraSpec:
    """One LoRA adapter on the model (peft's LoraConfig fields, our short names)."""

    r: int = 8  # rank of A [r, in] and B [out, r] (peft default 8)
    alpha: float = 8.0  # lora_alpha: the update is scaled by alpha / r (peft default 8)
    targets: tuple[str, ...] = ()  # module-name suffixes; (): peft's default for the model type
    dropout: float = 0.0  # lora_dropout on the adapter's input (peft default 0)
    dtype: str = "fp32"  # adapter dtype: fp32 (peft's upcast of bf16/fp16 adapters), bf16, fp16
    quant: str | None = None  # QLoRA: the base's linear layers in bitsandbytes 4-bit, nf4 or fp4; None: not
    double_quant: bool = True  # QLoRA: the per-block scales quantised too (bnb_4bit_use_double_quant)

    def to_dict(self) -> dict:
        return {"r": self.r, "alpha": self.alpha, "targets": list(self.targets), "dropout": self.dropout,
                "dtype": self.dtype, **({"quant": self.quant, "double_quant": self.double_quant} if self.quant else {})}

    @classmethod
    def from_dict(cls, d: dict) -> LoraSpec:
        return _checked(dict(d), where="lora")

    def text(self) -> str:
        """The canonical option text (what ``parse_lora`` reads back)."""
        alpha = int(self.alpha) if float(self.alpha).is_integer() else self.alpha
        parts = [f"r={self.r}", f"alpha={alpha}"]
        if self.targets:
            parts.append("targets=" + ",".join(self.targets))
        if self.dropout:
            parts.append(f"dropout={self.dropout}")
        if self.dtype != "fp32":
            parts.append(f"dtype={self.dtype}")
        if self.quant:
            parts.append(f"quant={self.quant}")
            if not self.double_quant:
                parts.append("double_quant=false")
        return ",".join(parts)


def parse_lora(text) -> LoraSpec | None:
    """``r=16,alpha=32,targets=q_proj,v_proj[,dropout=0.05][,dtype=bf16]``, or a peft adapter_config.json /
    a TOML file holding those keys; None for None, "" or "none". BadInput naming the value otherwise."""
    if isinstance(text, LoraSpec) or text is None:
        return text
    if isinstance(text, dict):
        return LoraSpec.from_dict(text)
    value = str(text).strip()
    if value.lower() in ("", "none"):
        return None
    if value.endswith((".json", ".toml")) or os.path.isfile(value):
        return _from_file(value)
    fields: dict = {}
    last = None
    for token in value.split(","):
        token = token.strip()
        if "=" not in token:
            if last == "targets" and token:  # targets=q_proj,v_proj: later names continue the list
                fields["targets"].append(token)
                continue
            raise BadInput(f"bad lora {text!r}: {token!r} is not key=value (keys: {', '.join(_KEYS)})",
                           field="lora", value=text)
        key, _, val = (s.strip() for s in token.partition("="))
        key = _ALIASES.get(key.lower(), key.lower())
        if key not in _KEYS:
            raise BadInput(f"bad lora {text!r}: unknown key {key!r}" + did_you_mean(key, _KEYS),
                           field="lora", value=text)
        if key in fields:
            raise BadInput(f"bad lora {text!r}: {key!r} given twice", field="lora", value=text)
        fields[key] = [val] if key == "targets" else val
        last = key
    return _checked(fields, where=f"lora {text!r}")


def _from_file(path: str) -> LoraSpec:
    """peft's own adapter_config.json (``LoraConfig.save_pretrained``) or a TOML table of the same keys."""
    from sgdsai_cli.files import read_text_bounded

    raw = read_text_bounded(path, 1024 * 1024)
    try:
        if path.endswith(".toml"):
            import tomllib

            data = tomllib.loads(raw)
        else:
            data = json.loads(raw)
    except (ValueError, RecursionError) as e:
        raise BadInput(f"{path}: not a LoRA config ({type(e).__name__})", field="lora", value=path) from None
    if not isinstance(data, dict):
        raise BadInput(f"{path}: not a LoRA config (not a table)", field="lora", value=path)
    peft_type = data.pop("peft_type", "LORA")
    if str(peft_type).upper() != "LORA":
        raise BadInput(f"{path}: peft_type {peft_type!r} is not LORA", field="lora", value=path)
    keep = {k: v for k, v in data.items() if _ALIASES.get(k, k) in _KEYS}
    return _checked({_ALIASES.get(k, k): v for k, v in keep.items()}, where=path)


def _checked(fields: dict, where: str) -> LoraSpec:
    """A LoraSpec from raw fields (strings or numbers), each checked; BadInput naming ``where``."""
    def bad(what: str):
        return BadInput(f"bad {where}: {what}", field="lora", value=fields.get("r"))

    spec = {}
    if "r" in fields:
        r = fields["r"]
        try:
            r = int(r) if not isinstance(r, bool) and float(r) == int(float(r)) else None
        except (TypeError, ValueError, OverflowError):
            r = None
        if r is None or not 1 <= r <= MAX_RANK:
            raise bad(f"r must be a whole number from 1 to {MAX_RANK}, got {fields['r']!r}")
        spec["r"] = r
    for key, low, high in (("alpha", 0.0, 1e6), ("dropout", 0.0, 1.0)):
        if key in fields:
            try:
                x = float(fields[key]) if not isinstance(fields[key], bool) else math.nan
            except (TypeError, ValueError, OverflowError):
                x = math.nan
            if not (math.isfinite(x) and low <= x and (x < high if key == "dropout" else x <= high)):
                raise bad(f"{key} must be a number in [{low}, {high}{')' if key == 'dropout' else ']'}, "
                          f"got {fields[key]!r}")
            spec[key] = x
    if "targets" in fields:
        targets = fields["targets"]
        if isinstance(targets, str):
            targets = [t for t in targets.split(",")]
        if not isinstance(targets, (list, tuple)) or not all(isinstance(t, str) for t in targets):
            raise bad(f"targets must be module names, got {targets!r}")
        names = tuple(t.strip() for t in targets)
        if not names or any(not t or not all(c.isalnum() or c in "._-" for c in t) for t in names):
            raise bad(f"targets must be module names such as q_proj, got {targets!r}")
        spec["targets"] = tuple(dict.fromkeys(names))
    if "quant" in fields:
        quant = str(fields["quant"]).strip().lower()
        if quant not in (*QUANT_TYPES, "none"):
            raise bad(f"quant must be nf4, fp4 or none, got {fields['quant']!r}")
        spec["quant"] = None if quant == "none" else quant
    if "double_quant" in fields:
        flag = fields["double_quant"]
        flag = flag if isinstance(flag, bool) else {"true": True, "1": True, "yes": True, "false": False, "0": False,
                                                    "no": False}.get(str(flag).strip().lower())
        if flag is None:
            raise bad(f"double_quant must be true or false, got {fields['double_quant']!r}")
        spec["double_quant"] = flag
    if "dtype" in fields:
        dtype = str(fields["dtype"]).strip().lower()
        if dtype not in ADAPTER_DTYPES:
            raise bad(f"dtype must be one of {', '.join(ADAPTER_DTYPES)}, got {fields['dtype']!r}")
        spec["dtype"] = dtype
    return LoraSpec(**spec)


def parse_qlora(text) -> LoraSpec | None:
    """``--qlora``: ``parse_lora`` with the base quantised, nf4 unless ``quant=`` says otherwise."""
    spec = parse_lora(text)
    if spec is None or spec.quant is not None:
        return spec
    return dataclasses.replace(spec, quant="nf4")


def default_targets(model_type: str) -> tuple[str, ...]:
    """peft's own default LoRA targets for ``model_type`` (its TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING)."""
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as DEFAULTS

    return tuple(DEFAULTS.get(model_type, ()))


def _import_peft():
    from sgdsai_cli.extras import import_peft

    return import_peft("LoRA")


def apply_lora(model: nn.Module, spec: LoraSpec, model_type: str) -> nn.Module:
    """Inject ``spec``'s adapters into ``model`` in place with peft (base frozen); return the model.

    ``model_type`` picks peft's default targets when ``spec.targets`` is empty (``llama``, ``gpt2``, ``vit``,
    or a transformers config's ``model_type``). BadInput when a target matches no module or no linear one.
    """
    peft = _import_peft()
    targets = spec.targets or default_targets(model_type)
    if not targets:
        raise BadInput(f"peft has no default LoRA targets for model type {model_type!r}: give targets=...",
                       field="lora", value=model_type)
    _check_targets(model, targets)
    config = peft.LoraConfig(r=spec.r, lora_alpha=spec.alpha, target_modules=list(targets),
                             lora_dropout=spec.dropout, bias="none")
    fake = _fake_tensors(model)
    try:
        # Under FakeTensorMode peft's move of each new adapter to its base layer's device fails (a no-op .to()
        # of a fake parameter cannot swap): there the adapters are made on meta, outside the mode, and turned
        # into fake tensors below, back inside it.
        with _outside_fake_mode() if fake is not None else contextlib.nullcontext():
            model = peft.inject_adapter_in_model(config, model, low_cpu_mem_usage=fake is not None)
    except ValueError as e:  # peft's own refusal of a target (a module type it cannot adapt, ...)
        reason = first_line(e) or type(e).__name__
        raise BadInput(f"peft cannot adapt targets {', '.join(targets)}: {reason}", field="lora",
                       value=",".join(targets)) from None
    _cast_adapters(model, ADAPTER_DTYPES[spec.dtype])
    if fake is not None:
        for module in _adapter_modules(model):  # under the caller's FakeTensorMode: fake adapters, no data
            for sub in module.modules():
                for name, p in list(sub._parameters.items()):
                    if p is not None:
                        sub._parameters[name] = nn.Parameter(torch.empty(p.shape, dtype=p.dtype, device=fake.device),
                                                             requires_grad=p.requires_grad)
    return model


def _outside_fake_mode():
    from torch._subclasses.fake_tensor import unset_fake_temporarily

    return unset_fake_temporarily()


def _fake_tensors(model: nn.Module):
    """The first parameter when the model's parameters are fake tensors (FakeTensorMode), else None."""
    from torch._subclasses.fake_tensor import FakeTensor

    first = next(iter(model.parameters()), None)
    return first if isinstance(first, FakeTensor) else None


def _adapter_modules(model: nn.Module) -> list[nn.Module]:
    """peft's ``lora_A`` / ``lora_B`` containers of every adapted layer."""
    return [m for name, m in model.named_modules() if name.endswith((".lora_A", ".lora_B"))]


def _check_targets(model: nn.Module, targets: tuple[str, ...]) -> None:
    """Every target names at least one module (suffix match, as peft's) and a matched one is a linear layer."""
    modules = [(n, m) for n, m in model.named_modules() if n]
    leaves = sorted({n.rsplit(".", 1)[-1] for n, _ in modules})
    for t in targets:
        hits = [m for n, m in modules if n == t or n.endswith("." + t)]
        if not hits:
            raise BadInput(f"LoRA target {t!r} matches no module of the model" + did_you_mean(t, leaves),
                           field="lora", value=t)
        if not any(isinstance(m, _ADAPTABLE) or type(m).__name__ == "Conv1D" for m in hits):
            raise BadInput(f"LoRA target {t!r} is a {type(hits[0]).__name__}, not a linear layer", field="lora",
                           value=t)


def _cast_adapters(model: nn.Module, dtype: torch.dtype) -> None:
    """Adapter weights (peft's ``lora_A`` / ``lora_B``) in ``dtype``; the frozen base keeps its own."""
    for module in _adapter_modules(model):
        if any(p.dtype != dtype for p in module.parameters()):
            module.to(dtype)


def with_lora(model_spec, spec: LoraSpec | None):
    """``model_spec`` with ``spec`` recorded on it (what ``build_model`` then applies)."""
    return dataclasses.replace(model_spec, lora=spec)
