"""Validation of result documents read back from JSON (``check``, ``report``, ``profile --baseline``).

A document is checked before any typed record is made from it: the envelope (schema version, kind),
the types of the objects, and every byte count (a non-negative integer below 2**63 or null). Each
problem is a BadInput naming the file and the field.
"""

from __future__ import annotations

import math
import os
from typing import Any

from sgdsai_cli.errors import BadInput
from sgdsai_cli.files import read_json
from sgdsai_cli.results import KINDS, SCHEMA_VERSION


def load_document(path: str | os.PathLike, kinds: tuple[str, ...] = KINDS) -> dict:
    """Read and validate a result file's envelope; BadInput naming the file for any problem."""
    doc = read_json(path)
    validate_document(doc, path, kinds)
    return doc


def validate_document(doc: Any, path: str | os.PathLike, kinds: tuple[str, ...] = KINDS) -> None:
    """BadInput naming ``path`` and the field when ``doc`` is not a result of one of ``kinds``."""
    if not isinstance(doc, dict):
        raise BadInput(f"{path}: not a sgdsai result (expected a JSON object)")
    version = doc.get("schema_version")
    if type(version) is not int or version != SCHEMA_VERSION:  # true == 1 and 1.0 == 1 in Python: not here
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
        _check_profile_head(path, doc)
        for i, run in enumerate(runs):
            _check_run(path, i, run)
    if kind == "plan":
        _check_plan(path, doc)


_SPEC_INTEGERS = ("batch_size", "seq_len", "warmup", "steps", "seed")
_MODEL_COUNTS = ("param_tensors", "param_bytes", "grad_bytes")


def _check_profile_head(path, doc: dict) -> None:
    """The names a profile's runs are matched by are strings, its counts integers (never booleans)."""
    spec, model, environment = doc["spec"], doc["model"], doc.get("environment") or {}
    if "model" not in spec or not isinstance(model.get("name"), str):
        raise BadInput(f"{path}: profile result needs spec.model and a string model.name")
    if "device" in environment and not isinstance(environment["device"], dict):
        raise BadInput(f"{path}: environment.device of a profile must be an object, "
                       f"not {_short(environment['device'])}")
    if "device" in spec and not isinstance(spec["device"], str):
        raise BadInput(f"{path}: spec.device must be a string, not {_short(spec['device'])}")
    device = environment.get("device") or {}
    for where, obj, key in (("spec", spec, "model"), ("spec", spec, "precision"),
                            ("environment.device", device, "type"), ("environment.device", device, "name")):
        if obj.get(key) is not None and not isinstance(obj[key], str):
            raise BadInput(f"{path}: {where}.{key} must be a string or null, not {_short(obj[key])}")
    for key in _SPEC_INTEGERS:
        value = spec.get(key)
        if value is not None and not (isinstance(value, int) and not isinstance(value, bool)):
            raise BadInput(f"{path}: spec.{key} must be an integer or null, not {_short(value)}")
    for key in _MODEL_COUNTS:
        if model.get(key) is not None and not _is_count(model[key]):
            raise BadInput(f"{path}: model.{key} must be a non-negative integer or null, not {_short(model[key])}")
    if doc.get("interrupted") is not None and not isinstance(doc["interrupted"], bool):
        raise BadInput(f"{path}: interrupted must be true or false, not {_short(doc['interrupted'])}")


# a plan's row lists: the names every row of each must carry as strings (the rest: strings or null)
_PLAN_ROWS = {"rows": ("optimizer", "precision", "gpu"), "fit_rows": ("recipe", "optimizer", "precision", "gpu"),
              "fsdp2_rows": ("optimizer", "precision", "gpu")}
_PLAN_TEXT = ("impl", "gpu_label", "context_source", "activation_checkpointing", "lora", "reason")
_PLAN_COUNTS = ("max_batch_size", "trainable_params", "gpus_needed", "world_size_simulated", "max_batch_per_rank")


