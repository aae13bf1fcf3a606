"""The Typer application and the helpers every command shares.

The library raises ``SgdsaiError`` subclasses; ``handle_errors`` turns them into
one line on stderr and the exit code of DESIGN.md section 5. Nothing a user can
cause prints a traceback.
"""

from __future__ import annotations

import functools
import sys

import typer
from rich.console import Console

from sgdsai_cli.errors import SgdsaiError

app = typer.Typer(
    name="sgdsai",
    help="Memory and performance profiler for the SGD-SaI optimizer against AdamW.",
    add_completion=False,
    no_args_is_help=True,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
)


def stdout() -> Console:
    return Console(soft_wrap=False)


def stderr() -> Console:
    return Console(stderr=True, soft_wrap=True, highlight=False)


def error(message: str) -> None:
    """Print one error line on stderr (no markup interpretation of user values)."""
    print(f"error: {message}", file=sys.stderr)


def handle_errors(func):
    """Translate library errors into a message and an exit code; Ctrl-C exits 130."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except SgdsaiError as e:
            error(str(e))
            raise typer.Exit(e.exit_code) from None
        except KeyboardInterrupt:
            error("interrupted")
            raise typer.Exit(130) from None

    return wrapper


def not_built(command: str, issue: str) -> None:
    from sgdsai_cli.errors import BadInput

    raise BadInput(f"'sgdsai {command}' is not built yet ({issue})")
