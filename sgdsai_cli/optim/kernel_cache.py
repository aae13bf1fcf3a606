"""The one piece of mutable module state in ``sgdsai_cli.optim``: what the kernels built or found.

``KERNELS`` remembers, for the life of the process, the CPU kernel library (or why it could not be
built), whether Triton imported and its jitted kernels, which (device, dtype) pairs passed their
self-checks, and the multi-tensor kernel's device tables per group of tensors. Everything else in
the package is constants. Tests swap fields of ``KERNELS`` with ``monkeypatch.setattr`` to act as if
a compiler or Triton were missing.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any


@dataclass
class KernelCache:
    """Built-once kernel state; a field is filled the first time its kernel is asked for."""

    cpu: Any = None  # the loaded ``c_kernel.CpuKernel``
    cpu_tried: bool = False
    cpu_error: str | None = None  # why ``cpu`` is None after a try
    triton: Any = None  # (triton module, jitted kernel)
    triton_tried: bool = False
    triton_ready: dict = field(default_factory=dict)  # (device, dtype) -> the self-check passed
    multi: Any = None  # (triton module, jitted multi-tensor kernel)
    multi_tried: bool = False
    multi_ready: dict = field(default_factory=dict)  # (device, dtype) -> its self-check passed
    multi_tables: dict = field(default_factory=dict)  # a tensor group's key -> its device tables
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)


KERNELS = KernelCache()
