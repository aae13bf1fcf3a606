"""The fake-tensor traces kept on disk: one trace is not run twice for the same inputs and the same code.

(The allocator replays of those traces, ``allocator_trace.kept_replay``, are kept the same way, keyed on
their events.)

A trace (``estimate.trace_forward_backward``, ``estimate.trace_step``) is a pure function of what it is
given (model spec, precision, optimizer, batch size, sequence length) and of the code that runs it: this
package's sources, torch, transformers, peft, bitsandbytes, the official sgd-sai, Python. Its record
(figures and allocation events) is written as JSON under the SHA-256 of all of these, in ``traces`` of
the tool's cache folder (``sgdsai_cli.cache``). A command run again, or a plan after a profile of the
same model, reads the trace back instead of tracing, and its figures are the same to the byte. An edited
source file, another package version or other config.json content is another key: nothing stale is read.

- Never kept: the traces of a model from the user's own factory (its code is not part of the key); its
  replays are, as they are keyed on their events.
- ``SGDSAI_TRACE_CACHE=off`` (or ``0``, ``no``, ``false``): neither read nor written.
- A folder that cannot be read or written is a miss, never an error; a record that does not decode is
  traced again and replaced. At most ``MAX_ENTRIES`` records are kept, the least recently read go first.
- A record read back carries this run's ``seconds`` (the read), not the original trace's.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import platform
import stat
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from sgdsai_cli.cache import cache_root

ENV = "SGDSAI_TRACE_CACHE"
FORMAT = 1  # the record layout; a change of it is a change of this file, hence of the key too
MAX_ENTRIES = 1000
MAX_RECORD_BYTES = 64 * 2**20  # a record larger than this is not read (llama2-7b's largest: 80 KB)
PACKAGES = ("torch", "transformers", "peft", "bitsandbytes", "sgd-sai")  # their versions are part of the key

T = TypeVar("T")


def enabled() -> bool:
    return os.environ.get(ENV, "").strip().lower() not in ("off", "0", "no", "false")


def folder() -> Path | None:
    """The records' folder; None when the cache is off or there is no cache folder."""
    root = cache_root()
    return root / "traces" if root is not None and enabled() else None


@functools.lru_cache(maxsize=1)
def code_identity() -> str:
    """SHA-256 of this package's sources and the versions of everything a trace runs through."""
    from importlib.metadata import PackageNotFoundError, version

    h = hashlib.sha256()
    package = Path(__file__).resolve().parents[1]
    for path in sorted(package.rglob("*.py")):
        h.update(path.relative_to(package).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    versions = {"python": sys.version, "machine": platform.machine()}
    for name in PACKAGES:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = None
    h.update(json.dumps(versions, sort_keys=True).encode())
    return h.hexdigest()


def key_text(kind: str, inputs: tuple) -> str | None:
    """The text a record is stored under; None for what is never kept (a user's factory model)."""
    if any(getattr(x, "family", None) == "factory" for x in inputs):
        return None
    return json.dumps([FORMAT, kind, code_identity(), [repr(x) for x in inputs]])


def _place(kind: str, inputs: tuple) -> tuple[Path, Path, str] | None:
    """(folder, record path, key) of these inputs' record; None when the cache is off or they are never kept."""
    where = folder()
    key = key_text(kind, inputs) if where is not None else None
    if key is None:
        return None
    return where, where / (hashlib.sha256(key.encode()).hexdigest()[:40] + ".json"), key


def stored(kind: str, inputs: tuple) -> bool:
    """True where a record for these inputs is on disk (``cached`` will read it, unless it does not decode)."""
    place = _place(kind, inputs)
    try:
        return place is not None and stat.S_ISREG(os.stat(place[1]).st_mode)
    except (OSError, ValueError):  # absent, a name too long, a NUL in the folder's name: not stored
        return False


def cached(record: type[T], kind: str, inputs: tuple, compute: Callable[[], T]) -> T:
    """``compute()``'s record of type ``record`` (a dataclass), read from the cache when stored there."""
    place = _place(kind, inputs)
    if place is None:
        return compute()
    where, path, key = place
    t0 = time.perf_counter()
    kept = _read(path, key, record)
    if kept is not None:
        return dataclasses.replace(kept, seconds=time.perf_counter() - t0) if _has_seconds(record) else kept
    value = compute()
    _write(where, path, key, value)
    return value


def _has_seconds(record: type) -> bool:
    return any(f.name == "seconds" for f in dataclasses.fields(record))


def _tuples(value: Any) -> Any:
    """JSON's lists back into the tuples the records hold (dicts stay dicts)."""
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    if isinstance(value, dict):
        return {k: _tuples(v) for k, v in value.items()}
    return value


def _read(path: Path, key: str, record: type[T]) -> T | None:
    from sgdsai_cli.errors import SgdsaiError
    from sgdsai_cli.files import read_text_bounded

    try:
        doc = json.loads(read_text_bounded(path, MAX_RECORD_BYTES))  # regular files only: a FIFO is refused
        if not isinstance(doc, dict) or doc.get("key") != key or not isinstance(doc.get("value"), dict):
            return None
        value = record(**_tuples(doc["value"]))
        os.utime(path)  # recently read: kept longest
        return value
    except (SgdsaiError, OSError, ValueError, TypeError):  # absent, unreadable, not JSON, other fields
        return None


def _write(where: Path, path: Path, key: str, value: Any) -> None:
    from sgdsai_cli.errors import SgdsaiError
    from sgdsai_cli.files import write_text_atomic

    try:
        where.mkdir(parents=True, exist_ok=True, mode=0o700)
        if os.path.lexists(path) and not stat.S_ISREG(os.lstat(path).st_mode):
            return  # a link or anything else in a record's place is left alone: nothing is written through it
        write_text_atomic(path, json.dumps({"key": key, "value": dataclasses.asdict(value)}))
        _prune(where)
    except (OSError, SgdsaiError, TypeError, ValueError):
        pass


def _prune(where: Path) -> None:
    """Remove the least recently read records beyond ``MAX_ENTRIES``."""
    records = []
    for entry in os.scandir(where):
        if entry.name.endswith(".json") and entry.is_file(follow_symlinks=False):
            records.append((entry.stat().st_mtime, entry.path))
    for _, p in sorted(records)[:max(0, len(records) - MAX_ENTRIES)]:
        try:
            os.unlink(p)
        except OSError:
            pass
