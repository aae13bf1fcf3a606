"""Files the tool reads and writes: checks before work, atomic writes, bounded reads.

Output policy (one for every command). A path that is absent or a regular file is written through a
temp file in the same folder and renamed over it, so an interrupted or failed run never leaves a
truncated file. A symlink is written through: its target gets the content (under the same rules) and
the link stays a link. Anything else (a directory, a FIFO, a device node, a socket) is refused with
BadInput ``cannot write '<path>': it is a <kind>``, before any work when the caller checks first
(``check_writable``). An OSError while writing (a full disk, a name too long, no permission) is a
one-line BadInput naming the path and the reason, and leaves no temp file behind.

Input policy: every input is a regular file (checked with ``stat`` before it is opened, so a FIFO never
blocks and a device is never read), read with a size cap (``read_text_bounded``) or only as far as it
is used (``read_head``).
"""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import stat
import sys
import tempfile
from pathlib import Path
from typing import Any

from sgdsai_cli.errors import BadInput

MAX_INPUT_BYTES = 256 * 1024 * 1024  # a result, config or spec file larger than this is not one of ours
_CHUNK = 1024 * 1024  # bounded reads go this far at a time

_REASONS = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.ENAMETOOLONG: "file name too long",
    errno.EACCES: "no permission",
    errno.EPERM: "no permission",
    errno.EROFS: "read-only file system",
    errno.ELOOP: "too many levels of symbolic links",
    errno.ENOTDIR: "a folder on the way is a file",
    errno.EISDIR: "it is a directory",
}


