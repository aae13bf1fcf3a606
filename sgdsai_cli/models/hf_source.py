"""Where a model's config.json is: a file, a folder holding one, or a hub id already in the local Hugging Face cache.

    path = locate_config("meta-llama/Llama-2-7b-hf")   # .../models--meta-llama--Llama-2-7b-hf/snapshots/REV/config.json

Nothing is ever downloaded: a hub id is looked up in the cache only (``huggingface_hub``'s
``try_to_load_from_cache``, the same lookup transformers does offline, ``HF_HUB_OFFLINE=1``),
honouring ``HF_HUB_CACHE`` / ``HF_HOME``. A hub id that is not cached is a BadInput that says how
to fetch the one file.
"""

from __future__ import annotations

import os
import re

from sgdsai_cli.errors import BadInput

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}/[\w.-]{1,96}$")


def looks_like_hub_id(text: str) -> bool:
    """``org/name`` with no other separator and no file ending: a Hugging Face hub id."""
    return bool(_HUB_ID.match(text)) and not text.endswith(".json") and ".." not in text


def cached_config(repo_id: str) -> str | None:
    """The cached config.json of ``repo_id`` (its ``main`` revision), or None when it is not cached."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    cache = os.environ.get("HF_HUB_CACHE") or os.path.join(
        os.environ.get("HF_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "huggingface"), "hub")
    try:  # the cache folder read now (huggingface_hub reads the environment once, at import)
        found = try_to_load_from_cache(repo_id, "config.json", cache_dir=cache)
    except Exception:  # an id huggingface_hub refuses (HFValidationError): not in the cache either
        return None
    return found if isinstance(found, str) and os.path.isfile(found) else None


def locate_config(where: str) -> str:
    """The config.json path for ``where``: the file itself, ``where/config.json``, or the cached hub file."""
    if os.path.isdir(where):
        return os.path.join(where, "config.json")
    if os.path.exists(where) or not looks_like_hub_id(where):
        return where
    found = cached_config(where)
    if found is None:
        raise BadInput(f"{where}: no such file, and not a model in the local Hugging Face cache (offline: nothing is "
                       f"downloaded; fetch the config with `hf download {where} config.json`)", value=where)
    return found
