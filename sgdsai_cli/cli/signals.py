"""The command line's signal policy: SIGINT and SIGTERM stop the work once, cleanly, with 130 or 143.

Used by ``cli.main`` (the ``sgdsai`` process) only; the library never installs a signal handler.

- The first SIGINT or SIGTERM raises ``KeyboardInterrupt`` in the main thread (for SIGTERM too, so
  the same ``finally`` blocks run: the worker child's process group is stopped and reaped, its temp
  folder removed, the finished runs kept and written). Every later signal is ignored: a user
  pressing Ctrl-C five times cannot interrupt that cleanup or the writing of the result.
- A signal that comes while a module is being imported (torch's import takes a second or more) is
  not raised inside the import (a half-imported torch cannot be imported again: "cannot load module
  more than once per process"): it is raised as soon as the import is over (``DEFER_S`` polling
  with SIGALRM).
- Within ``shielded()`` (writing the result), a first signal is only recorded; the command then
  ends with its code.
- Leaving ``policy()``, SIGINT and SIGTERM are ignored: the process is exiting with its code, and
  neither ``atexit`` callbacks nor the interpreter's shutdown can be interrupted (no traceback).

``exit_code()`` is 128 + the signal's number: 130 after SIGINT, 143 after SIGTERM.
"""

from __future__ import annotations

import signal
import sys
from contextlib import contextmanager

SIGNALS = (signal.SIGINT, signal.SIGTERM)
DEFER_S = 0.05  # how often a signal that came during an import checks whether the import is over


class _State:
    received: int | None = None  # the first signal's number
    raised: bool = False  # its KeyboardInterrupt was raised (or the command saw the signal)
    shield: int = 0  # depth of shielded() sections
    active: bool = False  # inside policy()
    told: bool = False  # the 'interrupted' line was printed


_state = _State()


def received() -> int | None:
    """The first SIGINT/SIGTERM received, inside ``policy()`` (None outside it: in-process callers)."""
    return _state.received if _state.active else None


def exit_code(default: int = 130) -> int:
    """128 + the first signal's number (130 SIGINT, 143 SIGTERM); ``default`` when none came."""
    return 128 + int(_state.received) if _state.received is not None else default


def name() -> str:
    """'Ctrl-C' or 'SIGTERM': what stopped the run, for messages."""
    return "SIGTERM" if _state.received == signal.SIGTERM else "Ctrl-C"


def _importing(frame) -> bool:
    """True when ``frame`` runs inside an import (importlib's bootstrap is on the stack)."""
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib._bootstrap"):
            return True
        frame = frame.f_back
    return False


def _raise_now_or_later(frame) -> None:
    if _state.raised or not _state.active or _state.shield:
        return
    if _importing(frame):
        signal.setitimer(signal.ITIMER_REAL, DEFER_S)
        return
    _state.raised = True
    raise KeyboardInterrupt(name())


def _on_signal(signum, frame) -> None:
    if _state.received is not None:
        return  # a repeated signal: the first one's cleanup is under way
    _state.received = signum
    _raise_now_or_later(frame)


def _on_alarm(signum, frame) -> None:
    if _state.received is not None:
        _raise_now_or_later(frame)


def deliver(signum: int) -> None:
    """Act on a signal that came before ``policy()`` began (while the command line was imported)."""
    _on_signal(signum, sys._getframe())


@contextmanager
def policy():
    """Install the policy for the duration of a command (see the module docstring)."""
    _state.received, _state.raised, _state.shield, _state.active, _state.told = None, False, 0, True, False
    old_alarm = signal.signal(signal.SIGALRM, _on_alarm)
    for s in SIGNALS:
        signal.signal(s, _on_signal)
    try:
        yield
    finally:
        _state.active = False
        for s in SIGNALS:  # exiting: a late signal cannot interrupt atexit callbacks or the shutdown
            signal.signal(s, signal.SIG_IGN)
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old_alarm)


@contextmanager
def shielded():
    """Within: a first signal is recorded, not raised (the result is being written); see ``received()``."""
    _state.shield += 1
    try:
        yield
    finally:
        _state.shield -= 1


def seen() -> None:
    """The command has acted on the signal (an interrupted result came back): never raise it again."""
    _state.raised = True


def tell_once() -> bool:
    """True the first time it is asked: the 'interrupted' line is printed once."""
    told, _state.told = _state.told, True
    return not told
