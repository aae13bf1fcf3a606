"""`sgdsai presets`."""

from __future__ import annotations

from .app import app, handle_errors, not_built


@app.command("presets", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
@handle_errors
def presets_command() -> None:
    """Not built yet."""
    not_built("presets", "see the open issues")