def file_kind(mode: int) -> str:
    """What an ``st_mode`` is, in words: 'regular file', 'directory', 'FIFO', 'character device', ..."""
    for test, name in (
        (stat.S_ISREG, "regular file"), (stat.S_ISDIR, "directory"), (stat.S_ISFIFO, "FIFO"),
        (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device"), (stat.S_ISSOCK, "socket"),
        (stat.S_ISLNK, "symbolic link"),
    ):
        if test(mode):
            return name
    return "special file"


def os_reason(e: OSError) -> str:
    """A short lower-case reason for an OSError ('no space left on the device', 'file name too long')."""
    if e.errno in _REASONS:
        return _REASONS[e.errno]
    return (e.strerror or e.__class__.__name__).lower()


def _stat_or_none(p: str) -> os.stat_result | None:
    """``os.stat(p)`` (following links), or None when nothing is there (or a dangling link)."""
    try:
        return os.stat(p)
    except FileNotFoundError:
        return None


def _write_target(path: str | os.PathLike) -> Path:
    """The file a write to ``path`` replaces (a symlink resolved to its target); BadInput when it may not
    be written: anything but an absent path or a regular file, a missing folder, no permission."""
    shown = os.fspath(path)
    if shown == "":
        raise BadInput("cannot write '': the file name is empty")
    try:
        st = _stat_or_none(shown)
        if st is not None and not stat.S_ISREG(st.st_mode):
            raise BadInput(f"cannot write '{shown}': it is a {file_kind(st.st_mode)}")
        target = Path(os.path.realpath(shown)) if os.path.islink(shown) else Path(shown)
        parent = target.parent if str(target.parent) else Path(".")
        parent_st = _stat_or_none(str(parent))
    except OSError as e:
        raise BadInput(f"cannot write '{shown}': {os_reason(e)}") from None
    if parent_st is None or not stat.S_ISDIR(parent_st.st_mode):
        raise BadInput(f"cannot write '{shown}': folder '{parent}' does not exist")
    if not os.access(parent, os.W_OK):
        raise BadInput(f"cannot write '{shown}': no permission to write in '{parent}'")
    return target


def check_writable(path: str | os.PathLike) -> Path:
    """Fail early (BadInput) when ``path`` cannot be written (see the output policy above); the path as given."""
    _write_target(path)
    return Path(path)


def file_identity(path: str | os.PathLike) -> str:
    """The file a path names once links are followed (``a/../b``, ``./b`` and a symlink to ``b`` are ``b``)."""
    return os.path.realpath(os.fspath(path))


def check_distinct(outputs: list[tuple[str, str | os.PathLike | None]],
                   inputs: list[tuple[str, str | os.PathLike | None]] = ()) -> None:
    """BadInput (before any work) when two outputs, or an output and an input, are the same file.

    Each entry is ``(who, path)``, ``who`` as the message shows it (``--json``, ``--out 'D'``); a None
    path is skipped. Writing a result over the baseline it is compared with, or two writes to one
    file, is refused: one of them would be lost.
    """
    read = {file_identity(p): who for who, p in inputs if p is not None}
    written: dict[str, str] = {}
    for who, path in outputs:
        if path is None:
            continue
        key, shown = file_identity(path), os.fspath(path)
        if key in read:
            raise BadInput(f"{who} would overwrite '{shown}', the file {read[key]} reads: give the output another "
                           "path", value=shown)
        if key in written:
            raise BadInput(f"{written[key]} and {who} both write '{shown}': give each output its own path",
                           value=shown)
        written[key] = who


def check_not_inside(what: str, path: str | os.PathLike | None, folder: str | os.PathLike | None,
                     folder_what: str, names: tuple[str, ...], suffixes: tuple[str, ...] = ()) -> None:
    """BadInput when ``path`` is one of the files written in ``folder`` (``names``, or any name ending
    in one of ``suffixes``: the figures)."""
    if path is None or folder is None:
        return
    p = Path(file_identity(path))
    if p.parent != Path(file_identity(folder)):
        return
    if p.name in names or p.name.endswith(tuple(suffixes)):
        raise BadInput(f"{what} '{os.fspath(path)}' is a file {folder_what} '{os.fspath(folder)}' writes "
                       f"({p.name}): give it another name or folder", value=os.fspath(path))


def prepare_out_dir(out: str | os.PathLike, first_file: str) -> Path:
    """Create an output folder (BadInput when it is a file or cannot be made) and check that
    ``first_file`` can be written in it, before any work starts."""
    if os.fspath(out) == "":
        raise BadInput("cannot write to '': the folder name is empty")
    out = Path(out)
    try:
        st = _stat_or_none(str(out))
    except NotADirectoryError:
        st = None  # a file on the way: mkdir below says so
    except OSError as e:
        raise BadInput(f"cannot create folder '{out}' ({os_reason(e)})") from None
    if st is not None and not stat.S_ISDIR(st.st_mode):
        what = "a file" if stat.S_ISREG(st.st_mode) else f"a {file_kind(st.st_mode)}"
        raise BadInput(f"cannot write to '{out}': it is {what}, not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise BadInput(f"cannot create folder '{out}' ({e.strerror or e.__class__.__name__})") from None
    check_writable(out / first_file)
    return out


def _temp_prefix(name: str) -> str:
    """A temp-file prefix that keeps the temp name within the 255-byte limit of a file name."""
    return f".{name}." if len(os.fsencode(name)) <= 200 else ".sgdsai-write."


def write_text_atomic(path: str | os.PathLike, text: str | bytes) -> Path:
    """Write via a temp file in the target's folder and rename: never a half-written file.

    Returns the path as given. BadInput (one line, naming the path) for a target the output policy
    refuses and for any OSError while writing; the temp file is removed on every failure.
    """
    target = _write_target(path)
    data = text if isinstance(text, bytes) else text.encode("utf-8")
    folder = target.parent if str(target.parent) else Path(".")
    tmp = None
    try:
        existing = _stat_or_none(str(target))
        if existing is not None:
            mode = stat.S_IMODE(existing.st_mode)  # a replaced file keeps its permissions
        else:
            umask = os.umask(0)
            os.umask(umask)
            mode = 0o666 & ~umask  # mkstemp makes 0600; give a new file the usual permissions
        fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(target.name), suffix=".tmp", dir=folder)
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
        tmp = None
    except OSError as e:
        raise BadInput(f"cannot write '{os.fspath(path)}': {os_reason(e)}") from None
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass
    return Path(path)


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


def regular_file_stat(path: str | os.PathLike) -> os.stat_result:
    """``os.stat`` of a regular file (links followed), without opening it.

    FileNotFoundError when nothing is there; BadInput ``<path>: not a regular file (it is a FIFO)``
    for anything else; other OSErrors pass through.
    """
    st = os.stat(path)
    if not stat.S_ISREG(st.st_mode):
        raise BadInput(f"{os.fspath(path)}: not a regular file (it is a {file_kind(st.st_mode)})")
    return st


def read_head(path: str | os.PathLike, limit: int) -> bytes:
    """At most ``limit`` bytes from the start of the regular file at ``path``, read in bounded chunks.

    The file is checked with ``stat`` before it is opened and with ``fstat`` after (opened non-blocking,
    so a FIFO swapped in between cannot hang); it is never read past its size at open time or ``limit``.
    Raises what ``regular_file_stat`` raises, and OSError when it cannot be read.
    """
    st = regular_file_stat(path)
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise BadInput(f"{os.fspath(path)}: not a regular file (it is a {file_kind(st.st_mode)})")
        want = max(0, min(limit, st.st_size))
        chunks: list[bytes] = []
        got = 0
        while got < want:
            chunk = os.read(fd, min(_CHUNK, want - got))
            if not chunk:
                break
            chunks.append(chunk)
            got += len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def read_text_bounded(path: str | os.PathLike, max_bytes: int = MAX_INPUT_BYTES) -> str:
    """The UTF-8 text of a regular file no larger than ``max_bytes``; BadInput naming the file otherwise.

    A FIFO, a device or a socket is refused before it is opened (``<path>: not a regular file (it is a
    FIFO)``), so it can neither block nor feed bytes without end.
    """
    try:
        st = regular_file_stat(path)
        if st.st_size > max_bytes:
            raise BadInput(f"{path}: larger than {max_bytes} bytes")
        data = read_head(path, max_bytes + 1)
    except (FileNotFoundError, NotADirectoryError):
        raise BadInput(f"{path}: no such file") from None
    except OSError as e:
        raise BadInput(f"{path}: cannot read ({e.strerror or e.__class__.__name__})") from None
    if len(data) > max_bytes:
        raise BadInput(f"{path}: larger than {max_bytes} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise BadInput(f"{path}: cannot read (not UTF-8 text)") from None


def parse_json(text: str, where: str) -> Any:
    """The JSON value of ``text`` (from the file shown as ``where``); BadInput naming it for a syntax error, an
    integer past Python's 4,300-digit limit or nesting too deep for the parser."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise BadInput(f"{where}: not valid JSON ({e.msg} at line {e.lineno}, column {e.colno})", value=where) from None
    except ValueError:  # "Exceeds the limit (4300 digits) for integer string conversion"
        raise BadInput(f"{where}: not valid JSON (an integer of more than {sys.get_int_max_str_digits()} digits)",
                       value=where) from None
    except RecursionError:
        raise BadInput(f"{where}: not valid JSON (nested too deeply)", value=where) from None


def parse_toml(text: str, where: str) -> dict:
    """The TOML table of ``text`` (from the file shown as ``where``); BadInput as ``parse_json``."""
    import tomllib

    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise BadInput(f"{where}: not valid TOML ({e})", value=where) from None
    except ValueError:  # an integer past the digit limit
        raise BadInput(f"{where}: not valid TOML (an integer of more than {sys.get_int_max_str_digits()} digits)",
                       value=where) from None
    except RecursionError:
        raise BadInput(f"{where}: not valid TOML (nested too deeply)", value=where) from None


def read_json(path: str | os.PathLike) -> Any:
    """Parse a JSON file (bounded); BadInput naming the file (``parse_json``)."""
    return parse_json(read_text_bounded(path), str(path))
