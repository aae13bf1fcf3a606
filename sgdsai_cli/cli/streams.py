"""The standard streams of the ``sgdsai`` process (``cli.main`` only; in-process callers keep theirs).

- stdout closed (``sgdsai presets >&-``): one ``error:`` line and exit 2 (bad input: the command was
  given nowhere to print), not silence and 0;
- a reader that goes away (``sgdsai presets | head -1``): the rest of the output is dropped, the
  command goes on to its verdict and exits with its code, with no traceback and no "Exception
  ignored" message at exit;
- an encoding that cannot show a character (``PYTHONIOENCODING=ascii`` and a non-ASCII path):
  the character is escaped (``\\xe9``), never a ``UnicodeEncodeError``.
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager


def _usable(stream) -> bool:
    try:
        return stream is not None and os.fstat(stream.fileno()) is not None
    except (OSError, ValueError, AttributeError):
        return False


def _to_devnull(stream) -> None:
    """Point the stream's descriptor at /dev/null: what is still buffered or written later goes nowhere."""
    try:
        fd = os.open(os.devnull, os.O_WRONLY)
        os.dup2(fd, stream.fileno())
        os.close(fd)
    except (OSError, ValueError):
        pass


class PipeSafe:
    """A text stream whose writes and flushes survive a closed pipe (EPIPE): later output is dropped."""

    def __init__(self, stream) -> None:
        self._stream = stream
        self.broken = False

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            self._break()
            return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            self._break()

    def _break(self) -> None:
        self.broken = True
        _to_devnull(self._stream)
        try:
            self._stream.flush()
        except OSError:
            pass

    def __getattr__(self, attr):
        return getattr(self._stream, attr)


def _escape_unencodable(stream) -> None:
    try:
        stream.reconfigure(errors="backslashreplace")
    except (AttributeError, ValueError, OSError):
        pass


@contextmanager
def guarded_streams():
    """Yield True when the command can run (stdout is open); see the module docstring."""
    if not _usable(sys.stdout):
        print("error: standard output is closed: nothing could be printed (redirect it to a file or /dev/null)",
              file=sys.stderr)
        yield False
        return
    for stream in (sys.stdout, sys.stderr):
        if stream is not None:
            _escape_unencodable(stream)
    original = sys.stdout
    sys.stdout = PipeSafe(original)
    try:
        yield True
    finally:
        sys.stdout.flush()
        sys.stdout = original
