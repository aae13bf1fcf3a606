"""Bytes of a model's parameters, trainable parameters, buffers and 4-bit quantisation state in a precision
(a meta build, cached).

The estimate, the planner and the allocator model read these; tied tensors count once.
"""

from __future__ import annotations

import functools

from sgdsai_cli.measure.storage import unique_bytes
from sgdsai_cli.precision import Precision


@functools.lru_cache(maxsize=64)
def buffer_bytes(model_spec, precision: Precision) -> int:
    """Bytes of the model's registered buffers (a meta build): part of its memory, not parameters."""
    from sgdsai_cli import models

    model = models.build_model(model_spec, device="meta", dtype=precision.param_dtype)
    return unique_bytes(model.buffers())


@functools.lru_cache(maxsize=64)
def grad_bytes_of(model_spec, precision: Precision) -> int:
    """Bytes of the trainable parameters, what their gradients take (a meta build; tied tensors once)."""
    from sgdsai_cli import models

    model = models.build_model(model_spec, device="meta", dtype=precision.param_dtype)
    return unique_bytes(models.trainable_parameters(model))


@functools.lru_cache(maxsize=64)
def param_bytes(model_spec, precision: Precision) -> int:
    """Bytes of the model's parameters in the precision's dtype (a meta build; tied tensors once)."""
    from sgdsai_cli import models

    model = models.build_model(model_spec, device="meta", dtype=precision.param_dtype)
    return unique_bytes(model.parameters())



@functools.lru_cache(maxsize=64)
def quant_state_bytes(model_spec, precision: Precision) -> int:
    """Bytes of a QLoRA base's quantisation state (absmax, codes: neither parameters nor buffers); 0 otherwise."""
    if model_spec.lora is None or model_spec.lora.quant is None:
        return 0
    from sgdsai_cli import models
    from sgdsai_cli.models.quantize import quant_state_tensors

    model = models.build_model(model_spec, device="meta", dtype=precision.param_dtype)
    return unique_bytes(quant_state_tensors(model))
