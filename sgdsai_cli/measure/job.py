"""What passes between a real run's parent and its child process: the job, the result, progress.

The parent (``realrun``) writes a ``Job`` as JSON; the child (``python -m sgdsai_cli.measure.worker
JOB.json RESULT.json``) runs it and writes a ``JobResult`` as JSON. While it runs, the child
reports progress as lines ``@sgdsai {"event": ...}`` on stdout (``PROGRESS_PREFIX``):
``{"event": "start", "total", "warmup", "steps"}`` once, then ``{"event": "step", "step",
"total", "measured"}`` after each step. Any other output line is not progress.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from sgdsai_cli.results import ModelInfo, ProfileSpec, RunResult

PROGRESS_PREFIX = "@sgdsai "


def model_spec_to_dict(model_spec) -> dict[str, Any]:
    """``{"name", "family", "config", "params"}``, JSON-able; ``config`` is everything that defines the model:
    the native config's fields, a transformers model's ``{"config": config.json, "model_class",
    "attn_implementation"}``, a factory's ``{"target"}`` (``"callable"`` instead when it cannot be imported again)."""
    cfg = model_spec.config
    config = cfg.to_dict() if model_spec.family in ("hf", "factory") else asdict(cfg)
    return {"name": model_spec.name, "family": model_spec.family, "config": config, "params": model_spec.params,
            "checkpointing": model_spec.checkpointing,
            **({"lora": model_spec.lora.to_dict()} if model_spec.lora is not None else {})}


def model_spec_from_dict(d: dict[str, Any]):
    """The inverse of ``model_spec_to_dict`` (a factory is imported again from its target when built)."""
    from sgdsai_cli import models

    classes = {"gpt2": models.GPT2Config, "llama": models.LlamaConfig, "vit": models.ViTConfig,
               "hf": models.HFConfig.from_dict, "factory": models.FactoryConfig.from_dict}
    make = classes[d["family"]]
    config = make(d["config"]) if d["family"] in ("hf", "factory") else make(**d["config"])
    from sgdsai_cli.models.lora import LoraSpec

    lora = LoraSpec.from_dict(d["lora"]) if d.get("lora") is not None else None
    return models.ModelSpec(d["name"], d["family"], config, d.get("params"), d.get("checkpointing", "none"), lora)


@dataclass
class Job:
    """One optimizer's real run: the spec, the model, where the samples and the snapshot go."""

    spec: ProfileSpec
    model_spec: Any  # models.ModelSpec
    optimizer: str
    sample_interval_ms: float = 10.0
    sampler: bool = True  # False: no sampler thread (NVML peaks stay null)
    samples_csv: str | None = None  # where the child writes its samples (None: not written)
    snapshot_path: str | None = None  # CUDA memory snapshot (None: none)
    progress: bool = False  # emit progress lines on stdout

    def to_dict(self) -> dict[str, Any]:
        from sgdsai_cli.models import check_reimportable

        check_reimportable(self.model_spec)  # the child builds the model again from this dict
        return {"spec": self.spec.to_dict(), "model": model_spec_to_dict(self.model_spec),
                "optimizer": self.optimizer, "sample_interval_ms": self.sample_interval_ms,
                "sampler": self.sampler, "samples_csv": self.samples_csv, "snapshot_path": self.snapshot_path,
                "progress": self.progress}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Job:
        return cls(spec=ProfileSpec.from_dict(d["spec"]), model_spec=model_spec_from_dict(d["model"]),
                   optimizer=d["optimizer"], sample_interval_ms=d.get("sample_interval_ms", 10.0),
                   sampler=d.get("sampler", True), samples_csv=d.get("samples_csv"),
                   snapshot_path=d.get("snapshot_path"), progress=bool(d.get("progress", False)))


@dataclass
class JobResult:
    """What a child reports: its run, the model and device as it saw them, the files it wrote."""

    run: RunResult
    model: ModelInfo | None = None  # None: the model was never built
    device: dict[str, Any] | None = None  # environment.device (None: not readable)
    samples_csv: str | None = None
    snapshot: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"run": self.run.to_dict(), "model": None if self.model is None else self.model.to_dict(),
                "device": self.device, "samples_csv": self.samples_csv, "snapshot": self.snapshot}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> JobResult:
        model = d.get("model")
        return cls(run=RunResult.from_dict(d["run"]), model=None if model is None else ModelInfo.from_dict(model),
                   device=d.get("device"), samples_csv=d.get("samples_csv"), snapshot=d.get("snapshot"))


def progress_line(event: str, **fields) -> str:
    """The progress line of ``event`` (with its newline)."""
    return PROGRESS_PREFIX + json.dumps({"event": event, **fields}) + "\n"


def parse_progress(line: str) -> dict | None:
    """The event of a progress line, or None for any other output."""
    if not line.startswith(PROGRESS_PREFIX):
        return None
    try:
        event = json.loads(line[len(PROGRESS_PREFIX):])
    except json.JSONDecodeError:
        return None
    return event if isinstance(event, dict) else None
