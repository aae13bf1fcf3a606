"""Command-line interface: a thin layer of Typer commands over the library core."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile

from sgdsai_cli.cli import bench_step, check, gsnr, plan, presets, profile, report, signals  # noqa: F401  (registers commands)
from sgdsai_cli.cli.app import app, interrupted
from sgdsai_cli.cli.streams import guarded_streams


def main(early_signal: int | None = None) -> None:
    """The ``sgdsai`` process: the signal policy (``signals``) and the standard streams (``streams``), then the app.

    ``early_signal``: a SIGINT/SIGTERM that came while this package was being imported (recorded by
    ``sgdsai_cli.__main__``): the command stops at once with its exit code.
    """
    scratch = _no_home_configs()
    with signals.policy():
        try:
            if early_signal is not None:
                signals.deliver(early_signal)
            with guarded_streams() as usable:
                code = app(standalone_mode=False) if usable else 2
        except KeyboardInterrupt:
            interrupted()
            code = signals.exit_code()
        if signals.received() is not None:
            code = signals.exit_code()
        if "sgdsai_cli.measure.child" in sys.modules:  # a real run's temp folders, whatever stopped it
            sys.modules["sgdsai_cli.measure.child"].remove_leftovers()
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
    _exit_now(code)


def _exit_now(code) -> None:
    """End the process with ``code`` once the streams are flushed, without the interpreter's teardown.

    Freeing torch's modules and the traces' objects one by one at exit takes longer than printing the
    answer (0.75 s after ``profile --model llama2-7b``); everything a command writes is closed before it
    returns (atomic writes) and its worker processes are gone, so there is nothing left to tear down.
    """
    if not isinstance(code, int) or isinstance(code, bool):
        sys.exit(code)  # None or a message: sys.exit's own rules
    for stream in (sys.stdout, sys.stderr):
        if stream is None:  # closed when the process started (``>&-``)
            continue
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed or broken stream: nothing more can reach it
            pass
    os._exit(code)


def _no_home_configs() -> str | None:
    """With a home folder that does not exist (``HOME=/nonexistent``), matplotlib would create it for
    its config and font cache: this process points it at a temp folder instead (removed at exit)."""
    if "MPLCONFIGDIR" in os.environ or os.path.isdir(os.path.expanduser("~")):
        return None
    scratch = tempfile.mkdtemp(prefix="sgdsai-mpl-")
    os.environ["MPLCONFIGDIR"] = scratch
    return scratch


__all__ = ["app", "main"]
