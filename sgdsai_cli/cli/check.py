"""`sgdsai check`."""

from __future__ import annotations

from .app import app, handle_errors, not_built


@app.command("check", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
@handle_errors
def check_command() -> None:
    """Not built yet."""
    not_built("check", "see the open issues")
