"""Result records (DESIGN.md section 4): dataclasses -> dict/JSON, pandas frames, atomic files.

Every JSON file the tool writes is an envelope

    {"schema_version": 1, "kind": "profile"|"gsnr"|"plan"|"bench-step", "tool_version", "created_utc",
     "environment": {...}, "spec": {...}, ...kind-specific body...}

Unknown values are ``None`` (JSON null), never -1 or strings.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import os
import platform
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sgdsai_cli.errors import BadInput
from sgdsai_cli.version import __version__

SCHEMA_VERSION = 1
KINDS = ("profile", "gsnr", "plan", "bench-step")


@dataclass
class MemoryResult:
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
    details: dict[str, Any] = field(default_factory=dict)  # extra measured figures (per phase, allocator stats)


@dataclass
class RunResult:
    """One optimizer's row: ``status`` ok | oom | skipped | error (then ``error`` says why)."""

    optimizer: str
    impl: str | None
    status: str = "ok"
    memory: MemoryResult | None = None
    latency_ms: dict[str, Any] | None = None
    error: str | None = None
    note: str | None = None


@dataclass
class ModelInfo:
    name: str
    family: str
    params: int
    param_tensors: int
    param_bytes: int
    grad_bytes: int


@dataclass
class ProfileSpec:
    model: str
    precision: str = "fp32"
    device: str = "meta"
    batch_size: int = 1
    seq_len: int = 512
    warmup: int = 3
    steps: int = 10
    seed: int = 0


def utc_now() -> str:
    return _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def environment(device: dict[str, Any] | None = None) -> dict[str, Any]:
    """Python, torch and platform versions plus the device record."""
    import torch

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "device": device or {"type": "meta", "name": "meta", "total_memory_bytes": None, "uuid": None, "driver": None},
    }


def envelope(kind: str, spec: dict[str, Any], body: dict[str, Any], device: dict[str, Any] | None = None) -> dict:
    """Wrap a kind-specific body in the versioned envelope."""
    return {
        "schema_version": SCHEMA_VERSION,
        "kind": kind,
        "tool_version": __version__,
        "created_utc": utc_now(),
        "environment": environment(device),
        "spec": spec,
        **body,
    }


def to_plain(obj: Any) -> Any:
    """Dataclasses (nested) -> dicts, ready for json.dumps."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {k: to_plain(v) for k, v in dataclasses.asdict(obj).items()}
    if isinstance(obj, dict):
        return {str(k): to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_plain(v) for v in obj]
    return obj


def profile_document(spec: ProfileSpec, model: ModelInfo, runs: list[RunResult],
                     device: dict[str, Any] | None = None) -> dict:
    return envelope("profile", to_plain(spec), {"model": to_plain(model), "runs": to_plain(runs)}, device)


def check_writable(path: str | os.PathLike) -> Path:
    """Fail early (BadInput) when ``path`` cannot be written: a missing folder or no permission."""
    p = Path(path)
    parent = p.parent if str(p.parent) else Path(".")
    if p.is_dir():
        raise BadInput(f"cannot write '{path}': it is a directory")
    if not parent.is_dir():
        raise BadInput(f"cannot write '{path}': folder '{parent}' does not exist")
    if not os.access(parent, os.W_OK):
        raise BadInput(f"cannot write '{path}': no permission to write in '{parent}'")
    return p


def prepare_out_dir(out: str | os.PathLike, first_file: str) -> Path:
    """Create the ``--out`` folder (BadInput when it is a file or cannot be made) and check that
    ``first_file`` can be written in it, before any work starts."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise BadInput(f"cannot write to '{out}': it is a file, not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise BadInput(f"cannot create folder '{out}' ({e.strerror or e.__class__.__name__})") from None
    check_writable(out / first_file)
    return out


def write_text_atomic(path: str | os.PathLike, text: str | bytes) -> Path:
    """Write via a temp file in the same folder and rename: never a half-written file."""
    p = check_writable(path)
    mode = "wb" if isinstance(text, bytes) else "w"
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent if str(p.parent) else ".")
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the usual permissions
        with os.fdopen(fd, mode, **({} if mode == "wb" else {"encoding": "utf-8"})) as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return p


def write_json_atomic(path: str | os.PathLike, doc: Any) -> Path:
    return write_text_atomic(path, json.dumps(to_plain(doc), indent=2, allow_nan=False) + "\n")


def dumps(doc: Any) -> str:
    return json.dumps(to_plain(doc), indent=2, allow_nan=False)


