"""Errors the library raises; the CLI turns each into a one-line message and an exit code.

``error_text`` and ``first_line`` are the one way a foreign exception is quoted in a message (its first line).

Exit codes (the same in every command):
  1  a regression or an exceeded budget (``check``, ``profile --baseline``)
  2  bad input: unknown name, bad number or size, bad or missing file, unwritable output
  3  the environment cannot do it: no CUDA, no NVML, a model too large for the device
"""

from __future__ import annotations


class SgdsaiError(Exception):
    """Base class: ``str(err)`` is the message shown to the user, ``exit_code`` the status.

    ``field`` names the input that was wrong as the library knows it (``batch_size``, ``optimizer``)
    and ``value`` what it was; the CLI shows the field as its flag (``--batch-size``).
    """

    exit_code = 2

    def __init__(self, message: str, *, field: str | None = None, value=None) -> None:
        super().__init__(message)
        self.field = field
        self.value = value


class BadInput(SgdsaiError, ValueError):
    """The user asked for something that does not exist or is malformed (exit 2)."""

    exit_code = 2


class EnvironmentUnavailable(SgdsaiError):
    """The machine cannot do what was asked: no CUDA, no NVML, not enough memory (exit 3)."""

    exit_code = 3


class RegressionFound(SgdsaiError):
    """A memory metric grew beyond tolerance or a budget was exceeded (exit 1)."""

    exit_code = 1


def did_you_mean(value: str, choices) -> str:
    """Return ' (did you mean X?)' for the closest choice, or a list of valid choices."""
    import difflib

    choices = sorted(choices)
    close = difflib.get_close_matches(value, choices, n=3, cutoff=0.5)
    if close:
        return f" (did you mean {' or '.join(close)}?)"
    return f" (choose from: {', '.join(choices)})"


def first_line(e: BaseException) -> str:
    """The first line of ``e``'s message; '' when it has none."""
    text = str(e).strip()
    return text.splitlines()[0] if text else ""


def error_text(e: BaseException) -> str:
    """'TypeError: first line of the message' (the class alone when there is no message)."""
    first = first_line(e)
    return f"{type(e).__name__}: {first}" if first else type(e).__name__
