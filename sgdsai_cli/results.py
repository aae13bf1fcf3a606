"""Result records: typed dataclasses whose ``to_dict()`` is the JSON result schema, version 1.

Every JSON file the tool writes is an envelope

    {"schema_version": 1, "kind": "profile"|"gsnr"|"plan"|"bench-step", "tool_version", "created_utc",
     "environment": {...}, "spec": {...}, ...the body of that kind...}

Unknown values are ``None`` (JSON null), never -1 or strings. ``from_dict`` reads a document back
(after ``schema.validate_document``); keys this version does not know are kept in ``extra`` and
written back unchanged, so a newer file passes through ``check`` and ``report`` intact.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import os
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from sgdsai_cli.files import plain, write_json_atomic
from sgdsai_cli.version import __version__

SCHEMA_VERSION = 1
KINDS = ("profile", "gsnr", "plan", "bench-step")
RUN_STATUSES = ("ok", "oom", "skipped", "error")
META_DEVICE = {"type": "meta", "name": "meta", "total_memory_bytes": None, "uuid": None, "driver": None}


def utc_now() -> str:
    return _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _known(cls, d: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split ``d`` into the fields of dataclass ``cls`` and the rest."""
    names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
    return {k: v for k, v in d.items() if k in names}, {k: v for k, v in d.items() if k not in names}


class _Record:
    """to_dict(): the fields in declaration order, nested records as dicts, ``extra`` merged last."""

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: plain(getattr(self, f.name)) for f in dataclasses.fields(self) if f.name != "extra"}
        out.update(getattr(self, "extra", None) or {})
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]):
        known, rest = _known(cls, d)
        obj = cls(**known)
        if rest and hasattr(obj, "extra"):
            obj.extra = rest
        return obj


@dataclass
class Environment(_Record):
    """Where a result was made: versions and the device record (``device.type`` meta | cpu | cuda)."""

    python: str = ""
    torch: str = ""
    platform: str = ""
    device: dict[str, Any] = field(default_factory=lambda: dict(META_DEVICE))
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def current(cls, device: dict[str, Any] | None = None) -> Environment:
        import torch

        return cls(platform.python_version(), torch.__version__, platform.platform(), device or dict(META_DEVICE))


@dataclass
class ProfileSpec(_Record):
    """What a profile run was asked to do (the ``spec`` object)."""

    model: str
    precision: str = "fp32"
    device: str = "meta"
    batch_size: int = 1
    seq_len: int = 512
    warmup: int = 3
    steps: int = 10
    seed: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class ModelInfo(_Record):
    """The model as built: parameter count, tensors and bytes (each storage counted once)."""

    name: str  # the display name: --name, a preset's name, or the config path normalised
    family: str | None = None
    fingerprint: str | None = None  # identity by content (measure.identity); None in older results
    params: int | None = None
    param_tensors: int | None = None
    param_bytes: int | None = None
    grad_bytes: int | None = None  # the trainable parameters' bytes: all of them, or a LoRA model's adapters
    trainable_params: int | None = None  # elements that get gradients and state (None in older results: all)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class MemoryResult(_Record):
    """Bytes for one optimizer run. ``source``: meta | fake | measured | formula."""

    source: str
    state_bytes: int | None = None
    state_bytes_by_key: dict[str, int] = field(default_factory=dict)
    param_bytes: int | None = None
    grad_bytes: int | None = None
    activation_peak_bytes: int | None = None
    step_transient_bytes: int | None = None
    peak_allocated_bytes: int | None = None
    peak_reserved_bytes: int | None = None
    nvml_used_peak_bytes: int | None = None
    estimated_peak_bytes: int | None = None
    details: dict[str, Any] = field(default_factory=dict)  # extra figures (per phase, allocator stats, estimate)
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MemoryResult:
        obj = super().from_dict(d)
        obj.state_bytes_by_key = dict(obj.state_bytes_by_key or {})
        obj.details = dict(obj.details or {})
        return obj


@dataclass
class RunResult(_Record):
    """One optimizer's row: ``status`` ok | oom | skipped | error (then ``error`` says why)."""

    optimizer: str
    impl: str | None
    status: str = "ok"
    memory: MemoryResult | None = None
    latency_ms: dict[str, Any] | None = None
    error: str | None = None
    note: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunResult:
        obj = super().from_dict(d)
        if isinstance(obj.memory, dict):
            obj.memory = MemoryResult.from_dict(obj.memory)
        return obj

    def add_note(self, text: str | None) -> None:
        """Append a note ("; "-separated)."""
        if text:
            self.note = "; ".join(filter(None, [self.note, text]))


class Envelope:
    """What every result document shares: the versioned head (``head()``) and an atomic ``save``.

    A result class declares ``kind`` and the fields ``environment``, ``created_utc`` and ``tool_version``.
    """

    kind: ClassVar[str] = ""

    def head(self) -> dict[str, Any]:
        """schema_version, kind, tool_version, created_utc, environment: the first keys of every document."""
        return {"schema_version": SCHEMA_VERSION, "kind": self.kind, "tool_version": self.tool_version,
                "created_utc": self.created_utc, "environment": self.environment.to_dict()}

    def save(self, path: str | os.PathLike, *, stable: bool = False) -> Path:
        """Write the JSON document atomically; ``stable``: without its volatile fields (``stable_form``)."""
        doc = self.to_dict()
        return write_json_atomic(path, stable_form(doc) if stable else doc)


