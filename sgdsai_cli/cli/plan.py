"""`sgdsai plan`."""

from __future__ import annotations

from .app import app, handle_errors, not_built


@app.command("plan", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
@handle_errors
def plan_command() -> None:
    """Not built yet."""
    not_built("plan", "see the open issues")
