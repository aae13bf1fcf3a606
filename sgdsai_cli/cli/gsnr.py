"""`sgdsai gsnr`."""

from __future__ import annotations

from .app import app, handle_errors, not_built


@app.command("gsnr", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
@handle_errors
def gsnr_command() -> None:
    """Not built yet."""
    not_built("gsnr", "see the open issues")
