"""The bench-step result: the spec as run, the tensors, the copy probe, one row per optimizer.

``BenchResult.to_dict()`` is the "bench-step" JSON document: the schema-1 envelope, then
``spec``, ``tensors``, ``copy`` and ``rows``. Times are in ms (``step_ms`` and ``copy.ms`` are
``stats.latency_summary`` objects), bandwidths in GB/s (10^9 bytes per second).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from sgdsai_cli.files import plain
from sgdsai_cli.results import Envelope, Environment, utc_now
from sgdsai_cli.version import __version__

DEFAULT_OPTIMIZERS = ("sgdsai", "adamw-fused", "adamw-foreach")
REFERENCE = "adamw-fused"  # ratios are to this optimizer's step time


@dataclass
class BenchSpec:
    model: str
    device: str = "auto"  # auto: the first CUDA device, else the CPU
    precision: str = "fp32"
    optimizers: tuple[str, ...] = DEFAULT_OPTIMIZERS
    layers: int | None = None  # None: every tensor of the model; N: the first N decoder layers
    warmup: int = 3
    steps: int = 11
    seed: int = 0
    threads: int | None = None  # CPU: torch threads for the measurement (None: as set); as run, the threads used

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "precision": self.precision, "device": self.device, "layers": self.layers,
                "optimizers": list(self.optimizers), "warmup": self.warmup, "steps": self.steps, "seed": self.seed,
                "threads": self.threads}


@dataclass
class BenchRow:
    """One optimizer's timings. Times in ms; bytes from the formula; ratios are medians of pairs."""

    optimizer: str
    impl: str | None
    status: str = "ok"  # ok | oom | error
    step_ms: dict[str, Any] | None = None  # stats.latency_summary of the measured rounds
    first_step_ms: float | None = None
    bytes_per_step: int | None = None
    bytes_source: str | None = None
    gb_per_s: float | None = None
    copy_bandwidth_gb_per_s: float | None = None
    bandwidth_fraction: float | None = None
    ratio_to_adamw_fused: float | None = None
    ratio_range: list[float] | None = None
    error: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class TensorSet:
    """The tensors every optimizer updates."""

    count: int
    params: int
    param_bytes: int
    largest_tensor_bytes: int


@dataclass
class CopyProbe:
    """The bandwidth probe: ``bytes`` copied per round, its times and the bandwidth (read + write)."""

    bytes: int
    ms: dict[str, Any]
    gb_per_s: float


@dataclass
class BenchResult(Envelope):
    """A bench-step result; ``to_dict()`` is the "bench-step" JSON document."""

    kind: ClassVar[str] = "bench-step"

    spec: BenchSpec  # as run: the device resolved, the optimizers checked and de-duplicated
    tensors: TensorSet
    copy: CopyProbe
    rows: list[BenchRow]
    environment: Environment
    created_utc: str = field(default_factory=utc_now)
    tool_version: str = __version__

    def to_dict(self) -> dict[str, Any]:
        return {**self.head(), "spec": self.spec.to_dict(), "tensors": plain(self.tensors),
                "copy": plain(self.copy), "rows": plain(self.rows)}

    def row(self, optimizer: str) -> BenchRow | None:
        return next((r for r in self.rows if r.optimizer == optimizer), None)
