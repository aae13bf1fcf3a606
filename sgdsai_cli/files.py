"""Files the tool reads and writes: checks before work, atomic writes, bounded reads.

Every output is written through a temp file in the same folder and renamed over the target, so an
interrupted or failed run never leaves a truncated file. Every input is read with a size cap.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from sgdsai_cli.errors import BadInput

MAX_INPUT_BYTES = 256 * 1024 * 1024  # a result, config or spec file larger than this is not one of ours


def check_writable(path: str | os.PathLike) -> Path:
    """Fail early (BadInput) when ``path`` cannot be written: a folder, a missing folder or no permission."""
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
    """Create an output folder (BadInput when it is a file or cannot be made) and check that
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


def plain(obj: Any) -> Any:
    """A result (anything with ``to_dict()``), or dicts/lists of them, as JSON-ready values."""
    if hasattr(obj, "to_dict") and not isinstance(obj, type):
        return obj.to_dict()
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    return obj


def dumps(doc: Any) -> str:
    """The JSON text of a result document (indented, no NaN)."""
    return json.dumps(plain(doc), indent=2, allow_nan=False)


def write_json_atomic(path: str | os.PathLike, doc: Any) -> Path:
    return write_text_atomic(path, dumps(doc) + "\n")


def read_text_bounded(path: str | os.PathLike, max_bytes: int = MAX_INPUT_BYTES) -> str:
    """The UTF-8 text of a regular file no larger than ``max_bytes``; BadInput naming the file otherwise."""
    p = Path(path)
    try:
        if not p.exists():
            raise BadInput(f"{path}: no such file")
        if not p.is_file():
            raise BadInput(f"{path}: not a regular file")
        with open(p, "rb") as f:
            data = f.read(max_bytes + 1)
    except OSError as e:
        raise BadInput(f"{path}: cannot read ({e.strerror or e.__class__.__name__})") from None
    if len(data) > max_bytes:
        raise BadInput(f"{path}: larger than {max_bytes} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise BadInput(f"{path}: cannot read (not UTF-8 text)") from None


def read_json(path: str | os.PathLike) -> Any:
    """Parse a JSON file (bounded); BadInput naming the file and the line of a syntax error."""
    text = read_text_bounded(path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise BadInput(f"{path}: not valid JSON (line {e.lineno}, column {e.colno})") from None
    except RecursionError:
        raise BadInput(f"{path}: not a sgdsai result (JSON nested too deeply)") from None