# What changes from one run to the next with nothing else changed: never compared by ``check``, and
# left out of baselines (``stable_form``) so that a regenerated baseline is byte-identical.
VOLATILE_FIELDS = ("created_utc", "environment.python", "environment.platform", "timing_s",
                   "runs[].memory.details.trace_seconds", "runs[].memory.details.allocator.seconds",
                   "environment.device.load_avg", "runs[].timing.load_avg")


def stable_form(doc: dict[str, Any]) -> dict[str, Any]:
    """``doc`` without ``VOLATILE_FIELDS`` (a new dict; ``doc`` is not changed)."""
    out = {k: v for k, v in doc.items() if k not in ("created_utc", "timing_s")}
    if isinstance(out.get("environment"), dict):
        out["environment"] = {k: v for k, v in out["environment"].items() if k not in ("python", "platform")}
        if isinstance(out["environment"].get("device"), dict):
            out["environment"]["device"] = {k: v for k, v in out["environment"]["device"].items() if k != "load_avg"}
    if isinstance(out.get("runs"), list):
        out["runs"] = [_stable_run(r) for r in out["runs"]]
    return out


def _stable_run(run: Any) -> Any:
    if isinstance(run, dict) and isinstance(run.get("timing"), dict):
        run = {**run, "timing": {k: v for k, v in run["timing"].items() if k != "load_avg"}}
    memory = run.get("memory") if isinstance(run, dict) else None
    if not isinstance(memory, dict) or not isinstance(memory.get("details"), dict):
        return run
    details = {k: v for k, v in memory["details"].items() if k != "trace_seconds"}
    if isinstance(details.get("allocator"), dict):
        details["allocator"] = {k: v for k, v in details["allocator"].items() if k != "seconds"}
    return {**run, "memory": {**memory, "details": details}}


@dataclass
class Document(Envelope, _Record):
    """The versioned envelope around a kind-specific ``body`` (its keys follow ``spec`` at the top level)."""

    spec: dict[str, Any]
    body: dict[str, Any]
    environment: Environment
    created_utc: str = field(default_factory=utc_now)
    tool_version: str = __version__

    def to_dict(self) -> dict[str, Any]:
        return {**self.head(), "spec": plain(self.spec), **plain(self.body)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]):
        head = ("schema_version", "kind", "tool_version", "created_utc", "environment", "spec")
        obj = cls(spec=dict(d.get("spec") or {}), body={k: v for k, v in d.items() if k not in head},
                  environment=Environment.from_dict(d.get("environment") or {}),
                  created_utc=d.get("created_utc", ""), tool_version=d.get("tool_version", ""))
        if not cls.kind:  # a generic document keeps the kind it was read with
            obj.kind = str(d.get("kind", ""))
        return obj


@dataclass
class ProfileResult(Envelope):
    """A profile: the spec, the model, one ``RunResult`` per optimizer, where it ran."""

    kind: ClassVar[str] = "profile"

    spec: ProfileSpec
    model: ModelInfo
    runs: list[RunResult]
    environment: Environment
    created_utc: str = field(default_factory=utc_now)
    tool_version: str = __version__
    timing_s: dict[str, float] | None = None  # where the time went (not compared by check)
    interrupted: bool = False  # Ctrl-C: the runs that finished are kept, the others are "skipped"
    extra: dict[str, Any] = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict, compare=False)  # written beside it (samples); not JSON

    def to_dict(self) -> dict[str, Any]:
        doc = {**self.head(), "spec": self.spec.to_dict(), "model": self.model.to_dict(),
               "runs": [r.to_dict() for r in self.runs]}
        if self.timing_s is not None:
            doc["timing_s"] = dict(self.timing_s)
        if self.interrupted:
            doc["interrupted"] = True
        doc.update(self.extra)
        return doc

    def run(self, optimizer: str) -> RunResult | None:
        """The first run of ``optimizer``, or None."""
        return next((r for r in self.runs if r.optimizer == optimizer), None)

    @property
    def device_type(self) -> str:
        return str(self.environment.device.get("type") or self.spec.device.split(":")[0])

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ProfileResult:
        head = {"schema_version", "kind", "tool_version", "created_utc", "environment", "spec", "model", "runs",
                "timing_s", "interrupted"}
        return cls(spec=ProfileSpec.from_dict(d["spec"]), model=ModelInfo.from_dict(d["model"]),
                   runs=[RunResult.from_dict(r) for r in d["runs"]],
                   environment=Environment.from_dict(d.get("environment") or {}),
                   created_utc=d.get("created_utc", ""), tool_version=d.get("tool_version", ""),
                   timing_s=d.get("timing_s"), interrupted=bool(d.get("interrupted", False)),
                   extra={k: v for k, v in d.items() if k not in head})