def _check_plan(path, doc: dict) -> None:
    """A plan's rows: names are strings, byte figures and counts non-negative integers or null, fits a boolean
    (what ``report`` and the renderers read, checked before anything is written)."""
    for key, names in _PLAN_ROWS.items():
        rows = doc.get(key)
        if rows is None and key != "rows":
            continue
        if not isinstance(rows, list):
            raise BadInput(f"{path}: plan result needs '{key}' as a list, not {_short(rows)}")
        for i, row in enumerate(rows):
            where = f"{path}: {key}[{i}]"
            if not isinstance(row, dict):
                raise BadInput(f"{where} must be an object, not {_short(row)}")
            for name in names:
                if not isinstance(row.get(name), str):
                    raise BadInput(f"{where}.{name} must be a string, not {_short(row.get(name))}")
            for name, value in row.items():
                if value is None:
                    continue
                if name in _PLAN_TEXT and not isinstance(value, str):
                    raise BadInput(f"{where}.{name} must be a string or null, not {_short(value)}")
                counted = name.endswith("_bytes") or (name in _PLAN_COUNTS and not isinstance(value, dict))
                if counted and not _is_count(value):
                    raise BadInput(f"{where}.{name} must be a non-negative integer or null, not {_short(value)}")
                if name == "fits" and not isinstance(value, bool):
                    raise BadInput(f"{where}.fits must be true or false, not {_short(value)}")
                if name == "gpus_needed" and isinstance(value, dict) and not all(
                        v is None or _is_count(v) for v in value.values()):
                    raise BadInput(f"{where}.gpus_needed must hold non-negative integers or null")


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
    if not isinstance(run, dict) or not {"optimizer", "impl", "status"} <= run.keys():
        raise BadInput(f"{path}: runs[{i}] needs 'optimizer', 'impl' and 'status'")
    for key in ("optimizer", "status"):
        if not isinstance(run[key], str):
            raise BadInput(f"{path}: runs[{i}].{key} must be a string, not {_short(run[key])}")
    if run.get("impl") is not None and not isinstance(run["impl"], str):
        raise BadInput(f"{path}: runs[{i}].impl must be a string or null, not {_short(run['impl'])}")
    if run.get("memory") is not None:
        _check_memory(f"{path}: runs[{i}].memory", run["memory"])
    if run.get("latency_ms") is not None:
        _check_latency(f"{path}: runs[{i}].latency_ms", run["latency_ms"])


def _check_memory(where: str, memory: Any) -> None:
    if not isinstance(memory, dict):
        raise BadInput(f"{where} must be an object")
    if not isinstance(memory.get("source"), str):
        raise BadInput(f"{where}.source must be a string, not {_short(memory.get('source'))}")
    for key, value in memory.items():
        if key.endswith("_bytes") and value is not None and not _is_count(value):
            raise BadInput(f"{where}.{key} must be a non-negative integer (bytes) or null, not {_short(value)}")
    by_key = memory.get("state_bytes_by_key")
    if by_key is not None:
        if not isinstance(by_key, dict):
            raise BadInput(f"{where}.state_bytes_by_key must be an object")
        for key, value in by_key.items():
            if not _is_count(value):
                raise BadInput(f"{where}.state_bytes_by_key.{key} must be a non-negative integer (bytes), "
                               f"not {_short(value)}")
    if memory.get("details") is not None and not isinstance(memory["details"], dict):
        raise BadInput(f"{where}.details must be an object")


def _finite(value: Any) -> bool:
    return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value))


def _check_latency(where: str, latency: Any) -> None:
    if not isinstance(latency, dict):
        raise BadInput(f"{where} must be an object or null, not {_short(latency)}")
    for phase, stats in latency.items():
        if phase == "first_step":  # ms of the first optimizer step
            if not _finite(stats):
                raise BadInput(f"{where}.first_step must be a finite number or null, not {_short(stats)}")
        elif stats is not None:
            if not isinstance(stats, dict):
                raise BadInput(f"{where}.{phase} must be an object or null, not {_short(stats)}")
            for stat, value in stats.items():
                if not _finite(value):
                    raise BadInput(f"{where}.{phase}.{stat} must be a finite number or null, not {_short(value)}")


def load_result(path: str | os.PathLike):
    """A result file as its typed record: ``ProfileResult`` for a profile, else a ``Document``."""
    from sgdsai_cli.results import Document, ProfileResult

    doc = load_document(path)
    return ProfileResult.from_dict(doc) if doc["kind"] == "profile" else Document.from_dict(doc)