def load_document(path: str | os.PathLike, kinds: tuple[str, ...] = KINDS) -> dict:
    """Read and validate a result file's envelope; BadInput naming the file for any problem."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BadInput(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise BadInput(f"{path}: cannot read ({e.__class__.__name__})") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise BadInput(f"{path}: not valid JSON (line {e.lineno}, column {e.colno})") from None
    except RecursionError:
        raise BadInput(f"{path}: not a sgdsai result (JSON nested too deeply)") from None
    if not isinstance(doc, dict):
        raise BadInput(f"{path}: not a sgdsai result (expected a JSON object)")
    version = doc.get("schema_version")
    if version != SCHEMA_VERSION:
        raise BadInput(f"{path}: unsupported schema_version {_short(version)} (expected {SCHEMA_VERSION})")
    kind = doc.get("kind")
    if kind not in kinds:
        raise BadInput(f"{path}: kind {_short(kind)} is not one of {', '.join(kinds)}")
    for key in ("spec", "model", "environment"):
        if doc.get(key) is not None and not isinstance(doc[key], dict):
            raise BadInput(f"{path}: '{key}' must be an object, not {_json_type(doc[key])}")
    device = (doc.get("environment") or {}).get("device")
    if device is not None and not isinstance(device, dict):
        raise BadInput(f"{path}: environment.device must be an object, not {_json_type(device)}")
    total = (device or {}).get("total_memory_bytes")
    if total is not None and not _is_count(total):
        raise BadInput(f"{path}: environment.device.total_memory_bytes must be a non-negative integer or null, "
                       f"not {_short(total)}")
    params = (doc.get("model") or {}).get("params")
    if params is not None and not _is_count(params):
        raise BadInput(f"{path}: model.params must be a non-negative integer, not {_short(params)}")
    if kind == "profile":
        runs = doc.get("runs")
        if not (isinstance(doc.get("model"), dict) and isinstance(runs, list) and isinstance(doc.get("spec"), dict)):
            raise BadInput(f"{path}: profile result needs 'spec', 'model' and 'runs'")
        for i, run in enumerate(runs):
            _check_run(path, i, run)
    return doc


_MAX_BYTES = 2**63  # a byte count beyond this is not a measurement (and overflows float arithmetic)


def _json_type(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "a number",
            float: "a number"}.get(type(value), type(value).__name__)


def _short(value: Any) -> str:
    """repr() of a bad value for an error line, cut to 40 characters."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _is_count(value: Any) -> bool:
    """A byte or element count: a non-negative JSON integer (not a boolean, not a float, not huge)."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < _MAX_BYTES


def _check_run(path, i: int, run: Any) -> None:
    """One profile run: names are strings, byte figures non-negative integers or null, latencies objects."""
    import math

    if not isinstance(run, dict) or "optimizer" not in run or "status" not in run:
        raise BadInput(f"{path}: runs[{i}] needs 'optimizer' and 'status'")
    for key in ("optimizer", "status"):
        if not isinstance(run[key], str):
            raise BadInput(f"{path}: runs[{i}].{key} must be a string, not {_short(run[key])}")
    if run.get("impl") is not None and not isinstance(run["impl"], str):
        raise BadInput(f"{path}: runs[{i}].impl must be a string or null, not {_short(run['impl'])}")
    memory = run.get("memory")
    if memory is not None:
        if not isinstance(memory, dict):
            raise BadInput(f"{path}: runs[{i}].memory must be an object")
        for key, value in memory.items():
            if key.endswith("_bytes") and value is not None and not _is_count(value):
                raise BadInput(f"{path}: runs[{i}].memory.{key} must be a non-negative integer (bytes) or null, "
                               f"not {_short(value)}")
        by_key = memory.get("state_bytes_by_key")
        if by_key is not None:
            if not isinstance(by_key, dict):
                raise BadInput(f"{path}: runs[{i}].memory.state_bytes_by_key must be an object")
            for key, value in by_key.items():
                if not _is_count(value):
                    raise BadInput(f"{path}: runs[{i}].memory.state_bytes_by_key.{key} must be a non-negative "
                                   f"integer (bytes), not {_short(value)}")
        if memory.get("details") is not None and not isinstance(memory["details"], dict):
            raise BadInput(f"{path}: runs[{i}].memory.details must be an object")
    latency = run.get("latency_ms")
    if latency is not None:
        if not isinstance(latency, dict):
            raise BadInput(f"{path}: runs[{i}].latency_ms must be an object or null, not {_short(latency)}")
        def finite(value: Any) -> bool:
            return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool)
                                     and math.isfinite(value))

        for phase, stats in latency.items():
            if phase == "first_step":  # ms of the first optimizer step
                if not finite(stats):
                    raise BadInput(f"{path}: runs[{i}].latency_ms.first_step must be a finite number or null, "
                                   f"not {_short(stats)}")
                continue
            if stats is None:
                continue
            if not isinstance(stats, dict):
                raise BadInput(f"{path}: runs[{i}].latency_ms.{phase} must be an object or null, not {_short(stats)}")
            for stat, value in stats.items():
                if not finite(value):
                    raise BadInput(f"{path}: runs[{i}].latency_ms.{phase}.{stat} must be a finite number or null, "
                                   f"not {_short(value)}")


def runs_frame(doc: dict):
    """A profile document's runs as a pandas DataFrame: one row per run, memory fields flattened."""
    import pandas as pd

    rows = []
    for run in doc.get("runs", []):
        row = {k: run.get(k) for k in ("optimizer", "impl", "status", "error")}
        for k, v in (run.get("memory") or {}).items():
            if k == "state_bytes_by_key":
                row.update({f"state_bytes[{key}]": b for key, b in v.items()})
            elif not isinstance(v, dict):
                row[k] = v
        step = (run.get("latency_ms") or {}).get("optimizer_step") or {}
        row["optimizer_step_p50_ms"] = step.get("p50")
        rows.append(row)
    frame = pd.DataFrame(rows)
    spec = doc.get("spec", {})
    for k in ("model", "precision", "device"):
        frame.insert(0, k, spec.get(k))
    return frame
