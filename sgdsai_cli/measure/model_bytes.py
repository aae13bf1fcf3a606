"""Bytes of a model's parameters, trainable parameters and buffers in a precision (a meta build, cached).

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

