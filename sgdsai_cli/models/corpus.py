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
import sysconfig
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from sgdsai_cli.errors import BadInput

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
    if path.is_file():
        yield path
        return
    for folder, dirs, files in os.walk(path):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if not name.startswith("."):
                yield Path(folder) / name


def _read(files, max_bytes: int, skip_binary: bool) -> tuple[bytes, int]:
    chunks: list[bytes] = []
    total = count = 0
    for f in files:
        try:
            raw = f.read_bytes()
        except OSError:
            continue
        if not raw or (skip_binary and not _looks_like_text(raw[:_SNIFF_BYTES])):
            continue
        raw = raw[: max_bytes - total]
        chunks.append(raw)
        total += len(raw)
        count += 1
        if total >= max_bytes:
            break
    return b"".join(chunks), count


def load_corpus(data: str | os.PathLike | None = None, max_bytes: int = DEFAULT_MAX_BYTES) -> ByteCorpus:
    """The stdlib corpus (``data`` None) or the text file / folder of text files at ``data``.

    Reads at most ``max_bytes`` (files in sorted order). In a folder, files that are
    not text (a NUL byte or invalid UTF-8 in their first 8 KiB) are skipped. A missing
    path, or one with no text in it, raises BadInput.
    """
    if data is None:
        raw, count = _read(_stdlib_files(stdlib_dir()), max_bytes, skip_binary=False)
        if not raw:  # an interpreter installed without its sources: the user must name a corpus
            raise BadInput(f"data must name a text file or folder: no Python sources found in '{stdlib_dir()}'",
                           field="data")
        source = "python-stdlib"
    else:
        path = Path(data)
        if not path.exists():
            raise BadInput(f"data '{data}': no such file or folder", field="data", value=str(data))
        if not (path.is_file() or path.is_dir()):
            raise BadInput(f"data '{data}': not a file or folder", field="data", value=str(data))
        if path.is_file() and not os.access(path, os.R_OK):
            raise BadInput(f"data '{data}': cannot read (no permission)", field="data", value=str(data))
        raw, count = _read(_data_files(path), max_bytes, skip_binary=path.is_dir())
        if not raw:
            what = "file is empty" if path.is_file() else "folder holds no non-empty text files"
            raise BadInput(f"data '{data}': {what}", field="data", value=str(data))
        source = str(data)
    tensor = torch.frombuffer(bytearray(raw), dtype=torch.uint8)
    return ByteCorpus(tensor, source, count)
