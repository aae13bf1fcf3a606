"""Bytes of a model's parameters, trainable parameters, buffers and 4-bit quantisation state in a precision
(a meta build, cached).

The estimate, the planner and the allocator model read these; tied tensors count once.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from sgdsai_cli.measure.storage import unique_bytes
from sgdsai_cli.precision import Precision


@dataclass(frozen=True)
class ModelBytes:
    """What one meta build of a model in a precision says about its memory (bytes; tied tensors once)."""

    param_bytes: int
    grad_bytes: int  # the trainable parameters': what their gradients take
    buffer_bytes: int
    quant_state_bytes: int  # a QLoRA base's absmax and codes (neither parameters nor buffers); 0 otherwise
    storage_sizes: tuple[int, ...]  # each distinct parameter, buffer and quant-state storage, in model order


@functools.lru_cache(maxsize=64)
def model_bytes(model_spec, precision: Precision) -> ModelBytes:
    """The model's ``ModelBytes`` from one meta build (cached: the estimate, the planner and the allocator model
    all read it)."""
    from sgdsai_cli import models
    from sgdsai_cli.models.quantize import quant_state_tensors

    model = models.build_model(model_spec, device="meta", dtype=precision.param_dtype)
    quantized = model_spec.lora is not None and model_spec.lora.quant is not None
    quant_state = quant_state_tensors(model) if quantized or getattr(model, "sgdsai_quantized", None) else []
    seen: dict[int, int] = {}
    for t in [*model.parameters(), *model.buffers(), *quant_state]:
        st = t.untyped_storage()
        seen.setdefault(st._cdata, st.nbytes())
    return ModelBytes(
        param_bytes=unique_bytes(model.parameters()),
        grad_bytes=unique_bytes(models.trainable_parameters(model)),
        buffer_bytes=unique_bytes(model.buffers()),
        quant_state_bytes=unique_bytes(quant_state) if quantized else 0,
        storage_sizes=tuple(n for n in seen.values() if n),
    )


def buffer_bytes(model_spec, precision: Precision) -> int:
    """Bytes of the model's registered buffers: part of its memory, not parameters."""
    return model_bytes(model_spec, precision).buffer_bytes


def grad_bytes_of(model_spec, precision: Precision) -> int:
    """Bytes of the trainable parameters, what their gradients take."""
    return model_bytes(model_spec, precision).grad_bytes


def param_bytes(model_spec, precision: Precision) -> int:
    """Bytes of the model's parameters in the precision's dtype."""
    return model_bytes(model_spec, precision).param_bytes


def quant_state_bytes(model_spec, precision: Precision) -> int:
    """Bytes of a QLoRA base's quantisation state (absmax, codes: neither parameters nor buffers); 0 otherwise."""
    return model_bytes(model_spec, precision).quant_state_bytes


