"""Command-line interface: a thin layer of Typer commands over the library core."""

from __future__ import annotations

import sys

from sgdsai_cli.cli import bench_step, check, gsnr, plan, presets, profile, report, signals  # noqa: F401  (registers commands)
from sgdsai_cli.cli.app import app, interrupted
from sgdsai_cli.cli.streams import guarded_streams


def main(early_signal: int | None = None) -> None:
    """The ``sgdsai`` process: the signal policy (``signals``) and the standard streams (``streams``), then the app.

    ``early_signal``: a SIGINT/SIGTERM that came while this package was being imported (recorded by
    ``sgdsai_cli.__main__``): the command stops at once with its exit code.
    """
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
    sys.exit(code)


__all__ = ["app", "main"]
