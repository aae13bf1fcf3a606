"""`sgdsai report`."""

from __future__ import annotations

from .app import app, handle_errors, not_built


@app.command("report", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
@handle_errors
def report_command() -> None:
    """Not built yet."""
    not_built("report", "see the open issues")
