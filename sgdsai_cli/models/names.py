"""What a model name names, decided without importing torch: a preset, a factory, or a config file.

    model_source("llama2-7b")          # "preset"
    model_source("my_models.py:build") # "factory"
    model_source("ci/model.json")      # "config": a file, a folder or a cached hub id
    model_source("lama2-7b")           # BadInput: unknown model 'lama2-7b' (did you mean 'llama2-7b'?)

``build.resolve_model`` dispatches on it; the commands call it first, so a misspelt name is refused in a
fraction of a second, before torch is imported.
"""

from __future__ import annotations

import os
import re

from sgdsai_cli.errors import BadInput, did_you_mean
from sgdsai_cli.models.hf_source import looks_like_hub_id
from sgdsai_cli.models.presets import PRESETS

_TARGET = re.compile(r"^(?P<where>.+?):(?P<attr>[A-Za-z_][\w.]*)$")
_MODULE = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")


def looks_like_target(text: str) -> bool:
    """``module.path:name`` or ``file.py:name`` (a drive letter such as ``C:`` is not a module)."""
    m = _TARGET.match(text)
    if m is None:
        return False
    where = m.group("where")
    return where.endswith(".py") or (bool(_MODULE.match(where)) and len(where) > 1)


def model_source(text) -> str:
    """``"preset"``, ``"factory"`` or ``"config"`` for a model name as given; BadInput for anything else."""
    text = str(text).strip()
    if text.lower() in PRESETS:
        return "preset"
    if looks_like_target(text) and not os.path.exists(text):
        return "factory"
    looks_like_path = (
        text.endswith(".json")
        or "/" in text
        or os.sep in text
        or (os.altsep is not None and os.altsep in text)
        or os.path.exists(text)
    )
    if not looks_like_path and not looks_like_hub_id(text):
        raise BadInput(f"unknown model '{text}'" + did_you_mean(text, PRESETS), value=text)
    return "config"
