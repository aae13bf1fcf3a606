"""Named run specs: a TOML table of ``profile`` options (``profiles/*.toml``).

    model = "tiny-gpt2"
    precision = "bf16"
    optimizers = ["sgdsai", "adamw"]
    baseline = "baselines/tiny-gpt2-bf16.json"   # beside the TOML file

Keys are the option names with underscores. A relative ``baseline`` path is taken beside the TOML
file when it is there (or can be written there), else relative to the working folder.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from sgdsai_cli.errors import BadInput, did_you_mean
from sgdsai_cli.files import parse_toml, read_text_bounded

# key -> the types it may have
SPEC_KEYS: dict[str, tuple[type, ...]] = {
    "model": (str,),
    "precision": (str,),
    "device": (str,),
    "optimizers": (list,),
    "batch_size": (int,),
    "seq_len": (int,),
    "warmup": (int,),
    "steps": (int,),
    "sample_interval_ms": (int, float),
    "tolerance": (str, int, float),
    "baseline": (str,),
    "attn_implementation": (str,),
    "activation_checkpointing": (str,),
    "lora": (str,),
}
_TYPE_NAMES = {str: "a string", int: "a whole number", float: "a number", list: "a list"}


def load_spec_file(path: str | os.PathLike) -> dict[str, Any]:
    """The keys of a TOML run spec, type-checked; BadInput naming the file and the key."""
    p = Path(path)
    text = read_text_bounded(p)
    data = parse_toml(text, str(path))
    for key, value in data.items():
        _check_key(path, key, value)
    if "baseline" in data:
        data["baseline"] = _beside(p, data["baseline"])
    return data


def _check_key(path, key: str, value: Any) -> None:
    types = SPEC_KEYS.get(key)
    if types is None:
        raise BadInput(f"{path}: unknown key '{key}'" + did_you_mean(key, SPEC_KEYS))
    if isinstance(value, bool) or not isinstance(value, types):
        names = " or ".join(dict.fromkeys(_TYPE_NAMES[t] for t in types))
        raise BadInput(f"{path}: key '{key}' must be {names}, got {value!r}", value=value)
    if key == "optimizers" and not all(isinstance(o, str) for o in value):
        raise BadInput(f"{path}: key 'optimizers' must be a list of names, got {value!r}", value=value)


def _beside(toml_path: Path, value: str) -> str:
    """A relative path in a spec: beside the TOML file if it is there (or can be written there), else as given."""
    given = Path(value)
    if given.is_absolute():
        return value
    beside = toml_path.parent / given
    for candidate in (beside, given):
        if candidate.exists():
            return str(candidate)
    for candidate in (beside, given):
        if candidate.parent.is_dir():
            return str(candidate)
    return value
