"""`sgdsai profile`."""

from __future__ import annotations

from .app import app, handle_errors, not_built


@app.command("profile", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
@handle_errors
def profile_command() -> None:
    """Not built yet."""
    not_built("profile", "see the open issues")
