"""A byte-level text corpus for real-data training runs, with no network.

Text models train on bytes of real text: by default the Python standard
library's own source files from the running interpreter (always present), or
the text file / folder of text files given as ``data``. Each byte is a
token; a model whose vocabulary is smaller than 256 gets ``byte % vocab_size``.
Batches are windows at seeded random offsets:

    corpus = load_corpus(None)                  # the stdlib's *.py files, up to 4 MiB
    tokens, targets = corpus.batch(4, 128, vocab_size=50257, generator=g)

``targets`` are the tokens shifted left by one, as ``models.make_batch`` returns.
"""

from __future__ import annotations

import os
import stat
import sysconfig
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from sgdsai_cli.errors import BadInput
from sgdsai_cli.files import file_kind, read_head

DEFAULT_MAX_BYTES = 4 * 1024 * 1024
_SKIP_DIRS = {"site-packages", "dist-packages", "__pycache__", "idlelib", "lib2to3"}
_SNIFF_BYTES = 8192


@dataclass
class ByteCorpus:
    """The bytes of a corpus as a uint8 tensor, and where they came from."""

    data: Tensor  # uint8 [n_bytes]
    source: str  # "python-stdlib" or the data path as given
    files: int

    @property
    def n_bytes(self) -> int:
        return int(self.data.numel())

    def describe(self) -> dict:
        """A JSON-ready record of the corpus (the ``data`` field of a g-SNR document)."""
        return {"kind": "text", "source": self.source, "files": self.files, "bytes": self.n_bytes,
                "tokens": "bytes (byte % vocab_size when the vocabulary is smaller than 256)"}

    def batch(self, batch_size: int, seq_len: int, vocab_size: int,
              generator: torch.Generator | None = None, device="cpu") -> tuple[Tensor, Tensor]:
        """``batch_size`` windows of ``seq_len + 1`` bytes at random offsets -> (tokens, targets), int64.

        A corpus shorter than one window is repeated end to end. Offsets come from
        ``generator`` (CPU), so a seeded generator gives the same batches every run.
        """
        for field, value in (("batch_size", batch_size), ("seq_len", seq_len), ("vocab_size", vocab_size)):
            if value <= 0:
                raise BadInput(f"{field} must be positive, got {value}", field=field, value=value)
        data = self.data
        window = seq_len + 1
        if data.numel() < window:
            data = data.repeat(-(-window // data.numel()))
        starts = torch.randint(0, data.numel() - window + 1, (batch_size,), generator=generator)
        idx = starts[:, None] + torch.arange(window)[None, :]
        seq = data[idx].long()
        if vocab_size < 256:
            seq = seq % vocab_size
        return seq[:, :-1].to(device), seq[:, 1:].to(device)


def stdlib_dir() -> Path:
    """The running interpreter's standard-library folder."""
    return Path(sysconfig.get_paths()["stdlib"])


def _stdlib_files(root: Path):
    """The stdlib's ``*.py`` files in a fixed order: each folder's own files, then its sub-folders."""
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS and not d.startswith("."))
        for name in sorted(files):
            if name.endswith(".py"):
                yield Path(folder) / name


def _looks_like_text(head: bytes) -> bool:
    if b"\x00" in head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as e:
        return e.start >= len(head) - 4  # a multi-byte character cut at the end of the sniffed block
    return True


def _data_files(path: Path):
    """The file itself, or a folder's files in sorted order (hidden ones and linked folders left out)."""
    if not os.path.isdir(path):
        yield path
        return
    for folder, dirs, files in os.walk(path):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if not name.startswith("."):
                yield Path(folder) / name


def _read_one(f: Path, limit: int, skip_binary: bool) -> bytes:
    """At most ``limit`` bytes of ``f`` (b"" for a file to skip: not regular, unreadable, empty by its
    size, or not text when ``skip_binary``). Only regular files are opened, so a FIFO or a link to
    /dev/zero in a folder is passed over, never read; a file is read no further than
    ``max(limit, 8 KiB)`` bytes (the sniffed head), in bounded chunks."""
    try:
        st = os.stat(f)
        if not stat.S_ISREG(st.st_mode) or st.st_size == 0:  # size 0: empty, or a /proc file that may block
            return b""
        data = read_head(f, max(limit, _SNIFF_BYTES))
    except (OSError, BadInput):
        return b""
    if skip_binary and not _looks_like_text(data[:_SNIFF_BYTES]):
        return b""
    return data[:limit]


def _read(files, max_bytes: int, skip_binary: bool) -> tuple[bytes, int]:
    chunks: list[bytes] = []
    total = count = 0
    for f in files:
        raw = _read_one(f, max_bytes - total, skip_binary)
        if not raw:
            continue
        chunks.append(raw)
        total += len(raw)
        count += 1
        if total >= max_bytes:
            break
    return b"".join(chunks), count
def load_corpus(data: str | os.PathLike | None = None, max_bytes: int = DEFAULT_MAX_BYTES, *,
                text_only: bool = False) -> ByteCorpus:
    """The stdlib corpus (``data`` None) or the text file / folder of text files at ``data``.

    Reads at most ``max_bytes`` (files in sorted order; no file further than that, so a 3 GB file
    costs 4 MiB). In a folder, files that are not text (a NUL byte or invalid UTF-8 in their first
    8 KiB) are skipped, and so is anything that is not a regular file (a FIFO, a link to a device):
    it is never opened. A file given directly that is not text is refused with ``text_only``
    (else its bytes are used as they are). A missing path, a FIFO or device given directly, or one
    with no text in it, raises BadInput.
    """
    if data is None:
        raw, count = _read(_stdlib_files(stdlib_dir()), max_bytes, skip_binary=False)
        if not raw:  # an interpreter installed without its sources: the user must name a corpus
            raise BadInput(f"data must name a text file or folder: no Python sources found in '{stdlib_dir()}'",
                           field="data")
        return ByteCorpus(torch.frombuffer(bytearray(raw), dtype=torch.uint8), "python-stdlib", count)

    def bad(what: str) -> BadInput:
        return BadInput(f"data '{data}': {what}", field="data", value=str(data))

    try:
        st = os.stat(data)
    except (FileNotFoundError, NotADirectoryError):
        raise bad("no such file or folder") from None
    except OSError as e:
        raise bad(f"cannot read ({e.strerror or e.__class__.__name__})") from None
    is_dir = stat.S_ISDIR(st.st_mode)
    if not (is_dir or stat.S_ISREG(st.st_mode)):
        raise bad(f"not a file or folder (it is a {file_kind(st.st_mode)})")
    if not is_dir:
        _check_file(Path(data), st, bad, text_only)
    raw, count = _read(_data_files(Path(data)), max_bytes, skip_binary=is_dir)
    if not raw:
        raise bad("folder holds no non-empty text files" if is_dir else "file is empty")
    return ByteCorpus(torch.frombuffer(bytearray(raw), dtype=torch.uint8), str(data), count)


def _check_file(path: Path, st: os.stat_result, bad, text_only: bool) -> None:
    """BadInput for a data file that cannot be read or (with ``text_only``) does not look like text."""
    if not os.access(path, os.R_OK):
        raise bad("cannot read (no permission)")
    if st.st_size == 0:
        raise bad("file is empty")
    try:
        head = read_head(path, _SNIFF_BYTES)
    except (OSError, BadInput) as e:
        raise bad(f"cannot read ({getattr(e, 'strerror', None) or e})") from None
    if text_only and not _looks_like_text(head):
        raise bad("does not look like text (a NUL byte or invalid UTF-8 in its first 8 KiB)")
